"""ONNX export with dynamic batch (and sequence) axes, and the parity check every export must pass."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimtune._io import atomic_path
from slimtune.config import Config, check
from slimtune.errors import ParityError, UnsupportedModelError

INPUT, OUTPUT = "input", "logits"
OPT_LEVELS = ("none", "basic", "extended", "all")
PROTOBUF_LIMIT = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class ExportConfig(Config):
    opset: int = 17
    # parity tolerances: fp32 exports must match closely; int8 ones by argmax agreement
    max_abs_diff: float = 1e-3
    min_argmax_agreement: float = 0.99
    max_accuracy_drop: float = 1.0  # percentage points, when labels are known
    # weights in a side file (<model>.onnx.data): needed past protobuf's 2 GB; None = only when that big
    external_data: bool | None = None
    # ONNX Runtime graph optimisation saved into the file (fusions, constant folding); 'extended' and 'all'
    # may use CPU-specific kernels, so apply them on the machine that will run the model
    optimize: Literal["none", "basic", "extended", "all"] = "none"

    def __post_init__(self) -> None:
        check(7 <= self.opset <= 21, f"opset must be in 7..21, got {self.opset}")
        check(self.optimize in OPT_LEVELS, f"optimize must be one of {', '.join(OPT_LEVELS)}, got {self.optimize!r}")
        check(0 <= self.min_argmax_agreement <= 1, "min_argmax_agreement must be in [0, 1]")


@contextlib.contextmanager
def _silence_stdout_fd() -> Iterator[None]:
    """torch's TorchScript exporter switches its C++ ONNX log on (a bug in torch 2.13's setup_onnx_logging) and
    prints the whole IR graph to file descriptor 1 when an export fails; keep that out of the user's terminal."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (captured, embedded): nothing to silence
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    *,
    opset: int = 17,
    external_data: bool | None = None,
    optimize: str = "none",
) -> Path:
    """Export ``model`` (eval mode) to ``path`` atomically, batch axis (and sequence axis for ids) dynamic.

    ``external_data``: weights in ``<path>.data`` beside the graph (``None``: only past protobuf's 2 GB
    limit). ``optimize``: an ONNX Runtime graph optimisation level applied offline and saved.
    """
    out = Path(path)
    axes: dict[int, str] = {0: "batch"}
    if example.dtype == torch.long and example.ndim == 2:
        axes[1] = "sequence"
    was_training = model.training
    model.eval()
    try:
        with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad(), _silence_stdout_fd():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: axes, OUTPUT: {0: "batch"}},
            )
    except Exception as exc:
        raise UnsupportedModelError(
            f"ONNX export of {type(model).__name__} failed: {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        model.train(was_training)
    if optimize != "none":
        optimize_onnx(out, level=optimize)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > PROTOBUF_LIMIT // 2
    if external_data or (external_data is None and big):
        to_external_data(out)
    return out


def optimize_onnx(path: str | Path, *, level: str) -> Path:
    """Rewrite ``path`` with ONNX Runtime's graph optimisations at ``level`` (basic, extended, all)."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}  # fmt: skip
    if level not in levels:
        raise UnsupportedModelError(f"unknown optimisation level '{level}'; use one of {', '.join(levels)}")
    target = Path(path)
    with atomic_path(target) as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = levels[level]
        opts.optimized_model_filepath = str(tmp)
        opts.log_severity_level = 3
        ort.InferenceSession(str(target), opts, providers=["CPUExecutionProvider"])
    return target


def to_external_data(path: str | Path) -> Path:
    """Move the weights of ``path`` into ``<name>.data`` beside it (the layout past protobuf's 2 GB)."""
    import onnx

    target = Path(path)
    model = onnx.load(str(target))
    data_name = f"{target.name}.data"
    (target.parent / data_name).unlink(missing_ok=True)
    with atomic_path(target) as tmp:
        onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)  # fmt: skip
    return target


def ort_session(path: str | Path, *, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_predict(session: Any, x: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i : i + batch_size]})[0] for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def agreement_stats(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """How logits ``got`` agree with ``ref``: max |Δ| (and where), argmax agreement, and the flips that are
    *near ties*: the reference's top-2 margin is below twice the *typical* perturbation (the 90th percentile
    over examples of their largest |Δ|), so noise of a size seen on many examples could flip them. Those
    ``argmax_agreement_beyond_ties`` counts as agreeing. (The worst |Δ| would not do: a model that is far off
    on a few examples would make every flip a "tie".)"""
    delta = np.abs(ref - got)
    max_diff = float(delta.max()) if delta.size else 0.0
    worst_row, worst_col = (int(i) for i in np.unravel_index(int(delta.argmax()), delta.shape))
    typical = float(np.quantile(delta.max(axis=1), 0.9)) if delta.size else 0.0
    disagree = ref.argmax(1) != got.argmax(1)
    top2 = np.sort(ref, axis=1)[:, -2:] if ref.shape[1] > 1 else np.zeros((len(ref), 2))
    near_tie = (top2[:, 1] - top2[:, 0]) <= 2 * typical
    return {
        "max_abs_diff": max_diff,
        "worst_example": worst_row,  # where |Δ| is largest: test example and logit index
        "worst_logit": worst_col,
        "argmax_agreement": float(1 - disagree.mean()),
        "near_tie_flips": int((disagree & near_tie).sum()),
        "argmax_agreement_beyond_ties": float(1 - (disagree & ~near_tie).mean()),
        "typical_abs_diff": typical,
    }


def effective_agreement(stats: dict[str, Any], min_agreement: float) -> float:
    """The agreement to hold against ``min_agreement``: beyond near ties, unless so many predictions flip that
    ties cannot explain them (more than ``MAX_TIE_SHARE`` below the bar): then the raw agreement."""
    if stats["argmax_agreement"] < min_agreement - MAX_TIE_SHARE:
        return float(stats["argmax_agreement"])
    return float(stats.get("argmax_agreement_beyond_ties", stats["argmax_agreement"]))


def parity(model: nn.Module, onnx_path: str | Path, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, float]:
    """Compare ONNX Runtime with PyTorch on ``x``.

    Reports max |Δ| of the logits, argmax agreement, and how many disagreements are *near ties*:
    examples whose PyTorch top-2 logit margin is below twice the typical |Δ| (see ``agreement_stats``), i.e.
    flips that noise of that size could cause. ``argmax_agreement_beyond_ties`` counts those as agreeing.
    With labels ``y``, ``accuracy_delta`` is the accuracy lost in ONNX Runtime, in percentage points.
    """
    from slimtune.train.loop import predict

    ref = predict(model, x).numpy()
    got = ort_predict(ort_session(onnx_path), x.numpy())
    if got.shape != ref.shape:
        raise ParityError(
            f"'{onnx_path}' outputs shape {list(got.shape)} where the PyTorch model gives {list(ref.shape)}: "
            "it is not an export of this model"
        )
    out = {**agreement_stats(ref, got), "n": len(x)}
    if y is not None:
        labels = y.numpy()
        out["accuracy_delta"] = float(100 * ((ref.argmax(1) == labels).mean() - (got.argmax(1) == labels).mean()))
    return out


# a flip on a near tie is one any perturbation of the logits' size could cause, so it is excused; but a model
# whose logits are far off makes every example a "near tie": at most this share of examples may be excused
MAX_TIE_SHARE = 0.1


def check_parity(
    report: dict[str, float],
    *,
    what: str,
    max_abs_diff: float | None,
    min_argmax_agreement: float,
    max_accuracy_drop: float | None = None,
) -> None:
    """Raise ``ParityError`` when a parity report is out of tolerance (``max_abs_diff=None`` skips that check)."""
    if max_abs_diff is not None and report["max_abs_diff"] > max_abs_diff:
        raise ParityError(
            f"{what}: ONNX Runtime output differs from PyTorch by {report['max_abs_diff']:.3g} at "
            f"'{OUTPUT}'[{report.get('worst_example', '?')}, {report.get('worst_logit', '?')}] "
            f"(example, logit; > tolerance {max_abs_diff:g})"
        )
    drop = report.get("accuracy_delta")
    if max_accuracy_drop is not None and drop is not None and drop > max_accuracy_drop:
        raise ParityError(
            f"{what}: accuracy in ONNX Runtime is {drop:.2f} points below PyTorch (> tolerance {max_accuracy_drop:g})"
        )
    agreement = effective_agreement(report, min_argmax_agreement)  # the one rule, shared with ort-auto-int8
    if agreement < min_argmax_agreement:
        if agreement == report["argmax_agreement"] < min_argmax_agreement - MAX_TIE_SHARE:
            which = f"only {agreement:.2%} of predictions (< required {min_argmax_agreement:.0%}, of which near ties "
            which += f"may excuse at most {MAX_TIE_SHARE:.0%})"
        else:
            which = f"{agreement:.2%} of predictions that are not near ties (< required {min_argmax_agreement:.0%})"
        raise ParityError(
            f"{what}: ONNX Runtime and PyTorch agree on {which}; max |Δ| of logits {report['max_abs_diff']:.3g}"
        )
