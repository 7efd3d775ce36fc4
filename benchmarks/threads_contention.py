"""Threads under contention: the demo's teacher (MLP 64-256-256-10 on digits, 5 epochs) trained with 1 and with 2
torch threads, alternating, while other work loads the CPU (``--busy``: this script adds one busy process).

    python benchmarks/threads_contention.py --busy      # ~1 min on an idle 2-core machine; longer when loaded

It is the measurement behind ``--threads auto`` (half of the free cores, see ``slimtune.threads``): with one
core taken, torch's default of one thread per core waits at every parallel region's barrier for a thread the
scheduler has parked. Writes benchmarks/results/threads_contention.{json,md}. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from slimtune.data import load
from slimtune.env import collect
from slimtune.models import build
from slimtune.train.loop import TrainConfig, fit

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--busy", action="store_true", help="run one busy-looping process beside the timing")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of (1 thread, 2 threads) runs")
    args = parser.parse_args()
    data = load("digits", seed=0)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    runs = []
    try:
        for _ in range(args.rounds):
            for n in (1, 2):
                torch.set_num_threads(n)
                torch.manual_seed(0)
                model = build("mlp", input_shape=data.input_shape, num_classes=data.num_classes, hidden=[256, 256])
                load_before = os.getloadavg()[0]
                t0 = time.perf_counter()
                fit(model, data, config=TrainConfig(epochs=5, lr=0.003, batch_size=64, seed=0), progress=False)
                runs.append(
                    {
                        "threads": n,
                        "seconds": round(time.perf_counter() - t0, 2),
                        "load_before": round(load_before, 2),
                        "load_after": round(os.getloadavg()[0], 2),
                    }
                )
                print(json.dumps(runs[-1]), flush=True)
    finally:
        if busy is not None:
            busy.kill()
    RESULTS.mkdir(exist_ok=True)
    result = {"busy_process": args.busy, "runs": runs, "env": collect()}
    (RESULTS / "threads_contention.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Threads under contention",
        "",
        "| threads | seconds (5 epochs) | load before | load after |",
        "| --- | --- | --- | --- |",
        *(f"| {r['threads']} | {r['seconds']} | {r['load_before']} | {r['load_after']} |" for r in runs),
    ]
    (RESULTS / "threads_contention.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
