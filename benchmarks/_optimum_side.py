"""The Optimum half of benchmarks/runtime_vs_optimum.py, run by it inside the Optimum venv.

    <optimum-venv>/bin/python benchmarks/_optimum_side.py FOLDER TEXTS_JSON

FOLDER holds what ``ORTModelForSequenceClassification.from_pretrained`` reads (config.json, tokenizer files,
model.onnx); TEXTS_JSON is ``{"texts": [...], "labels": [...], "seq": 64, "threads": 2}``. It loads the model,
prints one JSON line with its accuracy on the texts, then answers each ``round REPEATS`` line on stdin with
one JSON line of per-call times (ms) and stops at ``quit``. The parent interleaves these rounds with its own.

Only numpy and the standard library at module level: ``time_round`` and ``cycling`` are shared with the
parent (slimtune venv), so both sides time calls the same way.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

Call = Callable[[], Any]
LATENCY_TEXTS = 400  # e2e calls cycle through the first 400 test texts (b1: one each, b8: 50 batches)


def text_chunks(texts: Sequence[str], b: int) -> Iterator[list[str]]:
    pool = list(texts[:LATENCY_TEXTS])
    return itertools.cycle([pool[i : i + b] for i in range(0, len(pool) - b + 1, b)])


def cycling(fn: Callable[..., Any], texts: Sequence[str], b: int, *args: Any) -> Call:
    """A call running ``fn(batch, *args)`` on the next batch of ``b`` texts each time (see ``text_chunks``)."""
    chunks = text_chunks(texts, b)
    return lambda: fn(next(chunks), *args)


def time_round(calls: dict[str, Call], *, repeats: int, warmup: int = 2) -> dict[str, list[float]]:
    """Per-call wall times (ms) of each call, one after the other: ``warmup`` untimed, then ``repeats`` timed."""
    out: dict[str, list[float]] = {}
    for key, call in calls.items():
        for _ in range(warmup):
            call()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append((time.perf_counter() - start) * 1000)
        out[key] = times
    return out


def main(folder: str, texts_json: str) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    import transformers
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from optimum.version import __version__ as optimum_version
    from transformers import AutoTokenizer

    with open(texts_json, encoding="utf-8") as f:
        spec = json.load(f)
    texts, labels, seq, threads = spec["texts"], np.asarray(spec["labels"]), int(spec["seq"]), int(spec["threads"])
    torch.set_num_threads(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    model = ORTModelForSequenceClassification.from_pretrained(folder, session_options=opts)
    tok = AutoTokenizer.from_pretrained(folder)
    id2label = model.config.id2label

    def encode(batch: list[str], padding: str | bool = "max_length") -> Any:
        return tok(batch, padding=padding, truncation=True, max_length=seq, return_tensors="pt")

    def predict(batch: list[str], padding: str | bool = "max_length") -> list[str]:
        probs = model(**encode(batch, padding)).logits.softmax(-1)
        return [id2label[int(i)] for i in probs.argmax(-1)]

    def pred_ids(padding: str | bool) -> np.ndarray:
        return np.concatenate(
            [model(**encode(texts[i : i + 64], padding)).logits.argmax(-1).numpy() for i in range(0, len(texts), 64)]
        )

    fixed, dynamic = pred_ids("max_length"), pred_ids(True)
    print(json.dumps({
        "accuracy": float((fixed == labels).mean()),
        "accuracy_dynamic_padding": float((dynamic == labels).mean()),
        "agreement_dynamic_vs_fixed": float((dynamic == fixed).mean()),
        "graph_inputs": model.input_names, "use_io_binding": bool(model.use_io_binding),
        "versions": {"optimum": optimum_version, "transformers": transformers.__version__,
                     "onnxruntime": ort.__version__, "torch": torch.__version__},
    }), flush=True)  # fmt: skip

    calls: dict[str, Call] = {}
    for b in (1, 8):
        enc = encode(texts[:b])
        calls[f"e2e b{b}"] = cycling(predict, texts, b)
        calls[f"model b{b}"] = lambda e=enc: model(**e).logits
        calls[f"e2e-dyn b{b}"] = cycling(predict, texts, b, True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        print(json.dumps(time_round(calls, repeats=int(cmd[1]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
