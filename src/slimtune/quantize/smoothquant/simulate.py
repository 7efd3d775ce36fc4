"""W8A8 simulated in PyTorch, the way ONNX Runtime's dynamic int8 computes it, to choose α on perplexity.

Weights: int8 symmetric per output channel (7-bit with ``reduce_range``), or per tensor. Activations: quantized
at each call to uint8 with one scale and zero point over the whole input tensor (ONNX Runtime's
``DynamicQuantizeLinear``, range always containing 0). Every Linear of the decoder blocks is simulated; the
lm_head is too (ONNX Runtime's dynamic quantizer quantizes it as well).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from slimtune.models.blocks import linear_weight, set_linear_weight
from slimtune.quantize.weight_only.api import block_targets


def fake_int8_weight(w: torch.Tensor, *, per_channel: bool, reduce_range: bool) -> torch.Tensor:
    qmax = 63.0 if reduce_range else 127.0
    amax = w.abs().amax(dim=1, keepdim=True) if per_channel else w.abs().amax()
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale


def fake_uint8_activation(x: torch.Tensor) -> torch.Tensor:
    lo = torch.clamp(x.amin(), max=0.0)
    hi = torch.clamp(x.amax(), min=0.0)
    scale = (hi - lo) / 255.0
    if float(scale) == 0.0:
        return x
    zero = torch.clamp(torch.round(-lo / scale), 0, 255)
    return (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale


def sim_targets(model: nn.Module) -> list[nn.Module]:
    layers = list(block_targets(model).values())
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Linear):
        layers.append(head)
    return layers


@contextlib.contextmanager
def simulated_w8a8(
    model: nn.Module,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    layers: Sequence[nn.Module] | None = None,
    skip: Collection[nn.Module] = (),
) -> Iterator[None]:
    """Within the block, ``model``'s Linears (or only ``layers``; never those in ``skip``: an fp32 fallback)
    compute with int8-rounded weights and uint8-rounded inputs."""
    skipped = {id(k) for k in skip}
    layers = [m for m in (sim_targets(model) if layers is None else layers) if id(m) not in skipped]
    saved = [linear_weight(m).clone() for m in layers]
    handles = []
    try:
        with torch.no_grad():
            for m, w in zip(layers, saved):
                set_linear_weight(m, fake_int8_weight(w.float(), per_channel=per_channel, reduce_range=reduce_range))
        for m in layers:
            handles.append(m.register_forward_pre_hook(lambda _m, args: (fake_uint8_activation(args[0]), *args[1:])))
        yield
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for m, w in zip(layers, saved):
                set_linear_weight(m, w)


def search_alpha(
    model: nn.Module,
    maxima: dict[tuple[int, str], torch.Tensor],
    windows: torch.Tensor,
    grid: Sequence[float],
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    linear: bool = True,
) -> dict[str, Any]:
    """Perplexity of the W8A8-simulated model on ``windows`` for no smoothing and for each α of ``grid``
    (each on a copy of ``model``, which is left unchanged); returns the scores and the best α (None when no
    smoothing is best)."""
    from slimtune.evaluate.lm import perplexity
    from slimtune.quantize.smoothquant.smooth import smooth_lm_

    def score(m: nn.Module) -> float:
        with simulated_w8a8(m, per_channel=per_channel, reduce_range=reduce_range):
            return float(perplexity(m, windows, batch_size=4)["perplexity"])

    scores: dict[str, float] = {"none": score(model)}
    for alpha in grid:
        trial = copy.deepcopy(model)
        smooth_lm_(trial, maxima, alpha=float(alpha), linear=linear)
        scores[f"{float(alpha):g}"] = score(trial)
        del trial
    best = min(scores, key=lambda k: scores[k])
    return {"perplexity": scores, "best_alpha": None if best == "none" else float(best)}
