"""Causal LMs in recipes: which recipes are LM recipes, their data and starting model, and their report rows.

A recipe is an LM recipe when its model is a causal LM: a registered one (``tiny-llama``, ``smollm2-135m``,
``hf-lm`` with ``options: {path: ...}``; see ``slimtune list``) or a saved slimtune LM (``load:``). Its
``data:`` then names a text corpus (``shakespeare``) or a user ``.txt``/folder/``.jsonl``/chat file, tokenized
with the model's own tokenizer and packed into windows::

    data: {name: shakespeare, window: 128, limit: 16, packing: false}    # limit: windows per split
    model: {name: smollm2-135m}
    measure: {windows: 8, speed: true, batch_sizes: [1, 8]}              # what each report row measures

Every stage row shows perplexity on the test windows (where a classifier shows accuracy) and, with
``speed``, decode tokens/s and time to first token: in PyTorch for a torch model, in ONNX Runtime (the
KV-cache decoder) for an export or a bundle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from slimtune.config import Config, check
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, DataError
from slimtune.evaluate.report import StageRow

if TYPE_CHECKING:
    from slimtune.recipe.schema import DataRef, ModelRef
    from slimtune.recipe.stages import Context, StageOutput

# stages an LM recipe may use; export and bundle run their LM variants (KV-cache ONNX, LM bundle)
# quantize: weight-only rtn|hqq|gptq|awq (+ bits_budget) or smoothquant (recipe/stages_lm_quant.py)
LM_STAGES = ("evaluate", "train", "finetune", "distill", "quantize", "export", "bundle", "search")
LM_VARIANTS = {"export": "lm-export", "bundle": "lm-bundle", "search": "lm-search"}


@dataclass(frozen=True, kw_only=True)
class LMMeasureConfig(Config):
    """What each LM report row measures: perplexity on the first ``windows`` test windows (null: all of them),
    and with ``speed`` greedy decode tokens/s and time to first token for each of ``batch_sizes``
    (``prompt_tokens`` random prompt ids, ``new_tokens`` generated, median of ``repeats`` runs)."""

    windows: int | None = 8
    speed: bool = True
    batch_sizes: tuple[int, ...] = (1, 8)
    prompt_tokens: int = 64
    new_tokens: int = 32
    repeats: int = 3

    def __post_init__(self) -> None:
        check(self.windows is None or self.windows >= 1, f"measure.windows must be >= 1 or null, got {self.windows}")
        check(bool(self.batch_sizes) and min(self.batch_sizes) >= 1, "measure.batch_sizes: positive integers")
        check(self.prompt_tokens >= 1, f"measure.prompt_tokens must be >= 1, got {self.prompt_tokens}")
        check(self.new_tokens >= 2, f"measure.new_tokens must be >= 2, got {self.new_tokens}")
        check(self.repeats >= 1, f"measure.repeats must be >= 1, got {self.repeats}")


def is_lm_ref(model: ModelRef) -> bool:
    """The recipe's model is a causal LM (a registered one, or a saved slimtune LM folder)."""
    from slimtune.models import CAUSAL_LMS

    if model.name is not None:
        return model.name in CAUSAL_LMS
    spec = Path(str(model.load)).expanduser() / "spec.json"
    try:
        return bool(json.loads(spec.read_text()).get("arch") == "causal-lm")
    except (OSError, ValueError, AttributeError):
        return False  # the loader names what is wrong with the folder


def lm_stage_kind(kind: str, *, where: str) -> str:
    """The stage an LM recipe runs for ``kind``; stages that do not handle causal LMs are refused up front."""
    if kind not in LM_STAGES and kind not in LM_VARIANTS.values():
        raise ConfigError(
            f"{where}: stage '{kind}' does not handle causal LMs yet; an LM recipe takes {', '.join(LM_STAGES)}"
        )
    return LM_VARIANTS.get(kind, kind)


def lm_quantize_entry(kind: str, entry: dict[str, Any], *, where: str) -> bool:
    """An LM recipe's ``quantize`` stage takes a weight-only LM method (rtn|hqq|gptq|awq), whose own parse checks
    every key; True when ``entry`` is one. Other methods (classifier int8) are refused up front."""
    if kind != "quantize":
        return False
    from slimtune.recipe.stages_lm_quant import is_lm_method, lm_methods

    method = entry.get("method")
    if not is_lm_method(method):
        raise ConfigError(
            f"{where}: a causal LM is quantized weight-only or with SmoothQuant: method: {' | '.join(lm_methods())} "
            f"(got {method!r})"
        )
    return True


def load_lm_inputs(data_ref: DataRef, model_ref: ModelRef) -> tuple[DataSplits, nn.Module]:
    """The starting causal LM, then the recipe's corpus tokenized with its tokenizer and packed into windows."""
    from slimtune.data import load_text
    from slimtune.models import load_lm, load_model

    if data_ref.file_options().keys() - {"text_column"}:
        extra = sorted(data_ref.file_options().keys() - {"text_column"})
        raise ConfigError(f"data: {', '.join(extra)} are classifier data options; an LM corpus takes window, "
                          "packing, text_column (the JSONL text field), seed and limit")  # fmt: skip
    if model_ref.load is not None:
        model = load_model(model_ref.load)
    else:
        assert model_ref.name is not None
        model = load_lm(model_ref.name, **model_ref.options)
        if model_ref.checkpoint:
            from slimtune.models import load_torch_checkpoint

            load_torch_checkpoint(model, model_ref.checkpoint)
    data = load_text(
        data_ref.name, model, window=data_ref.window or 128, packing=data_ref.packing,
        text_field=data_ref.text_column or "text", seed=data_ref.seed, limit=data_ref.limit,
    )  # fmt: skip
    return data, model


def _test_windows(data: DataSplits, cfg: LMMeasureConfig) -> tuple[torch.Tensor, torch.Tensor]:
    test = data.test if cfg.windows is None else data.test.take(cfg.windows)
    assert isinstance(test.x, torch.Tensor) and isinstance(test.y, torch.Tensor)
    return test.x, test.y


def onnx_perplexity(path: Path, x: torch.Tensor, y: torch.Tensor, *, threads: int | None = None) -> dict[str, float]:
    """Perplexity of a KV-cache ONNX decoder on LM windows (each window one prefill, empty past)."""
    from slimtune.runtime.decoder import Decoder, ort_decoder_session

    decoder = Decoder(ort_decoder_session(path, threads=threads))
    nll, count = 0.0, 0
    for i in range(len(x)):
        ids = x[i : i + 1].numpy()
        n = ids.shape[1]
        logits, _ = decoder.step(ids, np.ones((1, n), np.int64), np.arange(n, dtype=np.int64)[None],
                                 decoder.empty_past(1))  # fmt: skip
        labels = y[i, 1:].numpy()
        keep = labels != -100
        z = logits[0, :-1][keep].astype(np.float64)
        logz = np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1)) + z.max(-1)
        nll += float((logz - z[np.arange(len(z)), labels[keep]]).sum())
        count += int(keep.sum())
    if count == 0:
        raise DataError("no tokens to score: every test label is masked")
    return {"perplexity": math.exp(nll / count), "nll": nll / count, "tokens": count}


def onnx_speed(path: Path, vocab: int, cfg: LMMeasureConfig, *, threads: int | None = None) -> dict[str, Any]:
    """Decode tokens/s, prefill tokens/s and time to first token of a KV-cache ONNX decoder (``lm_bench``'s run)."""
    from slimtune.runtime.decoder import Decoder, ort_decoder_session
    from slimtune.runtime.lm_bench import _one_run

    decoder = Decoder(ort_decoder_session(path, threads=threads))
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"decode": {}, "prefill": {}, "ttft_ms": {}}
    for b in cfg.batch_sizes:
        ids = rng.integers(0, vocab, size=(b, cfg.prompt_tokens), dtype=np.int64)
        _one_run(decoder, ids, 2)  # warm-up
        runs = np.asarray([_one_run(decoder, ids, cfg.new_tokens - 1) for _ in range(cfg.repeats)])
        prefill, first, decode = np.median(runs, axis=0)
        out["decode"][f"batch{b}"] = b * (cfg.new_tokens - 1) / decode
        out["prefill"][f"batch{b}"] = b * cfg.prompt_tokens / prefill
        out["ttft_ms"][f"batch{b}"] = 1000 * first
    return out


def measure_lm_stage(label: str, result: StageOutput, ctx: Context) -> StageRow:
    """The report row of one stage of an LM recipe (see the module docstring)."""
    from slimtune.evaluate.report_lm import measure_lm_row
    from slimtune.threads import load_average

    cfg: LMMeasureConfig = ctx.measure if isinstance(ctx.measure, LMMeasureConfig) else LMMeasureConfig()
    load_before = load_average()
    bytes_from = result.artifact if result.artifact.is_file() or any(result.artifact.iterdir()) else None
    row = measure_lm_row(
        label, ctx.model, ctx.data, artifact=bytes_from, speed=cfg.speed and result.onnx is None,
        batch_sizes=cfg.batch_sizes, max_windows=cfg.windows,
    )  # fmt: skip
    if result.onnx is not None:
        threads = torch.get_num_threads()  # the same threads as the torch rows
        x, y = _test_windows(ctx.data, cfg)
        row.metrics = onnx_perplexity(result.onnx, x, y, threads=threads)
        row.parity = result.parity
        row.extra.update(runtime="onnxruntime", threads=threads)
        if cfg.speed:
            s = onnx_speed(result.onnx, int(ctx.data.num_classes), cfg, threads=threads)
            tput = row.throughput if row.throughput is not None else {}
            for key, tps in s["decode"].items():
                tput[f"decode_{key}"] = tps
                row.latency_ms[f"decode_{key}"] = 1000.0 / tps
            tput.update({f"prefill_{k}": v for k, v in s["prefill"].items()})
            row.throughput = tput
            row.latency_ms["ttft_batch1"] = s["ttft_ms"].get("batch1", float("nan"))
    loads = [v for v in (load_before, load_average()) if v is not None]
    row.extra["load_average"] = round(max(loads), 2) if loads else None
    row.extra["perplexity_windows"] = len(_test_windows(ctx.data, cfg)[0])
    return row


def lm_student_for(teacher: nn.Module, name: str | None, options: dict[str, Any], from_teacher: Any) -> nn.Module:
    """A distill stage's LM student: the teacher's blocks ``from_teacher: {layers | keep_every}``, or a
    registered causal LM ``name`` (it must share the teacher's vocabulary: same tokenizer size)."""
    from slimtune.distill.lm_student import lm_student
    from slimtune.models import load_lm

    if from_teacher is not None:
        if from_teacher.hidden is not None or from_teacher.heads_ratio or from_teacher.ffn_ratio:
            raise ConfigError("student.from_teacher: a causal-LM student keeps blocks: use layers or keep_every only")
        return lm_student(teacher, layers=from_teacher.layers, keep_every=from_teacher.keep_every)
    assert name is not None
    student = load_lm(name, **options)
    configs: tuple[Any, Any] = (student.config, teacher.config)
    vocab = (int(configs[0].vocab_size), int(configs[1].vocab_size))
    if vocab[0] != vocab[1]:
        raise ConfigError(
            f"student '{name}' has a vocabulary of {vocab[0]} tokens, the teacher {vocab[1]}; distil into a "
            "student with the teacher's tokenizer (e.g. from_teacher: {layers: [0, 2]})"
        )
    return student.train()
