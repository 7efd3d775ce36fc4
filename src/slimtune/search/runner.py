"""The search loop: proxies, successive halving, full recovery of the front; every finished evaluation
is written to ``search.json`` atomically, and a resumed search replays the same decisions from it,
running only the work it lacks. The final steps (latency, choice, bundle, page) live in ``finish``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from torch import nn

from slimtune._io import record_outputs, remove_outputs, write_text
from slimtune._outputs import read_manifest
from slimtune.data.core import DataSplits
from slimtune.errors import ConfigError, OutputExistsError
from slimtune.search import strategy
from slimtune.search.progress import Progress, progress_event
from slimtune.search.space import Base, SearchConfig, build_space

SEARCH_JSON, WORK, BEST, PAGE = "search.json", "work", "best", "search.html"
FORMAT_VERSION = 1


def claim_outputs(out: Path, *, clear: bool) -> None:
    """Make ``out`` the search's folder: with ``clear``, what an earlier search wrote there (listed in the folder's
    manifest) goes, and a file by one of the search's names that slimtune did not write is refused."""
    if clear:
        listed = set((read_manifest(out) or {}).get("outputs", ()))
        for name in (SEARCH_JSON, WORK, BEST, PAGE):
            target = out / name
            if name not in listed and (target.exists() or target.is_symlink()):
                raise OutputExistsError(f"'{target}' was not written by slimtune; pick another output folder")
        remove_outputs(out, only=(SEARCH_JSON, WORK, BEST, PAGE))
    out.mkdir(parents=True, exist_ok=True)
    record_outputs(out, SEARCH_JSON, WORK, BEST, PAGE)


def fingerprint(model: nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Search:
    """State of one search in ``out``; ``run()`` does the work, ``finish.finalise`` the outputs."""

    def __init__(
        self,
        teacher: nn.Module,
        data: DataSplits,
        config: SearchConfig,
        out: Path,
        *,
        resume: bool,
        force: bool,
        progress: Progress | None,
    ) -> None:
        self.teacher, self.data, self.config, self.out, self.progress = teacher, data, config, out, progress
        self.space = build_space(config)
        self.bases = list({c.base.id: c.base for c in self.space}.values())
        self.evaluations = 0
        self.started = time.perf_counter()
        path = out / SEARCH_JSON
        if path.exists() and not resume and not force:
            raise OutputExistsError(f"'{out}' already holds a search; pass --resume to continue it or --force")
        claim_outputs(out, clear=not resume)
        print_ = fingerprint(teacher)
        if resume and path.exists():
            self.state: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            self._check_same(print_)
            self.state["config"] = self.config.to_dict()  # e.g. a longer time budget for the rest
        else:
            self.state = self._new_state(print_)
        self.records: dict[str, dict[str, Any]] = {r["id"]: r for r in self.state["candidates"]}
        self.elapsed_before = float(self.state.get("elapsed_s", 0.0))

    def _new_state(self, print_: str) -> dict[str, Any]:
        from slimtune.search.finish import TEACHER, measure_teacher

        cands = [
            {"id": c.id, "name": c.name, "config": c.spec, "base": c.base.id, "status": "pending", "evaluations": []}
            for c in self.space
        ]
        bases = {
            b.id: {"name": b.name, "config": b.spec, "epochs": 0, "model_dir": None, "seconds": 0.0} for b in self.bases
        }
        teacher = {"fingerprint": print_, **measure_teacher(self.teacher, self.data, self.out / WORK / TEACHER)}
        return {
            "version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "space": self.config.space_dict(),
            "teacher": teacher,
            "elapsed_s": 0.0,
            "candidates": cands,
            "bases": bases,
        }

    def _check_same(self, print_: str) -> None:
        if self.state.get("space") != json.loads(json.dumps(self.config.space_dict())):
            raise ConfigError(
                f"cannot resume the search in '{self.out}': it was started with other search options; "
                "use the same options, a new --out or --force"
            )
        if self.state["teacher"]["fingerprint"] != print_:
            raise ConfigError(
                f"cannot resume the search in '{self.out}': it was started from another model; "
                "use --load on the same model, a new --out or --force"
            )

    # -- bookkeeping ------------------------------------------------------------------------------------
    @property
    def reference(self) -> float:
        return float(self.state["teacher"]["val_accuracy"])

    @property
    def teacher_cost(self) -> float:
        return strategy.cost(self.state["teacher"], self.config.objective)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def time_left(self) -> float | None:
        budget = self.config.time_budget_s
        return None if budget is None else budget - self.elapsed()

    def out_of_time(self) -> bool:
        left = self.time_left()
        return left is not None and left <= 0

    def save(self) -> None:
        self.state["elapsed_s"] = round(self.elapsed(), 3)
        self.state["candidates"] = [self.records[c.id] for c in self.space]
        write_text(self.out / SEARCH_JSON, json.dumps(self.state, indent=2, default=str))

    def live(self, base: Base) -> list[dict[str, Any]]:
        return [
            self.records[c.id]
            for c in self.space
            if c.base.id == base.id and self.records[c.id]["status"] not in ("pruned-early", "failed")
        ]

    def evaluated(self) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records.values()
            if r.get("val_accuracy") is not None and r["status"] not in ("pruned-early", "failed", "parity-failed")
        ]

    # -- work -------------------------------------------------------------------------------------------
    def evaluate(self, base: Base, epochs: int) -> None:
        """Bring ``base`` to ``epochs`` of recovery and measure its live candidates, unless already done."""
        from slimtune.search import techniques as tech

        brec, live = self.state["bases"][base.id], self.live(base)
        epochs = epochs if base.trainable else 0
        done = [r for r in live if r["evaluations"] and r["evaluations"][-1]["epochs"] >= epochs]
        if not live or len(done) == len(live) or brec.get("error"):
            return
        if self.out_of_time() and any(r["evaluations"] for r in self.records.values()):
            return  # no new work after the budget; the first evaluation always runs (never end with nothing)
        t0 = time.perf_counter()
        folder = self.out / WORK / base.id / f"e{epochs}"
        try:
            if brec["model_dir"]:
                from slimtune.models import load_model

                model = load_model(self.out / brec["model_dir"])
            else:
                model = tech.make_base(self.teacher, base, self.data, seed=self.config.seed)
            cache = self.out / WORK / "teacher_logits.safetensors"
            tech.train_base(
                model, base, self.teacher, self.data, epochs=epochs - brec["epochs"], config=self.config, cache=cache
            )
            if base.trainable:
                from slimtune.models import save_model

                save_model(model, folder / "model")
            paths, notes = tech.export_variants(
                model, [r["config"]["precision"] for r in live], self.data, folder, calibration=self.config.calibration
            )
            fresh = not any(r["evaluations"] for r in live)
            rows = tech.measure_variants(model, paths, self.data, quick_latency=fresh)
            extra = {"compressed_bytes": tech.compressed_bytes(model, folder)} if base.kind == "sparse" else {}
        except Exception as exc:  # one technique failing (e.g. an unsupported layer) must not end the search
            brec["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            for r in live:
                r["status"], r["reason"], r["failed_at"] = "failed", brec["error"], epochs
            self.save()
            return
        seconds = time.perf_counter() - t0
        for r in live:
            precision = r["config"]["precision"]
            r.update(rows[precision], **extra, **notes.get(precision, {}))
            r["epochs"], r["status"] = epochs, "evaluated"
            r["onnx"] = os.path.relpath(paths[precision], self.out)
            r["evaluations"].append({"epochs": epochs, "val_accuracy": rows[precision]["val_accuracy"]})
            r["seconds"] = round(r.get("seconds", 0.0) + seconds / len(live), 3)
        old = brec["model_dir"]
        brec.update(epochs=epochs, seconds=round(brec["seconds"] + seconds, 3))
        brec["model_dir"] = os.path.relpath(folder / "model", self.out) if base.trainable else None
        brec["folder"] = os.path.relpath(folder, self.out)
        self.evaluations += 1
        self.save()
        stale = stale_model_folder(self.out, base.id, old)
        if stale is not None and stale != folder.resolve():
            shutil.rmtree(stale, ignore_errors=True)  # only the latest model of a base is kept
        if self.progress is not None:
            self.progress(progress_event(self, base, epochs))

    # -- decisions: made on what was known at each rung, so a resumed search replays them exactly ---------
    def mark_hopeless(self, epochs: float) -> None:
        for r in self.records.values():
            if r["status"] in ("failed", "parity-failed", "pruned-early"):
                continue
            hit = strategy.hopeless_at(r, self.reference, self.config, epochs)
            if hit is not None:
                drop = strategy.points_drop(hit["val_accuracy"], self.reference)
                r["status"] = "pruned-early"
                r["reason"] = f"{drop:.1f} pt below the teacher after {hit['epochs']} epochs"
        self.save()

    def standing(self, base: Base, epochs: float, *, reached: bool) -> list[dict[str, Any]]:
        """The base's candidates still in the race after ``epochs`` (with ``reached``: evaluated at exactly it)."""
        out = []
        for c in self.space:
            view = strategy.view_at(self.records[c.id], epochs) if c.base.id == base.id else None
            if (
                view is not None
                and strategy.hopeless_at(view, self.reference, self.config, epochs) is None
                and (view["epochs"] == epochs or not reached)
            ):
                out.append(view)
        return out

    def run(self) -> None:
        """Proxies and successive halving, then full recovery for the bases on the Pareto front."""
        for base in self.bases:
            if not base.trainable:
                self.evaluate(base, 0)
        alive = [b for b in self.bases if b.trainable]
        steps = strategy.rungs(self.config)
        for k, epochs in enumerate(steps):
            for base in alive:
                self.evaluate(base, epochs)
            self.mark_hopeless(epochs)
            alive = [b for b in alive if self.standing(b, epochs, reached=True)]
            if k < len(steps) - 1 and alive:
                groups = {b.id: self.standing(b, epochs, reached=True) for b in alive}
                ranked = strategy.rank_bases(groups, self.reference, self.config, self.teacher_cost)
                keep = set(strategy.survivors(ranked, self.config.eta))
                for b in alive:
                    if b.id not in keep:
                        self.state["bases"][b.id]["dropped_at"] = epochs
                alive = [b for b in alive if b.id in keep]
        pool = [r for b in self.bases for r in self.standing(b, steps[-1], reached=False)]
        by_id = {b.id: b for b in self.bases}
        for base_id in strategy.full_order(strategy.front(pool, self.config.objective), self.reference, self.config):
            self.evaluate(by_id[base_id], self.config.full_epochs)
        self.mark_hopeless(float("inf"))


__all__ = ["BEST", "PAGE", "SEARCH_JSON", "WORK", "Search", "fingerprint"]


def stale_model_folder(out: Path, base_id: str, model_dir: Any) -> Path | None:
    """The folder of a base's previous model (``model_dir`` as the state file records it), or None unless it
    lies inside that base's own work folder: an edited state file can never make the search delete elsewhere."""
    if not isinstance(model_dir, str) or not model_dir:
        return None
    stale = (out / model_dir).parent.resolve()
    work = (out / WORK / base_id).resolve()
    return stale if work in stale.parents else None
