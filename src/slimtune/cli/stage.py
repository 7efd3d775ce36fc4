"""``slimtune stage NAME``: run one recipe stage from the command line, without writing a recipe file.

    slimtune stage finetune --model minilm-l6 --data tweets-binary --set freeze=all-but-last-2 --set train.epochs=2
    slimtune stage distill --load teacher/model --data digits --set student.name=mlp \\
        --set 'student.options={hidden: [32]}' --set kd.temperature=4
    slimtune stage prune --model lenet5 --train-epochs 5 --data fashion-mnist --set method=structured --set ratio=0.5

It builds the one-stage recipe (after a ``train`` stage when ``--train-epochs`` is given) and runs it with
``run_recipe``: the same config objects, checks, outputs, report and ``--resume`` as ``slimtune run``.
``--set key=value`` sets a stage option (dots nest: ``train.epochs=3``); values are read as YAML, so
``0.5``, ``true``, ``[0, 2]`` and ``{hidden: [32]}`` have their types.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from slimtune.errors import ConfigError


def parse_sets(items: list[str], *, flag: str = "--set") -> dict[str, Any]:
    """``["train.epochs=3", "ratio=0.5"]`` → ``{"train": {"epochs": 3}, "ratio": 0.5}`` (values as YAML)."""
    from slimtune.recipe.yamlio import parse_yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.split(".")):
            raise ConfigError(f"{flag} {item!r}: write key=value (dots nest: train.epochs=3)")
        try:  # the recipe's strict reading: duplicate keys and alias bombs refused
            value = parse_yaml(text, source="value")[0] if text.strip() else None
        except ConfigError as exc:
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML ({exc})") from None
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{flag} {item!r}: '{part}' was already given a value, not options")
            node = child
        node[leaf] = _number(value)
    return out


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; a value that is a plain number is one."""
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    return value


def stage_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe ``slimtune stage`` runs, as a dict (the same schema as a recipe file)."""
    if (args.model is None) == (args.load is None):
        raise ConfigError("give --model NAME (a registered model, see slimtune list) or --load saved/model")
    if args.load is not None and args.option:
        raise ConfigError("--option sets a registered model's options; it does not apply to --load")
    model: dict[str, Any] = {"load": args.load} if args.load else {"name": args.model}
    if args.option:
        model["options"] = parse_sets(args.option, flag="--option")
    data: dict[str, Any] = {"name": args.data, **({"limit": args.limit} if args.limit is not None else {})}
    stages: list[dict[str, Any]] = []
    if args.train_epochs:
        stages.append({"stage": "train", "label": "start", "train": {"epochs": args.train_epochs, "lr": args.lr}})
    options = parse_sets(args.set or [])
    if "stage" in options:
        raise ConfigError("the stage is the command's first argument; do not --set stage")
    stages.append({"stage": args.stage, **options})
    return {"name": f"stage-{args.stage}", "data": data, "model": model, "stages": stages}


def cmd_stage(args: argparse.Namespace) -> int:
    from slimtune.cli.main import print_report
    from slimtune.recipe import parse_recipe
    from slimtune.recipe.runner import run_recipe

    recipe = parse_recipe(stage_recipe(args))  # validated whole before anything runs
    print(f"slimtune: running stage '{args.stage}' → {args.out}", flush=True)
    report = run_recipe(recipe, args.out, force=args.force, resume=args.resume, log=lambda m: print(m, flush=True))
    print_report(report, args.out)
    return 0


def add_parser(sub: Any, out_options: Callable[[argparse.ArgumentParser, str | None], None]) -> None:
    from slimtune.cli.main import positive_int

    sp = sub.add_parser("stage", help="run one recipe stage (finetune, prune, distill, quantize...) on a model")
    sp.add_argument("stage", help="stage name (see slimtune list)")
    sp.add_argument("--model", help="a registered model name (pretrained ones like minilm-l6 load their weights)")
    sp.add_argument("--load", help="a saved slimtune model folder (or Hugging Face folder) instead of --model")
    sp.add_argument("--option", action="append", help="model option key=value for --model (repeatable)")
    sp.add_argument("--data", required=True, help="dataset name (see slimtune list) or a data file/folder")
    sp.add_argument("--limit", type=positive_int, default=None, help="use only this many examples of the dataset")
    sp.add_argument("--train-epochs", type=int, default=0, help="train the model this many epochs first")
    sp.add_argument("--lr", type=float, default=3e-3, help="learning rate of that training")
    sp.add_argument("--set", action="append", help="stage option key=value, dots nest, values as YAML (repeatable)")
    out_options(sp, None)
    sp.set_defaults(func=cmd_stage)
