"""``slimtune`` command line. Handlers import lazily: ``slimtune --help`` never imports torch."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

Handler = Callable[[argparse.Namespace], int]


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
    print()
    print(report.table())
    print(f"\nreport: {args.out}/report.md, {args.out}/report.html, {args.out}/report.json")
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from slimtune.data import DATASETS
    from slimtune.models import MODELS
    from slimtune.prune import PRUNERS
    from slimtune.quantize import QUANTIZERS
    from slimtune.recipe.stages import STAGES

    registries: list[tuple[str, Any]] = [
        ("datasets", DATASETS),
        ("models", MODELS),
        ("stages", STAGES),
        ("pruning methods", PRUNERS),
        ("quantization methods", QUANTIZERS),
    ]
    for title, reg in registries:
        print(f"{title}:")
        for name in reg.names():
            print(f"  {name:<20} {reg.help(name)}")
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

    demo = sub.add_parser("demo", help="run the built-in demo recipe (train → prune → distill → int8 ONNX)")
    out_options(demo, "slimtune-demo")
    demo.set_defaults(func=_cmd_demo)
    run = sub.add_parser("run", help="run a YAML recipe")
    run.add_argument("recipe", help="path to the recipe YAML")
    out_options(run, None)
    run.set_defaults(func=_cmd_run)
    lst = sub.add_parser("list", help="list registered datasets, models, stages and methods")
    lst.set_defaults(func=_cmd_list)
    env = sub.add_parser("env", help="versions, threads and CPU int8 capability, for bug reports")
    env.add_argument("--json", action="store_true", help="print JSON")
    env.add_argument("--no-torch", action="store_true", help="do not import torch (faster)")
    env.set_defaults(func=_cmd_env)
    return p


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
        code: int = args.func(args)
        return code
    except SlimtuneError as exc:
        print(f"slimtune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slimtune: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
