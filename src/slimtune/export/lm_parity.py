"""The check every KV-cache export passes: logits on held-out windows and greedy generation equal PyTorch's.

Logits: each window's first half is one prefill, the rest is fed a token at a time through the cache, and every
position's logits are compared with PyTorch's forward of the whole window (max |Δ|, top-1 agreement). Greedy:
for each prompt, the ONNX runtime's greedy tokens (``slimtune.runtime.decoder``, the loop ``slimtune generate``
runs) must equal Hugging Face ``generate`` (KV cache, greedy) token for token, up to the first EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimtune.errors import DataError, ParityError
from slimtune.export.lm_graph import CausalLM
from slimtune.export.lm_onnx import LMExportConfig, context_length
from slimtune.runtime.decoder import Decoder, ort_decoder_session


def eos_ids(model: CausalLM) -> list[int]:
    """The model's EOS token ids that are inside its vocabulary."""
    vocab = int(model.get_input_embeddings().weight.shape[0])
    found: list[int] = []
    for cfg in (getattr(model, "generation_config", None), model.config):
        value = getattr(cfg, "eos_token_id", None)
        for t in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(t, int) and 0 <= t < vocab and t not in found:
                found.append(t)
    return found


def default_windows(model: CausalLM, config: LMExportConfig) -> torch.Tensor:
    """Seeded random token windows, when no held-out text is given."""
    vocab = int(model.get_input_embeddings().weight.shape[0])
    length = min(config.window_length, context_length(model))
    return torch.randint(0, vocab, (config.windows, length), generator=torch.Generator().manual_seed(0))


def _cached_logits(decoder: Decoder, windows: np.ndarray) -> np.ndarray:
    """Logits of every position: prefill of the first half, then one token per step through the cache."""
    n, length = windows.shape
    half = max(1, length // 2)
    mask = np.ones((n, half), dtype=np.int64)
    positions = np.tile(np.arange(half, dtype=np.int64), (n, 1))
    logits, past = decoder.step(windows[:, :half], mask, positions, decoder.empty_past(n))
    outs = [logits]
    for j in range(half, length):
        mask = np.ones((n, j + 1), dtype=np.int64)
        logits, past = decoder.step(windows[:, j : j + 1], mask, np.full((n, 1), j, dtype=np.int64), past)
        outs.append(logits)
    return np.concatenate(outs, axis=1)


def logits_parity(model: CausalLM, decoder: Decoder, windows: torch.Tensor) -> dict[str, Any]:
    with torch.no_grad():
        ref = model(input_ids=windows, use_cache=False).logits.float().numpy()
    got = _cached_logits(decoder, windows.numpy().astype(np.int64))
    delta = np.abs(ref - got)
    worst = np.unravel_index(int(delta.argmax()), delta.shape)
    return {
        "windows": int(windows.shape[0]),
        "window_length": int(windows.shape[1]),
        "max_abs_diff": float(delta.max()),
        "worst_position": [int(worst[0]), int(worst[1])],  # window, token
        "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean()),
    }


def _torch_greedy(model: CausalLM, prompt: Sequence[int], new_tokens: int, eos: list[int]) -> tuple[list[int], Any]:
    from transformers import GenerationConfig

    ids = torch.tensor([list(prompt)], dtype=torch.long)
    gen = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, eos_token_id=eos or None,
                           pad_token_id=eos[0] if eos else 0, return_dict_in_generate=True,
                           output_scores=True)  # fmt: skip
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)
    tokens = [int(t) for t in out.sequences[0, ids.shape[1] :]]
    for i, t in enumerate(tokens):
        if t in eos:
            return tokens[: i + 1], out.scores
    return tokens, out.scores


def greedy_parity(
    model: CausalLM, decoder: Decoder, prompts: Sequence[Sequence[int]], new_tokens: int
) -> dict[str, Any]:
    """Greedy tokens of ONNX Runtime vs PyTorch per prompt; the first divergence is described, not raised."""
    eos = eos_ids(model)
    mismatch, compared = None, 0
    for i, prompt in enumerate(prompts):
        ref, scores = _torch_greedy(model, prompt, new_tokens, eos)
        compared += len(ref)
        got = decoder.generate([prompt], max_new_tokens=new_tokens, eos_ids=eos, pad_id=eos[0] if eos else 0)[0]
        if got != ref:
            step = next((j for j, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
            margin = ""
            if step < len(scores):
                top2 = torch.topk(scores[step][0].float(), 2).values
                margin = f"; PyTorch's top-2 logit margin there is {float(top2[0] - top2[1]):.3g}"
            mismatch = (
                f"prompt {i}: greedy token {step} differs (PyTorch {ref[step] if step < len(ref) else 'end'}, "
                f"ONNX Runtime {got[step] if step < len(got) else 'end'}){margin}"
            )
            break
    return {"greedy_prompts": len(prompts), "greedy_tokens": new_tokens, "greedy_compared": compared,
            "greedy_identical": mismatch is None,
            "greedy_mismatch": mismatch}  # fmt: skip


def lm_parity(
    model: CausalLM,
    onnx_path: str | Path,
    *,
    windows: torch.Tensor | None = None,
    prompts: Sequence[Sequence[int]] | None = None,
    config: LMExportConfig | None = None,
) -> dict[str, Any]:
    """Parity report of a KV-cache export (see the module docstring); ``check_lm_parity`` judges it.
    ``windows``: held-out token ids [n, length] (default: seeded random ids); ``prompts``: token-id prompts
    for greedy generation (default: the first 8 tokens of the first ``config.prompts`` windows)."""
    config = config or LMExportConfig()
    if windows is None:
        windows = default_windows(model, config)
    if windows.ndim != 2 or windows.shape[1] < 2 or windows.dtype not in (torch.long, torch.int32):
        raise DataError(f"parity windows must be token ids shaped [n, length >= 2], got {tuple(windows.shape)}")
    if windows.shape[1] > context_length(model):
        windows = windows[:, : context_length(model)]
    if prompts is None:
        prompts = [row[:8].tolist() for row in windows[: config.prompts]]
    was_training = model.training
    model.eval()
    try:
        decoder = Decoder(ort_decoder_session(onnx_path))
        report = logits_parity(model, decoder, windows.long())
        report.update(greedy_parity(model, decoder, prompts, config.greedy_tokens))
    finally:
        model.train(was_training)
    return report


def check_lm_parity(report: dict[str, Any], config: LMExportConfig, *, what: str = "KV-cache export") -> None:
    """Raise ``ParityError`` when logits or greedy tokens differ beyond ``config``'s tolerances."""
    if report["max_abs_diff"] > config.max_abs_diff:
        w, t = report["worst_position"]
        raise ParityError(
            f"{what}: ONNX Runtime logits differ from PyTorch by {report['max_abs_diff']:.3g} (window {w}, token {t}; "
            f"> tolerance {config.max_abs_diff:g})"
        )
    if report["top1_agreement"] < config.min_top1_agreement:
        raise ParityError(
            f"{what}: ONNX Runtime and PyTorch agree on the top-1 next token at only {report['top1_agreement']:.2%} "
            f"of positions (< required {config.min_top1_agreement:.0%})"
        )
    if not report["greedy_identical"]:
        raise ParityError(f"{what}: greedy generation differs from PyTorch's: {report['greedy_mismatch']}")
