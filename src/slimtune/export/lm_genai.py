"""The onnxruntime-genai model-builder path of the KV-cache export, and the choice between it and slimtune's graph.

``LMExportConfig(builder=...)``: ``"slimtune"`` writes slimtune's own graph (``lm_fuse``, or traced); ``"genai"``
writes the model back as a plain Hugging Face folder (``models.lm_io.save_hf_folder``) and runs
``python -m onnxruntime_genai.models.builder -p fp32 -e cpu`` on it (fused GroupQueryAttention with RoPE inside,
SkipSimplifiedLayerNormalization); ``"auto"`` builds both when the builder can serve the model (package installed,
Llama family, blocks alike, not weight-only quantized, a slimtune tokenizer attached) and keeps the one that decodes
faster here (median of interleaved batch-1 decode timings), else slimtune's. Whichever path, the caller runs the same
parity check (``lm_parity``). The builder's graph has no ``position_ids`` input and serves right-padded batches only
(see ``runtime.decoder``); the runtime pads its prompts on the right.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from slimtune.errors import MissingDependencyError, UnsupportedModelError
from slimtune.export.lm_graph import LLAMA_LIKE, CausalLM

BUILDERS = ("auto", "slimtune", "genai")


def genai_installed() -> bool:
    return importlib.util.find_spec("onnxruntime_genai") is not None


def genai_unsupported_reason(model: CausalLM) -> str | None:
    """Why onnxruntime-genai's builder cannot serve ``model`` (None when it can)."""
    if not genai_installed():
        return "onnxruntime-genai is not installed (pip install onnxruntime-genai)"
    kind = str(getattr(model.config, "model_type", ""))
    if kind not in LLAMA_LIKE:
        return f"model type '{kind}' is not one slimtune hands to the builder ({', '.join(LLAMA_LIKE)})"
    if any(hasattr(m, "slimtune_qweight") for m in model.modules()):
        return "the model is weight-only quantized (slimtune's MatMulNBits export keeps its own codes)"
    from slimtune.models.lm_layers import layer_shapes, uniform_shape

    if uniform_shape(layer_shapes(model)) is None:
        return "its decoder blocks differ in shape (a Hugging Face config cannot describe them)"
    if not isinstance(getattr(model, "slimtune_spec", None), dict):
        return "it carries no slimtune tokenizer (load it with slimtune.models.load_lm)"
    return None


def build_genai_onnx(model: CausalLM, path: Path, *, external: bool = True) -> Path:
    """Write ``model`` as a plain HF folder, run the genai builder (fp32, CPU) on it and move its decoder to
    ``path`` (weights in ``<path>.data``); returns ``path``. Raises ``MissingDependencyError`` or
    ``UnsupportedModelError`` with one line when the builder is missing or fails."""
    reason = genai_unsupported_reason(model)
    if reason is not None:
        error = MissingDependencyError if not genai_installed() else UnsupportedModelError
        raise error(f"builder 'genai' cannot export this model: {reason}; use builder 'slimtune'")
    from slimtune.export.lm_onnx import _relocate
    from slimtune.models.lm_io import save_hf_folder

    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.genai.") as work:
        hf, out = Path(work) / "hf", Path(work) / "out"
        save_hf_folder(model, hf)
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
               "-p", "fp32", "-e", "cpu", "-c", str(Path(work) / "cache")]  # fmt: skip
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not (out / "model.onnx").is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise UnsupportedModelError(f"onnxruntime-genai's model builder failed: {last[:200]}")
        _pin_head_dim(out / "model.onnx", int(model.config.hidden_size // model.config.num_attention_heads
                                              if getattr(model.config, "head_dim", None) is None
                                              else model.config.head_dim))  # fmt: skip
        data = out / "model.onnx.data"
        if data.is_file():
            os.replace(data, path.with_name(f"{path.name}.data"))
            _relocate(out / "model.onnx", path)
        else:
            os.replace(out / "model.onnx", path)
    return path


def _pin_head_dim(path: Path, head_dim: int) -> None:
    """Write ``head_dim`` into the cache inputs' and outputs' last axis (the builder leaves it symbolic, and the
    runtime reads each cache's shape from the graph)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for value in [*proto.graph.input, *proto.graph.output]:
        if value.name.startswith(("past_key_values.", "present.")):
            value.type.tensor_type.shape.dim[3].dim_value = head_dim
    onnx.save_model(proto, str(path))


def decode_ms(path: Path, *, vocab: int, prompt: int = 16, steps: int = 16, threads: int | None = None) -> float:
    """Median ms per batch-1 decode step of the KV-cache graph at ``path`` (3 runs after a warm-up)."""
    from slimtune.runtime.decoder import Decoder, ort_decoder_session

    decoder = Decoder(ort_decoder_session(path, threads=threads))
    ids = [int(t) for t in np.random.default_rng(0).integers(0, vocab, size=prompt)]
    decoder.generate([ids], max_new_tokens=2)
    runs = []
    for _ in range(3):
        t0 = time.perf_counter()
        decoder.generate([ids], max_new_tokens=1)
        t1 = time.perf_counter()
        decoder.generate([ids], max_new_tokens=steps + 1)
        runs.append((time.perf_counter() - t1 - (t1 - t0)) * 1000 / steps)
    return float(np.median(runs))


def choose_builder(model: CausalLM, path: Path, builder: str, write_slimtune: Any) -> dict[str, Any]:
    """Write the decoder at ``path`` with ``builder`` (``auto``: the faster eligible one, see the module
    docstring); ``write_slimtune(path)`` writes slimtune's graph. Returns what was chosen and why."""
    if builder == "slimtune":
        write_slimtune(path)
        return {"builder": "slimtune"}
    if builder == "genai":
        build_genai_onnx(model, path)
        return {"builder": "genai"}
    reason = genai_unsupported_reason(model)
    if reason is not None:
        write_slimtune(path)
        return {"builder": "slimtune", "builder_reason": f"genai not used: {reason}"}
    vocab = int(model.get_input_embeddings().weight.shape[0])
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.auto.") as work:
        ours, theirs = Path(work) / "slimtune.onnx", Path(work) / "genai.onnx"
        write_slimtune(ours)
        try:
            build_genai_onnx(model, theirs)
        except UnsupportedModelError as exc:
            _move(ours, path)
            return {"builder": "slimtune", "builder_reason": f"genai not used: {exc}"}
        timing = {"slimtune": [], "genai": []}  # type: dict[str, list[float]]
        for _ in range(2):  # interleaved
            for name, p in (("slimtune", ours), ("genai", theirs)):
                timing[name].append(decode_ms(p, vocab=vocab))
        ms = {k: float(np.median(v)) for k, v in timing.items()}
        pick = "genai" if ms["genai"] < ms["slimtune"] else "slimtune"
        _move(theirs if pick == "genai" else ours, path)
    return {"builder": pick, "builder_reason": "faster decode here (batch 1, ms per step)", "decode_ms": ms}


def _move(src: Path, dst: Path) -> None:
    """Move a graph (and its ``.data`` side file, re-pointed at the new name) from ``src`` to ``dst``."""
    from slimtune.export.lm_onnx import _relocate

    data = src.with_name(f"{src.name}.data")
    if data.is_file():
        os.replace(data, dst.with_name(f"{dst.name}.data"))
        _relocate(src, dst)
    else:
        os.replace(src, dst)
        dst.with_name(f"{dst.name}.data").unlink(missing_ok=True)
