"""Decode/prefill timing with every runtime in its own process.

Timing several ONNX Runtime sessions (and onnxruntime-genai, llama.cpp) in one process lets each one's idle
intra-op threads spin while the next runs: on 2 cores the ratios then depend on the order (the same int4 bundle
measured x2.70 to x4.42 fp32 in one session). Here each round starts one fresh process per runtime, in a rotated
order; the process loads the model, warms up, times a 1-token and an n-token generation per batch ``reps`` times
(medians), prints JSON and exits, so nothing of it is left running when the next runtime is timed. A ``floor``
spec times only the weight MatMuls of a bundle's graph (``matmul_floor_session``): the part of a decode step that
quantization speeds up; the rest (attention, norms, the SiLU) is the same graph in fp32 and int4.

    python benchmarks/_isolated_timing.py worker '<json spec>'    # what the parent runs
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Spec = dict[str, Any]  # {"kind": "ort"|"genai"|"llama"|"floor", "path": str}


def genai_generate(og_model: Any, prompt: list[int], batch: int, n: int) -> list[int]:
    """Greedy ``n`` new tokens for ``batch`` copies of ``prompt`` with onnxruntime-genai's own loop (first row)."""
    import numpy as np
    import onnxruntime_genai as og

    params = og.GeneratorParams(og_model)
    params.set_search_options(max_length=len(prompt) + n, min_length=len(prompt) + n, do_sample=False,
                              batch_size=batch)  # fmt: skip
    gen = og.Generator(og_model, params)
    gen.append_tokens(np.asarray([prompt] * batch, dtype=np.int32))
    while not gen.is_done():
        gen.generate_next_token()
    return [int(t) for t in gen.get_sequence(0)[len(prompt) :]]


def _runner(spec: Spec, prompt: list[int], threads: int) -> Callable[[int, int], list[int]]:
    import numpy as np

    if spec["kind"] == "ort":
        from slimtune.runtime.decoder import Decoder, ort_decoder_session

        decoder = Decoder(ort_decoder_session(Path(spec["path"]) / "model.onnx", threads=threads))
        return lambda b, n: decoder.generate([prompt] * b, max_new_tokens=n)[0]
    if spec["kind"] == "genai":
        import onnxruntime_genai as og

        model = og.Model(spec["path"])
        return lambda b, n: genai_generate(model, prompt, b, n)
    if spec["kind"] == "llama":
        import llama_cpp

        llama = llama_cpp.Llama(model_path=spec["path"], n_threads=threads, n_threads_batch=threads, n_ctx=512,
                                logits_all=True, verbose=False)  # fmt: skip

        def run_llama(batch: int, n: int) -> list[int]:  # batch 1 only: llama-cpp-python has no batched API
            llama.reset()
            llama.eval(prompt)
            made: list[int] = []
            for _ in range(n):
                made.append(int(np.argmax(llama.scores[llama.n_tokens - 1])))
                if len(made) < n:
                    llama.eval([made[-1]])
            return made

        return run_llama
    raise ValueError(f"unknown runtime kind {spec['kind']!r}")


def matmul_floor_session(model_path: str, threads: int) -> tuple[Any, dict[int, int], list[tuple[int, int]]]:
    """An ONNX Runtime session running only the weight MatMuls of a decoder graph (``MatMul`` on an initializer,
    or ``MatMulNBits``, with their own initializers: the same bytes and kernels), each fed a [b, 1, K] input of
    its width; one run is the floor of a decode step's MatMul time. Returns (session, {K: count}, [(K, N)])."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    proto = onnx.load(model_path)
    inits = {t.name: t for t in proto.graph.initializer}
    nodes, outputs, keep, widths, shapes = [], [], [], {}, []
    for i, node in enumerate(proto.graph.node):
        if node.op_type == "MatMul" and node.input[1] in inits:
            k, n = (int(d) for d in inits[node.input[1]].dims)
        elif node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute}
            k, n = int(attrs["K"]), int(attrs["N"])
        else:
            continue
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.input[0], copy.output[0] = f"x{k}", f"y{i}"
        del copy.output[1:]
        nodes.append(copy)
        keep += [x for x in node.input[1:] if x]
        widths[k] = widths.get(k, 0) + 1
        shapes.append((k, n))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, ["b", 1, n]))
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, ["b", 1, k]) for k in widths]
    graph = helper.make_graph(nodes, "matmul_floor", inputs, outputs, [inits[x] for x in dict.fromkeys(keep)])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]), widths, shapes


def floor_worker(job: dict[str, Any]) -> dict[str, Any]:
    """The MatMul floor of one bundle: per batch, the median of ``reps`` × 20 timed runs (seconds per step)."""
    import numpy as np

    session, widths, _ = matmul_floor_session(str(Path(job["spec"]["path"]) / "model.onnx"), job["threads"])
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"batches": {}}
    for b in job["batches"]:
        feed = {f"x{k}": rng.standard_normal((b, 1, k), dtype=np.float32) for k in widths}
        for _ in range(5):
            session.run(None, feed)
        steps = []
        for _ in range(job["reps"] * 20):
            start = time.perf_counter()
            session.run(None, feed)
            steps.append(time.perf_counter() - start)
        out["batches"][str(b)] = {"step": statistics.median(steps)}
    return out


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """Load one runtime, warm up, and time it: per batch, ``reps`` pairs of (1-token, n-token) generations."""
    if job["spec"]["kind"] == "floor":
        return floor_worker(job)
    t0 = time.perf_counter()
    run = _runner(job["spec"], job["prompt"], job["threads"])
    load_s = time.perf_counter() - t0
    out: dict[str, Any] = {"load_seconds": load_s, "batches": {}}
    for b in job["batches"]:
        run(b, 2)  # warm-up: allocations, kernel choices, first-call costs
        t1, tn, tokens = [], [], []
        for _ in range(job["reps"]):
            start = time.perf_counter()
            run(b, 1)
            t1.append(time.perf_counter() - start)
            start = time.perf_counter()
            tokens = run(b, job["new_tokens"])
            tn.append(time.perf_counter() - start)
        out["batches"][str(b)] = {"t1": t1, "tn": tn, "tokens": tokens}
    return out


def time_isolated(
    specs: dict[str, Spec],
    prompt: list[int],
    *,
    new_tokens: int,
    rounds: int,
    threads: int,
    reps: int = 3,
    batches: tuple[int, ...] = (1, 8),
) -> dict[str, Any]:
    """Rounds of one fresh process per runtime (order rotated each round); rows as lm_baseline.time_runtimes makes:
    decode tok/s = b (n - 1) / (T(n) - T(1)) from each process's medians, then the median over rounds."""
    names = list(specs)
    got: dict[tuple[str, int], list[dict[str, float]]] = {}
    tokens: dict[str, list[int]] = {}
    loads = []
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            spec = specs[name]
            bs = [b for b in batches if not (spec["kind"] == "llama" and b > 1)]
            job = {"spec": spec, "prompt": prompt, "threads": threads, "batches": bs, "reps": reps,
                   "new_tokens": new_tokens}  # fmt: skip
            res = subprocess.run([sys.executable, __file__, "worker", json.dumps(job)], capture_output=True,
                                 text=True, env=env, timeout=1200)  # fmt: skip
            if res.returncode != 0:
                raise RuntimeError(f"{name}: worker failed: {res.stderr.strip()[-600:]}")
            out = json.loads(res.stdout.strip().splitlines()[-1])
            for b, v in out["batches"].items():
                if "step" in v:  # a MatMul floor: tokens/s = batch / step time
                    got.setdefault((name, int(b)), []).append({"t1": v["step"], "tn": v["step"],
                                                               "decode": int(b) / v["step"]})  # fmt: skip
                    continue
                first, full = statistics.median(v["t1"]), statistics.median(v["tn"])
                got.setdefault((name, int(b)), []).append(
                    {"t1": first, "tn": full, "decode": int(b) * (new_tokens - 1) / max(full - first, 1e-9)}
                )
                if int(b) == 1:
                    tokens[name] = v["tokens"][:16]
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{n}@{b} {v[-1]['decode']:.1f}" for (n, b), v in got.items()), flush=True)  # fmt: skip
    loads.append(os.getloadavg()[0])
    rows = []
    for (name, b), v in got.items():
        rows.append({"runtime": name, "batch": b, "decode_tokens_per_s": statistics.median(x["decode"] for x in v),
                     "decode_tokens_per_s_rounds": [x["decode"] for x in v],
                     "ttft_ms": 1000 * statistics.median(x["t1"] for x in v),
                     "seconds_1_token": [x["t1"] for x in v], "seconds_n_tokens": [x["tn"] for x in v]})  # fmt: skip
    method = f"one process per runtime per round, rotated order; {reps} timed pairs per process (medians)"
    return {"rows": rows, "load_per_round": loads, "first_16_greedy_tokens": tokens, "method": method}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        sys.exit("usage: python benchmarks/_isolated_timing.py worker '<json job>'")
