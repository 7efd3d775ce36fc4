"""Export a causal LM to a parity-checked KV-cache ONNX file, or to an LM bundle the torch-free runtime serves.

An LM bundle is a folder::

    bundle.json       kind "lm": graph inputs, context length, token ids (BOS/EOS/pad), chat template,
                      generation defaults, parity report, provenance
    model.onnx        the KV-cache decoder (``lm_onnx``), weights in model.onnx.data past 2 GB
    tokenizer.json    the model's ``tokenizers`` tokenizer

``slimtune.runtime.LMGenerator`` (onnxruntime + numpy + tokenizers) generates from it; ``slimtune generate``
and ``slimtune bench`` take it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from slimtune import __version__
from slimtune._io import prepare_out_dir, undo_on_failure, write_text
from slimtune.errors import ConfigError
from slimtune.export.lm_graph import CausalLM, KVDecoder
from slimtune.export.lm_onnx import LMExportConfig, context_length, export_lm_graph
from slimtune.export.lm_parity import check_lm_parity, eos_ids, lm_parity
from slimtune.runtime.bundle import FORMAT, FORMAT_VERSION, MANIFEST
from slimtune.runtime.generate import DEFAULTS, LM_KIND


def export_lm(
    model: CausalLM,
    path: str | Path,
    *,
    windows: torch.Tensor | None = None,
    prompts: Sequence[Sequence[int]] | None = None,
    config: LMExportConfig | None = None,
) -> dict[str, Any]:
    """Export ``model`` with a KV cache to ``path`` and check it (``lm_parity``); returns the parity report.
    Raises ``ParityError`` (and removes the file) when ONNX Runtime disagrees with PyTorch."""
    config = config or LMExportConfig()
    out, built = export_lm_graph(model, path, config)
    try:
        if any(hasattr(m, "slimtune_qweight") for m in model.modules()):  # weight-only quantized: MatMulNBits
            from slimtune.export.lm_nbits import export_nbits_checked

            report = export_nbits_checked(model, out, windows=windows, prompts=prompts, config=config)
        elif getattr(model, "slimtune_smoothquant", None):  # SmoothQuant W8A8: ONNX Runtime int8
            from slimtune.quantize.smoothquant.ort import export_int8_checked

            report = export_int8_checked(model, out, windows=windows, prompts=prompts, config=config)
        else:
            report = lm_parity(model, out, windows=windows, prompts=prompts, config=config)
            check_lm_parity(report, config, what=f"KV-cache export ({built['builder']})")
        report.update(built)
    except BaseException:
        out.unlink(missing_ok=True)
        out.with_name(f"{out.name}.data").unlink(missing_ok=True)
        raise
    return report


def _input_names(path: Path) -> list[str]:
    import onnx

    return [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]


def _backend(tokenizer: Any) -> tuple[Any, str | None, dict[str, str]]:
    """The ``tokenizers.Tokenizer`` behind ``tokenizer`` (itself, or a transformers fast tokenizer's backend),
    its chat template and its special-token strings (for chat templates)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "to_str") or not hasattr(backend, "encode"):
        raise ConfigError(
            f"need a tokenizers.Tokenizer (or a transformers fast tokenizer), got {type(tokenizer).__name__}"
        )
    template = getattr(tokenizer, "chat_template", None)
    strings = {k: str(getattr(tokenizer, k)) for k in ("bos_token", "eos_token") if getattr(tokenizer, k, None)}
    return backend, template if isinstance(template, str) else None, strings


def _generation(model: CausalLM, generation: dict[str, Any] | None) -> dict[str, Any]:
    from slimtune.runtime.sampling import Sampling

    merged = dict(DEFAULTS)
    cfg = getattr(model, "generation_config", None)
    if cfg is not None and getattr(cfg, "do_sample", False):  # the model's own sampling defaults
        merged.update(temperature=float(cfg.temperature or 1.0), top_k=int(cfg.top_k or 0), top_p=float(cfg.top_p or 1))
    unknown = set(generation or {}) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown generation default(s) {sorted(unknown)}; use {sorted(DEFAULTS)}")
    merged.update(generation or {})
    Sampling(temperature=merged["temperature"], top_k=merged["top_k"], top_p=merged["top_p"])  # validates
    if int(merged["max_new_tokens"]) < 1:
        raise ConfigError(f"max_new_tokens must be >= 1, got {merged['max_new_tokens']}")
    return merged


def export_lm_bundle(
    model: CausalLM,
    tokenizer: Any,
    out: str | Path,
    *,
    windows: torch.Tensor | None = None,
    prompts: Sequence[str] | None = None,
    chat_template: str | None = None,
    generation: dict[str, Any] | None = None,
    config: LMExportConfig | None = None,
    provenance: dict[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Write an LM bundle for ``model`` (a Hugging Face causal LM) and ``tokenizer`` (``tokenizers.Tokenizer`` or
    a transformers fast tokenizer); returns its folder. The export is parity-checked on ``windows`` (held-out
    token ids; default seeded random ids) and greedy generation from ``prompts`` (texts; default the start of
    the windows). ``chat_template`` overrides the tokenizer's; ``generation`` sets defaults (max_new_tokens,
    temperature, top_k, top_p, stop)."""
    config = config or LMExportConfig()
    backend, template, strings = _backend(tokenizer)
    defaults = _generation(model, generation)
    existed = Path(out).exists()
    folder = prepare_out_dir(out, force=force)
    with undo_on_failure(folder, existed=existed):  # never leave a half-written bundle behind
        ids = [list(backend.encode(p).ids) for p in prompts] if prompts is not None else None
        report = export_lm(model, folder / "model.onnx", windows=windows, prompts=ids, config=config)
        write_text(folder / "tokenizer.json", backend.to_str())
        files = {"model": "model.onnx", "tokenizer": "tokenizer.json"}
        if (folder / "model.onnx.data").is_file():
            files["weights"] = "model.onnx.data"
        eos = eos_ids(model)
        pad = getattr(model.config, "pad_token_id", None)
        bos = getattr(model.config, "bos_token_id", None)
        shapes = KVDecoder(model).layer_shapes
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "slimtune_version": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "precision": report.get("precision", "fp32"),
            "input": {
                "kind": LM_KIND,
                "names": _input_names(folder / "model.onnx"),
                "context_length": context_length(model),
                "vocab_size": int(model.get_input_embeddings().weight.shape[0]),
                "model_type": str(model.config.model_type),
                "layers": [{"heads": h, "kv_heads": kv, "head_dim": d} for h, kv, d in shapes],
            },
            "output": {"name": "logits", "labels": []},
            "files": files,
            "tokens": {
                "eos_token_ids": eos,
                "pad_token_id": pad if isinstance(pad, int) else None,
                "bos_token_id": bos if isinstance(bos, int) else None,
                "strings": strings,
            },
            "chat_template": chat_template if chat_template is not None else template,
            "generation": defaults,
            "parity": report,
            "parameters": sum(p.numel() for p in model.parameters()),
            "provenance": provenance or {},
        }
        write_text(folder / MANIFEST, json.dumps(manifest, indent=2, default=str))
    return folder
