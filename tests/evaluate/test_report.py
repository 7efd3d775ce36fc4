from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from slimtune.errors import ConfigError, DataError
from slimtune.evaluate import Report, StageRow, human_bytes, svg_scatter

VOID = {"meta", "br", "hr", "img", "input", "link"}


def _row(name: str, acc: float, size: int, b1: float, **kw: object) -> StageRow:
    return StageRow(
        name=name,
        artifact=f"stages/{name}/model.pt",
        metrics={"accuracy": acc, "f1_macro": acc - 0.01, "confusion": [[3, 1], [0, 4]]},
        params=size // 4,
        nonzero_params=size // 8,
        bytes_on_disk=size,
        macs=size * 10,
        latency_ms={"batch1": b1, "batch32": b1 * 8},
        **kw,  # type: ignore[arg-type]
    )


def _report() -> Report:
    report = Report(env={"torch": "2.13", "threads": 4, "cpu": "x86 <test & co>"})
    report.add(_row("baseline", 0.91, 4_000_000, 3.2, peak_memory_mb=210.5))
    report.add(
        _row(
            "pruned",
            0.905,
            2_000_000,
            2.0,
            throughput={"batch32": 1234.5},
            extra={"sparsity": 0.5, "notes": "50% <unstructured>"},
        )
    )
    mixed = {"criterion": "SQNR < 20 dB", "fp32_layers": {"net.3": {"sqnr_db": 12.34, "why": "SQNR 12.3 dB <x>"}}}
    report.add(
        _row(
            "onnx-int8 | q",
            0.9,
            1_000_000,
            1.0,
            parity={"max_abs_diff": 1.5e-3, "argmax_agreement": 0.995},
            precision={"net.1": "int8", "net.3": "fp32", "net.5": "int8"},
            extra={"mixed_precision": mixed},
        )
    )
    return report


class _Balance(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svgs = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "svg":
            self.svgs += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        pass  # self-closing: balanced by construction

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def test_to_dict_schema() -> None:
    data = _report().to_dict()
    assert set(data) == {"stages", "env", "warnings"} and data["warnings"] == []
    stage = data["stages"][2]
    for key in (
        "name",
        "artifact",
        "metrics",
        "params",
        "nonzero_params",
        "bytes_on_disk",
        "macs",
        "latency_ms",
        "parity",
    ):
        assert key in stage
    assert data["stages"][0]["parity"] is None and data["stages"][0]["precision"] is None
    assert stage["precision"] == {"net.1": "int8", "net.3": "fp32", "net.5": "int8"}
    assert set(stage["latency_ms"]) == {"batch1", "batch32"}
    json.dumps(data)  # plain JSON types only


def test_write_load_round_trip(tmp_path: Path) -> None:
    report = _report()
    paths = report.write(tmp_path / "out")
    assert {p.name for p in paths.values()} == {"report.json", "report.md", "report.html"}
    loaded = Report.load(paths["json"])
    assert loaded.to_dict() == report.to_dict()
    assert loaded.rows == report.rows
    assert Report.load(tmp_path / "out").to_dict() == report.to_dict()  # folder works too
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left


def test_from_dict_keeps_unknown_stage_keys_in_extra() -> None:
    data = _report().to_dict()
    data["stages"][0]["future_key"] = 7
    assert Report.from_dict(data).rows[0].extra == {"future_key": 7}


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError):
        Report.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError):
        Report.load(tmp_path / "bad.json")
    with pytest.raises(DataError):
        Report.from_dict({"env": {}})


def test_duplicate_stage_name_rejected() -> None:
    report = _report()
    with pytest.raises(ConfigError):
        report.add(_row("baseline", 0.5, 10, 1.0))


def test_markdown_table_and_ratios() -> None:
    md = _report().markdown()
    for name in ("baseline", "pruned", "onnx-int8 \\| q"):
        assert f"| {name} |" in md
    assert "91.00%" in md and "4 MB" in md
    assert "\N{MULTIPLICATION SIGN}4.0 smaller" in md  # 4 MB -> 1 MB
    assert "\N{MULTIPLICATION SIGN}3.2 faster" in md  # 3.2 ms -> 1.0 ms
    assert "-1.00 pp" in md
    assert "99.50%" in md
    header, sep = md.splitlines()[2:4]
    assert header.count("|") == sep.count("|")


def test_html_is_self_contained_and_well_formed() -> None:
    html = _report().html()
    assert html.count("<svg") == 2
    assert "http" not in html and "<script" not in html and "<link" not in html
    assert "x86 &lt;test &amp; co&gt;" in html and "<test" not in html
    for name in ("baseline", "pruned", "onnx-int8 | q"):
        assert name in html
    parser = _Balance()
    parser.feed(html)
    parser.close()
    assert parser.errors == [] and parser.stack == [] and parser.svgs == 2
    ET.fromstring(html.split("\n", 1)[1])  # everything after the doctype is well-formed XML


def test_svg_scatter_standalone_is_valid_xml() -> None:
    svg = svg_scatter(
        [("a", 1e3, 50.0), ("b <&>", 1e5, 70.0), ("skipped", 0.0, 60.0)],
        x_label="bytes",
        y_label="acc",
        title="t",
        log_x=True,
    )
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    labels = [t.text for t in root.iter(f"{ns}text")]
    assert "a" in labels and "b <&>" in labels and "skipped" not in labels
    assert {"1k", "10k", "100k"} <= set(labels)  # log decade ticks
    assert "bytes (log scale)" in labels and "acc" in labels
    assert len(list(root.iter(f"{ns}circle"))) == 2
    assert len(list(root.iter(f"{ns}polyline"))) == 2  # axes + stage-order line


def test_svg_scatter_handles_single_point_and_empty() -> None:
    one = ET.fromstring(svg_scatter([("only", 2.0, 2.0)], x_label="x", y_label="y", title="t"))
    assert len(list(one.iter("{http://www.w3.org/2000/svg}circle"))) == 1
    empty = svg_scatter([], x_label="x", y_label="y", title="t", log_x=True)
    assert "no data" in empty
    ET.fromstring(empty)


def test_human_bytes() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1500) == "1.5 kB"
    assert human_bytes(12_345_678) == "12.3 MB"
    assert human_bytes(3e9) == "3 GB"
    assert human_bytes(None) == "—"


def test_precision_per_layer_in_markdown_and_html() -> None:
    report = _report()
    md = report.markdown()
    assert "| Precision |" in md and "| int8 \N{MULTIPLICATION SIGN}2, fp32 \N{MULTIPLICATION SIGN}1 |" in md
    assert "## Mixed precision" in md and "- **onnx-int8 | q**: kept fp32 (SQNR < 20 dB" in md
    assert "`net.3` (12.3 dB)" in md
    html = report.html()
    assert "<summary>onnx-int8 | q: int8 \N{MULTIPLICATION SIGN}2, fp32 \N{MULTIPLICATION SIGN}1</summary>" in html
    assert "<td>net.3</td><td>fp32</td><td>SQNR 12.3 dB &lt;x&gt;</td>" in html
    assert "<td>net.1</td><td>int8</td><td></td>" in html
    old = report.to_dict()
    del old["stages"][0]["precision"]  # reports written before precision existed still load
    assert Report.from_dict(old).rows[0].precision is None
