"""The tokenizer a causal LM carries: a ``tokenizers.Tokenizer`` plus its special ids and chat template.

It travels in the model spec as ``preprocess`` (``hf_tokenizer`` = ``Tokenizer.to_str()``, ``eos_id``,
``bos_id``, ``pad_id``, ``add_bos``, ``chat_template``), so a saved model and an exported bundle need only
the ``tokenizers`` package to encode text. Chat templates are Jinja strings rendered in a sandbox, the
way transformers renders them.

``byte_tokenizer`` builds the byte-level tokenizer of the tiny test models offline: one token per byte
(id = byte value) and four special tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slimtune.errors import ConfigError, DataError, missing_dependency

if TYPE_CHECKING:
    from tokenizers import Tokenizer

EOS, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
BYTE_SPECIALS = (EOS, IM_START, IM_END, PAD)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as exc:
        raise missing_dependency("tokenizers", "lm") from exc
    return tokenizers


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map (the alphabet of byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


def byte_tokenizer() -> Tokenizer:
    """A byte-level tokenizer with no merges: ids 0..255 are the bytes, then ``BYTE_SPECIALS`` (260 in all)."""
    tk = _tokenizers()
    table = bytes_to_unicode()
    vocab = {table[b]: b for b in range(256)}
    tok = tk.Tokenizer(tk.models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    tok.add_special_tokens(list(BYTE_SPECIALS))
    return tok


@dataclass(frozen=True)
class LMTokenizer:
    """Text ↔ token ids for a causal LM. ``encode`` never adds special tokens; ``document`` does (BOS when
    the model expects one, EOS at the end)."""

    tokenizer: Tokenizer
    eos_id: int
    pad_id: int
    bos_id: int | None = None
    add_bos: bool = False
    chat_template: str | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(e.ids) for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def document(self, ids: Sequence[int]) -> list[int]:
        """One document's ids framed for training/evaluation: [BOS] ids EOS."""
        head = [self.bos_id] if self.add_bos and self.bos_id is not None else []
        return [*head, *ids, self.eos_id]

    def render_chat(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = False) -> str:
        """The conversation as text through the model's chat template."""
        if not self.chat_template:
            raise DataError(
                "this model has no chat template, so chat/instruction data cannot be rendered; "
                "use plain text data or a chat model (e.g. smollm2-135m, tiny-llama)"
            )
        return render_template(
            self.chat_template,
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self.token(self.bos_id),
            eos_token=self.token(self.eos_id),
        )

    def token(self, token_id: int | None) -> str:
        return "" if token_id is None else str(self.tokenizer.id_to_token(token_id) or "")

    def to_preprocess(self) -> dict[str, Any]:
        """The ``spec['preprocess']`` entry that makes a saved LM carry this tokenizer."""
        return {
            "hf_tokenizer": self.tokenizer.to_str(),
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "bos_id": self.bos_id,
            "add_bos": self.add_bos,
            "chat_template": self.chat_template,
        }

    @classmethod
    def from_preprocess(cls, pre: Mapping[str, Any]) -> LMTokenizer:
        raw = pre.get("hf_tokenizer")
        if not isinstance(raw, str) or "eos_id" not in pre:
            raise ConfigError("this model spec carries no causal-LM tokenizer (preprocess.hf_tokenizer, eos_id)")
        tok = _tokenizers().Tokenizer.from_str(raw)
        bos = pre.get("bos_id")
        return cls(
            tokenizer=tok,
            eos_id=int(pre["eos_id"]),
            pad_id=int(pre.get("pad_id", pre["eos_id"])),
            bos_id=None if bos is None else int(bos),
            add_bos=bool(pre.get("add_bos", False)),
            chat_template=pre.get("chat_template") or None,
        )

    @classmethod
    def from_hf(cls, hf_tok: Any, *, source: str) -> LMTokenizer:
        """From a transformers tokenizer (``AutoTokenizer``); it must be a fast one."""
        backend = getattr(hf_tok, "backend_tokenizer", None)
        if backend is None:
            raise DataError(f"'{source}' has no fast tokenizer (tokenizer.json); add one")
        tok = _tokenizers().Tokenizer.from_str(backend.to_str())
        eos = hf_tok.eos_token_id
        if eos is None:
            raise DataError(f"the tokenizer in '{source}' has no end-of-sequence token; set eos_token in its config")
        pad = hf_tok.pad_token_id if hf_tok.pad_token_id is not None else eos
        bos = hf_tok.bos_token_id
        probe = hf_tok("a", add_special_tokens=True)["input_ids"]  # does the model's tokenizer prepend BOS itself?
        add_bos = bos is not None and len(probe) > 0 and probe[0] == bos and bos != eos
        template = getattr(hf_tok, "chat_template", None)
        return cls(tok, int(eos), int(pad), None if bos is None else int(bos), add_bos, template or None)


def tiny_tokenizer(*, chat: bool) -> LMTokenizer:
    """The byte-level tokenizer of the tiny test models; ``chat`` adds a ChatML chat template."""
    tok = byte_tokenizer()
    ids = {t: int(tok.token_to_id(t) or 0) for t in BYTE_SPECIALS}
    return LMTokenizer(tok, ids[EOS], ids[PAD], ids[EOS], False, CHATML_TEMPLATE if chat else None)


def render_template(template: str, **context: Any) -> str:
    """Render a chat template as transformers does (sandboxed Jinja, trim_blocks, lstrip_blocks)."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:
        raise missing_dependency("jinja2", "lm") from exc

    def raise_exception(message: str) -> None:
        raise DataError(f"the chat template refused the conversation: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    try:
        return str(env.from_string(template).render(**context))
    except jinja2.TemplateError as exc:
        raise DataError(f"cannot render the model's chat template: {exc}") from None
