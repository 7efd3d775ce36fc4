"""KV-cache ONNX export of a causal LM: one graph serves prefill (empty past) and decode (one token per step).

Inputs ``input_ids`` [b, s], ``attention_mask`` [b, past+s], ``position_ids`` [b, s] and
``past_key_values.{i}.key|value`` [b, kv_heads_i, past, head_dim]; outputs ``logits`` [b, s, vocab] and
``present.{i}.key|value`` [b, kv_heads_i, past+s, head_dim]. Batch, sequence and past lengths are dynamic.
Layers may differ (see ``lm_graph.KVDecoder``). Weights move to ``<file>.data`` past protobuf's 2 GB limit.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from slimtune.config import Config, check
from slimtune.errors import UnsupportedModelError
from slimtune.export.lm_graph import CausalLM, KVDecoder
from slimtune.export.onnx import PROTOBUF_LIMIT, _silence_stdout_fd
from slimtune.runtime.decoder import PAST, PRESENT


@dataclass(frozen=True, kw_only=True)
class LMExportConfig(Config):
    """KV-cache export and its parity check.

    Logits: on held-out windows, fed as a prefill of the first half then token-by-token decode, ``max_abs_diff``
    and top-1 agreement against PyTorch's full forward. Greedy: ``greedy_tokens`` new tokens for each prompt
    (``prompts`` of them, when none are given) must equal PyTorch's ``generate`` token for token."""

    opset: int = 17
    max_abs_diff: float = 1e-2
    min_top1_agreement: float = 0.99
    greedy_tokens: int = 32
    prompts: int = 4
    windows: int = 4
    window_length: int = 64
    external_data: bool | None = None  # None: only past protobuf's 2 GB
    accuracy_level: int = 4  # weight-only quantized models: MatMulNBits' accuracy_level (4: int8 activations)
    min_fast_top1_agreement: float = 0.9  # ... and the top-1 agreement required at that level when not 0
    fused: bool = True  # Llama-family: write the fused-op graph (lm_fuse) when the model allows it; False: trace
    builder: str = "slimtune"  # "slimtune" | "genai" (onnxruntime-genai's model builder) | "auto" (see lm_genai)

    def __post_init__(self) -> None:
        check(14 <= self.opset <= 21, f"opset must be in 14..21 for the KV-cache export, got {self.opset}")
        check(self.max_abs_diff > 0, f"max_abs_diff must be > 0, got {self.max_abs_diff}")
        check(0 <= self.min_top1_agreement <= 1, "min_top1_agreement must be in [0, 1]")
        check(self.greedy_tokens >= 1 and self.prompts >= 1, "greedy_tokens and prompts must be >= 1")
        check(self.windows >= 1 and self.window_length >= 2, "windows must be >= 1 and window_length >= 2")
        check(self.accuracy_level in (0, 1, 2, 3, 4), f"accuracy_level must be 0..4, got {self.accuracy_level}")
        check(0 <= self.min_fast_top1_agreement <= 1, "min_fast_top1_agreement must be in [0, 1]")
        check(self.builder in ("auto", "slimtune", "genai"),
              f"builder must be 'auto', 'slimtune' or 'genai', got {self.builder!r}")  # fmt: skip


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    past = [PAST.format(i, kv) for i in range(num_layers) for kv in ("key", "value")]
    present = [PRESENT.format(i, kv) for i in range(num_layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


def context_length(model: CausalLM) -> int:
    config = model.config
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(config, key, None)
        if value:
            return int(value)
    raise UnsupportedModelError(f"{type(model).__name__}'s config names no context length (max_position_embeddings)")


def export_lm_onnx(
    model: CausalLM, path: str | Path, *, opset: int = 17, external_data: bool | None = None, fused: bool = True
) -> Path:
    """Export ``model`` (a Hugging Face Llama-family or GPT-2 causal LM) with a KV cache to ``path``
    atomically; returns the path. The caller checks parity (``lm_parity``). With ``fused`` (and a model
    ``lm_fuse`` serves) the graph is written directly with ONNX Runtime's fused ops; otherwise the model is
    traced. Either way q/k/v and gate/up are one matmul each, except in a weight-only quantized model, whose
    MatMulNBits rewrite needs every layer's own weight in the graph."""
    from slimtune.export.lm_fuse import save_fused_lm, unsupported_reason

    quantized = any(hasattr(m, "slimtune_qweight") for m in model.modules())
    decoder = KVDecoder(model, fuse=not quantized).eval()
    dtype = next(model.parameters()).dtype
    if dtype != torch.float32:
        raise UnsupportedModelError(f"KV-cache export takes fp32 models, got {dtype}; call model.float() first")
    use_fused = fused and unsupported_reason(model) is None
    inputs, outputs = io_names(decoder.num_layers)
    batch, past_len, seq = 2, 3, 4  # distinct sizes, none 1, so the tracer cannot confuse or specialise them
    vocab = int(model.get_input_embeddings().weight.shape[0])
    example: list[torch.Tensor] = [
        torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0)),
        torch.ones(batch, past_len + seq, dtype=torch.long),
        torch.arange(past_len, past_len + seq).repeat(batch, 1),
    ]
    for _, kv, d in decoder.layer_shapes:
        example += [torch.zeros(batch, kv, past_len, d, dtype=dtype), torch.zeros(batch, kv, past_len, d, dtype=dtype)]
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"},
    }
    axes.update({n: {0: "batch", 2: "past_sequence"} for n in inputs[3:]})
    axes.update({n: {0: "batch", 2: "total_sequence"} for n in outputs[1:]})
    out = Path(path)
    big = sum(p.numel() * p.element_size() for p in model.parameters()) > PROTOBUF_LIMIT // 2
    was_training = model.training
    model.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as work:
            raw = Path(work) / "model.onnx"  # past 2 GB torch writes one file per tensor beside it: keep them here
            external = bool(external_data or (external_data is None and big))
            if use_fused:
                save_fused_lm(model, raw, opset=opset, context=context_length(model), external=external)
            else:
                with warnings.catch_warnings(), torch.no_grad(), _silence_stdout_fd():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(
                        decoder, tuple(example), str(raw), dynamo=False, opset_version=opset,
                        input_names=inputs, output_names=outputs, dynamic_axes=axes,
                    )  # fmt: skip
            if use_fused and external:
                os.replace(raw.with_name("model.onnx.data"), out.with_name(f"{out.name}.data"))
                _relocate(raw, out)
            elif external:
                _save_external(raw, out)
            else:
                os.replace(raw, out)
                (out.parent / f"{out.name}.data").unlink(missing_ok=True)  # a stale side file of an earlier export
    except Exception as exc:
        raise UnsupportedModelError(
            f"KV-cache ONNX export of {type(model).__name__} failed: {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        model.train(was_training)
    return out


def export_lm_graph(model: CausalLM, path: str | Path, config: LMExportConfig) -> tuple[Path, dict[str, Any]]:
    """The KV-cache decoder of ``model`` at ``path`` from ``config.builder`` (see ``lm_genai``); returns the path
    and what was built (``builder``, and for ``auto`` why)."""
    from slimtune.export.lm_genai import choose_builder

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)

    def ours(p: Path) -> None:
        export_lm_onnx(model, p, opset=config.opset, external_data=config.external_data, fused=config.fused)

    return out, choose_builder(model, out, config.builder, ours)


def _relocate(raw: Path, out: Path) -> None:
    """Move ``raw`` (its weights already moved to ``<out>.data``) to ``out``, pointing at that file."""
    import onnx

    proto = onnx.load(str(raw), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = f"{out.name}.data"
    onnx.save_model(proto, str(raw))
    os.replace(raw, out)


def _save_external(raw: Path, out: Path) -> None:
    """Rewrite ``raw`` as ``out`` + one ``<out>.data`` file holding every weight (written beside ``raw`` first,
    then moved, so a failure leaves no half-written pair)."""
    import onnx

    proto = onnx.load(str(raw))  # loads any per-tensor files torch wrote
    data_name = f"{out.name}.data"
    staged = raw.parent / "staged"
    staged.mkdir()
    onnx.save_model(proto, str(staged / out.name), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data_name, size_threshold=1024)  # fmt: skip
    os.replace(staged / data_name, out.parent / data_name)
    os.replace(staged / out.name, out)
