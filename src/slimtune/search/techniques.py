"""What the search does to one base: build it from the teacher with the library's own verbs (``prune_``,
``student_from_teacher`` + ``distill_``, magnitude pruning + ``cluster_``), train it for a number of
epochs, export it to ONNX, quantize it with ``quantize_onnx`` and measure every variant in ONNX Runtime."""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtune._io import path_bytes
from slimtune.data.core import DataSplits
from slimtune.errors import DataError, UnsupportedModelError
from slimtune.search.space import Base, SearchConfig
from slimtune.train.loop import TrainConfig, fit


def tensor_x(x: torch.Tensor | list[str], what: str = "search") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise DataError(
            f"{what} needs tensor inputs; tokenize text first with slimtune.models.inputs.tokenize_splits "
            "(recipes and slimtune stage do it)"
        )
    return x


def _trainable_copy(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model)
    for p in out.parameters():  # a teacher used for distillation is frozen: its copies must train
        p.requires_grad_(True)
    return out.train()


def _scaled(widths: list[int], width: float) -> list[int]:
    return [max(2, round(w * width)) for w in widths]


def make_student(teacher: nn.Module, width: float, data: DataSplits) -> nn.Module:
    """A student ``width`` times the teacher: narrower hidden layers (MLPs, initialised from the teacher),
    fewer encoder layers (transformers, cut from the teacher) or narrower stages (resnet-small)."""
    from slimtune.distill.students import StudentConfig, build_student
    from slimtune.models import build
    from slimtune.models.hf import HFClassifier
    from slimtune.models.transformer import TransformerClassifier
    from slimtune.models.zoo import MLP

    if isinstance(teacher, MLP):
        hidden = [m.out_features for m in teacher.net if isinstance(m, nn.Linear)][:-1]
        return build_student(teacher, StudentConfig(hidden=tuple(_scaled(hidden, width))))
    if isinstance(teacher, TransformerClassifier | HFClassifier):
        if isinstance(teacher, TransformerClassifier):
            n = len(teacher.layers)
        else:
            cfg: Any = teacher.model.config
            n = int(getattr(cfg, "num_hidden_layers", None) or cfg.n_layers)
        keep = max(1, round(n * width))
        layers = tuple(sorted({round(i * (n - 1) / max(1, keep - 1)) for i in range(keep)}))
        return build_student(teacher, StudentConfig(layers=layers))
    spec: dict[str, Any] = getattr(teacher, "slimtune_spec", {})
    if spec.get("arch") == "resnet-small":
        options = dict(spec.get("options", {}))
        options["widths"] = _scaled(list(options.get("widths", (16, 32, 64))), width)
        return build("resnet-small", input_shape=data.input_shape, num_classes=data.num_classes, **options)
    raise UnsupportedModelError(
        f"no student family for {type(teacher).__name__}: students are made for mlp, lenet-300-100, "
        "resnet-small, transformer-small and BERT-family teachers"
    )


def make_base(teacher: nn.Module, base: Base, data: DataSplits, *, seed: int = 0) -> nn.Module:
    """The untrained base: the teacher transformed by the technique ``base`` names."""
    from slimtune.prune import MagnitudePruneConfig, StructuredPruneConfig, prune_
    from slimtune.quantize.clustering import ClusterConfig, cluster_

    torch.manual_seed(seed)
    if base.kind == "dense":
        return teacher
    if base.kind == "student":
        student = make_student(teacher, float(base.params["width"]), data)
        if "ratio" in base.params:  # composed: the student (cut from the teacher's weights) is pruned too
            prune_(student, StructuredPruneConfig(ratio=float(base.params["ratio"])), data=data)
        return student
    model = _trainable_copy(teacher)
    if base.kind == "prune":
        prune_(model, StructuredPruneConfig(ratio=float(base.params["ratio"])), data=data)
    elif base.kind == "sparse":
        prune_(model, MagnitudePruneConfig(sparsity=float(base.params["sparsity"])))
        cluster_(model, ClusterConfig(bits=int(base.params["bits"])))  # zeros stay zero: they are not clustered
    else:
        raise UnsupportedModelError(f"unknown base kind {base.kind!r}")
    return model


def train_base(
    model: nn.Module,
    base: Base,
    teacher: nn.Module,
    data: DataSplits,
    *,
    epochs: int,
    config: SearchConfig,
    cache: Path,
) -> None:
    """``epochs`` more epochs of recovery: distillation for students, centroid fine-tuning for clustered
    bases (the zeros and the shared values are kept), plain fine-tuning for pruned ones."""
    from slimtune.distill import distill_
    from slimtune.quantize.clustering import CentroidFineTune

    if epochs <= 0 or not base.trainable:
        return
    lr = config.student_lr if base.kind == "student" and config.student_lr is not None else config.lr
    train = TrainConfig(epochs=epochs, lr=lr, batch_size=config.batch_size, seed=config.seed)
    torch.manual_seed(config.seed)
    if base.kind == "student":
        distill_(model, teacher=teacher, data=data, train=train, cache=cache, progress=False)
    elif base.kind == "sparse":
        fit(model, data, config=train, callbacks=[CentroidFineTune()], progress=False, desc="recover")
    else:
        fit(model, data, config=train, progress=False, desc="recover")


def export_variants(
    model: nn.Module, precisions: list[str], data: DataSplits, folder: Path, *, calibration: int
) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """The fp32 ONNX export of ``model`` and its int8 variants, one file per precision, and notes per
    precision (the layers mixed precision kept in fp32)."""
    from slimtune.export.onnx import export_onnx
    from slimtune.quantize.api import quantize_onnx
    from slimtune.quantize.mixed import MixedPrecisionConfig, quantize_model
    from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config
    from slimtune.quantize.ort_static import OrtStaticInt8Config

    x = tensor_x(data.test.x)
    fp32 = export_onnx(model, x[:1], folder / "model.fp32.onnx")
    calib = tensor_x(data.calibration(min(len(data.train), calibration)).x)
    paths: dict[str, Path] = {}
    notes: dict[str, dict[str, Any]] = {}
    for precision in precisions:
        path = folder / f"model.{precision}.onnx"
        if precision == "fp32":
            path = fp32
        elif precision == "int8-dynamic":
            quantize_onnx(fp32, path, OrtDynamicInt8Config())
        elif precision == "int8-static":  # ops auto: the whole int8 chain on conv nets
            quantize_onnx(fp32, path, OrtStaticInt8Config(), calibration=calib)
        elif precision == "int8-static-weights":
            quantize_onnx(fp32, path, OrtStaticInt8Config(ops="weights"), calibration=calib)
        else:
            mixed = MixedPrecisionConfig(max_fp32_layers=1, examples=min(256, len(calib)))
            info = quantize_model(
                model,
                path,
                OrtStaticInt8Config(),
                example=x[:1],
                calibration=calib,
                mixed_precision=mixed,
                verify=False,  # candidates are judged by their measured accuracy
            )
            notes[precision] = {"fp32_layers": sorted(info["mixed_precision"]["fp32_layers"])}
        paths[precision] = path
    return paths, notes


def onnx_accuracy(path: Path, x: torch.Tensor, y: torch.Tensor) -> float:
    from slimtune.export.onnx import ort_predict, ort_session

    logits = ort_predict(ort_session(path, threads=torch.get_num_threads()), x.numpy())
    return float((logits.argmax(1) == y.numpy()).mean())


def ort_latency(path: Path, x: torch.Tensor, *, batch_sizes: tuple[int, ...] = (1, 8), budget_s: float = 0.3) -> dict:
    """Median ONNX Runtime latency in ms per batch size of one model, about ``budget_s`` of timed calls each."""
    return ort_latencies({"model": path}, x, batch_sizes=batch_sizes, budget_s=budget_s)["model"]


def ort_latencies(
    paths: dict[str, Path],
    x: torch.Tensor,
    *,
    batch_sizes: tuple[int, ...] = (1, 8),
    budget_s: float = 0.3,
    rounds: int = 15,
    reference: str | None = None,
) -> dict[str, dict[str, float]]:
    """ONNX Runtime latency in ms per model and batch size, the models timed **interleaved**: ``rounds``
    rounds, each timing a short block of calls of every model (the starting model rotating), and the
    median per-call time of each model's blocks. Models timed one after another on a busy machine see
    different loads (±60% seen on 2 cores) and noise decides which is faster; interleaved, a load change
    hits every model of the round alike, so their ratios hold. About ``budget_s`` of calls per model and
    batch size. With ``reference`` (a key of ``paths``), each model's latency is the reference's median times
    the median of the model's **paired per-round ratios** to the reference (a round's load cancels in its
    ratio), and ``out[model]["spread_batch<n>"]`` records (p90 - p10) / median of those ratios."""
    from slimtune.export.onnx import ort_session

    keys = list(paths)
    sessions = {k: ort_session(paths[k], threads=torch.get_num_threads()) for k in keys}
    out: dict[str, dict[str, float]] = {k: {} for k in keys}
    for b in batch_sizes:
        feeds, block = {}, {}
        for k in keys:
            session = sessions[k]
            feeds[k] = {session.get_inputs()[0].name: np.concatenate([x.numpy()] * -(-b // len(x)))[:b]}
            for _ in range(5):
                session.run(None, feeds[k])
            start = time.perf_counter()
            session.run(None, feeds[k])
            one = max(time.perf_counter() - start, 1e-6)
            block[k] = int(min(200, max(1, budget_s / rounds / one)))
        per_call: dict[str, list[float]] = {k: [] for k in keys}
        for r in range(rounds):
            for i in range(len(keys)):
                k = keys[(r + i) % len(keys)]
                session, feed = sessions[k], feeds[k]
                t0 = time.perf_counter()
                for _ in range(block[k]):
                    session.run(None, feed)
                per_call[k].append((time.perf_counter() - t0) * 1000 / block[k])
        for k in keys:
            out[k][f"batch{b}"] = statistics.median(per_call[k])
            if reference is not None and k != reference:
                ratios = sorted(t / r for t, r in zip(per_call[k], per_call[reference]))
                mid = statistics.median(ratios)
                out[k][f"batch{b}"] = statistics.median(per_call[reference]) * mid
                lo, hi = ratios[int(0.1 * (len(ratios) - 1))], ratios[round(0.9 * (len(ratios) - 1))]
                out[k][f"spread_batch{b}"] = round((hi - lo) / mid, 4)
    return out


def measure_variants(
    model: nn.Module, paths: dict[str, Path], data: DataSplits, *, quick_latency: bool
) -> dict[str, dict[str, Any]]:
    """Validation accuracy (in ONNX Runtime), bytes on disk and MACs of each variant; with
    ``quick_latency`` also a short batch-1 timing used as the latency proxy until the front is measured."""
    from slimtune.evaluate.macs import count_macs

    x, y = tensor_x(data.val.x), data.val.y
    macs = int(count_macs(model, x[:1]))
    out: dict[str, dict[str, Any]] = {}
    for precision, path in paths.items():
        row: dict[str, Any] = {"val_accuracy": onnx_accuracy(path, x, y), "bytes": path_bytes(path), "macs": macs}
        if quick_latency:
            row["quick_latency_ms"] = ort_latency(path, x, batch_sizes=(1,), budget_s=0.05)["batch1"]
        out[precision] = row
    return out


def compressed_bytes(model: nn.Module, folder: Path) -> int:
    """Bytes of the Deep Compression file (sparse + clustered weights, entropy coded): the storage size."""
    from slimtune.quantize.codec import save_compressed

    return path_bytes(save_compressed(model, folder / "model.stc"))
