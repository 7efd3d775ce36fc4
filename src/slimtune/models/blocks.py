"""One block-by-block calibration pass over a decoder-only LM, shared by every algorithm that needs activations
(GPTQ, AWQ here; Wanda, SparseGPT, SmoothQuant next). It lives below both ``prune/`` and ``quantize/``.

The pass captures the inputs (and keyword arguments: position embeddings, masks) of block 0 once, with no
gradients, in eval mode and without a KV cache; then for each decoder block it hooks the block's target layers,
runs the calibration samples through the block, unhooks, lets the algorithm compress the block from the
statistics it gathered, and re-runs the block so the next one sees the compressed outputs (GPTQ's order).

An algorithm is a ``BlockAlgorithm``: ``observe(name, layer, x)`` receives each target layer's input
activations (flattened to [tokens, in_features]) and folds them into its own statistics; ``compress_block``
turns the block's statistics into new weights (a pure function of the block, its targets and the stats).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from slimtune.errors import DataError, UnsupportedModelError
from slimtune.models.lm_layers import decoder_layers

log = logging.getLogger(__name__)


def is_conv1d(layer: nn.Module) -> bool:
    """transformers' GPT-2 ``Conv1D``: a Linear whose weight is stored transposed, as (in, out)."""
    return type(layer).__name__ == "Conv1D" and hasattr(layer, "nf")


def target_layers(block: nn.Module) -> dict[str, nn.Module]:
    """The weight layers of a decoder block: every ``nn.Linear`` and GPT-2 ``Conv1D``, by dotted name."""
    return {n: m for n, m in block.named_modules() if n and (isinstance(m, nn.Linear) or is_conv1d(m))}


def linear_weight(layer: Any) -> torch.Tensor:
    """The layer's weight as (out, in), whatever its storage (Conv1D keeps (in, out))."""
    w = layer.weight.data
    return w.t() if is_conv1d(layer) else w


def set_linear_weight(layer: Any, w: torch.Tensor) -> None:
    """Write an (out, in) weight back into the layer's own storage layout."""
    target = layer.weight.data
    target.copy_(w.t() if is_conv1d(layer) else w)


@dataclass
class BlockInputs:
    """The captured inputs of one decoder block: one hidden-state tensor and its kwargs per chunk."""

    hidden: list[torch.Tensor]
    kwargs: list[dict[str, Any]]

    def run(self, block: nn.Module) -> list[torch.Tensor]:
        return [_block_out(block(h, **kw)) for h, kw in zip(self.hidden, self.kwargs)]


@dataclass
class BlockContext:
    """What ``compress_block`` may use besides its statistics: the block's captured inputs (to replay it)."""

    index: int
    block: nn.Module
    inputs: BlockInputs
    name: str = field(default="")


class BlockAlgorithm(Protocol):
    def observe(self, name: str, layer: nn.Module, x: torch.Tensor) -> None: ...

    def compress_block(self, ctx: BlockContext, targets: dict[str, nn.Module]) -> None: ...


class _Stop(Exception):
    pass


def _block_out(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def capture_block0(model: nn.Module, samples: torch.Tensor, *, batch_size: int) -> BlockInputs:
    """Run the model's stem on ``samples`` (token ids [n, length]) in chunks and keep block 0's inputs."""
    if samples.ndim != 2 or samples.shape[0] < 1 or samples.shape[1] < 1:
        raise DataError(f"calibration samples must be token ids shaped [n, length], got {tuple(samples.shape)}")
    first = decoder_layers(model)[0]
    captured = BlockInputs([], [])

    def grab(_: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.hidden.append(hidden.detach())
        captured.kwargs.append({k: v for k, v in kwargs.items() if k not in ("past_key_values", "past_key_value")})
        raise _Stop

    handle = first.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for chunk in samples.long().split(batch_size):
            with contextlib.suppress(_Stop):
                model(input_ids=chunk, use_cache=False)
    finally:
        handle.remove()
    if len(captured.hidden) != len(samples.long().split(batch_size)):
        raise UnsupportedModelError(f"{type(model).__name__}'s first decoder block was never called")
    return captured


def observe_inputs(
    model: nn.Module, module: nn.Module, samples: torch.Tensor, *, batch_size: int,
    observe: Callable[[torch.Tensor], None],
) -> None:  # fmt: skip
    """Run ``model`` on ``samples`` (token ids [n, length]) in chunks, hand ``module``'s input to ``observe`` and
    stop there: nothing after ``module`` runs (for lm_head: no logits are computed)."""

    def grab(_: nn.Module, args: tuple[Any, ...]) -> None:
        observe(args[0].detach())
        raise _Stop

    handle = module.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            for chunk in samples.long().split(batch_size):
                with contextlib.suppress(_Stop):
                    model(input_ids=chunk, use_cache=False)
    finally:
        handle.remove()


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with transformers
        return None
    return tqdm(total=total, desc=desc, unit="block", leave=False)


def calibration_pass(
    model: nn.Module,
    samples: torch.Tensor,
    algorithm: BlockAlgorithm,
    *,
    batch_size: int = 8,
    progress: bool = True,
    select: Callable[[str, nn.Module], bool] | None = None,
) -> None:
    """Compress ``model``'s decoder blocks one after another with ``algorithm`` (see the module docstring).
    ``select(name, layer)`` limits the hooked targets of each block (default: every Linear / Conv1D)."""
    layers = decoder_layers(model)
    was_training = model.training
    model.eval()
    config: Any = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    bar = _progress(len(layers), "calibration", progress)
    try:
        with torch.no_grad():
            inputs = capture_block0(model, samples, batch_size=batch_size)
            for i, block in enumerate(layers):
                targets = {n: m for n, m in target_layers(block).items() if select is None or select(n, m)}
                observe_block(block, inputs, targets, algorithm)
                algorithm.compress_block(BlockContext(i, block, inputs, f"layers.{i}"), targets)
                inputs = BlockInputs(inputs.run(block), inputs.kwargs)  # the next block sees compressed outputs
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
        if use_cache is not None:
            config.use_cache = use_cache


def observe_block(
    block: nn.Module, inputs: BlockInputs, targets: dict[str, nn.Module], algorithm: Any
) -> list[torch.Tensor]:
    """Run every captured chunk through ``block`` with ``algorithm.observe`` hooked on ``targets``' inputs;
    returns the block's outputs."""
    handles = list(_hook(targets, algorithm))
    try:
        return inputs.run(block)
    finally:
        for h in handles:
            h.remove()


def sequential_stages(block: nn.Module, inputs: BlockInputs, targets: dict[str, nn.Module]) -> list[list[str]]:
    """``targets`` in the order the block's forward reaches them, grouped into stages of layers that read the same
    input (q|k|v, gate|up): the order of GPTQ's "true sequential" mode, where each stage is compressed on the
    inputs that the already compressed stages before it produce. Found by running the first chunk once."""
    seen: list[tuple[str, torch.Tensor]] = []
    handles = [m.register_forward_pre_hook(lambda _m, args, n=n: seen.append((n, args[0].detach())))
               for n, m in targets.items()]  # fmt: skip
    try:
        with torch.no_grad():
            block(inputs.hidden[0], **inputs.kwargs[0])
    finally:
        for h in handles:
            h.remove()
    stages: list[list[str]] = []
    last: torch.Tensor | None = None
    for name, x in seen:
        if any(name in st for st in stages):
            continue  # a layer called twice keeps its first place
        same = last is not None and x.shape == last.shape and bool(torch.equal(x, last))
        if same:
            stages[-1].append(name)
        else:
            stages.append([name])
        last = x
    stages += [[n] for n in targets if not any(n in st for st in stages)]  # never reached: alone, at the end
    return stages


def compress_in_stages(
    ctx: BlockContext,
    targets: dict[str, nn.Module],
    algorithm: BlockAlgorithm,
    compress: Callable[[dict[str, nn.Module]], None],
    forget: Callable[[str], object],
    *,
    refresh_first: bool = False,
) -> None:
    """True-sequential compression of one block: ``compress`` each stage of ``sequential_stages`` in turn; before
    every stage after the first, ``forget`` its layers' statistics and observe them again on the block whose
    earlier stages are already compressed (the first stage's statistics come from the pass's own run unless
    ``refresh_first``)."""
    for k, stage in enumerate(sequential_stages(ctx.block, ctx.inputs, targets)):
        layers = {n: targets[n] for n in stage}
        if k or refresh_first:
            for n in stage:
                forget(n)
            observe_block(ctx.block, ctx.inputs, layers, algorithm)
        compress(layers)


def _hook(targets: dict[str, nn.Module], algorithm: BlockAlgorithm) -> Iterator[Any]:
    for name, layer in targets.items():

        def hook(mod: nn.Module, args: tuple[Any, ...], _name: str = name) -> None:
            x = args[0].detach()
            algorithm.observe(_name, mod, x.reshape(-1, x.shape[-1]).float())

        yield layer.register_forward_pre_hook(hook)
