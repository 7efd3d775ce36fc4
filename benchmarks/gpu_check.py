"""GPU check: fine-tune and distil a tiny Llama on CUDA in bf16 and compare with the same run on the CPU in fp32.

    python benchmarks/gpu_check.py                       # on a GPU machine: cuda, bf16; ~1 min
    python benchmarks/gpu_check.py --device cpu --quick  # smoke run anywhere; writes nothing to results/

Both runs start from the same weights and data (synthetic Markov-chain token windows, vocabulary 64,
windows of 32 tokens, a peaked chain) and take the same steps: full fine-tuning of a 4-layer tiny Llama (next-token CE,
validation NLL each epoch), then distillation of a 2-layer student from it (token-level forward KL at
T = 1 with α = 0.5, teacher top-k logits cached once). The check passes when every epoch's validation NLL
of the device run is within ``--tolerance`` (relative) of the CPU fp32 run's and the device run learns
(final validation NLL at least 5% below the untrained model's).

Results go to benchmarks/results/gpu_check.{json,md} only when the device run really ran on a CUDA GPU;
a CPU-only run (``--device cpu``) prints its JSON and writes nothing there (``--out DIR`` writes it
elsewhere, labelled ``cpu-only``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from slimtune.distill import LMKDConfig, distill_, teacher_kl
from slimtune.env import collect
from slimtune.testing.markov_lm import markov_lm_data, tiny_llama
from slimtune.train import TrainConfig, fit
from slimtune.train.device import resolve_device
from slimtune.train.lm import evaluate_lm

RESULTS = Path(__file__).resolve().parent / "results"


def one_run(device: str, precision: str, *, quick: bool) -> dict[str, Any]:
    """Fine-tune then distil on ``device`` at ``precision``; per-epoch losses, final metrics on CPU fp32."""
    n = 256 if quick else 1024
    data = markov_lm_data(vocab=64, length=32, train=n, val=n // 4, test=n // 4, seed=7, sharpness=4.0)
    epochs = 2 if quick else 4
    train = TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, device=device, precision=precision)  # type: ignore[arg-type]
    teacher = tiny_llama(vocab=64, hidden=128, layers=4, heads=4, kv_heads=2, seed=0)
    start = evaluate_lm(teacher, data.val)["loss"]
    started = time.perf_counter()
    ft = fit(teacher, data, config=train)
    ft_s = time.perf_counter() - started
    student = tiny_llama(vocab=64, hidden=64, layers=2, heads=4, kv_heads=2, seed=1)
    started = time.perf_counter()
    kd = distill_(
        student, teacher=teacher, data=data, config=LMKDConfig(temperature=1.0, alpha=0.5, top_k=16), cache=True,
        train=train,
    )  # fmt: skip
    kd_s = time.perf_counter() - started
    return {
        "device": device,
        "precision": precision,
        "finetune": {
            "val_loss": [r["val_loss"] for r in ft.history],
            "train_loss": [r["train_loss"] for r in ft.history],
            "test_perplexity": evaluate_lm(teacher, data.test)["perplexity"],
            "seconds": ft_s,
        },
        "distill": {
            "val_loss": [r["val_loss"] for r in kd.history],
            "train_loss": [r["train_loss"] for r in kd.history],
            "test_perplexity": evaluate_lm(student, data.test)["perplexity"],
            "test_kl_to_teacher": teacher_kl(student, teacher, data.test),
            "seconds": kd_s,
        },
        "start_val_loss": start,
    }


def compare(dev: dict[str, Any], ref: dict[str, Any], tolerance: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase in ("finetune", "distill"):
        a, b = dev[phase]["val_loss"], ref[phase]["val_loss"]
        rel = max(abs(x - y) / abs(y) for x, y in zip(a, b, strict=True))
        learned = dev[phase]["val_loss"][-1] < 0.95 * dev["start_val_loss"]
        out[phase] = {"max_rel_diff_val_loss": rel, "learned": learned, "ok": rel <= tolerance and learned}
    out["ok"] = all(out[p]["ok"] for p in ("finetune", "distill"))
    return out


def markdown(payload: dict[str, Any]) -> str:
    dev, ref, cmp_ = payload["device_run"], payload["cpu_run"], payload["comparison"]
    what = f"{dev['device']} {dev['precision']} vs cpu fp32"
    lines = [
        f"# GPU check ({payload['label']}): tiny Llama fine-tune + distil, {what}",
        "",
        f"GPU: {payload['gpu'] or 'none'}; torch {torch.__version__}; tolerance {payload['tolerance']:.0%} relative",
        "",
        "| phase | run | val NLL per epoch | test ppl | KL to teacher | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for phase in ("finetune", "distill"):
        for name, run in (("device", dev), ("cpu fp32", ref)):
            r = run[phase]
            kl = f"{r['test_kl_to_teacher']:.4f}" if "test_kl_to_teacher" in r else "-"
            losses = ", ".join(f"{v:.4f}" for v in r["val_loss"])
            lines.append(f"| {phase} | {name} | {losses} | {r['test_perplexity']:.3f} | {kl} | {r['seconds']:.1f} |")
    ft, kd = cmp_["finetune"]["max_rel_diff_val_loss"], cmp_["distill"]["max_rel_diff_val_loss"]
    verdict = "PASS" if cmp_["ok"] else "FAIL"
    lines += ["", f"max relative difference of val NLL: fine-tune {ft:.4f}, distil {kd:.4f}; **{verdict}**", "", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: a smoke run, no results)")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--tolerance", type=float, default=0.05, help="max relative val-NLL difference per epoch")
    parser.add_argument("--quick", action="store_true", help="fewer windows and epochs (a smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="write JSON + md here instead of benchmarks/results")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)  # one line when CUDA is asked for and missing
    dev = one_run(args.device, args.precision, quick=args.quick)
    ref = one_run("cpu", "fp32", quick=args.quick)
    on_gpu = device.type == "cuda"
    payload = {
        "label": "gpu" if on_gpu else "cpu-only",
        "gpu": torch.cuda.get_device_name(device) if on_gpu else None,
        "tolerance": args.tolerance,
        "quick": args.quick,
        "device_run": dev,
        "cpu_run": ref,
        "comparison": compare(dev, ref, args.tolerance),
        "env": collect(),
    }
    print(json.dumps(payload["comparison"]), flush=True)
    out = args.out if args.out is not None else (RESULTS if on_gpu and not args.quick else None)
    if out is None:
        print("cpu-only or --quick run: nothing written to benchmarks/results (use --out DIR)", file=sys.stderr)
    else:
        stem = "gpu_check" if on_gpu else "gpu_check_cpu_only"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
        (out / f"{stem}.md").write_text(markdown(payload))
        print(f"wrote {out / stem}.json and .md", file=sys.stderr)
    return 0 if payload["comparison"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
