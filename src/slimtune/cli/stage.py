"""``slimtune stage NAME``: run one recipe stage from the command line, without writing a recipe file.

    slimtune stage finetune --model minilm-l6 --data tweets-binary --set freeze=all-but-last-2 --set train.epochs=2
    slimtune stage distill --load teacher/model --data digits --set student.name=mlp \\
        --set 'student.options={hidden: [32]}' --set kd.temperature=4
    slimtune stage prune --model lenet5 --train-epochs 5 --data fashion-mnist --set method=structured --set ratio=0.5
    slimtune stage finetune --load path/to/hf-folder --data reviews.csv --set train.epochs=2

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


def is_hf_folder(path: str) -> bool:
    """A Hugging Face model folder (config.json) rather than a saved slimtune model (spec.json)."""
    from pathlib import Path

    folder = Path(path)
    return (folder / "config.json").is_file() and not (folder / "spec.json").is_file()


def _is_causal_lm_folder(path: str) -> bool:
    """A Hugging Face folder whose config names a ``...ForCausalLM`` / ``...LMHeadModel`` architecture."""
    import json
    from pathlib import Path

    try:
        archs = json.loads((Path(path) / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return False
    return any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs)


def data_dict(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's ``data:`` mapping from ``--data``, ``--limit`` and ``--data-option key=value``."""
    data: dict[str, Any] = {"name": args.data, **({"limit": args.limit} if args.limit is not None else {})}
    options = parse_sets(args.data_option or [], flag="--data-option")
    for key in ("name", "limit"):
        if key in options:
            raise ConfigError(f"--data-option {key}=...: use --{'data' if key == 'name' else key} instead")
    return {**data, **options}


def add_data_option(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "--data-option",
        action="append",
        metavar="KEY=VALUE",
        help="option for a user data file, as a recipe's data: key (repeatable): text_column=review, "
        "label_column=stars, labels=[neg,pos], label_map={0: neg, 1: pos}, drop_empty=true, min_class_rows=1, "
        "image_size=[32,32], seed=1, max_length=128",
    )


def stage_recipe(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe ``slimtune stage`` runs, as a dict (the same schema as a recipe file)."""
    if (args.model is None) == (args.load is None):
        raise ConfigError("give --model NAME (a registered model, see slimtune list) or --load saved/model")
    hf_folder = args.load is not None and is_hf_folder(args.load)
    if args.load is not None and args.option and not hf_folder:
        raise ConfigError("--option sets a registered model's options; it does not apply to --load")
    model: dict[str, Any] = {"load": args.load} if args.load else {"name": args.model}
    options = parse_sets(args.option, flag="--option") if args.option else {}
    if hf_folder:  # a Hugging Face folder is the registered model 'hf' (or 'hf-lm': a causal LM) with its path
        model = {
            "name": "hf-lm" if _is_causal_lm_folder(args.load) else "hf",
            "options": {**options, "path": str(args.load)},
        }
    elif options:
        model["options"] = options
    data = data_dict(args)
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


class _StageHelp(argparse.Action):
    """``slimtune stage NAME --help``: the command's help, then every option of stage NAME with its default."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:  # fmt: skip
        parser.print_help()
        name = getattr(namespace, "stage", None)
        if name:
            from slimtune.recipe.reference import render
            from slimtune.recipe.stages import STAGES

            if name in STAGES:
                print(f"\noptions of stage '{name}' (--set key=value; dots nest):\n{render([name])}")
            if name == "quantize":
                from slimtune.recipe.stages_lm_quant import lm_methods_help

                print(f"\n{lm_methods_help()}")
        else:
            print("\nslimtune stage NAME --help lists every option of stage NAME with its default")
        parser.exit()


def add_parser(sub: Any, out_options: Callable[[argparse.ArgumentParser, str | None], None]) -> None:
    from slimtune.cli.main import positive_int

    sp = sub.add_parser(
        "stage", help="run one recipe stage (finetune, prune, distill, quantize...) on a model", add_help=False
    )
    sp.add_argument("-h", "--help", action=_StageHelp, help="show this help (and, after NAME, the stage's options)")
    sp.add_argument("stage", help="stage name (see slimtune list)")
    sp.add_argument("--model", help="a registered model name (pretrained ones like minilm-l6 load their weights)")
    sp.add_argument(
        "--load", help="a saved slimtune model folder, or a Hugging Face folder (config.json), instead of --model"
    )
    sp.add_argument(
        "--option", action="append", help="model option key=value for --model or a --load HF folder (repeatable)"
    )
    sp.add_argument("--data", required=True, help="dataset name (see slimtune list) or a data file/folder")
    sp.add_argument("--limit", type=positive_int, default=None, help="use only this many examples of the dataset")
    add_data_option(sp)
    sp.add_argument("--train-epochs", type=int, default=0, help="train the model this many epochs first")
    sp.add_argument("--lr", type=float, default=3e-3, help="learning rate of that training")
    sp.add_argument("--set", action="append", help="stage option key=value, dots nest, values as YAML (repeatable)")
    out_options(sp, None)
    sp.set_defaults(func=cmd_stage)
