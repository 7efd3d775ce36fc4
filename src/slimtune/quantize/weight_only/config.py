"""Configs of weight-only LM quantization: one frozen dataclass per method (torchao's shape).

Common options: ``bits`` (2, 3, 4 or 8), ``group_size`` (32/64/128 input columns share a scale, or -1 for one scale
per output channel), ``symmetric``, ``lm_head`` and ``embedding`` (also quantize the output projection / the
token embedding, with RTN on the same grid; with both on a tied model the one shared tensor is quantized once and
exports as one set of codes that ``GatherBlockQuantized`` and ``MatMulNBits`` both read; with only one of them
the tie is broken and the other stays fp32) and ``ragged_groups`` (a group size that does not divide a layer's
input width gives a shorter last group instead of an error). Calibration-based methods (GPTQ, AWQ) take
token windows: ``samples`` of them are used, ``batch_size`` at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

from slimtune.config import Config, check

BITS = (2, 3, 4, 8)
GROUP_SIZES = (-1, 16, 32, 64, 128, 256)


@dataclass(frozen=True, kw_only=True)
class WeightOnlyConfig(Config):
    """Options every weight-only method shares (see the module docstring)."""

    bits: int = 4
    group_size: int = 128
    symmetric: bool = True
    lm_head: bool = False
    embedding: bool = False
    ragged_groups: bool = False

    def __post_init__(self) -> None:
        check(self.bits in BITS, f"bits must be one of 2, 3, 4, 8 for weight-only quantization, got {self.bits}")
        check(
            self.group_size in GROUP_SIZES,
            f"group_size must be 32, 64, 128 (or 16, 256), or -1 for per-channel, got {self.group_size}",
        )

    @property
    def needs_calibration(self) -> bool:
        return False


@dataclass(frozen=True, kw_only=True)
class RTNConfig(WeightOnlyConfig):
    """Round-to-nearest on the per-group min/max grid; no calibration."""


@dataclass(frozen=True, kw_only=True)
class HQQConfig(WeightOnlyConfig):
    """Half-quadratic quantization: RTN's grid, then scales (and zero points) refined by an l_p shrink loop."""

    symmetric: bool = False
    iters: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.iters >= 1, f"iters must be >= 1, got {self.iters}")


@dataclass(frozen=True, kw_only=True)
class CalibratedConfig(WeightOnlyConfig):
    samples: int = 32
    batch_size: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.samples >= 1 and self.batch_size >= 1, "samples and batch_size must be >= 1")

    @property
    def needs_calibration(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class GPTQConfig(CalibratedConfig):
    """GPTQ: Hessian-weighted error feedback; ``damp`` × mean diag(H) is added to H, columns are processed in
    ``block_size`` blocks, ``act_order`` quantizes the columns with the largest diag(H) first; ``true_sequential``
    re-collects each stage's Hessian after the stages before it in the block are quantized (``sequential_stages``).
    With ``lm_head`` on, ``head_gptq`` quantizes it (and the embedding table it is tied to) by GPTQ too, on the
    quantized model's own final hidden states, instead of RTN."""

    damp: float = 0.01
    block_size: int = 128
    act_order: bool = True  # measured best with mse (SmolLM2 int4 g64: +14.5% perplexity vs +33.1% without both)
    static_groups: bool = True  # grids fixed from the original weight; False: fitted as the solver reaches them
    mse: bool = True  # grids by diag(H)-weighted rounding error over range shrinks instead of min/max
    true_sequential: bool = True  # each stage of a block (q|k|v, o, gate|up, down) sees the quantized stages' outputs
    refit_scales: bool = False  # least-squares scales for the chosen codes (``refit``): helps without gptaq only
    gptaq: bool = True  # also fit the fp32 model's own layer inputs (GPTAQ's asymmetric term, ``gptq_block``)
    gptaq_alpha: float = 0.25
    head_gptq: bool = True  # with lm_head: GPTQ on the final hidden states (the tied table too), not RTN

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.damp < 1, f"damp must be in (0, 1), got {self.damp}")
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        check(0 < self.gptaq_alpha <= 1, f"gptaq_alpha must be in (0, 1], got {self.gptaq_alpha}")


@dataclass(frozen=True, kw_only=True)
class AWQConfig(CalibratedConfig):
    """AWQ: per-input-channel scales s = x̄^r (normalised), r searched on a ``grid`` of ratios by the block output
    error on the first calibration batch; 1/s is folded into the previous norm or Linear, s into the weight."""

    grid: int = 20
    clip: bool = False  # also search a per-group range shrink (1 → 0.5) on the layer output error (not q/k)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.grid >= 1, f"grid must be >= 1, got {self.grid}")
        check(
            not (self.clip and self.ragged_groups),
            "AWQ's clip search needs whole groups: set clip: false or ragged_groups: false",
        )


@dataclass(frozen=True, kw_only=True)
class AWQGPTQConfig(GPTQConfig):
    """AWQ's channel scales (searched on a ``grid`` of ratios and folded), then GPTQ on the scaled weights
    (``awq_gptq``); GPTQ's options apply, except true_sequential and gptaq (method gptq)."""

    grid: int = 20
    true_sequential: bool = False  # not supported here: AWQ's scales are searched on the block's own inputs
    gptaq: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.grid >= 1, f"grid must be >= 1, got {self.grid}")
        check(
            not self.true_sequential and not self.gptaq,
            "awq-gptq quantizes every layer of a block on the same inputs: true_sequential and gptaq are options of "
            "method gptq; set them false here or use gptq",
        )
