"""``slimtune`` command line. Handlers import lazily: ``slimtune --help`` never imports torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

Handler = Callable[[argparse.Namespace], int]
THREADS_HELP = (
    "CPU threads for training and measuring: a number >= 1, or auto (default: half the free cores, 1 on a "
    "2-core machine; more threads than free cores makes training many times slower)"
)


def _cmd_demo(args: argparse.Namespace) -> int:
    from slimtune.recipe import builtin_recipe

    args.recipe = str(builtin_recipe("demo"))
    return _cmd_run(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from slimtune.recipe import load_recipe
    from slimtune.recipe.runner import run_recipe

    recipe = load_recipe(args.recipe)  # validated whole before anything runs
    print(f"slimtune: running recipe '{recipe.name}' ({len(recipe.stages)} stages) → {args.out}", flush=True)
    report = run_recipe(
        recipe,
        args.out,
        force=args.force,
        resume=args.resume,
        progress=None,
        log=lambda m: print(m, flush=True),
    )
    print_report(report, args.out)
    return 0


def print_report(report: Any, out: str) -> None:
    """The stage table and where the report files are (``run``, ``demo`` and ``stage``)."""
    print()
    print(report.table())
    warnings = report.warnings()
    if warnings:  # loud: after the table, where the eye lands
        print()
    for warning in warnings:
        print(f"WARNING: {warning}")
    print(f"\nreport: {out}/report.md, {out}/report.html, {out}/report.json")


def _cmd_list(args: argparse.Namespace) -> int:
    from slimtune.data import CORPORA, DATASETS
    from slimtune.errors import ConfigError
    from slimtune.models import CAUSAL_LMS, MODELS
    from slimtune.prune import PRUNERS
    from slimtune.quantize import QUANTIZERS
    from slimtune.recipe.stages import STAGES

    registries: list[tuple[str, Any]] = [
        ("datasets", DATASETS),
        ("models", MODELS),
        ("text corpora (causal LMs)", CORPORA),
        ("causal language models", CAUSAL_LMS),
        ("stages", STAGES),
        ("pruning methods", PRUNERS),
        ("quantization methods", QUANTIZERS),
    ]
    from slimtune.recipe.reference import render

    wanted = list(args.names or [])
    known = {n for _, reg in registries[2:] for n in reg.names()}  # stages and methods have options
    for name in wanted:
        if name not in known:
            from slimtune._registry import did_you_mean

            hint = did_you_mean(name, sorted(known))
            raise ConfigError(f"no stage or method named '{name}'{hint}; slimtune list shows them all")
    if not wanted:
        for title, reg in registries:
            print(f"{title}:")
            for name in reg.names():
                print(f"  {name:<20} {reg.help(name)}")
        print("\noptions of every stage and method (recipe keys; dots nest: train.epochs is train: {epochs: ...});")
        print("every stage also takes label (its folder and report name) and warn_drop (points; default: the recipe's)")
    print(render(wanted or None))
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    import json

    from slimtune import env

    info = env.collect(with_torch=not args.no_torch)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if key == "packages":
            for pkg, ver in value.items():
                print(f"{pkg:<14} {ver or 'not installed'}")
        elif key == "int8":
            flags = ", ".join(f"{k}={'yes' if value[k] else 'no'}" for k in ("avx2", "avx512", "vnni"))
            print(f"{'int8 cpu':<14} {flags}")
            print(f"{'int8 note':<14} {value['note']}")
        else:
            print(f"{key:<14} {value}")
    return 0


def _read_inputs(args: argparse.Namespace) -> tuple[Any, list[str] | None]:
    """Inputs for ``predict`` and their names: ``--text`` strings, a .txt (one text per line), .npy or .npz
    file, or image files / a folder of images (names: the file names)."""
    from pathlib import Path

    from slimtune.errors import DataError
    from slimtune.runtime.images import IMAGE_SUFFIXES, image_files

    if args.text:
        return list(args.text), None
    if not args.input:
        raise DataError("give an INPUT (.npy, .npz, .txt, an image file or a folder of images) or --text 'some text'")
    path = Path(args.input)
    if path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES:
        files = image_files(path)
        return files, [str(f.relative_to(path)) if path.is_dir() else f.name for f in files]
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    if path.suffix == ".txt":
        return _read_lines(path), None
    if path.suffix not in (".npy", ".npz"):
        raise DataError(
            f"unsupported input file '{path.name}': use .npy/.npz arrays, a .txt with one text per line, "
            f"or images ({', '.join(IMAGE_SUFFIXES)})"
        )
    from slimtune.runtime.arrays import load_array_file

    return load_array_file(path), None


def _read_lines(path: Any) -> list[str]:
    """The non-blank lines of a UTF-8 text file; a line that is not UTF-8 is one located DataError."""
    from slimtune.errors import DataError

    texts = []
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}:{lineno}: not UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                "save the file as UTF-8"
            ) from None
        if line.strip():
            texts.append(line)
    if not texts:
        raise DataError(f"{path} has no text lines; write one text per line")
    return texts


def _cmd_predict(args: argparse.Namespace) -> int:
    import json

    from slimtune.runtime import Predictor
    from slimtune.threads import thread_count

    threads = None if args.threads is None else thread_count(args.threads, flag="--threads")
    predictor = Predictor(args.bundle, threads=threads)
    inputs, names = _read_inputs(args)
    results = predictor.predict(inputs, top_k=args.top_k)
    if names is not None:
        results = [{"file": name, **r} for name, r in zip(names, results)]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for i, r in enumerate(results):
        others = ", ".join(f"{label} {p:.3f}" for label, p in r["top"][1:])
        print(f"{r.get('file', i)}\t{r['label']}\t{r['probability']:.3f}" + (f"\t({others})" if others else ""))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import json

    from slimtune.cli.generate import bench_lm, is_lm_bundle
    from slimtune.runtime import bench, format_table
    from slimtune.threads import thread_count

    threads: list[int | None] = [thread_count(t, flag="--threads") for t in args.threads or []]
    if is_lm_bundle(args.bundle):  # an LM bundle: prefill / decode tokens/s and time to first token
        args.threads = threads or None
        return bench_lm(args)
    sizes = args.batch_sizes or [1, 8, 32]
    result = bench(args.bundle, batch_sizes=sizes, threads=threads or [None], seconds=args.seconds)
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from slimtune._io import check_out_dir, prepare_out_dir, record_outputs
    from slimtune._outputs import check_inputs_clear, record_files
    from slimtune.errors import ConfigError
    from slimtune.models import load_model, save_model
    from slimtune.models.inputs import load_data, load_start_model
    from slimtune.recipe.schema import DataRef, ModelRef
    from slimtune.search import SearchConfig, search
    from slimtune.search.runner import BEST, PAGE, SEARCH_JSON, WORK
    from slimtune.train.loop import TrainConfig, fit

    if (args.model is None) == (args.load is None):
        raise ConfigError("give --model NAME (a registered model, trained here first) or --load saved/model")
    options = {
        "max_accuracy_drop": args.max_accuracy_drop, "objective": args.objective, "time_budget": args.time_budget,
        "techniques": args.techniques, "proxy_epochs": args.proxy_epochs, "full_epochs": args.full_epochs,
        "combine_ratios": args.combine_ratios,
    }  # fmt: skip
    config = SearchConfig.from_dict({k: v for k, v in options.items() if v is not None}, where="search")
    from slimtune.cli.stage import data_dict

    data_ref = DataRef.from_dict(data_dict(args), where="data")
    model_ref = ModelRef(name=args.model, load=args.load)
    train = TrainConfig(epochs=args.train_epochs, lr=args.lr)  # checked before anything is written
    check_out_dir(args.out, force=args.force, resume=args.resume)  # nothing is created before the data loads
    inputs = [p for p in (args.data, args.load) if p is not None]
    check_inputs_clear(Path(args.out), ["teacher", SEARCH_JSON, WORK, BEST, PAGE], inputs)
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


def _apply_threads(value: str) -> None:
    """Validate ``--threads`` before anything runs, then set it (``auto``: see ``slimtune.threads``)."""
    from slimtune.threads import parse_threads

    parse_threads(value, flag="--threads")  # a bad value fails before torch is imported
    from slimtune.threads import set_threads

    setting = set_threads(value)
    print(f"slimtune: {setting['threads']} torch thread(s), {setting['requested']}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="slimtune",
        description="Make models small and fast: fine-tune, prune, distil, quantize, export, report.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def out_options(sp: argparse.ArgumentParser, default_out: str | None) -> None:
        sp.add_argument("--out", default=default_out, required=default_out is None, help="output folder")
        sp.add_argument("--force", action="store_true", help="overwrite an existing output folder")
        sp.add_argument("--resume", action="store_true", help="continue a killed run in the same folder")
        sp.add_argument("--threads", dest="torch_threads", default="auto", help=THREADS_HELP)

    demo = sub.add_parser("demo", help="run the built-in demo recipe (train → prune → distill → int8 ONNX)")
    out_options(demo, "slimtune-demo")
    demo.set_defaults(func=_cmd_demo)
    run = sub.add_parser("run", help="run a YAML recipe")
    run.add_argument("recipe", help="path to the recipe YAML")
    out_options(run, None)
    run.set_defaults(func=_cmd_run)
    lst = sub.add_parser("list", help="registered datasets, models, stages and methods, and every option's default")
    lst.add_argument("names", nargs="*", help="only these stages/methods (e.g. slimtune list prune magnitude)")
    lst.set_defaults(func=_cmd_list)
    pred = sub.add_parser("predict", help="predict with a deploy bundle (onnxruntime + numpy, no torch)")
    pred.add_argument("bundle", help="bundle folder (made by a recipe 'bundle' stage)")
    pred.add_argument(
        "input", nargs="?", help=".npy/.npz array, .txt (one text per line), or a PNG/JPEG file or folder of them"
    )
    pred.add_argument("--text", action="append", help="a text to classify (repeatable)")
    pred.add_argument("--top-k", type=int, default=1, help="also show the next k-1 labels")
    pred.add_argument("--threads", default=None, help="ONNX Runtime intra-op threads (a number >= 1, or auto)")
    pred.add_argument("--json", action="store_true", help="print JSON")
    pred.set_defaults(func=_cmd_predict)
    bch = sub.add_parser("bench", help="latency p50/p90/p99, throughput, start-up and peak RSS of a bundle")
    bch.add_argument("bundle", help="bundle folder")
    bch.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="batch sizes (1 8 32; LM: 1 8)")
    bch.add_argument("--threads", nargs="+", default=None, help="thread counts to time, each >= 1 (default: ORT's)")
    bch.add_argument("--seconds", type=float, default=1.0, help="timing budget per batch size and thread count")
    bch.add_argument("--json", action="store_true", help="print JSON")
    bch.add_argument("--prompt-tokens", type=int, default=64, help="LM bundles: prompt length for prefill")
    bch.add_argument("--new-tokens", type=int, default=32, help="LM bundles: decode steps timed")
    bch.set_defaults(func=_cmd_bench)
    from slimtune.cli import generate

    generate.add_parser(sub)
    srch = sub.add_parser("search", help="the cheapest model within an accuracy budget, over every technique")
    srch.add_argument("--model", help="a registered model name, trained here first (see slimtune list)")
    srch.add_argument("--load", help="a saved, trained slimtune model folder instead of --model")
    srch.add_argument("--data", required=True, help="dataset name (see slimtune list) or a data file/folder")
    srch.add_argument("--limit", type=positive_int, default=None, help="use only this many examples of the dataset")
    from slimtune.cli import stage

    stage.add_data_option(srch)
    srch.add_argument("--max-accuracy-drop", type=float, default=1.0, help="budget, in points of accuracy")
    srch.add_argument("--objective", default="latency", help="latency (ONNX Runtime, batch 1), size or macs")
    srch.add_argument("--time-budget", default=None, help="e.g. 90s, 30m, 2h: no new work starts after it")
    srch.add_argument("--techniques", nargs="+", default=None, help="subset of: prune student sparse int8")
    srch.add_argument(
        "--combine-ratios", type=float, nargs="+", default=None, help="also prune each student by these ratios"
    )
    srch.add_argument("--proxy-epochs", type=int, default=None, help="recovery epochs of the first, cheap round")
    srch.add_argument("--full-epochs", type=int, default=None, help="recovery epochs of the Pareto front")
    srch.add_argument("--train-epochs", type=int, default=10, help="epochs to train --model before searching")
    srch.add_argument("--lr", type=float, default=3e-3, help="learning rate for training --model")
    out_options(srch, None)
    srch.set_defaults(func=_cmd_search)
    stage.add_parser(sub, out_options)
    env = sub.add_parser("env", help="versions, threads and CPU int8 capability, for bug reports")
    env.add_argument("--json", action="store_true", help="print JSON")
    env.add_argument("--no-torch", action="store_true", help="do not import torch (faster)")
    env.set_defaults(func=_cmd_env)
    return p


def _drop_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not print a BrokenPipeError traceback."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (tests): nothing to flush
        pass


def positive_int(text: str) -> int:
    """argparse type of counts such as ``--limit``: 0 or less is refused, not read as 'no limit'."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive count, got {value}; leave the option out for all")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    import logging

    from slimtune.errors import SlimtuneError

    if not sys.stderr.isatty():  # no progress bar: one line per epoch instead
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    try:
        if getattr(args, "torch_threads", None) is not None:  # commands that train or measure
            _apply_threads(args.torch_threads)
        code: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return code
    except BrokenPipeError:  # `slimtune ... --json | head`: the reader has all it wants
        _drop_stdout()
        return 141  # 128 + SIGPIPE, what a shell tool stopped by the closed pipe reports
    except SlimtuneError as exc:
        print("slimtune: error: " + " ".join(str(exc).split()), file=sys.stderr)  # always ONE line
        return 2
    except PermissionError as exc:  # a file or folder of another user, wherever it is met
        where = f" on '{exc.filename}'" if exc.filename else ""
        print(
            f"slimtune: error: permission denied{where}: this user may not read or write it; "
            "fix its permissions or choose another path",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("slimtune: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
