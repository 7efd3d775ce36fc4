"""The search keeps only the latest model of a base and deletes the older one's folder; the path comes from its
state file, so an edited state can never make it delete anything outside that base's own work folder."""

from __future__ import annotations

from pathlib import Path

from slimtune.search.runner import WORK, stale_model_folder


def test_only_a_folder_inside_the_bases_work_folder_is_ever_removed(tmp_path: Path) -> None:
    out = tmp_path / "search"
    (out / WORK / "b1" / "e2" / "model").mkdir(parents=True)
    (tmp_path / "mine").mkdir()
    assert stale_model_folder(out, "b1", f"{WORK}/b1/e2/model") == (out / WORK / "b1" / "e2").resolve()
    for edited in ("../mine/model", f"{WORK}/b1/../../../mine/model", str(tmp_path / "mine" / "model"),
                   f"{WORK}/b1/model", f"{WORK}/b2/e2/model", "model", "", None, 3):  # fmt: skip
        assert stale_model_folder(out, "b1", edited) is None, edited
    link = out / WORK / "b1" / "e4"
    link.symlink_to(tmp_path / "mine")  # a link planted in the work folder leads outside: refused too
    assert stale_model_folder(out, "b1", f"{WORK}/b1/e4/model") is None
