"""LM quantization candidates for a search: each is a recipe ``quantize`` stage entry plus its resolved config.

``lm_quant_candidates(model)`` lists int4 weight-only RTN / HQQ / GPTQ / AWQ, int8 per-channel RTN, SmoothQuant
W8A8 (dynamic) and, with ``bits_budget``, a mixed-precision GPTQ plan; a search runs each with the ``quantize``
stage (``cand.stage()`` is the stage's options) or in Python::

    from slimtune.quantize.weight_only.candidates import lm_quant_candidates
    for cand in lm_quant_candidates(model, group_size=128, samples=32):
        cand.name, cand.method, cand.bits          # 'int4-gptq-g128', 'gptq', 4.25 (stored bits per weight)
        cand.stage()                               # {'method': 'gptq', 'bits': 4, 'group_size': 128, ...}
        cfg = cand.config()                        # GPTQConfig(...) / SmoothQuantConfig(...)

Given a ``model``, a group size that does not divide every block Linear's input width is replaced by the largest
one that does (SmolLM2's 576 is not a multiple of 128: g64 is used), so every candidate runs as listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from slimtune.errors import ConfigError

WEIGHT_ONLY = ("rtn", "hqq", "gptq", "awq")
SCALE_BITS = 32  # MatMulNBits stores one fp32 scale per group


def stored_bits(bits: int, group_size: int, *, symmetric: bool, in_features: int | None = None) -> float:
    """Bits per weight on disk in ONNX Runtime's MatMulNBits layout: the code container (2- and 3-bit codes travel
    in 4-bit containers, 8 stays 8) plus, per group, an fp32 scale and (asymmetric only) a packed zero point.
    Per-channel (``group_size`` -1) on a width no block fits is stored in blocks of 32, as the exporter does."""
    container = 8 if bits == 8 else 4
    group = group_size
    if group == -1:
        k = in_features if in_features is not None else 256
        group = k if k <= 256 and not k & (k - 1) else 32
    return container + (SCALE_BITS + (0 if symmetric else container)) / group


@dataclass(frozen=True)
class LMQuantCandidate:
    """One quantization a search can try: ``name`` (unique, readable), ``method`` (a registered method name),
    ``options`` (the rest of the ``quantize`` stage entry), ``bits`` (stored bits per weight, see ``stored_bits``;
    for SmoothQuant 8: the int8 weight; its per-output-channel scale adds under 0.1 bit at widths >= 512)."""

    name: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    bits: float = 32.0

    def stage(self) -> dict[str, Any]:
        """The recipe ``quantize`` stage entry: ``{"method": ..., **options}`` (a fresh dict)."""
        return {"method": self.method, **self.options}

    def config(self) -> Any:
        """The method's config object (options checked the way a recipe's are); ``bits_budget`` is a stage
        option, not part of the method config."""
        return lm_quant_config(self.method, {k: v for k, v in self.options.items() if k != "bits_budget"})


def lm_quant_config(method: str, options: dict[str, Any], *, where: str = "") -> Any:
    """The config of an LM quantization method from plain options: ``smoothquant`` or a weight-only method."""
    if method == "smoothquant":
        from slimtune.quantize.smoothquant import SmoothQuantConfig

        return SmoothQuantConfig.from_dict(options, where=where or "quantize (smoothquant)")
    from slimtune.quantize.weight_only import LM_QUANTIZERS

    return LM_QUANTIZERS.get(method).from_dict(options, where=where or f"quantize ({method})")


def fitting_group(model: nn.Module | None, group_size: int) -> int:
    """``group_size`` when it divides every block Linear's input width of ``model``, else the largest smaller
    group size that does (else -1, per-channel)."""
    if model is None or group_size == -1:
        return group_size
    from slimtune.models.blocks import linear_weight
    from slimtune.quantize.weight_only.api import block_targets
    from slimtune.quantize.weight_only.config import GROUP_SIZES

    widths = {int(linear_weight(m).shape[1]) for m in block_targets(model).values()}
    for g in sorted((g for g in GROUP_SIZES if 0 < g <= group_size), reverse=True):
        if all(w % g == 0 for w in widths):
            return g
    return -1


def lm_quant_candidates(
    model: nn.Module | None = None,
    *,
    group_size: int = 128,
    methods: Iterable[str] = WEIGHT_ONLY,
    int8: bool = True,
    smoothquant: bool = True,
    bits_budget: float | None = None,
    samples: int = 32,
) -> list[LMQuantCandidate]:
    """The LM quantization candidates (see the module docstring): int4 symmetric ``group_size`` for each of
    ``methods``; int8 per-channel RTN when ``int8``; SmoothQuant W8A8 dynamic (α 0.5) when ``smoothquant``;
    GPTQ int4 with the most sensitive layers at 8 bits under ``bits_budget`` stored bits per weight when given and
    above the int4 grid's own stored bits (SmolLM2 falls back to g64, already 4.5 bits: give e.g. 4.75).
    ``samples``: calibration windows for the methods that take them."""
    methods = tuple(methods)
    unknown = [m for m in methods if m not in WEIGHT_ONLY]
    if unknown:
        raise ConfigError(f"unknown weight-only method(s) {unknown}; choose from {', '.join(WEIGHT_ONLY)}")
    group = fitting_group(model, group_size)
    tag = "pc" if group == -1 else f"g{group}"
    int4_bits = stored_bits(4, group, symmetric=True)
    out: list[LMQuantCandidate] = []
    for method in methods:
        opts: dict[str, Any] = {"bits": 4, "group_size": group, "symmetric": True}
        if method in ("gptq", "awq"):
            opts["samples"] = samples
        out.append(LMQuantCandidate(f"int4-{method}-{tag}", method, opts, int4_bits))
    if int8:
        opts = {"bits": 8, "group_size": -1, "symmetric": True}
        out.append(LMQuantCandidate("int8-rtn-pc", "rtn", opts, stored_bits(8, -1, symmetric=True)))
    if smoothquant:
        opts = {"alpha": 0.5, "mode": "dynamic", "samples": samples}
        out.append(LMQuantCandidate("w8a8-smoothquant", "smoothquant", opts, 8.0))
    if bits_budget is not None and bits_budget > int4_bits:  # else no room for any 8-bit layer: not listed
        opts = {"bits": 4, "group_size": group, "symmetric": True, "samples": samples, "bits_budget": bits_budget}
        out.append(LMQuantCandidate(f"mixed-gptq-{tag}-b{bits_budget:g}", "gptq", opts, bits_budget))
    return out
