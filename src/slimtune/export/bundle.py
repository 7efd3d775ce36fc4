"""Write a deploy bundle: the ONNX model plus everything needed to run it elsewhere (see slimtune.runtime.bundle).

``export_bundle(model, "bundle/", data=data)`` exports fp32 (parity-checked) unless an already checked ONNX
file (e.g. the int8 model of a quantize stage) is given. The runtime reads it with onnxruntime + numpy only.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtune import __version__
from slimtune._io import prepare_out_dir, record_outputs, undo_on_failure, write_text
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, DataError
from slimtune.export.onnx import ExportConfig, check_parity, export_onnx, parity
from slimtune.runtime.bundle import FORMAT, FORMAT_VERSION, MANIFEST

INT8_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"}


def onnx_precision(path: str | Path) -> str:
    """'int8' when the graph executes quantized ops, else 'fp32'."""
    import onnx

    ops = {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    return "int8" if ops & INT8_OPS else "fp32"


def _input_spec(model: nn.Module, data: DataSplits | None, folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    spec: dict[str, Any] = getattr(model, "slimtune_spec", {})
    pre: dict[str, Any] = spec.get("preprocess", {})
    files: dict[str, str] = {}
    kind = data.kind if data is not None else ("text" if pre else "image")
    if kind == "text":
        if "hf_tokenizer" in pre:
            write_text(folder / "tokenizer.json", pre["hf_tokenizer"])
            tok = {"type": "hf", "max_length": int(pre["max_length"])}
        elif "tokenizer" in pre:
            write_text(folder / "tokenizer.json", json.dumps(pre["tokenizer"], ensure_ascii=False))
            tok = {"type": "word", "max_length": int(pre["max_length"])}
        else:
            raise ConfigError("this text model carries no tokenizer in its spec; train it through slimtune's loaders")
        files["tokenizer"] = "tokenizer.json"
        return {"kind": "text", "name": "input", "dtype": "int64", "tokenizer": tok}, files
    shape = spec.get("input_shape") or (list(data.input_shape) if data is not None else None)
    if not shape:
        raise ConfigError("cannot tell the model's input shape: build it with slimtune.models.build or pass data")
    inp: dict[str, Any] = {"kind": kind, "name": "input", "dtype": "float32", "shape": [int(s) for s in shape]}
    if data is not None and "pixel_scale" in data.meta:
        inp["pixel_scale"] = float(data.meta["pixel_scale"])  # type: ignore[arg-type]
    return inp, files


def _pad_id(model: nn.Module) -> int | None:
    pre: dict[str, Any] = getattr(model, "slimtune_spec", {}).get("preprocess", {})
    if "tokenizer" in pre:
        return 0  # slimtune's word tokenizer: [PAD] is id 0
    if "hf_tokenizer" in pre:
        from tokenizers import Tokenizer

        padding = Tokenizer.from_str(pre["hf_tokenizer"]).padding
        return int(padding["pad_id"]) if padding else None
    return None


def _padding_is_masked(onnx_path: Path, ids: torch.Tensor, pad_id: int | None, model: nn.Module) -> bool:
    """True when cutting trailing padding leaves the outputs unchanged (the model masks its padding), so the
    runtime may pad each batch only to its longest text instead of to max_length.

    A dynamic int8 graph computes its activation scales from the whole batch, padding included, so cutting
    padding moves its logits by a quantization step even when the model masks its padding: for it the float
    model must mask its padding (same 1e-4 test) and the graph's predictions must not change on the rows."""
    from slimtune.export.onnx import ort_session
    from slimtune.runtime.predictor import _dynamic_quantized

    if pad_id is None or len(ids) == 0:
        return False
    session = ort_session(onnx_path)
    rows = []
    for row in ids.numpy():
        used = np.nonzero(row != pad_id)[0]
        keep = int(used[-1]) + 1 if len(used) else 1
        if keep < len(row):
            rows.append((row, keep))
    outputs = [(session.run(None, {"input": r[None]})[0], session.run(None, {"input": r[None, :k]})[0])
               for r, k in rows]  # fmt: skip
    if all(np.abs(full - cut).max() <= 1e-4 for full, cut in outputs):
        return True
    if not _dynamic_quantized(onnx_path) or any((f.argmax(-1) != c.argmax(-1)).any() for f, c in outputs):
        return False
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for r, k in rows:
                full, cut = model(torch.from_numpy(r[None])), model(torch.from_numpy(r[None, :k]))
                if (full - cut).abs().max().item() > 1e-4:
                    return False
    except Exception:  # a model that takes only its fixed length cannot be cut
        return False
    finally:
        model.train(was_training)
    return True


def _labels(model: nn.Module, data: DataSplits | None) -> list[str]:
    if data is not None:
        return [str(n) for n in data.label_names]
    spec: dict[str, Any] = getattr(model, "slimtune_spec", {})
    names = spec.get("options", {}).get("label_names")
    return [str(n) for n in names] if names else [str(i) for i in range(int(spec.get("num_classes", 0)))]


def _check_fits(path: Path, inp: dict[str, Any], labels: list[str], *, source: Path) -> list[str]:
    """The ONNX model takes the bundle's inputs and predicts one class per label (else the bundle would lie).
    Returns the labels: class numbers when neither the data nor the model names them."""
    from slimtune.export.onnx import ort_session
    from slimtune.runtime.bundle import contract_problem

    try:
        session = ort_session(path)
    except Exception as exc:  # onnxruntime's own error types: a garbage or foreign file
        first = "".join(str(exc).strip().splitlines()[:1])[:160]
        raise DataError(f"{source} is not a loadable ONNX model ({first}); export the model again") from None
    if not labels:
        classes = (session.get_outputs()[0].shape or [None])[-1]
        labels = [str(i) for i in range(classes)] if isinstance(classes, int) else []
    problem = contract_problem(session, kind=inp["kind"], shape=inp.get("shape"), labels=len(labels))
    if problem:
        raise DataError(
            f"cannot bundle {source.name}: {problem}; fine-tune the model on this data first (a new head gets its "
            "classes) or pass the data it was trained on"
        )
    return labels


def export_bundle(
    model: nn.Module,
    out: str | Path,
    *,
    data: DataSplits | None = None,
    onnx: str | Path | None = None,
    parity_report: dict[str, Any] | None = None,
    export: ExportConfig | None = None,
    examples: int = 16,
    provenance: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write a bundle folder for ``model``; returns its path. ``onnx``: ship this graph (checked by the caller,
    whose ``parity_report`` is recorded) instead of exporting ``model`` in fp32 with a parity check here."""
    export = export or ExportConfig()
    existed = Path(out).exists()
    given = [] if onnx is None else [Path(onnx), Path(onnx).with_name(f"{Path(onnx).name}.data")]
    folder = prepare_out_dir(out, force=force, inputs=given)  # --force removes a prior bundle, never the graph given
    with undo_on_failure(folder, existed=existed):  # never leave a half-written bundle behind
        inp, files = _input_spec(model, data, folder)
        x_test = data.test.x if data is not None and isinstance(data.test.x, torch.Tensor) else None
        if onnx is None:
            if x_test is None:
                raise DataError("export_bundle needs data (its test split is the parity check) or an ONNX file")
            path = export_onnx(model, x_test[:1], folder / "model.onnx", opset=export.opset)
            parity_report = parity(model, path, x_test[:512], data.test.y[:512] if data is not None else None)
            check_parity(parity_report, what="bundle export", max_abs_diff=export.max_abs_diff,
                         min_argmax_agreement=export.min_argmax_agreement,
                         max_accuracy_drop=export.max_accuracy_drop)  # fmt: skip
        else:
            src = Path(onnx)
            if not src.is_file():
                raise DataError(f"ONNX file not found: {onnx}")
            side = src.with_name(f"{src.name}.data")  # external weights are referenced by the graph's file name
            path = folder / (src.name if side.is_file() else "model.onnx")
            if src.resolve() != path.resolve():  # a graph already in the bundle folder stays where it is
                shutil.copyfile(src, path)
            if side.is_file() and side.resolve() != (folder / side.name).resolve():
                shutil.copyfile(side, folder / side.name)
        files["model"] = path.name
        labels = _check_fits(path, inp, _labels(model, data), source=Path(onnx) if onnx is not None else path)
        if inp["kind"] == "text" and x_test is not None:
            inp["tokenizer"]["trim_padding"] = _padding_is_masked(path, x_test[:16], _pad_id(model), model)
        if inp["kind"] != "text" and x_test is not None and examples > 0:
            np.save(folder / "examples.npy", x_test[:examples].numpy().astype(np.float32), allow_pickle=False)
            files["examples"] = "examples.npy"
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "slimtune_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "precision": onnx_precision(path),
            "input": inp,
            "output": {"name": "logits", "labels": labels},
            "files": files,
            "parity": parity_report or {},
            "data": data.name if data is not None else None,
            "provenance": provenance or {},
        }
        write_text(folder / MANIFEST, json.dumps(manifest, indent=2, default=str))
        weights = [f"{path.name}.data"] if (folder / f"{path.name}.data").is_file() else []
        record_outputs(folder, MANIFEST, *files.values(), *weights)  # what a later force=True may replace
    return folder


def finish_bundle(folder: str | Path, report: Any) -> None:
    """Add the run's report and a model card to a bundle made by a recipe (called once the report exists)."""
    from slimtune.export.model_card import model_card

    root = Path(folder)
    report.write(root)
    record_outputs(root, "report.json", "report.md", "report.html", "MODEL_CARD.md")
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    write_text(root / "MODEL_CARD.md", model_card(manifest, report))
