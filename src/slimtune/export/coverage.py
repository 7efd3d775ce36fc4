"""Export coverage: every kind of model slimtune produces, exported to ONNX (and TorchScript) and checked.

``VARIANTS`` maps a variant name to a function that compresses a copy of a model and exports it; the
contract test runs every variant on every tiny architecture, and benchmarks/export_coverage.py on the
real ones. Adding a variant here adds its column to both.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slimtune._registry import Registry
from slimtune.data.core import DataSplits
from slimtune.errors import SlimtuneError
from slimtune.export.onnx import check_parity, export_onnx, parity
from slimtune.export.torchscript import export_torchscript, torchscript_parity
from slimtune.train.loop import TrainConfig

TOLERANCE = {"fp32": 1e-4, "int8": None}  # int8 graphs are held to argmax agreement, not |Δ|
MIN_AGREEMENT = {"fp32": 0.99, "int8": 0.99}


@dataclass
class Exported:
    reference: nn.Module  # what the ONNX graph must reproduce (the compressed torch model, or the fp32 source)
    onnx: Path
    precision: str  # "fp32" or "int8"
    torch_model: nn.Module | None  # the compressed torch model itself, exported to TorchScript too


Variant = Callable[[nn.Module, DataSplits, Path], Exported]
VARIANTS: Registry[Variant] = Registry("export variant")
QUICK = TrainConfig(epochs=1, batch_size=16, seed=0)


def _x(data: DataSplits) -> torch.Tensor:
    assert isinstance(data.test.x, torch.Tensor) and isinstance(data.train.x, torch.Tensor)
    return data.test.x


def _calibration(data: DataSplits) -> torch.Tensor:
    assert isinstance(data.train.x, torch.Tensor)
    return data.train.x[:64]


def _fp32(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    return Exported(model, export_onnx(model, _x(data)[:1], out / "model.onnx"), "fp32", model)


@VARIANTS.register("dense", help="the model as it is")
def _dense(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    return _fp32(model, data, out)


@VARIANTS.register("structured", help="structured pruning, half the units removed")
def _structured(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    from slimtune.prune import prune_
    from slimtune.prune.structured import StructuredPruneConfig

    prune_(model, StructuredPruneConfig(ratio=0.5), data=data)
    return _fp32(model, data, out)


@VARIANTS.register("sparse", help="80% magnitude sparsity")
def _sparse(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    from slimtune.prune import MagnitudePruneConfig, prune_

    prune_(model, MagnitudePruneConfig(sparsity=0.8), data=data)
    return _fp32(model, data, out)


@VARIANTS.register("clustered", help="4-bit weight clustering")
def _clustered(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    from slimtune.quantize.clustering import ClusterConfig, cluster_

    cluster_(model, ClusterConfig(bits=4))
    return _fp32(model, data, out)


@VARIANTS.register("binary", help="binary weights (sign · per-channel α), folded")
def _binary(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    from slimtune.quantize.binary import binarize_, fold_

    binarize_(model)
    fold_(model)
    return _fp32(model, data, out)


@VARIANTS.register("ternary", help="ternary weights (0 or ± per-channel α), folded")
def _ternary(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    from slimtune.quantize.binary import fold_, ternarize_

    ternarize_(model)
    fold_(model)
    return _fp32(model, data, out)


@VARIANTS.register("deep-compression", help="80% sparse, 4-bit clusters, Huffman-coded file, decoded")
def _deep_compression(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    from slimtune.prune import MagnitudePruneConfig, prune_
    from slimtune.quantize.clustering import ClusterConfig, cluster_
    from slimtune.quantize.codec import load_compressed, save_compressed

    prune_(model, MagnitudePruneConfig(sparsity=0.8), data=data)
    cluster_(model, ClusterConfig(bits=4, dtype="float16"))
    decoded = load_compressed(save_compressed(model, out / "model.stdc")).eval()
    return _fp32(decoded, data, out)


@VARIANTS.register("qat", help="quantization-aware training, exported as an int8 QDQ graph")
def _qat(model: nn.Module, data: DataSplits, out: Path) -> Exported:
    from slimtune.quantize.qat import QATConfig, export_qat_onnx, qat_

    x = _x(data)
    qat_(model, data, QATConfig(), train=QUICK, calibration=_calibration(data), progress=False)
    model.eval()
    return Exported(model, export_qat_onnx(model, x[:1], out / "model.onnx"), "int8", model)


def _ort(config: Any) -> Variant:
    def make(model: nn.Module, data: DataSplits, out: Path) -> Exported:
        from slimtune.quantize import quantize_onnx

        fp32 = export_onnx(model, _x(data)[:1], out / "fp32.onnx")
        quantize_onnx(fp32, out / "model.onnx", config, calibration=_calibration(data))
        return Exported(model, out / "model.onnx", "int8", None)

    return make


def _register_ort() -> None:
    from slimtune.quantize.ort_auto import OrtAutoInt8Config
    from slimtune.quantize.ort_dynamic import OrtDynamicInt8Config
    from slimtune.quantize.ort_static import OrtStaticInt8Config

    VARIANTS.add("ort-dynamic-int8", _ort(OrtDynamicInt8Config()), help="ONNX Runtime dynamic int8")
    VARIANTS.add("ort-static-int8", _ort(OrtStaticInt8Config(calibration_size=64)), help="ONNX Runtime static int8")
    auto = OrtAutoInt8Config(repeats=3)
    VARIANTS.add("ort-auto-int8", _ort(auto), help="ONNX Runtime int8, settings chosen by measurement")


_register_ort()


def check_cell(model: nn.Module, data: DataSplits, variant: str, out: Path) -> dict[str, Any]:
    """Compress a copy of ``model`` by ``variant``, export it, and check ONNX (and TorchScript) parity.

    Returns a row with ``ok`` and, on failure, ``error`` (the clear one-line message) instead of raising.
    """
    out.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"variant": variant, "ok": False}
    start = time.perf_counter()
    try:
        exported = VARIANTS.get(variant)(copy.deepcopy(model).eval(), data, out)
        x = _x(data)
        par = parity(exported.reference, exported.onnx, x, data.test.y)
        row.update(precision=exported.precision, max_abs_diff=par["max_abs_diff"],
                   agreement=par["argmax_agreement_beyond_ties"], raw_agreement=par["argmax_agreement"],
                   near_tie_flips=par.get("near_tie_flips", 0), onnx_bytes=exported.onnx.stat().st_size)  # fmt: skip
        check_parity(par, what=f"{variant} export", max_abs_diff=TOLERANCE[exported.precision],
                     min_argmax_agreement=MIN_AGREEMENT[exported.precision])  # fmt: skip
        if exported.torch_model is not None and exported.precision == "fp32":
            path = export_torchscript(exported.torch_model, x[:1], out / "model.pt")
            row["torchscript_max_abs_diff"] = torchscript_parity(exported.torch_model, path, x[:8])
        row["ok"] = True
    except SlimtuneError as exc:
        row["error"] = str(exc).splitlines()[0]
    except Exception as exc:  # a bug, not a clear refusal: keep the cell (and the table) but say what broke
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row
