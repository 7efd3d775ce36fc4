"""``quantize_lm_(model, config, calibration=ids)``: weight-only quantization of every Linear in a causal LM's
decoder blocks (and optionally its lm_head and token embedding), in place.

The model stays a plain torch model: each quantized layer's weight holds the dequantized values (fake-quant),
and the layer carries the integer codes, scales and zero points as ``layer.slimtune_qweight`` (a
``QuantizedWeight``), which the MatMulNBits exporter emits as they are. Methods register a handler for their
config type (``register_lm_quantizer``), as the ONNX int8 quantizers do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimtune._registry import MethodRegistry
from slimtune.errors import ConfigError, DataError, UnsupportedModelError
from slimtune.models.blocks import is_conv1d, linear_weight, target_layers
from slimtune.models.lm_layers import decoder_layers
from slimtune.quantize.weight_only.config import GROUP_SIZES, GPTQConfig, WeightOnlyConfig
from slimtune.quantize.weight_only.grid import QuantizedWeight, rtn

ATTR = "slimtune_qweight"
Handler = Callable[[nn.Module, Any, "torch.Tensor | None"], None]
LM_QUANTIZERS: MethodRegistry[type[WeightOnlyConfig], Handler] = MethodRegistry(
    "LM weight-only quantization method", "register_lm_quantizer"
)


def register_lm_quantizer(
    name: str, config_cls: type[WeightOnlyConfig], *, help: str = ""
) -> Callable[[Handler], Handler]:
    return LM_QUANTIZERS.register_handler(name, config_cls, help=help)


def quantized_weight(layer: nn.Module) -> QuantizedWeight | None:
    return getattr(layer, ATTR, None)


def quantized_layers(model: nn.Module) -> dict[str, tuple[nn.Module, QuantizedWeight]]:
    """Every quantized layer of ``model`` by qualified name, with its codes."""
    return {n: (m, q) for n, m in model.named_modules() if (q := quantized_weight(m)) is not None}


def store_(layer: Any, qw: QuantizedWeight) -> None:
    """Give ``layer`` the dequantized weight of ``qw`` (in its own layout) and keep the codes on it."""
    w = qw.dequantize().to(layer.weight.dtype)
    layer.weight.data.copy_(w.t() if is_conv1d(layer) else w)
    setattr(layer, ATTR, qw)


def block_targets(model: nn.Module) -> dict[str, nn.Module]:
    """The Linear / Conv1D layers of every decoder block, by qualified name."""
    layers = decoder_layers(model)
    prefix = next(n for n, m in model.named_modules() if m is layers)
    return {f"{prefix}.{i}.{n}": m for i, block in enumerate(layers) for n, m in target_layers(block).items()}


def _fitting_groups(width: int) -> str:
    fits = [str(g) for g in GROUP_SIZES if g > 0 and width % g == 0]
    return ", ".join([*fits, "-1 (per-channel)"])


def check_model(model: nn.Module, config: WeightOnlyConfig, *, layers: dict[str, nn.Module]) -> None:
    """Refuse, before anything changes, an already quantized model or a group size that does not fit a layer."""
    done = quantized_layers(model)
    if done:
        name, (_, qw) = next(iter(done.items()))
        raise UnsupportedModelError(
            f"the model is already quantized ({name}: {qw.method} int{qw.bits}); quantize the original fp32 model"
        )
    if config.group_size == -1 or config.ragged_groups:
        return
    for name, layer in layers.items():
        width = int(linear_weight(layer).shape[1])
        if width % config.group_size:
            raise ConfigError(
                f"group_size {config.group_size} does not divide {name}'s input width {width}; use "
                f"{_fitting_groups(width)}, or set ragged_groups: true (the last group of each row is shorter)"
            )


def _lm_head(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    return head if isinstance(head, nn.Linear) else None


def _embedding(model: nn.Module) -> Any:
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    return emb if isinstance(emb, nn.Embedding) else None


def _untie_(model: nn.Module, head: Any) -> None:
    emb = _embedding(model)
    if emb is not None and emb.weight is head.weight:
        head.weight = nn.Parameter(head.weight.detach().clone())
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "tie_word_embeddings"):
            config.tie_word_embeddings = False


def _quantize_ends_(
    model: nn.Module, config: WeightOnlyConfig, head: Any, emb: Any, head_h: torch.Tensor | None = None
) -> None:
    """RTN of lm_head and/or the token embedding (GPTQ for lm_head when its Hessian ``head_h`` is given); a tied
    pair quantized together shares one ``QuantizedWeight`` (one tensor in the model, one set of codes in the
    export); quantizing one of a tied pair unties it first."""

    def grid(w: torch.Tensor, h: torch.Tensor | None = None) -> QuantizedWeight:
        if h is None:
            return rtn(w.float(), bits=config.bits, group_size=config.group_size, symmetric=config.symmetric)
        from slimtune.quantize.weight_only.gptq import gptq

        c: Any = config
        return gptq(w, h, bits=c.bits, group_size=c.group_size, symmetric=c.symmetric, damp=c.damp,
                    block_size=c.block_size, act_order=c.act_order, static_groups=c.static_groups, mse=c.mse,
                    name="lm_head")  # fmt: skip

    with torch.no_grad():
        if head is not None and emb is not None and head.weight is emb.weight:
            qw = grid(emb.weight, head_h)
            store_(emb, qw)
            setattr(head, ATTR, qw)
            return
        if head is None and emb is None:
            return  # neither end is quantized: a tie stays as it is
        tied_head = head if head is not None else _lm_head(model)
        if tied_head is not None:
            _untie_(model, tied_head)  # a no-op when not tied
        for layer, h in ((head, head_h), (emb, None)):
            if layer is not None:
                store_(layer, grid(linear_weight(layer), h))


def quantize_lm_(model: nn.Module, config: WeightOnlyConfig, *, calibration: torch.Tensor | None = None) -> None:
    """Quantize ``model``'s decoder-block Linears (and lm_head / the token embedding when ``config.lm_head`` /
    ``config.embedding``) in place.
    ``calibration``: token ids [n, length] for GPTQ / AWQ (the first ``config.samples`` rows are used)."""
    handler = LM_QUANTIZERS.handler_for(config)
    layers = block_targets(model)
    head = _lm_head(model) if config.lm_head else None
    if config.lm_head and head is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no Linear lm_head; set lm_head: false")
    emb = _embedding(model) if config.embedding else None
    if config.embedding and emb is None:
        raise UnsupportedModelError(f"{type(model).__name__} has no nn.Embedding input embedding; set embedding: false")
    ends = {**({"lm_head": head} if head is not None else {}), **({"embedding": emb} if emb is not None else {})}
    check_model(model, config, layers={**layers, **ends})
    if config.needs_calibration:
        calibration = calibration_ids(calibration, samples=int(config.samples))  # type: ignore[attr-defined]
    handler(model, config, calibration)
    head_h = None
    if head is not None and isinstance(config, GPTQConfig) and config.head_gptq and calibration is not None:
        from slimtune.models.blocks import observe_inputs
        from slimtune.quantize.weight_only.gptq import HessianStats

        stats = HessianStats(int(linear_weight(head).shape[1]))
        observe_inputs(model, head, calibration, batch_size=config.batch_size, observe=stats.add)
        head_h = stats.h
    _quantize_ends_(model, config, head, emb, head_h)


def calibration_ids(ids: torch.Tensor | None, *, samples: int) -> torch.Tensor:
    if ids is None:
        raise DataError("this method needs calibration text: pass calibration=token ids [n, length]")
    if ids.ndim != 2 or ids.dtype not in (torch.long, torch.int32):
        raise DataError(f"calibration must be token ids shaped [n, length], got {tuple(ids.shape)} {ids.dtype}")
    if ids.shape[0] < samples:
        raise DataError(
            f"the calibration set has {ids.shape[0]} windows but {samples} samples were requested; "
            f"lower samples or give more text"
        )
    return ids[:samples].long()
