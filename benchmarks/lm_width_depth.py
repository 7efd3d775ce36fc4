"""Width and depth pruning of SmolLM2-135M to ~60% of its parameters (``lm-structured``: whole blocks by
ShortGPT block importance, then query heads inside each GQA group and FFN channels by activation importance),
ONNX Runtime fp32 decode tokens/s against the unpruned teacher (shapes fixed by the pruning, so measured before
recovery), then distillation recovery (``recover_lm_``) within a stated budget and perplexity on The Tempest.

Decode speed: both models exported with slimtune's parity-checked KV-cache export (the pruned one has layers of
different widths), batch 1, a 64-token prompt of seeded random ids, 64 greedy new tokens, ``--ort-threads``
intra-op threads; teacher and student runs interleaved ``--rounds`` times, medians compared (the machine is
shared, so only the ratio is meaningful). Writes benchmarks/results/lm_width_depth.{json,md}.

    python benchmarks/lm_width_depth.py --recover-minutes 10
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _lm_prune import RESULTS, Corpus, commit, curve_text, lm_data, load, model_and_tokenizer, recover

from slimtune.env import collect
from slimtune.models.lm_layers import layer_shapes
from slimtune.prune import LMStructuredConfig, prune_

NOTES: list[str] = [  # what the measured numbers say (run of 2026-12-07, load average 13-26 on 2 cores)
    "- **Goal not met.** Decode ×1.60 (at the threshold) but perplexity 8,878 after recovery (+21,900%): the budget",
    "  bought 3 optimizer steps (3,072 tokens; the 10-minute budget is checked between steps and the last step",
    "  ran ~12 min, hence 15.9 min) because the shared machine gave this process ~8% of a core (load",
    "  average 13→26); the same step runs ~8× faster on an idle core (25 training tokens/s measured at 03:28).",
    "  The curve still falls steeply (val ppl 47,527 → 5,407 → 2,527 after 0 / 2k / 3k tokens): far from converged.",
    "  A 60-minute budget on an idle core (~90k tokens) would continue that trend but, from DistilGPT2/Minitron",
    "  (which recover with 10⁸–10⁹ tokens), is unlikely to reach +20% at this depth cut; it was not measured here.",
    "- **Depth is what breaks the one-shot model.** A probe (8 calibration windows, first 512 Tempest tokens):",
    "  dropping the 2 least important blocks (13, 14) gives 38.5, 4 blocks 64.3 (dense not measured on that",
    "  slice; 40.3 on the 1,024-token one); the",
    "  10 dropped here plus a third of the query heads and 27% of the FFN give 157,915. The ShortGPT order on",
    "  SmolLM2 is 14, 13, 25, 17, 26, 15, 12, 16, 3, 2, …; blocks 0, 29 and 1 matter most. A gentler cut (≤ 4",
    "  blocks, more width) is the next thing to try for quality; it decodes slower (fewer per-block ops saved).",
    "- **Global FFN scope over-prunes early layers.** The first run (scope global) left block 1 with 144 of 1,536",
    "  FFN channels and scored 186,162 one-shot: the activation importance Σx²·‖W_down[:, c]‖² grows with depth",
    "  (the residual stream grows), so it is not comparable across layers. This run uses scope layer.",
    "- **Export and speed.** The pruned model (20 blocks, 6 query / 3 KV heads, 1,121 FFN channels) exports",
    "  through slimtune's KV-cache export with parity (max |Δlogit| 9.5e-4, greedy tokens identical). Absolute",
    "  decode rates (1.8 and 2.9 tok/s) are ~10× below an idle machine's (~25 tok/s for the teacher) and one",
    "  teacher run took 439 s; the median ratio over 5 interleaved runs is ×1.60, uncertain to perhaps ±0.2.",
    "- Recovery held the exact zeros of 141 weight matrices: the dequantized Q4_1 weights contain some exact",
    "  zeros and `recover_lm_` holds every zero it finds (harmless here, intended for sparse models).",
]
GOAL_SPEEDUP, GOAL_PPL = 1.6, 20.0  # issue #21: >= 1.6x ORT fp32 decode at <= +20% perplexity, ~60% parameters


def params(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def structured_(model: Any, args: Any, data: Any) -> dict[str, Any]:
    """Depth first (block importance on the full model), then width on the blocks that remain."""
    started = time.perf_counter()
    if args.drop_layers:
        prune_(model, LMStructuredConfig(drop_layers=args.drop_layers, samples=args.calib), data=data)
    width = LMStructuredConfig(heads_ratio=args.heads_ratio, query_ratio=args.query_ratio, ffn_ratio=args.ffn_ratio,
                               scope=args.scope, samples=args.calib)  # fmt: skip
    if args.heads_ratio or args.query_ratio or args.ffn_ratio:
        prune_(model, width, data=data)
    return {"prune_s": time.perf_counter() - started, "layers": layer_shapes(model)}


def decode_speed(models: dict[str, Any], windows: torch.Tensor, args: Any) -> dict[str, Any]:
    """Median ORT fp32 decode tokens/s per model (batch 1), runs interleaved."""
    from slimtune.export.lm_bundle import export_lm
    from slimtune.export.lm_onnx import LMExportConfig
    from slimtune.runtime.decoder import Decoder, ort_decoder_session
    from slimtune.runtime.lm_bench import _one_run

    out: dict[str, Any] = {}
    config = LMExportConfig(greedy_tokens=8, prompts=1, windows=2)
    with tempfile.TemporaryDirectory() as tmp:
        decoders = {}
        for name, model in models.items():
            path = Path(tmp) / f"{name}.onnx"
            report = export_lm(model, path, windows=windows[:2, :64], config=config)
            out[name] = {"parity": {k: v for k, v in report.items() if isinstance(v, (int, float, str, bool))}}
            decoders[name] = Decoder(ort_decoder_session(path, threads=args.ort_threads))
        ids = np.random.default_rng(0).integers(0, 49152, size=(1, 64), dtype=np.int64)
        times: dict[str, list[float]] = {n: [] for n in models}
        for d in decoders.values():
            _one_run(d, ids, 2)  # warm-up
        for _ in range(args.rounds):
            for name, d in decoders.items():
                times[name].append(_one_run(d, ids, args.new_tokens)[2])
        for name in models:
            out[name]["decode_tokens_per_s"] = args.new_tokens / float(np.median(times[name]))
            out[name]["decode_s_runs"] = times[name]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drop-layers", type=int, default=10)
    parser.add_argument("--heads-ratio", type=float, default=0.0)
    parser.add_argument("--query-ratio", type=float, default=0.34)
    parser.add_argument("--ffn-ratio", type=float, default=0.27)
    parser.add_argument("--scope", default="global")
    parser.add_argument("--calib", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ort-threads", type=int, default=1)
    parser.add_argument("--recover-minutes", type=float, default=10.0)
    parser.add_argument("--recover-windows", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rewrite", action="store_true", help="only render the md again from the JSON")
    args = parser.parse_args()
    if args.rewrite:
        write(json.loads((RESULTS / "lm_width_depth.json").read_text(encoding="utf-8")))
        return
    torch.set_num_threads(args.threads)
    base, tok = model_and_tokenizer()
    corpus = Corpus(tok)
    calib = corpus.train_windows(args.calib)
    data = lm_data(calib, corpus.val)
    out: dict[str, Any] = {"model": "smollm2-135m", "commit": commit(), "settings": vars(args), "load": [load()]}
    out["dense_ppl"] = corpus.ppl(base)
    out["params_dense"] = params(base)
    print(f"dense {out['dense_ppl']:.2f}, {out['params_dense']:,} parameters", flush=True)
    student = copy.deepcopy(base)
    out.update(structured_(student, args, data))
    out["params_pruned"] = params(student)
    out["params_ratio"] = out["params_pruned"] / out["params_dense"]
    out["oneshot_ppl"] = corpus.ppl(student)
    print(f"pruned to {out['params_ratio']:.1%} of the parameters: one-shot ppl {out['oneshot_ppl']:.2f}", flush=True)
    write(out)
    out["speed"] = decode_speed({"teacher": base, "pruned": student}, calib, args)
    out["speedup"] = out["speed"]["pruned"]["decode_tokens_per_s"] / out["speed"]["teacher"]["decode_tokens_per_s"]
    out["load"].append(load())
    print(f"decode x{out['speedup']:.2f}", flush=True)
    write(out)
    if args.recover_minutes > 0:
        out["recovery"] = recover(student, base, corpus, minutes=args.recover_minutes, windows_=args.recover_windows,
                                  lr=args.lr)  # fmt: skip
        out["recovered_ppl"] = corpus.ppl(student)
        out["load"].append(load())
        print(f"recovered ppl {out['recovered_ppl']:.2f}; {curve_text(out['recovery'])}", flush=True)
        write(out)


def write(out: dict[str, Any]) -> None:
    out["env"] = collect()
    final = out.get("recovered_ppl", out["oneshot_ppl"])
    delta = 100 * (final / out["dense_ppl"] - 1)
    speedup = out.get("speedup")
    out["goal_met"] = None if speedup is None else bool(speedup >= GOAL_SPEEDUP and delta <= GOAL_PPL)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lm_width_depth.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    s, rec = out["settings"], out.get("recovery")
    widths = [f"{x['heads']}q/{x['kv_heads']}kv·{x['ffn']}" for x in out["layers"]]
    speed = out.get("speed", {})
    lines = [
        "# SmolLM2-135M width + depth pruning to ~60% of the parameters, recovery, ORT fp32 decode speed",
        "",
        f"Pruning: drop {s['drop_layers']} of 30 blocks (ShortGPT block importance), then heads_ratio "
        f"{s['heads_ratio']}, query_ratio {s['query_ratio']} (query heads inside each GQA group), ffn_ratio "
        f"{s['ffn_ratio']} ({s['scope']} scope), importance from {s['calib']} × 256 train-play tokens. "
        f"Perplexity on The Tempest first 4 × 256 tokens. Commit {out['commit'][:10]}; load average "
        f"{out['load']} (2 shared cores).",
        "",
        "| model | parameters | perplexity | Δ vs dense | ORT fp32 decode tok/s (b1) | speed-up |",
        "|---|---|---|---|---|---|",
        f"| dense teacher | {out['params_dense'] / 1e6:.1f} M | {out['dense_ppl']:.2f} | +0.0% | "
        f"{speed.get('teacher', {}).get('decode_tokens_per_s', float('nan')):.1f} | 1.00× |",
        f"| pruned, one-shot | {out['params_pruned'] / 1e6:.1f} M ({out['params_ratio']:.1%}) | "
        f"{out['oneshot_ppl']:.2f} | {100 * (out['oneshot_ppl'] / out['dense_ppl'] - 1):+.1f}% | - | - |",
    ]
    if rec:
        lines.append(
            f"| pruned + recovery ({rec['minutes']:.1f} min, {rec['tokens'] / 1000:.1f}k tokens, {rec['threads']} "
            f"thread) | {out['params_pruned'] / 1e6:.1f} M | {out['recovered_ppl']:.2f} | {delta:+.1f}% | "
            f"{speed.get('pruned', {}).get('decode_tokens_per_s', float('nan')):.1f} | "
            f"{'-' if speedup is None else f'{speedup:.2f}×'} |"
        )
    lines += [
        "",
        f"Layer shapes after pruning (query heads / KV heads · FFN channels): {', '.join(widths)}.",
        "",
        f"Recovery curve (validation perplexity, by training tokens): {curve_text(rec) if rec else 'not run'}.",
        "",
        "## Goal (issue #21)",
        "",
        f"- ≥ {GOAL_SPEEDUP}× ORT fp32 decode at ≤ +{GOAL_PPL:.0f}% perplexity, ~60% parameters: "
        + (
            "**not measured**"
            if speedup is None
            else f"**{'met' if out['goal_met'] else 'not met'}** (×{speedup:.2f} decode, {delta:+.1f}% perplexity at "
            f"{out['params_ratio']:.1%} parameters)."
        ),
        *(["", "## Notes", "", *NOTES] if NOTES else []),
    ]
    (RESULTS / "lm_width_depth.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
