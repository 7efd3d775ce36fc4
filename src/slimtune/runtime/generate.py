"""Generate text from an LM bundle with onnxruntime + numpy + tokenizers only (torch is never imported).

``LMGenerator("bundle/").generate("Once upon a time", max_new_tokens=32)`` → the continuation;
``.stream(prompt)`` yields it piece by piece; a list of prompts runs as one left-padded batch. Greedy by default
(the bundle's generation defaults), or temperature / top-k / top-p sampling with a seed; stop strings end a
row (the stop string itself is not returned); ``chat=True`` renders the prompt with the bundle's chat template.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimtune.errors import ConfigError, DataError, MissingDependencyError
from slimtune.runtime.bundle import Manifest, read_manifest
from slimtune.runtime.decoder import Decoder, ort_decoder_session
from slimtune.runtime.sampling import Sampling

LM_KIND = "lm"
DEFAULTS: dict[str, Any] = {"max_new_tokens": 64, "temperature": 0.0, "top_k": 0, "top_p": 1.0, "stop": []}


def read_lm_manifest(bundle: str | Path) -> Manifest:
    manifest = read_manifest(bundle)
    if manifest.kind != LM_KIND:
        raise DataError(
            f"bundle '{bundle}' holds a {manifest.kind} classifier, not a language model; "
            "use `slimtune predict` for it, or export a causal LM bundle to generate"
        )
    return manifest


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of ``text`` must wait: an incomplete UTF-8 character (decoded as U+FFFD)
    or the start of a stop string."""
    keep = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = max(keep, n)
                break
    return keep


class LMGenerator:
    """A loaded LM bundle: tokenizer, decoder session, chat template and generation defaults."""

    def __init__(self, bundle: str | Path, *, threads: int | None = None) -> None:
        self.manifest = read_lm_manifest(bundle)
        raw = self.manifest.raw
        self.decoder = Decoder(ort_decoder_session(self.manifest.file("model"), threads=threads))
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependencyError("LM bundles need tokenizers: pip install tokenizers") from exc
        self.tokenizer = Tokenizer.from_file(str(self.manifest.file("tokenizer")))
        tokens = raw.get("tokens", {})
        self.eos_ids: list[int] = [int(t) for t in tokens.get("eos_token_ids", [])]
        self.pad_id = int(tokens.get("pad_token_id") or (self.eos_ids[0] if self.eos_ids else 0))
        self.special_tokens: dict[str, str] = {k: str(v) for k, v in tokens.get("strings", {}).items()}
        self.context_length = int(raw["input"]["context_length"])
        self.chat_template: str | None = raw.get("chat_template")
        self.defaults: dict[str, Any] = {**DEFAULTS, **raw.get("generation", {})}
        self.last_token_counts: list[int] = []

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def render_chat(self, messages: str | Sequence[dict[str, str]]) -> str:
        """The chat template applied to ``messages`` (a string is one user message), ready for the reply."""
        if not self.chat_template:
            raise DataError("this bundle has no chat template; generate from plain text (without --chat)")
        try:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as exc:
            raise MissingDependencyError("chat templates need jinja2: pip install jinja2") from exc

        def raise_exception(message: str) -> None:
            raise DataError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        try:
            template = env.from_string(self.chat_template)
            return str(template.render(messages=list(messages), add_generation_prompt=True, **self.special_tokens))
        except jinja2.TemplateError as exc:
            raise DataError(f"the bundle's chat template failed: {exc}") from None

    def _prompt_ids(self, prompts: Sequence[str], chat: bool) -> list[list[int]]:
        out = []
        for i, text in enumerate(prompts):
            if not isinstance(text, str) or not text:
                raise DataError(f"prompt #{i} is empty or not a string; pass non-empty text")
            ids = self.encode(self.render_chat(text), add_special_tokens=False) if chat else self.encode(text)
            if len(ids) >= self.context_length:
                raise DataError(
                    f"prompt #{i} is {len(ids)} tokens, longer than the model's context of {self.context_length} "
                    f"(it must leave room for new tokens); shorten the prompt"
                )
            out.append(ids)
        return out

    def _options(self, options: dict[str, Any]) -> tuple[Sampling, int, list[str]]:
        unknown = set(options) - {*DEFAULTS, "seed"}
        if unknown:
            raise ConfigError(f"unknown generation option(s) {sorted(unknown)}; use {sorted([*DEFAULTS, 'seed'])}")
        merged = {**self.defaults, **{k: v for k, v in options.items() if v is not None}}
        sampling = Sampling(temperature=float(merged["temperature"]), top_k=int(merged["top_k"]),
                            top_p=float(merged["top_p"]), seed=merged.get("seed"))  # fmt: skip
        max_new = int(merged["max_new_tokens"])
        if max_new < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {max_new}")
        stop = [merged["stop"]] if isinstance(merged["stop"], str) else [str(s) for s in merged["stop"] or []]
        return sampling, max_new, [s for s in stop if s]

    def events(self, prompts: Sequence[str], *, chat: bool = False, **options: Any) -> Iterator[tuple[int, str]]:
        """Yield ``(row, new text)`` as tokens are generated, for a batch of prompts; options: max_new_tokens,
        temperature, top_k, top_p, seed, stop (a string or list)."""
        sampling, max_new, stops = self._options(options)
        ids = self._prompt_ids(prompts, chat)
        max_new = min(max_new, self.context_length - max(len(p) for p in ids))
        new: list[list[int]] = [[] for _ in ids]
        sent = [""] * len(ids)
        active = np.ones(len(ids), dtype=bool)
        steps = self.decoder.steps(ids, max_new_tokens=max_new, sampling=sampling, eos_ids=self.eos_ids,
                                   pad_id=self.pad_id, active=active)  # fmt: skip
        self.last_token_counts = [0] * len(ids)  # new tokens per prompt of the latest call
        for tokens in steps:
            for row in np.nonzero(active)[0]:
                new[row].append(int(tokens[row]))
                self.last_token_counts[row] = len(new[row])
                text = self.decode(new[row])
                hits = [text.index(s) for s in stops if s in text]
                done = bool(hits) or int(tokens[row]) in self.eos_ids or len(new[row]) == max_new
                if hits:
                    text = text[: min(hits)]
                    active[row] = False
                ready = text if done else text[: len(text) - _held_back(text, stops)]
                if ready.startswith(sent[row]) and len(ready) > len(sent[row]):
                    yield int(row), ready[len(sent[row]) :]
                    sent[row] = ready

    def generate(
        self,
        prompt: str | Sequence[str],
        *,
        on_text: Callable[[int, str], None] | None = None,
        chat: bool = False,
        **options: Any,
    ) -> str | list[str]:
        """The continuation of ``prompt`` (a list of prompts → a list, generated as one batch). ``on_text(row,
        piece)`` streams each new piece of text. Options as ``events``; unset ones come from the bundle."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise DataError("no prompts given: pass a string or a list of strings")
        texts = [""] * len(prompts)
        for row, piece in self.events(prompts, chat=chat, **options):
            texts[row] += piece
            if on_text is not None:
                on_text(row, piece)
        return texts[0] if isinstance(prompt, str) else texts

    def stream(self, prompt: str, *, chat: bool = False, **options: Any) -> Iterator[str]:
        """Yield the continuation of one prompt piece by piece as it is generated."""
        for _, piece in self.events([prompt], chat=chat, **options):
            yield piece
