"""``slimtune generate BUNDLE "prompt"``: text from an LM bundle (onnxruntime + numpy + tokenizers, no torch),
and the LM branch of ``slimtune bench``.

    slimtune generate bundle/ "Once upon a time" --max-new-tokens 64 --stream
    slimtune generate bundle/ "Write a haiku" --chat --temperature 0.7 --top-p 0.9 --seed 1
    slimtune bench bundle/          # an LM bundle: prefill / decode tokens/s at batch 1 and 8, time to first token
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_generate(args: argparse.Namespace) -> int:
    from slimtune.runtime.generate import LMGenerator

    generator = LMGenerator(args.bundle, threads=args.threads)
    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
        "top_p": args.top_p, "seed": args.seed, "stop": args.stop,
    }  # fmt: skip
    if args.stream:
        for piece in generator.stream(args.prompt, chat=args.chat, **options):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    print(generator.generate(args.prompt, chat=args.chat, **options))
    return 0


def add_parser(sub: Any) -> None:
    gen = sub.add_parser("generate", help="generate text with an LM bundle (onnxruntime + numpy, no torch)")
    gen.add_argument("bundle", help="LM bundle folder (made by export_lm_bundle)")
    gen.add_argument("prompt", help="the text to continue (with --chat: the user message)")
    gen.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate (default: the bundle's)")
    gen.add_argument("--temperature", type=float, default=None, help="0 = greedy; > 0 samples (default: bundle's)")
    gen.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens (0 = all)")
    gen.add_argument("--top-p", type=float, default=None, help="sample from the smallest set with this probability")
    gen.add_argument("--seed", type=int, default=None, help="seed of the sampler (same seed, same text)")
    gen.add_argument("--stop", action="append", default=None, help="stop at this string (repeatable)")
    gen.add_argument("--chat", action="store_true", help="render the prompt with the bundle's chat template")
    gen.add_argument("--stream", action="store_true", help="print tokens as they are generated")
    gen.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    gen.set_defaults(func=_cmd_generate)


def is_lm_bundle(path: str) -> bool:
    """True when ``path`` is a bundle whose manifest says kind 'lm' (errors are left to the command)."""
    from slimtune.errors import SlimtuneError
    from slimtune.runtime.bundle import read_manifest

    try:
        return read_manifest(path).kind == "lm"
    except SlimtuneError:
        return False


def bench_lm(args: argparse.Namespace) -> int:
    import json

    from slimtune.runtime.lm_bench import format_lm_table, lm_bench

    threads = args.threads[0] if args.threads else None
    result = lm_bench(args.bundle, batch_sizes=args.batch_sizes or (1, 8), prompt_tokens=args.prompt_tokens,
                      new_tokens=args.new_tokens, threads=threads)  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else format_lm_table(result))
    return 0
