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
from typing import Literal

from slimtune.config import Config, check


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

    def __post_init__(self) -> None:
        check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1] (0.5 is the usual start), got {self.alpha}")
        bad = [a for a in self.alpha_grid if not 0.0 <= a <= 1.0]
        check(not bad, f"alpha_grid values must be in [0, 1], got {bad}; e.g. [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]")
        check(self.samples >= 1 and self.batch_size >= 1, "samples and batch_size must be >= 1")
        check(self.search_windows >= 1, f"search_windows must be >= 1, got {self.search_windows}")

    @property
    def needs_calibration(self) -> bool:
        return True
