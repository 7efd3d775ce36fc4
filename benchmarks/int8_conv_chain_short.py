"""Short measurement (issue #22, Deliver 1): static int8 of an (untrained) resnet-small on 1×28×28 inputs,
``ops: weights`` vs ``ops: auto`` (the whole int8 chain), against ORT fp32, 1 thread. Node counts and fp32
round trips come from the graphs; latency from paired per-round ratios (``slimtune.evaluate.paired``), so
a busy machine shows up as a wide spread or a declared tie, not as a false winner. Not the search_vs_peers
rerun (trained model, NNCF side by side): that is pending. Writes benchmarks/results/int8_conv_chain_short.md.
Run: python benchmarks/int8_conv_chain_short.py
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    import onnxruntime as ort

    from slimtune.evaluate.paired import decide
    from slimtune.export import export_onnx
    from slimtune.models import build
    from slimtune.quantize import OrtStaticInt8Config, quantize_onnx
    from slimtune.quantize.qdq_graph import fp32_round_trips, op_counts

    torch.manual_seed(0)
    model = build("resnet-small", input_shape=(1, 28, 28), num_classes=10).eval()
    x = torch.rand(64, 1, 28, 28)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": export_onnx(model, x[:1], Path(tmp) / "fp32.onnx")}
        for ops in ("weights", "auto"):
            p = paths[f"static ops={ops}"] = Path(tmp) / f"{ops}.onnx"
            quantize_onnx(paths["fp32"], p, OrtStaticInt8Config(ops=ops), calibration=x)
            c = op_counts(p)
            lines.append(f"| static ops={ops} | {c['QuantizeLinear']} | {c['DequantizeLinear']} | "
                         f"{len(fp32_round_trips(p))} |")  # fmt: skip
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sessions = {k: ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"]) for k, p in paths.items()}
        name = sessions["fp32"].get_inputs()[0].name
        timing = []
        for b in (1, 8):
            feed = {name: x[:b].numpy()}

            def time_round(keys: list[str], feed: dict = feed) -> dict[str, float]:
                out = {}
                for k in keys:
                    t = time.perf_counter()
                    for _ in range(10):
                        sessions[k].run(None, feed)
                    out[k] = (time.perf_counter() - t) * 100
                return out

            d = decide(["static ops=weights", "static ops=auto"], time_round, reference="fp32", rounds=15,
                       max_rounds=30)  # fmt: skip
            for k, r in d.ratio.items():
                timing.append(f"| {b} | {k} | ×{1 / r['median']:.2f} | {r['low']:.2f}–{r['high']:.2f} | {d.rounds} |")
            declared = f" (declared tie: {', '.join(d.declared)})" if d.declared else ""
            timing.append(f"| {b} | decision | {d.winner}{declared} | load {d.load.get('load_average', '?')} | |")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    md = [
        "# int8 conv chain: resnet-small static int8, ops weights vs auto (short measurement)",
        "",
        "Untrained resnet-small (widths 16/32/64), 1×28×28, calibration on 64 random inputs, 1 thread, "
        f"commit {commit}. Shared 2-core machine under heavy load: compare rows of this run only; the trained, "
        "NNCF side-by-side rerun (search_vs_peers) is pending.",
        "",
        "| graph | QuantizeLinear | DequantizeLinear | fp32 round trips |",
        "| --- | --- | --- | --- |",
        *lines,
        "",
        "| batch | variant | speed vs ORT fp32 (1 / median per-round ratio) | ratio quartiles | rounds |",
        "| --- | --- | --- | --- | --- |",
        *timing,
    ]
    out = Path(__file__).parent / "results" / "int8_conv_chain_short.md"
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
