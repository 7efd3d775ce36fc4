"""Short measurement (issue #22, Deliver 4): a text bundle's end-to-end latency at batch 1 and 8 with fixed
max_length padding vs dynamic padding (length buckets, each batch padded to its own longest text).

A small random BERT (2 layers, hidden 128, max_length 64) behind a word-level HF tokenizer; texts of
tweet-like lengths (4–40 words). Latency only: the two paths' logits are checked equal first. Fixed and
dynamic are timed interleaved in rounds on the same Predictor (the flag flipped in memory), so load changes
hit both. Writes benchmarks/results/dynamic_padding.{json,md}.  Run: python benchmarks/dynamic_padding.py
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SEQ, VOCAB, ROUNDS, CALLS = 64, 1000, 8, 10


def main() -> None:
    import tokenizers
    from transformers import BertConfig

    from slimtune.data.core import split_arrays
    from slimtune.export.bundle import export_bundle
    from slimtune.models.hf import from_spec
    from slimtune.models.serialization import get_spec
    from slimtune.runtime import Predictor

    torch.manual_seed(0)
    words = ["[PAD]", "[UNK]", *(f"w{i}" for i in range(VOCAB - 2))]
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.enable_padding(length=SEQ, pad_id=0)
    tok.enable_truncation(SEQ)
    rng = random.Random(0)
    texts = [" ".join(f"w{rng.randrange(VOCAB - 2)}" for _ in range(rng.randint(4, 40))) for _ in range(64)]
    x = torch.tensor([e.ids for e in tok.encode_batch(texts)])
    data = split_arrays("lengths", x, (x[:, 0] % 2).long(), label_names=["a", "b"], kind="text")
    data.input_shape = (SEQ,)
    config = BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=512, max_position_embeddings=SEQ, num_labels=2, pad_token_id=0)  # fmt: skip
    model = from_spec({"hf_config": config.to_dict(), "input_shape": [SEQ], "options": {"pad_id": 0}}).eval()
    get_spec(model)["preprocess"] = {"hf_tokenizer": tok.to_str(), "max_length": SEQ}
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_bundle(model, Path(tmp) / "bundle", data=data)
        p = Predictor(folder, threads=1)
        spec = p.manifest.input["tokenizer"]
        assert spec["trim_padding"], "export did not verify that the model masks its padding"
        dynamic = p.logits(texts, batch_size=8)
        spec["trim_padding"] = False
        fixed = p.logits(texts, batch_size=8)
        diff = float(np.abs(dynamic - fixed).max())
        times: dict[str, list[float]] = {}
        for r in range(ROUNDS):
            for batch in (1, 8):
                for mode in ("fixed", "dynamic") if r % 2 else ("dynamic", "fixed"):
                    spec["trim_padding"] = mode == "dynamic"
                    start = time.perf_counter()
                    for c in range(CALLS):
                        i = (c * batch) % len(texts)
                        p.predict(texts[i : i + batch])
                    times.setdefault(f"{mode} b{batch}", []).append((time.perf_counter() - start) * 1000 / CALLS)
    rows = {k: statistics.median(v) for k, v in times.items()}
    load = os.getloadavg()[0]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    out = {"rows_ms_p50": rows, "max_abs_logit_diff": diff, "load_average_1min": load, "threads": 1,
           "rounds": ROUNDS, "calls_per_round": CALLS, "seq": SEQ, "commit": commit}  # fmt: skip
    results = Path(__file__).parent / "results"
    (results / "dynamic_padding.json").write_text(json.dumps(out, indent=2))
    md = [
        "# Dynamic padding: text bundle e2e latency, fixed vs length buckets (short measurement)",
        "",
        f"Small random BERT (2 layers, hidden 128), max_length {SEQ}, texts of 4–40 words, 1 thread, "
        f"{ROUNDS} interleaved rounds × {CALLS} calls, p50 ms per `predict` call. Machine load average "
        f"{load:.1f} on {os.cpu_count()} cores (shared): absolute numbers are inflated, compare rows of this "
        f"run only. Max |logit difference| fixed vs dynamic: {diff:.2e}. Commit {commit}.",
        "",
        "| batch | fixed padding | dynamic padding | speedup |",
        "| --- | --- | --- | --- |",
        *(
            f"| {b} | {rows[f'fixed b{b}']:.2f} | {rows[f'dynamic b{b}']:.2f} | "
            f"{rows[f'fixed b{b}'] / rows[f'dynamic b{b}']:.2f}× |"
            for b in (1, 8)
        ),
        "",
        "Not a rerun of runtime_vs_optimum (MiniLM vs Optimum): that rerun is pending.",
    ]
    (results / "dynamic_padding.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
