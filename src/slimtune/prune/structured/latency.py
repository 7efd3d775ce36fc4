"""Latency-aware structured pruning (HALP-style): a measured table of every Conv/Linear's ONNX Runtime latency as
a function of its input and output widths on this CPU, a predictor of a pruned model's latency from the table,
and a greedy planner that removes, step by step, the units losing the least importance per millisecond saved.

MACs are a poor guide on a CPU: ORT runs convolutions in blocks of 8 or 16 channels (NCHWc), so cutting a thin
high-resolution layer from 16 to 12 channels costs accuracy and saves nothing, while the same MACs taken from a
wide low-resolution layer do. The table sees that; a MAC count does not. Each layer is timed alone (a one-node
graph at the model's batch and spatial size), so it also pays the layout reorders that a whole graph shares; the
rest of the model (activations, adds, pooling) is the measured whole-model latency minus the layers' sum and is
calibrated: whole-model latencies of a few uniformly pruned copies fit ``a + b * (sum of the layers)``, so a
target fraction of the real latency converts into the table's units. ``benchmarks/latency_aware_pruning.py``
reports predicted against measured latency.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtune._io import atomic_path
from slimtune.errors import ConfigError, UnsupportedModelError

POINTS = 8  # widths timed per axis of a layer


@dataclass
class LayerCurve:
    """One layer's latency (ms) on a grid of input widths ``cin`` × output widths ``cout``; a depthwise
    convolution (as many groups as channels) has one axis: ``cin == cout``."""

    kind: str  # "conv", "depthwise" or "linear"
    full: tuple[int, int]
    cin: list[int]
    cout: list[int]
    ms: list[list[float]]

    def at(self, cin: float, cout: float) -> float:
        """Latency at these widths, bilinear between the timed grid points (clamped to the grid)."""
        if self.kind == "depthwise":
            return float(np.interp(cin, self.cin, [row[0] for row in self.ms]))
        rows = [float(np.interp(cout, self.cout, row)) for row in self.ms]
        return float(np.interp(cin, self.cin, rows))


@dataclass
class LatencyTable:
    """Per-layer latency curves of one model on one runtime, batch and thread count, and the whole model's
    measured latency (``model_ms``). ``scale`` and ``offset`` map the layers' sum to whole-model milliseconds:
    fitted by ``calibrate`` on measured pruned copies, else 1 and what the layers leave of ``model_ms``."""

    batch: int
    threads: int
    model_ms: float
    layers: dict[str, LayerCurve] = field(default_factory=dict)
    runtime: str = "onnxruntime"
    scale: float = 1.0
    offset: float | None = None
    calibration: list[tuple[float, float]] = field(default_factory=list)  # (layers' sum, measured ms)

    def layer_sum(self, widths: dict[str, tuple[float, float]]) -> float:
        return sum(c.at(*widths.get(n, c.full)) for n, c in self.layers.items())

    def predict(self, widths: dict[str, tuple[float, float]]) -> float:
        """Whole-model latency with the named layers at these (input, output) widths, the others at full."""
        offset = self.model_ms - self.layer_sum({}) if self.offset is None else self.offset
        return offset + self.scale * self.layer_sum(widths)

    def calibrate(self, points: list[tuple[float, float]]) -> bool:
        """Fit ``offset + scale * layer sum`` to measured (layer sum, ms) points by least squares; kept only when
        it explains the points (R² ≥ 0.9) with a plausible scale (0.5–2): timings on a loaded machine can fit
        nonsense, and then the uncalibrated mapping is safer. Returns whether the fit was kept."""
        self.calibration = [(float(a), float(b)) for a, b in points]
        xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        if len(points) < 3 or np.ptp(xs) <= 0 or np.ptp(ys) <= 0:
            return False
        scale, offset = np.polyfit(xs, ys, 1)
        r2 = 1 - float(np.sum((ys - (offset + scale * xs)) ** 2)) / float(np.sum((ys - ys.mean()) ** 2))
        if r2 < 0.9 or not 0.5 <= scale <= 2.0:
            return False
        self.scale, self.offset = float(scale), float(offset)
        return True

    def save(self, path: str | Path) -> Path:
        out = Path(path)
        with atomic_path(out) as tmp:
            Path(tmp).write_text(json.dumps(asdict(self), indent=1))
        return out

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        try:
            raw = json.loads(Path(path).read_text())
            layers = {n: LayerCurve(**{**c, "full": tuple(c["full"])}) for n, c in raw.pop("layers").items()}
            raw["calibration"] = [tuple(p) for p in raw.get("calibration", [])]
            return cls(**raw, layers=layers)
        except FileNotFoundError:
            raise ConfigError(f"latency_table {path} does not exist; leave it out to measure one") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"latency_table {path} is not a slimtune latency table ({exc}); measure it again"
            ) from None


def _grid(full: int, step: int) -> list[int]:
    """At most POINTS widths from ``step`` to ``full`` on multiples of ``step`` (full always included)."""
    step = max(1, step)
    stride = step * max(1, math.ceil(full / step / POINTS))
    return sorted({*range(stride, full, stride), full}) if full > stride else [full]


def _conv_node(module: nn.Conv2d | nn.Conv1d, shape: tuple[int, ...], cin: int, cout: int) -> Any:
    """A one-Conv ONNX model of ``module``'s geometry at these widths (random weights)."""
    from onnx import TensorProto, helper, numpy_helper

    k = list(module.kernel_size)
    groups = cin if module.groups > 1 else 1
    if isinstance(module.padding, str):
        pad_attr: dict[str, Any] = {"auto_pad": "SAME_UPPER" if module.padding == "same" else "VALID"}
    else:
        pad_attr = {"pads": list(module.padding) * 2}
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((cout, cin // groups, *k)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(cout, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=list(module.stride),
                            dilations=list(module.dilation), group=groups, **pad_attr)  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [shape[0], cin, *shape[2:]])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(
        helper.make_graph([node], "layer", [x], [y], [w, b]), opset_imports=[helper.make_opsetid("", 17)]
    )


def _linear_node(rows: int, cin: int, cout: int) -> Any:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((cout, cin)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(cout, np.float32), "b")
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, cin])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    return helper.make_model(
        helper.make_graph([node], "layer", [x], [y], [w, b]), opset_imports=[helper.make_opsetid("", 17)]
    )


def _time_ms(session: Any, feed: dict[str, np.ndarray], *, budget_s: float, repeats: int) -> float:
    """Median of up to ``repeats`` calls (at least 5) within ``budget_s``, after 3 warm-up calls."""
    for _ in range(3):
        session.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 5 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def _session(model_or_path: Any, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    data = model_or_path.SerializeToString() if hasattr(model_or_path, "SerializeToString") else str(model_or_path)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def layer_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """Every plain Conv1d/Conv2d (or depthwise) and Linear with the shape of the input it sees on ``example``."""
    shapes: dict[str, tuple[nn.Module, tuple[int, ...]]] = {}
    hooks = []

    def keep(name: str) -> Any:
        def hook(mod: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
            shapes.setdefault(name, (mod, tuple(args[0].shape)))

        return hook

    for name, m in model.named_modules():
        conv = isinstance(m, nn.Conv1d | nn.Conv2d) and m.padding_mode == "zeros"
        if conv and m.groups not in (1, m.in_channels):
            continue
        if conv or isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(keep(name)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def time_model(model: nn.Module, example: torch.Tensor, *, batch: int, threads: int, budget_s: float = 0.5) -> float:
    """Median ONNX Runtime latency (ms) of ``model`` on ``batch`` copies of ``example``'s first item."""
    from slimtune.export.onnx import export_onnx

    one = example[:1]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = export_onnx(model, one, Path(tmp) / "model.onnx")
        except UnsupportedModelError as exc:
            raise UnsupportedModelError(f"latency-aware pruning needs an ONNX-exportable model: {exc}") from None
        session = _session(path, threads)
        feed = {session.get_inputs()[0].name: one.expand(batch, *one.shape[1:]).contiguous().numpy()}
        return _time_ms(session, feed, budget_s=budget_s, repeats=200)


def measure_latency_table(
    model: nn.Module,
    example: torch.Tensor,
    *,
    batch: int = 32,
    threads: int = 1,
    step: int | dict[str, int] = 8,
    budget_s: float = 0.02,
    repeats: int = 20,
    passes: int = 3,
) -> LatencyTable:
    """Time every Conv/Linear of ``model`` alone in ONNX Runtime on a grid of widths (multiples of ``step``, or
    of ``step[layer]``), at ``batch`` copies of ``example``'s first item, and the whole model. Every point is
    timed in each of ``passes`` interleaved passes over the whole grid, each in a new session, and keeps its
    fastest pass median: on a loaded machine one session's thread pool can stall ×10 for its whole life (seen on
    2 busy cores), and a burst of load hits one pass, not the table."""
    one = example[:1]
    big = one.expand(batch, *one.shape[1:]).contiguous()
    model = model.eval()
    rng = np.random.default_rng(0)
    points: list[tuple[str, int, int, Any, dict[str, np.ndarray]]] = []  # (layer, i, j, graph, feed)
    shapes: dict[str, tuple[str, tuple[int, int], list[int], list[int]]] = {}
    for name, (m, shape) in layer_shapes(model, big).items():
        s = step.get(name, 8) if isinstance(step, dict) else step
        rows = math.prod(shape[:-1])
        if isinstance(m, nn.Linear):
            full, kind = (m.in_features, m.out_features), "linear"
        else:
            full = (int(m.in_channels), int(m.out_channels))  # type: ignore[arg-type]
            kind = "depthwise" if int(m.groups) > 1 else "conv"  # type: ignore[arg-type]
        cins = _grid(full[0], s if full[0] >= 2 * s else full[0])
        couts = cins if kind == "depthwise" else _grid(full[1], s if full[1] >= 2 * s else full[1])
        shapes[name] = (kind, full, cins, couts)
        for i, cin in enumerate(cins):
            for j, cout in enumerate([cin] if kind == "depthwise" else couts):
                if kind == "linear":
                    graph, x_shape = _linear_node(rows, cin, cout), (rows, cin)
                else:
                    graph, x_shape = _conv_node(m, shape, cin, cout), (shape[0], cin, *shape[2:])  # type: ignore[arg-type,assignment]
                feed = {"x": rng.standard_normal(x_shape).astype(np.float32)}
                points.append((name, i, j, graph, feed))
    best: dict[tuple[str, int, int], float] = {}
    model_ms = math.inf
    for _ in range(max(1, passes)):
        model_ms = min(model_ms, time_model(model, one, batch=batch, threads=threads))
        for name, i, j, graph, feed in points:  # a fresh session each pass: a stalled thread pool stays in one
            ms = _time_ms(_session(graph, threads), feed, budget_s=budget_s, repeats=repeats)
            best[name, i, j] = min(best.get((name, i, j), math.inf), ms)
    table = LatencyTable(batch=batch, threads=threads, model_ms=model_ms)
    for name, (kind, full, cins, couts) in shapes.items():
        width = 1 if kind == "depthwise" else len(couts)
        grid = [[best[name, i, j] for j in range(width)] for i in range(len(cins))]
        table.layers[name] = LayerCurve(kind, full, cins, couts, grid)
    return table
