"""Activation ranges for ONNX Runtime static int8 chosen by any registered slimtune observer (minmax,
moving-average, percentile, mse, entropy, or your own), handed to ORT's quantizer as
``TensorQuantOverrides`` (``rmin``/``rmax`` per tensor): ``OrtStaticInt8Config(range_observer="mse")``.

Every float tensor read or written by a node of the graph is observed, batch by batch, on the
calibration inputs run through the fp32 graph in ONNX Runtime itself.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtune.quantize.affine import QuantSpec
from slimtune.quantize.observers import make_observer

_FLOATS = (1, 10)  # TensorProto FLOAT, FLOAT16


def calibration_tensors(model: Any) -> list[str]:
    """Names of the float activations (not initializers) that a node of ``model`` reads or writes."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    infos = {v.name: v for v in itertools.chain(graph.value_info, graph.output, graph.input)}
    inits = {t.name for t in graph.initializer}
    names: list[str] = []
    for node in graph.node:
        for name in itertools.chain(node.input, node.output):
            info = infos.get(name)
            if info is None or name in inits or name in names or not info.type.HasField("tensor_type"):
                continue
            if info.type.tensor_type.elem_type in _FLOATS:
                names.append(name)
    return names


def observed_ranges(
    model_path: str | Path,
    x: np.ndarray,
    *,
    observer: str,
    batch_size: int = 32,
    spec: QuantSpec | None = None,
    **observer_options: Any,
) -> dict[str, list[dict[str, Any]]]:
    """Run ``x`` through the graph at ``model_path`` in batches, feed every activation to its own
    ``observer`` and return ORT ``TensorQuantOverrides``: ``{tensor: [{"rmin": ..., "rmax": ...}]}``.
    ``spec`` is the activation scheme the range is searched for (default 8-bit asymmetric)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    names = calibration_tensors(model)
    inputs = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    fetched = [n for n in names if n not in inputs]
    for name in fetched:
        if name not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # observe the graph as written
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    observers = {n: make_observer(observer, **observer_options) for n in names}
    for i in range(0, len(x), batch_size):
        feed = x[i : i + batch_size]
        for name, value in zip(fetched, session.run(fetched, {input_name: feed})):
            observers[name].update(torch.from_numpy(np.asarray(value, dtype=np.float32)))
        if input_name in observers:
            observers[input_name].update(torch.from_numpy(np.asarray(feed, dtype=np.float32)))
    spec = spec or QuantSpec.activations(8)
    out: dict[str, list[dict[str, Any]]] = {}
    for name, obs in observers.items():
        if int(obs.count) == 0:
            continue
        lo, hi = obs.range(spec)
        out[name] = [{"rmin": np.array(float(lo), dtype=np.float32), "rmax": np.array(float(hi), dtype=np.float32)}]
    return out


__all__ = ["calibration_tensors", "observed_ranges"]
