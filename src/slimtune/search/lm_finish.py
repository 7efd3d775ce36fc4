"""The end of an LM search: the model and the cheapest within-budget front members (up to ``max_measured``) are
rebuilt, exported as parity-checked LM bundles (MatMulNBits for int4/int8) and measured together in ONNX Runtime
(decode ms/token at batch 1, interleaved rounds, and bytes on disk); the cheapest within the budget on the
objective is copied to ``out/best`` (the model itself when nothing else is within it: a 0% budget ships the
unchanged model unless a candidate is no worse); ``search.json`` and ``search.html`` record every candidate."""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slimtune._io import path_bytes, write_text
from slimtune.errors import ParityError
from slimtune.evaluate.report import human_bytes
from slimtune.search.finish import SearchResult
from slimtune.search.lm_runner import DEAD, LMSearch, increase, lm_cost, lm_front
from slimtune.search.runner import BEST, PAGE, WORK

PROMPT_TOKENS, DECODE_TOKENS, ROUNDS = 16, 16, 5


def _model_of(s: LMSearch, rec: dict[str, Any]) -> nn.Module:
    from slimtune.models import load_model
    from slimtune.search.lm_techniques import with_precision

    model_dir = s.state["bases"][rec["base"]]["model_dir"]
    base = s.teacher if model_dir is None else load_model(s.out / model_dir)
    return with_precision(base, rec["config"]["precision"], s.data, s.config)[0]


def _export(s: LMSearch, rec: dict[str, Any], model: nn.Module) -> Path:
    from slimtune.export.lm_bundle import export_lm_bundle
    from slimtune.export.lm_onnx import LMExportConfig
    from slimtune.models import lm_tokenizer

    x = s.data.test.x
    assert isinstance(x, torch.Tensor)
    length = min(32, int(x.shape[1]))
    cfg = LMExportConfig(greedy_tokens=8, prompts=2, windows=2, window_length=length)
    tok = lm_tokenizer(model)
    provenance = {"search": rec["name"], "config": rec["config"], "id": rec["id"]}
    return export_lm_bundle(model, tok.tokenizer, s.out / WORK / rec["id"] / "bundle", windows=x[:2, :length],
                            chat_template=tok.chat_template, config=cfg, provenance=provenance, force=True)  # fmt: skip


def _decode_ms(bundles: dict[str, Path], vocab: int) -> dict[str, float]:
    """Decode ms/token at batch 1 of each bundle's decoder, timed in interleaved rounds (one load for all)."""
    from slimtune.runtime.bundle import read_manifest
    from slimtune.runtime.decoder import Decoder, ort_decoder_session
    from slimtune.runtime.lm_bench import _one_run

    threads = torch.get_num_threads()
    decoders = {k: Decoder(ort_decoder_session(read_manifest(p).file("model"), threads=threads))
                for k, p in bundles.items()}  # fmt: skip
    ids = np.random.default_rng(0).integers(0, vocab, size=(1, PROMPT_TOKENS), dtype=np.int64)
    for d in decoders.values():
        _one_run(d, ids, 2)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in decoders}
    for _ in range(ROUNDS):
        for k, d in decoders.items():
            times[k].append(1000 * _one_run(d, ids, DECODE_TOKENS)[2] / DECODE_TOKENS)
    return {k: statistics.median(v) for k, v in times.items()}


def _to_measure(s: LMSearch) -> list[dict[str, Any]]:
    """The model itself, then the within-budget front members cheapest first (estimated cost), up to the limit."""
    pool = s.evaluated()
    model = next(r for r in pool if r["config"]["kind"] == "dense" and r["config"]["precision"] == "fp32")
    ok = [r for r in lm_front(pool, "size") if s.feasible(r) and r is not model]
    ok.sort(key=lambda r: (r["bytes"], r["val_perplexity"], r["id"]))
    return [model, *ok[: s.config.max_measured]]


def _message(s: LMSearch, rec: dict[str, Any]) -> str:
    teacher, budget = s.state["teacher"], s.config.max_ppl_increase
    val = increase(rec["val_perplexity"], s.reference)
    where = f"validation perplexity {rec['val_perplexity']:.4g} ({val:+.1f}%)"
    if rec.get("test_perplexity") is not None:
        test = increase(rec["test_perplexity"], teacher["test_perplexity"])
        where += f", test {rec['test_perplexity']:.4g} ({test:+.1f}%)"
    lat, t_lat = (rec.get("latency_ms") or {}).get("batch1"), (teacher.get("latency_ms") or {}).get("batch1")
    parts = []
    if lat and t_lat:
        parts.append(f"decode {lat:.3g} ms/token at batch 1 ({t_lat / lat:.2f}× the model's speed in ONNX Runtime)")
    parts.append(f"{human_bytes(rec['bytes'])} ({teacher['bytes'] / max(1, rec['bytes']):.2f}× smaller)")
    if rec["config"]["kind"] == "dense" and rec["config"]["precision"] == "fp32":
        return (f"no compressed candidate stayed within {budget:g}% perplexity and was cheaper; shipped the model "
                f"itself ({where})")  # fmt: skip
    return f"chosen {rec['name']} within {budget:g}% perplexity: {where}; {'; '.join(parts)}"


def finalise_lm(s: LMSearch) -> SearchResult:
    """Measure, choose, bundle and write the outputs of an LM search whose proxy work is done."""
    from slimtune.search.lm_page import lm_search_page
    from slimtune.search.lm_techniques import proxy_perplexity

    bundles: dict[str, Path] = {}
    models: dict[str, nn.Module] = {}
    for rec in _to_measure(s):
        t0 = time.perf_counter()
        model = _model_of(s, rec)
        try:
            bundles[rec["id"]] = _export(s, rec, model)
        except ParityError as exc:  # not shippable: recorded, and the others still compete
            rec["status"], rec["reason"] = "parity-failed", " ".join(str(exc).split())
            continue
        models[rec["id"]] = model
        rec["test_perplexity"] = proxy_perplexity(model, s.data, s.config, split="test")
        rec["bytes"] = path_bytes(bundles[rec["id"]] / "model.onnx") + (
            path_bytes(bundles[rec["id"]] / "model.onnx.data") if (bundles[rec["id"]] / "model.onnx.data").exists()
            else 0
        )  # fmt: skip
        rec["measured"] = True
        rec["bundle"] = str((bundles[rec["id"]]).relative_to(s.out))
        rec["seconds"] = round(rec.get("seconds", 0.0) + time.perf_counter() - t0, 3)
        s.save()
    vocab = int(s.teacher.get_input_embeddings().weight.shape[0])  # type: ignore[operator]
    for k, ms in _decode_ms(bundles, vocab).items():  # timed for both objectives: the page plots both
        s.records[k]["latency_ms"] = {"batch1": ms}
    model_rec = _to_measure(s)[0]
    s.state["teacher"].update(
        test_perplexity=model_rec.get("test_perplexity"), bytes=model_rec.get("bytes", s.state["teacher"]["bytes"]),
        latency_ms=model_rec.get("latency_ms"),
    )  # fmt: skip
    measured = [r for r in s.evaluated() if r.get("measured") and s.feasible(r)]
    if not measured:
        raise ParityError("no candidate, not even the unchanged model, exported with parity; see search.json")
    chosen = min(measured, key=lambda r: (lm_cost(r, s.config.objective), r["val_perplexity"], r["id"]))
    shutil.copytree(bundles[chosen["id"]], s.out / BEST, dirs_exist_ok=True)
    front_ids = {r["id"] for r in lm_front(s.evaluated(), s.config.objective, measured=True)}
    for r in s.records.values():
        if r["id"] == chosen["id"]:
            r["status"] = "chosen"
        elif r["id"] in front_ids:
            r["status"] = "front"
        elif r["status"] == "evaluated":
            r["status"] = "dominated" if s.feasible(r) else "over-budget"
        elif r["status"] == "pending":
            r["status"], r["reason"] = "not-run", "time budget spent" if s.out_of_time() else "not reached"
    message = _message(s, chosen)
    s.state["outcome"] = {"chosen": chosen["id"], "name": chosen["name"], "met_budget": True, "message": message,
                          "front": sorted(front_ids), "bundle": BEST}  # fmt: skip
    s.save()
    write_text(s.out / PAGE, lm_search_page(s.state))
    return SearchResult(
        out=s.out, bundle=s.out / BEST, chosen=chosen, met_budget=True, message=message,
        front=[r for r in s.state["candidates"] if r["id"] in front_ids], candidates=list(s.state["candidates"]),
        teacher=s.state["teacher"], model=models[chosen["id"]], evaluations=s.evaluations,
    )  # fmt: skip


__all__ = ["DEAD", "finalise_lm"]
