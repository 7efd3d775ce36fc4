"""The SmoothQuant W8A8 config: activation outliers moved into the weights, then ONNX Runtime int8.

``alpha`` is the migration strength (s_j = max|X_j|^α / max|W_j|^(1−α)); with ``alpha_grid`` the value is searched
on the perplexity of held-out windows (the best of the grid, measured on the int8-simulated model). ``mode``:
``dynamic`` (MatMulInteger, activations quantized per call) or ``static`` (QDQ with activation ranges from the
calibration windows). ``samples`` calibration windows give the per-channel activation maxima. ``smooth: false``
skips the smoothing: plain ONNX Runtime int8, the baseline SmoothQuant is measured against. ``fold_linear``
also smooths o_proj's and down_proj's inputs into v_proj / up_proj (exact in fp32; the reference skips them, but
with ONNX Runtime's per-tensor activation scales down_proj's input outliers, ~2,700× the median channel on
SmolLM2, dominate the int8 error: benchmarks/results/lm_smoothquant.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from slimtune._registry import did_you_mean
from slimtune.config import Config, check
from slimtune.errors import ConfigError

LAYER_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # α per group when alpha_scope is layer and alpha_grid is empty


@dataclass(frozen=True, kw_only=True)
class SmoothQuantConfig(Config):
    """SmoothQuant W8A8 (see the module docstring)."""

    alpha: float = 0.5
    smooth: bool = True
    fold_linear: bool = True
    alpha_grid: tuple[float, ...] = ()
    mode: Literal["dynamic", "static"] = "dynamic"
    samples: int = 32
    batch_size: int = 8
    search_windows: int = 8
    per_channel: bool = True
    reduce_range: bool = False
    alpha_scope: Literal["global", "layer"] = "global"
    fallback: int | str | tuple[Any, ...] = 0  # N | "auto" | Linear names
    fallback_rank: Literal["kl", "outlier"] = "kl"
    fallback_budget: float = 0.02
    fallback_windows: int = 2
    calibrate: Literal["minmax", "percentile", "entropy"] = "minmax"

    def __post_init__(self) -> None:
        check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1] (0.5 is the usual start), got {self.alpha}")
        bad = [a for a in self.alpha_grid if not 0.0 <= a <= 1.0]
        check(not bad, f"alpha_grid values must be in [0, 1], got {bad}; e.g. [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]")
        check(self.samples >= 1 and self.batch_size >= 1, "samples and batch_size must be >= 1")
        check(self.search_windows >= 1, f"search_windows must be >= 1, got {self.search_windows}")
        fb = self.fallback
        if isinstance(fb, str) and fb != "auto":
            hint = did_you_mean(fb, ["auto"])
            raise ConfigError(f"fallback must be a count, 'auto' or a list of Linear names, got {fb!r}{hint}")
        if isinstance(fb, int) and not isinstance(fb, bool):
            check(fb >= 0, f"fallback must be >= 0 units kept fp32 (or 'auto', or a list of names), got {fb}")
        if isinstance(fb, (list, tuple)):
            check(len(fb) > 0, "fallback: an empty list keeps nothing fp32; give 0, 'auto' or Linear names")
            check(all(isinstance(n, str) and n for n in fb), f"fallback names must be Linear names, got {list(fb)}")
        check(0.0 < self.fallback_budget < 10.0, f"fallback_budget is a relative perplexity rise in (0, 10) "
              f"(0.02 = +2%), got {self.fallback_budget}")  # fmt: skip
        check(self.fallback_windows >= 1, f"fallback_windows must be >= 1, got {self.fallback_windows}")
        check(self.smooth or self.alpha_scope == "global", "alpha_scope: layer needs smooth: true")

    @property
    def layer_grid(self) -> tuple[float, ...]:
        """The α candidates of each group under ``alpha_scope: layer``."""
        return self.alpha_grid or LAYER_GRID

    @property
    def needs_calibration(self) -> bool:
        return True
