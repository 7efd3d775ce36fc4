"""Structured pruning of a transformer: MiniLM-L6 fine-tuned on tweets-binary, 50% of heads and FFN units removed.

    python benchmarks/minilm_structured.py        # ~30-40 min on 2 cores (+15 min if the fine-tune isn't cached)

Starts from the fine-tuned MiniLM of benchmarks/recipes/minilm_tweets_finetune.yaml, removes half of the
attention heads and half of the FFN neurons of every encoder layer (ranked by L1 norm and by Taylor
importance; the one with the better validation accuracy gets the recovery epoch), fine-tunes one epoch
to recover, and compares with the unpruned model: test accuracy, params, MACs, bytes on disk, and latency
at batch 1 and 8, sequence 64, 2 threads, in PyTorch eager and in ONNX Runtime (fp32), interleaved in
one process. Writes benchmarks/results/minilm_structured.{json,md}.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _minilm import CACHE, RESULTS, SEQ, accuracy, finetuned_minilm, interleaved_latency, ort_runner, torch_runner
from torch import nn

from slimtune._io import path_bytes
from slimtune.evaluate import count_macs
from slimtune.export import export_onnx, ort_session
from slimtune.models import load_model, save_model
from slimtune.prune import prune_
from slimtune.prune.structured import StructuredPruneConfig
from slimtune.train import TrainConfig, fit

RECOVER = TrainConfig(epochs=1, lr=5e-5, batch_size=32, weight_decay=0.01, seed=1)
PRUNED = CACHE / "minilm-structured"


def pruned_model(dense: nn.Module, data: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Prune with L1 and Taylor, keep the better on validation, recover one epoch (cached, resumable)."""
    info: dict[str, Any] = {}
    if (PRUNED / "model" / "spec.json").exists():
        info = json.loads((PRUNED / "info.json").read_text())
        return load_model(PRUNED / "model"), info
    candidates = {}
    for importance in ("l1", "taylor"):
        m = copy.deepcopy(dense)
        cfg = StructuredPruneConfig(ratio=0.5, targets=("heads", "ffn"), importance=importance)  # type: ignore[arg-type]
        prune_(m, cfg, data=data)
        candidates[importance] = m
        info[f"val_before_recovery_{importance}"] = accuracy(m, data.val.x, data.val.y)
        info[f"test_before_recovery_{importance}"] = accuracy(m, data.test.x, data.test.y)
        print(importance, {k: v for k, v in info.items() if importance in k}, flush=True)
    best = max(("l1", "taylor"), key=lambda k: info[f"val_before_recovery_{k}"])
    info["importance"] = best
    model = candidates[best]
    start = time.perf_counter()
    fit(model, data, config=RECOVER, checkpoint_dir=PRUNED / "ckpt", resume=True, desc="recover")
    info["recovery_seconds"] = round(time.perf_counter() - start)
    save_model(model, PRUNED / "model")
    (PRUNED / "info.json").write_text(json.dumps(info, indent=2))
    return model, info


def main() -> int:
    torch.set_num_threads(2)
    dense, data = finetuned_minilm()
    assert isinstance(data.test.x, torch.Tensor)
    pruned, info = pruned_model(dense, data)
    x = data.test.x[:8, :SEQ]
    models = {"dense": dense, "pruned 50% heads+FFN": pruned}
    rows: dict[str, dict[str, Any]] = {}
    runners: dict[str, Callable[[int], Callable[[], Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            model.eval()
            folder = Path(tmp) / name.split()[0]
            save_model(model, folder / "model")
            onnx_path = export_onnx(model, x[:1], folder / "model.onnx")
            rows[name] = {
                "accuracy": accuracy(model, data.test.x, data.test.y),
                "params": sum(p.numel() for p in model.parameters()),
                "macs": count_macs(model, x[:1]),
                "bytes": path_bytes(folder / "model" / "model.safetensors"),
            }
            runners[f"{name} / torch"] = torch_runner(model, x)
            runners[f"{name} / ort"] = ort_runner(ort_session(onnx_path, threads=2), x)
        lat = interleaved_latency(runners, batches=(1, 8), rounds=5, repeats=10)
    base = {"torch": lat["dense / torch"], "ort": lat["dense / ort"]}
    for name, row in rows.items():
        for rt in ("torch", "ort"):
            for b in ("b1", "b8"):
                row[f"{rt}_{b}_ms"] = lat[f"{name} / {rt}"][b]
                row[f"{rt}_{b}_speedup"] = base[rt][b] / lat[f"{name} / {rt}"][b]
    d, p = rows["dense"], rows["pruned 50% heads+FFN"]
    summary = {
        "accuracy_retained": p["accuracy"] / d["accuracy"],
        "params_ratio": d["params"] / p["params"],
        "macs_ratio": d["macs"] / p["macs"],
        "bytes_ratio": d["bytes"] / p["bytes"],
    }
    out = {"rows": rows, "summary": summary, "prune": info, "recovery": RECOVER.to_dict(), "seq": SEQ,
           "threads": torch.get_num_threads(), "test_examples": len(data.test.y)}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "minilm_structured.json").write_text(json.dumps(out, indent=2) + "\n")
    before = info[f"test_before_recovery_{info['importance']}"]
    lines = [
        "# Structured pruning of MiniLM-L6 (tweets-binary): 50% of heads and FFN neurons removed",
        "",
        f"Fine-tuned MiniLM-L6 (benchmarks/recipes/minilm_tweets_finetune.yaml); every encoder layer loses half its "
        f"heads (12 → 6) and half its FFN units (1536 → 768), ranked by {info['importance']} importance (chosen "
        f"on validation over L1/Taylor: val acc before recovery L1 {100 * info['val_before_recovery_l1']:.2f}%, "
        f"Taylor {100 * info['val_before_recovery_taylor']:.2f}%), then one recovery epoch "
        f"(lr {RECOVER.lr}). Test set {len(data.test.y)} tweets. Latency: sequence {SEQ}, "
        f"{torch.get_num_threads()} threads, medians of 5 interleaved rounds in one process.",
        "",
        "| model | accuracy | params | MACs | bytes | torch b1 (ms) | torch b8 (ms) | ORT b1 (ms) | ORT b8 (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {100 * r['accuracy']:.2f}% | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.0f}M | "
            f"{r['bytes'] / 1e6:.1f} MB | {r['torch_b1_ms']:.1f} (×{r['torch_b1_speedup']:.2f}) | "
            f"{r['torch_b8_ms']:.1f} (×{r['torch_b8_speedup']:.2f}) | "
            f"{r['ort_b1_ms']:.1f} (×{r['ort_b1_speedup']:.2f}) | "
            f"{r['ort_b8_ms']:.1f} (×{r['ort_b8_speedup']:.2f}) |"
        )
    lines += [
        "",
        f"Accuracy retained {100 * summary['accuracy_retained']:.1f}%; params ÷{summary['params_ratio']:.2f} "
        f"(the embeddings, 12.7M of MiniLM's 22.7M, are not pruned), MACs ÷{summary['macs_ratio']:.2f}, "
        f"file ÷{summary['bytes_ratio']:.2f}. Before recovery: test {100 * before:.2f}%.",
    ]
    (RESULTS / "minilm_structured.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
