"""``slimtune search``: the cheapest model within a budget, over every technique. A classifier (``--model``
trained here first, or ``--load``) is searched within ``--max-accuracy-drop`` points; a causal LM (a registered
LM such as ``smollm2-135m``, or a saved LM folder) on a text corpus within ``--max-ppl-increase`` percent of its
perplexity (``slimtune.search.lm_space``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

LM_FLAGS = (
    "widths", "depths", "sparse_methods", "sparsities", "precisions", "combine", "samples", "proxy_windows",
    "recovery_windows", "recovery_epochs", "max_measured",
)  # fmt: skip


def _lm_options(args: argparse.Namespace) -> dict[str, Any]:
    from slimtune.errors import ConfigError

    if args.max_accuracy_drop is not None:
        raise ConfigError("a language model's budget is --max-ppl-increase (percent), not --max-accuracy-drop")
    if args.combine_ratios is not None or args.proxy_epochs is not None or args.full_epochs is not None:
        raise ConfigError("--combine-ratios, --proxy-epochs and --full-epochs are classifier options; an LM search "
                          "takes --combine, --proxy-windows and --recovery-windows")  # fmt: skip
    options = {"max_ppl_increase": args.max_ppl_increase, "objective": args.objective,
               "time_budget": args.time_budget, "techniques": args.techniques}  # fmt: skip
    return options | {k: getattr(args, k) for k in LM_FLAGS}


def _classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    from slimtune.errors import ConfigError

    if args.max_ppl_increase is not None:
        raise ConfigError("--max-ppl-increase is for causal LMs on text; a classifier takes --max-accuracy-drop")
    given = [f"--{k.replace('_', '-')}" for k in LM_FLAGS if getattr(args, k) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: language-model search options; this model is a classifier")
    return {
        "max_accuracy_drop": args.max_accuracy_drop, "objective": args.objective, "time_budget": args.time_budget,
        "techniques": args.techniques, "proxy_epochs": args.proxy_epochs, "full_epochs": args.full_epochs,
        "combine_ratios": args.combine_ratios,
    }  # fmt: skip


def cmd_search(args: argparse.Namespace) -> int:
    from slimtune._io import check_out_dir, prepare_out_dir, record_outputs
    from slimtune._outputs import check_inputs_clear, record_files
    from slimtune.cli.stage import data_dict
    from slimtune.errors import ConfigError
    from slimtune.models import load_model, save_model
    from slimtune.models.inputs import load_data, load_start_model
    from slimtune.recipe.lm import is_lm_ref
    from slimtune.recipe.schema import DataRef, ModelRef
    from slimtune.search import LMSearchConfig, SearchConfig, search
    from slimtune.search.runner import BEST, PAGE, SEARCH_JSON, WORK
    from slimtune.train.loop import TrainConfig, fit

    if (args.model is None) == (args.load is None):
        raise ConfigError("give --model NAME (a registered model, trained here first) or --load saved/model")
    model_ref = ModelRef(name=args.model, load=args.load)
    lm = is_lm_ref(model_ref)
    options = _lm_options(args) if lm else _classifier_options(args)
    clean = {k: v for k, v in options.items() if v is not None}
    config: SearchConfig | LMSearchConfig = (LMSearchConfig if lm else SearchConfig).from_dict(clean, where="search")
    data_ref = DataRef.from_dict(data_dict(args), where="data")
    train = TrainConfig(epochs=args.train_epochs, lr=args.lr)  # checked before anything is written
    check_out_dir(args.out, force=args.force, resume=args.resume)  # nothing is created before the data loads
    inputs = [p for p in (args.data, args.load) if p is not None]
    check_inputs_clear(Path(args.out), ["teacher", SEARCH_JSON, WORK, BEST, PAGE], inputs)
    if lm:  # a pretrained causal LM is searched as it is (no training here)
        from slimtune.recipe.lm import load_lm_inputs

        data, model = load_lm_inputs(data_ref, model_ref)
        print(f"data: {data.summary()}", flush=True)
        out = prepare_out_dir(args.out, force=args.force, resume=args.resume, inputs=inputs)
        result = search(model, data, config=config, out=out, resume=args.resume, force=args.force,
                        progress=lambda e: print(e.line, flush=True))  # fmt: skip
        print(f"\n{result.message}\nbundle: {result.bundle} (slimtune generate {result.bundle} 'text')\n"
              f"every candidate: {out / SEARCH_JSON}, {out / PAGE}")  # fmt: skip
        return 0
    data, preprocess = load_data(data_ref, model_ref)
    print(f"data: {data.summary()}", flush=True)
    out = prepare_out_dir(args.out, force=args.force, resume=args.resume, inputs=inputs)
    teacher_dir = out / "teacher"
    if args.model is not None and args.resume and (teacher_dir / "spec.json").is_file():
        model = load_model(teacher_dir)
        print(f"teacher: loaded from {teacher_dir} (trained before the kill)", flush=True)
    else:
        model = load_start_model(model_ref, data, preprocess)
        if args.model is not None:
            print(f"teacher: training {args.model} for {args.train_epochs} epochs", flush=True)
            fit(model, data, config=train, desc="teacher")
            record_outputs(out, teacher_dir.name)
            save_model(model, teacher_dir)
            record_files(out, teacher_dir.name)
    result = search(
        model, data, config=config, out=out, resume=args.resume, progress=lambda e: print(e.line, flush=True)
    )
    print(f"\n{result.message}\nbundle: {result.bundle}\nevery candidate: {out / 'search.json'}, {out / 'search.html'}")
    return 0


def add_parser(sub: Any, out_options: Callable[[argparse.ArgumentParser, str | None], None]) -> None:
    from slimtune.cli import stage
    from slimtune.cli.main import positive_int

    srch = sub.add_parser("search", help="the cheapest model within an accuracy or perplexity budget")
    srch.add_argument("--model", help="a registered model name (a classifier is trained here first; see slimtune list)")
    srch.add_argument("--load", help="a saved, trained slimtune model folder instead of --model")
    srch.add_argument("--data", required=True, help="dataset name (see slimtune list) or a data file/folder")
    srch.add_argument("--limit", type=positive_int, default=None, help="use only this many examples of the dataset")
    stage.add_data_option(srch)
    srch.add_argument("--max-accuracy-drop", type=float, default=None, help="budget, in points of accuracy (1.0)")
    srch.add_argument("--max-ppl-increase", type=float, default=None,
                      help="causal LMs: budget, in percent of the model's perplexity (10)")  # fmt: skip
    srch.add_argument(
        "--objective",
        default="latency",
        help="latency (ONNX Runtime, batch 1; LMs: decode ms/token), size, or macs (classifiers)",
    )
    srch.add_argument("--time-budget", default=None, help="e.g. 90s, 30m, 2h: no new work starts after it")
    srch.add_argument(
        "--techniques",
        nargs="+",
        default=None,
        help="subset of: prune student sparse int8 (classifiers); width depth sparse quant (LMs)",
    )
    srch.add_argument(
        "--combine-ratios", type=float, nargs="+", default=None, help="also prune each student by these ratios"
    )
    srch.add_argument("--proxy-epochs", type=int, default=None, help="recovery epochs of the first, cheap round")
    srch.add_argument("--full-epochs", type=int, default=None, help="recovery epochs of the Pareto front")
    lm = srch.add_argument_group("causal LMs")
    lm.add_argument("--widths", type=float, nargs="+", default=None, help="fractions of heads/FFN removed (0.25)")
    lm.add_argument("--depths", type=float, nargs="+", default=None, help="fractions of blocks dropped (0.25)")
    lm.add_argument("--sparse-methods", nargs="+", default=None, help="wanda and/or sparsegpt (both)")
    lm.add_argument("--sparsities", nargs="+", default=None, help="fractions or N:M patterns, e.g. 0.5 2:4 (0.5)")
    lm.add_argument("--precisions", nargs="+", default=None, help="on the model: int4|int8-rtn|gptq|awq|hqq")
    lm.add_argument("--combine", nargs="+", default=None, help="precisions also tried on every pruned base")
    lm.add_argument("--samples", type=int, default=None, help="calibration windows (16)")
    lm.add_argument("--proxy-windows", type=int, default=None, help="validation windows of the one-shot perplexity")
    lm.add_argument("--recovery-windows", type=int, default=None, help="train windows of a front member's KD")
    lm.add_argument("--recovery-epochs", type=int, default=None, help="epochs of that recovery (1)")
    lm.add_argument("--max-measured", type=int, default=None, help="front members exported and timed (4)")
    srch.add_argument("--train-epochs", type=int, default=10, help="epochs to train --model before searching")
    srch.add_argument("--lr", type=float, default=3e-3, help="learning rate for training --model")
    out_options(srch, None)
    srch.set_defaults(func=cmd_search)
