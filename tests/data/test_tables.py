"""Strict, located CSV/TSV/JSONL parsing and the user-file options (columns, labels, label_map, drop_empty,
min_class_rows): damaged files are one DataError naming file:line, never silently merged rows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from slimtune.data import load, load_path
from slimtune.errors import ConfigError, DataError

GOOD = [f"good text {i},pos" if i % 2 else f"bad text {i},neg" for i in range(12)]


def write(path: Path, lines: list[str], header: str = "text,label") -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def texts_of(d) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted([*d.train.x, *d.val.x, *d.test.x])


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        # a quote never closed in the middle runs to the end of the file: the line where it opened
        ([*GOOD[:4], '"broken text,pos', *GOOD[4:]], r"r.csv:6: a quote opened on this line is never closed"),
        # ... closed by the next row's opening quote: the rows in between were swallowed
        ([*GOOD[:4], '"broken text,pos', *GOOD[4:8], '"quoted text",neg'], r"r.csv:6: .*not closed before line 11"),
        # ... closed right before a comma: every field count is right, but line 7 is a row of its own
        ([*GOOD[:4], '"broken text,pos', GOOD[4], 'tail",neg', *GOOD[5:]], r"r.csv:6: .*swallows line 7"),
        # an unterminated quote on the last line names that line, not "some labels are empty"
        ([*GOOD, '"last row,pos'], r"r.csv:14: a quote opened on this line is never closed"),
        ([*GOOD[:3], "a,b,pos", *GOOD[3:]], r"r.csv:5: expected 2 fields \(text, label\), found 3; quote fields"),
        ([*GOOD[:3], "no label here", *GOOD[3:]], r"r.csv:5: expected 2 fields .*found 1"),
        ([*GOOD[:2], '"quoted" tail,pos', *GOOD[2:]], r"r.csv:4: a field that starts with a quote must end"),
        ([*GOOD[:5], ",pos", *GOOD[5:]], r"r.csv:7: empty or missing 'text' value; .*drop_empty: true"),
        ([*GOOD[:5], "some text,  ", *GOOD[5:]], r"r.csv:7: empty or missing 'label' value"),
        ([*GOOD, "odd one,maybe"], r"1 of 3 labels occur in fewer than 3 rows: 'maybe' \(line 14\)"),
    ],
)
def test_damaged_csv_is_one_located_error(tmp_path: Path, lines: list[str], message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        load_path(write(tmp_path / "r.csv", lines))
    assert "\n" not in str(info.value)


def test_multiline_quoted_texts_are_still_read(tmp_path: Path) -> None:
    lines = [*GOOD, '"first line\nsecond, with a comma",pos', '"one\ntwo\nthree",neg']
    d = load_path(write(tmp_path / "r.csv", lines))
    assert "first line\nsecond, with a comma" in texts_of(d) and "one\ntwo\nthree" in texts_of(d)
    assert len(texts_of(d)) == 14 and d.label_names == ["neg", "pos"]


def test_drop_empty_drops_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path / "r.csv", [*GOOD[:5], ",pos", "text,", *GOOD[5:]])
    with caplog.at_level(logging.WARNING, logger="slimtune.data"):
        d = load_path(path, drop_empty=True)
    assert len(texts_of(d)) == 12 and d.meta["dropped_rows"] == 2
    assert "dropped 2 rows with an empty text or label (lines 7, 8)" in caplog.text


def test_columns_labels_and_label_map(tmp_path: Path) -> None:
    rows = [f"{i},review {i},{i % 3}" for i in range(15)]
    path = write(tmp_path / "stars.csv", rows, header="id,body,stars")
    d = load_path(path, text_column="body", label_column="stars", label_map={0: "bad", 1: "ok", 2: "good"})
    assert d.label_names == ["bad", "good", "ok"] and texts_of(d)[0].startswith("review")
    d = load_path(path, text_column="body", label_column="stars", labels=["2", "1", "0"])
    assert d.label_names == ["2", "1", "0"]  # id order as given
    by_text = dict(zip([*d.train.x, *d.val.x, *d.test.x], [*d.train.y, *d.val.y, *d.test.y]))
    assert int(by_text["review 4"]) == 1 and int(by_text["review 5"]) == 0  # 4 % 3 = 1 → id 1; 5 % 3 = 2 → id 0
    with pytest.raises(DataError, match=r"stars.csv:5: label '3' is not one of the expected labels \(0, 1, 2\)"):
        write(path, [*rows[:3], "99,extra,3", *rows[3:]], header="id,body,stars")
        load_path(path, text_column="body", label_column="stars", labels=["0", "1", "2"])


def test_min_class_rows_accepts_rare_classes_when_asked(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", [*GOOD, "odd one,maybe"])
    assert load_path(path, min_class_rows=1).label_names == ["maybe", "neg", "pos"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"text": "a", "label": 1}', '{"text": "b" "label": 2}'], r"j.jsonl:2: not valid JSON \(.* column 14\)"),
        (['{"text": "a", "label": 1}', '["b", 2]'], r"j.jsonl:2: expected a JSON object, got list"),
        (['{"text": "a", "label": 1}', '{"label": 2}'], r"j.jsonl:2: empty or missing 'text' value"),
        (['{"text": "a", "label": 1}', '{"text": 5, "label": 2}'], r"j.jsonl:2: 'text' must be a string, got 5"),
        (['{"text": "a", "label": 1}', "", '{"text": "b", "label": 1.5}'], r"j.jsonl:3: labels must be integers"),
    ],
)
def test_damaged_jsonl_is_one_located_error(tmp_path: Path, lines: list[str], message: str) -> None:
    (tmp_path / "j.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        load_path(tmp_path / "j.jsonl")


def test_options_that_do_not_fit_the_data_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", GOOD)
    with pytest.raises(ConfigError, match=r"data option 'image_size' does not apply to a .csv file"):
        load_path(path, image_size=8)
    (tmp_path / "imgs").mkdir()
    with pytest.raises(ConfigError, match=r"'text_column' does not apply to an image folder"):
        load_path(tmp_path / "imgs", text_column="x")
    with pytest.raises(ConfigError, match=r"only apply to user data files, not to dataset 'digits'"):
        load("digits", text_column="x")


def test_jsonl_with_own_keys(tmp_path: Path) -> None:
    lines = [json.dumps({"review": f"r{i}", "verdict": "yes" if i % 2 else "no"}) for i in range(10)]
    (tmp_path / "j.jsonl").write_text("\n".join(lines))
    assert load_path(tmp_path / "j.jsonl", label_column="verdict").label_names == ["no", "yes"]
