"""Shared setup of the SmolLM2-135M pruning benchmarks (lm_pruning.py, lm_width_depth.py, lm_vs_torch_pruning.py):
the model, the Shakespeare windows (calibration and recovery from the train plays, the recovery curve on a
validation play, the score on The Tempest), perplexity, and what every JSON records (commit, load average)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import torch

from slimtune.data.core import DataSplits, Split

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
CACHE = Path(os.environ.get("SLIMTUNE_LM_CACHE", "/tmp/slimtune_bench/smollm2_topk32_w256.safetensors"))
START = 1000  # skip each play's Gutenberg header


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=BENCH).stdout.strip()
    except OSError:
        return "unknown"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def model_and_tokenizer() -> tuple[Any, Any]:
    from slimtune.models import lm_tokenizer, load_lm

    base = load_lm("smollm2-135m")
    return base, lm_tokenizer(base)


def windows(tok: Any, docs: list[Any], *, window: int, count: int) -> torch.Tensor:
    """``count`` disjoint ``window``-token windows from token 1000 of each play, taken round-robin over the
    plays (so the first windows span many plays)."""
    per_doc = [tok.encode(d.text)[START:] for d in docs]
    out: list[list[int]] = []
    k = 0
    while len(out) < count:
        added = False
        for ids in per_doc:
            if (k + 1) * window <= len(ids) and len(out) < count:
                out.append(ids[k * window : (k + 1) * window])
                added = True
        if not added:
            break
        k += 1
    return torch.tensor(out, dtype=torch.long)


def lm_data(train: torch.Tensor, val: torch.Tensor) -> DataSplits:
    tr, va = Split(train, train.clone()), Split(val, val.clone())
    return DataSplits(name="shakespeare", train=tr, val=va, test=va, num_classes=0, label_names=[], kind="lm",  # type: ignore[arg-type]
                      input_shape=(train.shape[1],))  # fmt: skip


class Corpus:
    """Token ids of the splits: ``train_windows`` (calibration and recovery), ``val`` (recovery curve: the first
    4 × 256 tokens of A Midsummer Night's Dream), ``test`` (the score: The Tempest's first windows × window)."""

    def __init__(self, tok: Any, *, window: int = 256, windows_: int = 4) -> None:
        from slimtune.data.corpus import read_corpus, split_documents

        corpus = read_corpus("shakespeare")
        parts = split_documents(corpus)
        assert parts is not None
        self.tok, self.train_docs = tok, parts["train"]
        self.test = tok.encode(corpus.by_name("tempest").text)[: window * windows_]
        val = tok.encode(corpus.by_name("midsummer_nights_dream").text)[START : START + 4 * 256]
        self.val = torch.tensor(val, dtype=torch.long).view(4, 256)
        self.window, self.windows = window, windows_

    def train_windows(self, count: int, window: int = 256) -> torch.Tensor:
        return windows(self.tok, self.train_docs, window=window, count=count)

    def ppl(self, model: Any) -> float:
        from slimtune.evaluate.lm import perplexity

        return float(perplexity(model, self.test, window=self.window, batch_size=1)["perplexity"])


def recover(
    student: Any, teacher: Any, corpus: Corpus, *, minutes: float, windows_: int, lr: float, alpha: float = 0.0
) -> dict[str, Any]:
    """``recover_lm_`` within ``minutes`` on the first ``windows_`` train windows (256 tokens, batch 4), with the
    teacher's top-32 logits cached once on disk for every benchmark and row (``alpha``: weight of the CE on the
    true next tokens); returns the budget record."""
    from slimtune.prune import LMRecoverConfig, recover_lm_

    data = lm_data(corpus.train_windows(windows_), corpus.val)
    config = LMRecoverConfig(max_minutes=minutes, lr=lr, alpha=alpha, batch_size=4, checkpoints=4, top_k=32)
    result = recover_lm_(student, teacher=teacher, data=data, config=config, cache=CACHE, progress=False)
    return {"minutes": round(result.minutes, 2), "tokens": result.tokens, "steps": result.steps,
            "threads": result.threads, "device": result.device, "lr": lr,
            "cache_minutes": round(result.cache_minutes, 2), "masked_layers": result.masked_layers,
            "curve": result.curve, "windows": windows_, "alpha": alpha,
            "loss": f"{alpha:g}·CE + {1 - alpha:g}·forward KL on the teacher's top-{config.top_k} + the rest of its "
                    "mass as one bucket"}  # fmt: skip


def curve_text(rec: dict[str, Any]) -> str:
    return ", ".join(f"{p['tokens'] / 1000:.1f}k tok → {p['val_perplexity']:.1f}" for p in rec["curve"])
