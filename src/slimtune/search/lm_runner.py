"""The LM search loop: one-shot proxies for every candidate (cheap techniques first), hopeless bases dropped,
then a short distillation recovery for the Pareto front's over-budget members that could beat the best
within-budget candidate. Every finished evaluation is written to ``search.json`` atomically; the end (export,
measurement in ONNX Runtime, the choice, the bundle, the page) lives in ``lm_finish``."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from torch import nn

from slimtune._io import write_text
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, OutputExistsError
from slimtune.search.lm_space import LMSearchConfig, base_name, build_lm_space, candidate_name, estimated_bytes
from slimtune.search.pareto import pareto_front
from slimtune.search.progress import Progress, ProgressEvent
from slimtune.search.runner import SEARCH_JSON, WORK, claim_outputs, fingerprint
from slimtune.search.space import Base

FORMAT_VERSION = 1
EPS = 1e-9
DEAD = ("failed", "pruned-early", "parity-failed")


def increase(ppl: float, reference: float) -> float:
    """Perplexity increase over the model's own, in percent."""
    return 100.0 * (ppl / reference - 1.0) if math.isfinite(ppl) else math.inf


def lm_cost(record: dict[str, Any], objective: str) -> float:
    """Lower is better: measured ORT decode ms/token at batch 1 or deployed bytes once a record was exported and
    measured; before that the estimated deployed bytes (the proxy of both objectives)."""
    if objective == "latency" and (record.get("latency_ms") or {}).get("batch1") is not None:
        return float(record["latency_ms"]["batch1"])
    value = record.get("bytes")
    return math.inf if value is None else float(value)


def lm_front(records: list[dict[str, Any]], objective: str, *, measured: bool = False) -> list[dict[str, Any]]:
    """The Pareto front (perplexity down, cost down); ``measured``: among the exported records only."""
    recs = [r for r in records if r.get("val_perplexity") is not None and (not measured or r.get("measured"))]
    ids = set(pareto_front([(r["id"], -r["val_perplexity"], lm_cost(r, objective)) for r in recs]))
    return [r for r in recs if r["id"] in ids]


class LMSearch:
    """State of one LM search in ``out``; ``run()`` does the proxies and recoveries, ``lm_finish`` the end."""

    def __init__(
        self,
        teacher: nn.Module,
        data: DataSplits,
        config: LMSearchConfig,
        out: Path,
        *,
        resume: bool,
        force: bool,
        progress: Progress | None,
    ) -> None:
        self.teacher, self.data, self.config, self.out, self.progress = teacher, data, config, out, progress
        self.space = build_lm_space(config)
        self.bases = list({c.base.id: c.base for c in self.space}.values())
        self.started = time.perf_counter()
        self.evaluations = 0
        path = out / SEARCH_JSON
        if path.exists() and not resume and not force:
            raise OutputExistsError(f"'{out}' already holds a search; pass --resume to continue it or --force")
        claim_outputs(out, clear=not resume)
        print_ = fingerprint(teacher)
        if resume and path.exists():
            self.state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            self._check_same(print_)
            self.state["config"] = config.to_dict()  # e.g. a longer time budget for the rest
        else:
            self.state = self._new_state(print_)
        self.records: dict[str, dict[str, Any]] = {r["id"]: r for r in self.state["candidates"]}
        self.elapsed_before = float(self.state.get("elapsed_s", 0.0))

    def _new_state(self, print_: str) -> dict[str, Any]:
        cands = [
            {"id": c.id, "name": candidate_name(c), "config": c.spec, "base": c.base.id, "status": "pending",
             "evaluations": []}
            for c in self.space
        ]  # fmt: skip
        return {
            "version": FORMAT_VERSION,
            "kind": "lm",
            "config": self.config.to_dict(),
            "settings": _settings(self.config),
            "teacher": {"fingerprint": print_},
            "elapsed_s": 0.0,
            "candidates": cands,
            "bases": {
                b.id: {"name": base_name(b), "config": b.spec, "model_dir": None, "seconds": 0.0} for b in self.bases
            },
        }

    def _check_same(self, print_: str) -> None:
        """A resumed search continues only the same search: same candidates and evaluation settings, same model."""
        ids = [r.get("id") for r in self.state.get("candidates", [])]
        same = self.state.get("kind") == "lm" and self.state.get("version") == FORMAT_VERSION
        if not same or ids != [c.id for c in self.space] or self.state.get("settings") != _settings(self.config):
            raise ConfigError(
                f"cannot resume the search in '{self.out}': it was started with other search options; "
                "use the same options (only --time-budget may change), a new --out or --force"
            )
        if self.state["teacher"].get("fingerprint") != print_:
            raise ConfigError(
                f"cannot resume the search in '{self.out}': it was started from another model; "
                "use the same model, a new --out or --force"
            )

    # -- bookkeeping ----------------------------------------------------------------------------------------
    @property
    def reference(self) -> float:
        return float(self.state["teacher"]["val_perplexity"])

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        budget = self.config.time_budget_s
        return budget is not None and self.elapsed() >= budget

    def feasible(self, record: dict[str, Any]) -> bool:
        return increase(record["val_perplexity"], self.reference) <= self.config.max_ppl_increase + EPS

    def evaluated(self) -> list[dict[str, Any]]:
        return [r for r in self.records.values() if r.get("val_perplexity") is not None and r["status"] not in DEAD]

    def save(self) -> None:
        self.state["elapsed_s"] = round(self.elapsed(), 3)
        self.state["candidates"] = [self.records[c.id] for c in self.space]
        write_text(self.out / SEARCH_JSON, json.dumps(self.state, indent=2, default=str))

    def _event(self, base: Base, stage: str) -> None:
        if self.progress is None:
            return
        done = sum(1 for r in self.records.values() if r["evaluations"] or r["status"] in DEAD)
        ok = [r for r in self.evaluated() if self.feasible(r)]
        best = min(ok, key=lambda r: lm_cost(r, self.config.objective), default=None)
        best_text = "none yet"
        if best is not None:
            up = increase(best["val_perplexity"], self.reference)
            best_text = f"{best['name']} ppl {best['val_perplexity']:.4g} ({up:+.1f}%)"
        left = self.config.time_budget_s
        left_s = None if left is None else max(0.0, left - self.elapsed())
        line = (f"[{done}/{len(self.records)} candidates measured] {base_name(base)} {stage} | cheapest within "
                f"{self.config.max_ppl_increase:g}% (provisional): {best_text}"
                + ("" if left_s is None else f" | {left_s:.0f} s left"))  # fmt: skip
        self.progress(ProgressEvent(done, len(self.records), self.evaluations, base_name(base), 0, best_text,
                                    left_s, line))  # fmt: skip

    # -- work -----------------------------------------------------------------------------------------------
    def _measure(self, record: dict[str, Any], model: nn.Module, *, recovered: bool) -> None:
        from slimtune.search.lm_techniques import proxy_perplexity, with_precision

        t0 = time.perf_counter()
        precision = record["config"]["precision"]
        qmodel, notes = with_precision(model, precision, self.data, self.config)
        ppl = proxy_perplexity(qmodel, self.data, self.config)
        group = notes.get("group_size", self.config.group_size)
        record.update(notes, val_perplexity=ppl, ppl_increase=increase(ppl, self.reference), status="evaluated",
                      bytes=estimated_bytes(model, precision, group), recovered=recovered)  # fmt: skip
        record["bytes_estimate"] = record["bytes"]
        record["evaluations"].append({"recovered": recovered, "val_perplexity": ppl})
        record["seconds"] = round(record.get("seconds", 0.0) + time.perf_counter() - t0, 3)
        self.evaluations += 1

    def _fail(self, records: list[dict[str, Any]], exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        for r in records:
            r["status"], r["reason"] = "failed", reason

    def _base_records(self, base: Base) -> list[dict[str, Any]]:
        return [self.records[c.id] for c in self.space if c.base.id == base.id]

    def _evaluate_base(self, base: Base) -> None:
        """Make ``base``, save it, and give each of its candidates a one-shot perplexity (fp32 first: a base
        hopeless at fp32 drops its quantized variants)."""
        from slimtune.models import save_model
        from slimtune.search.lm_techniques import make_base

        records, brec = self._base_records(base), self.state["bases"][base.id]
        t0 = time.perf_counter()
        try:
            model = make_base(self.teacher, base, self.data, self.config)
            if base.kind != "dense":
                folder = self.out / WORK / base.id / "model"
                save_model(model, folder)
                brec["model_dir"] = os.path.relpath(folder, self.out)
        except Exception as exc:  # one technique failing (e.g. a ratio this model cannot take) never ends the search
            brec["error"] = f"{type(exc).__name__}: {exc}"
            self._fail(records, exc)
            self.save()
            return
        limit = self.config.max_ppl_increase + self.config.hopeless_increase
        for r in records:
            fp32 = records[0]
            if r is not fp32 and fp32.get("ppl_increase", 0.0) > limit + EPS:
                r["status"] = "pruned-early"
                r["reason"] = f"its fp32 base is {fp32['ppl_increase']:.0f}% above the model's perplexity"
                continue
            try:
                self._measure(r, model, recovered=False)
            except Exception as exc:
                self._fail([r], exc)
            self.save()
        brec["seconds"] = round(time.perf_counter() - t0, 3)
        self.save()
        self._event(base, "one-shot")

    def recovery_targets(self) -> list[Base]:
        """Bases of the Pareto front's over-budget members cheaper than the best within-budget candidate, those
        nearest the budget first: only they could change the choice after recovery."""
        pool = self.evaluated()
        ok = [lm_cost(r, self.config.objective) for r in pool if self.feasible(r)]
        best = min(ok, default=math.inf)
        recovered = {b for b, rec in self.state["bases"].items() if rec.get("recovery") is not None}
        hits = [
            r for r in lm_front(pool, self.config.objective)
            if not self.feasible(r) and lm_cost(r, self.config.objective) < best and r["config"]["kind"] != "dense"
            and r["base"] not in recovered
        ]  # fmt: skip
        order: list[Base] = []
        by_id = {b.id: b for b in self.bases}
        for r in sorted(hits, key=lambda r: (r["val_perplexity"], r["id"])):
            if by_id[r["base"]] not in order:
                order.append(by_id[r["base"]])
        return order[: self.config.max_recoveries]

    def _recover(self, base: Base) -> None:
        from slimtune.models import load_model, save_model
        from slimtune.search.lm_techniques import recover_base

        brec = self.state["bases"][base.id]
        t0 = time.perf_counter()
        try:
            model = load_model(self.out / brec["model_dir"])
            sparse = base.kind == "sparse"  # only a sparse base's zeros are held (a dense model may have exact zeros)
            brec["recovery"] = recover_base(model, self.teacher, self.data, self.config, hold_zeros=sparse)
            folder = self.out / WORK / base.id / "recovered"
            save_model(model, folder)
            brec["model_dir"] = os.path.relpath(folder, self.out)
        except Exception as exc:
            brec["recovery_error"] = f"{type(exc).__name__}: {exc}"
            self.save()
            return
        for r in self._base_records(base):
            if r["status"] not in DEAD:
                try:
                    self._measure(r, model, recovered=True)
                except Exception as exc:
                    self._fail([r], exc)
        brec["seconds"] = round(brec["seconds"] + time.perf_counter() - t0, 3)
        self.save()
        self._event(base, "after recovery")

    def run(self) -> None:
        from slimtune.search.lm_techniques import proxy_perplexity

        if self.state["teacher"].get("val_perplexity") is None:
            ppl = proxy_perplexity(self.teacher, self.data, self.config)
            if not math.isfinite(ppl):
                raise ConfigError("the model's own perplexity on the validation windows is not finite; check the data")
            self.state["teacher"].update(val_perplexity=ppl, bytes=estimated_bytes(self.teacher, "fp32", -1))
            self.save()
        for base in self.bases:
            records = self._base_records(base)
            if all(r.get("val_perplexity") is not None or r["status"] in DEAD for r in records):
                continue  # done before a resume
            if self.out_of_time() and (self.evaluations or self.elapsed_before):
                break  # no new work after the budget; the model itself is always measured
            for r in records:  # a base cut short (a kill, a spent budget) is made and measured again whole
                r.update(status="pending", evaluations=[])
                r.pop("reason", None)
            self._evaluate_base(base)
        for base in self.recovery_targets():
            if self.out_of_time():
                break
            self._recover(base)
        self.save()


def _settings(config: LMSearchConfig) -> dict[str, Any]:
    """What a resumed search must share with the one it continues: every option but the time budget."""
    return {k: v for k, v in json.loads(json.dumps(config.to_dict())).items() if k != "time_budget"}


__all__ = ["LMSearch", "increase", "lm_cost", "lm_front"]
