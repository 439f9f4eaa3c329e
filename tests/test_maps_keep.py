"""--maps-keep: the error maps of --save-maps (maps/<8 digits>/, one shard folder per MAP_SHARD_FRAMES frames) are kept
to a size by the rule of --video-keep and --rows-keep (outputs.OldestFirst): a camera left for months does not fill the
disk with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import frames_folder

import mnad.detect
import mnad.outputs.names
from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect
from mnad.errors import ConfigError, DataError
from mnad.outputs import MAPS_DIR, DetectWriter, OldestFirst, detect_summary_problem, remove_detect_temps

SHARD = 5  # maps per shard in these tests: 40 frames (36 scored, frames 4-39) fill shards 0 (frame 4 only) to 7


@pytest.fixture
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnad.outputs.names, "MAP_SHARD_FRAMES", SHARD)


def shards(out: Path) -> list[str]:
    return sorted(p.name for p in (out / MAPS_DIR).iterdir())


def test_maps_keep_deletes_the_oldest_shards_first(model_file: Path, tmp_path: Path, small_shards: None) -> None:
    """A byte's worth kept: every closed shard but the newest goes; room for two full shards keeps the last two."""
    model, config = load_model(model_file)
    source = str(frames_folder(tmp_path / "f", 40))
    summary = detect(model, config, source, tmp_path / "o", DetectOptions(save_maps="npy", maps_keep=1e-9), progress=False)
    assert shards(tmp_path / "o") == ["00000007"]  # no hidden half-deleted one left either
    assert sorted(p.name for p in (tmp_path / "o" / MAPS_DIR / "00000007").iterdir()) == [f"{i:012d}.npy" for i in range(35, 40)]
    assert summary["map_shards_deleted"] == 7 and summary["frames_scored"] == 36
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["map_shards_deleted"] == 7

    everything = detect(model, config, source, tmp_path / "all", DetectOptions(save_maps="npy"), progress=False)
    assert len(shards(tmp_path / "all")) == 8 and everything["map_shards_deleted"] == 0
    size = sum(p.stat().st_size for p in (tmp_path / "all" / MAPS_DIR / "00000006").iterdir())  # a full shard
    summary = detect(model, config, source, tmp_path / "two", DetectOptions(save_maps="npy", maps_keep=(2 * size + 10) / 2**30),
                     progress=False)
    assert shards(tmp_path / "two") == ["00000006", "00000007"] and summary["map_shards_deleted"] == 6


def test_the_summary_is_rewritten_as_shards_are_deleted(model_file: Path, tmp_path: Path, small_shards: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard deleted makes the running summary.json due, as a row segment deleted does, not only once a minute."""
    written: list[int] = []
    real = mnad.detect.write_detect_summary

    def record(out_dir: Path, summary: dict) -> None:
        if not summary["complete"]:
            written.append(summary["map_shards_deleted"])
        real(out_dir, summary)

    monkeypatch.setattr(mnad.detect, "write_detect_summary", record)
    model, config = load_model(model_file)
    detect(model, config, str(frames_folder(tmp_path / "f", 40)), tmp_path / "o", DetectOptions(save_maps="png", maps_keep=1e-9),
           progress=False)
    assert written == list(range(7))  # the first frame's, then one per shard deleted during the run (the 7th: at its end)


def test_a_shard_is_deleted_only_once_the_next_holds_a_map_and_one_that_cannot_be_stays_listed(
        tmp_path: Path, small_shards: None, monkeypatch: pytest.MonkeyPatch, undeletable_doomed: None) -> None:
    """The oldest shard cannot be deleted (rmtree fails after its rename): the map that closed the shard before it is
    written all the same, the shard is renamed back, listed under its name, and the DataError names --maps-keep."""
    out = tmp_path / "w"
    writer = DetectWriter(out, maps="npy", maps_keep=1)
    assert type(writer.maps_kept) is OldestFirst and type(writer.kept) is OldestFirst  # one pruning rule
    for i in range(6):  # shard 0 (0-4) closes at frame 5: alone, the newest closed one, kept
        writer.error_map(i, np.zeros((4, 4)))
    assert writer.maps_kept.names == [f"{MAPS_DIR}/00000000"] and shards(out) == ["00000000", "00000001"]
    for i in range(6, 10):
        writer.error_map(i, np.zeros((4, 4)))
    with pytest.raises(DataError, match="00000000: cannot delete the oldest map shard for --maps-keep \\(Permission denied"):
        writer.error_map(10, np.zeros((4, 4)))
    assert (out / MAPS_DIR / "00000002" / "000000000010.npy").is_file()
    assert writer.maps_kept.names == [f"{MAPS_DIR}/00000000", f"{MAPS_DIR}/00000001"] and writer.maps_kept.deleted == 0
    assert shards(out) == ["00000000", "00000001", "00000002"]
    monkeypatch.undo()
    monkeypatch.setattr(mnad.outputs.names, "MAP_SHARD_FRAMES", SHARD)
    writer.close({})  # the open shard closes: the two oldest go now
    assert shards(out) == ["00000002"] and writer.maps_kept.deleted == 2


def test_a_shard_half_deleted_by_a_killed_run_is_removed_as_a_temporary(tmp_path: Path) -> None:
    doomed = tmp_path / MAPS_DIR / ".00000003.0a1b2c3d.tmp"
    doomed.mkdir(parents=True)
    (doomed / "000000030000.npy").write_bytes(b"x")
    (tmp_path / MAPS_DIR / "00000004").mkdir()
    assert remove_detect_temps(tmp_path) == [doomed]
    assert shards(tmp_path) == ["00000004"]


def test_the_summary_count_is_checked() -> None:
    assert detect_summary_problem({"map_shards_deleted": 3}) is None
    assert "map_shards_deleted must be an integer" in (detect_summary_problem({"map_shards_deleted": "3"}) or "")


def test_maps_keep_is_checked_and_needs_save_maps(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mnad.cli import main

    for bad in (0, -1.0, float("nan"), float("inf"), True, "1", 1e308, 2.0**33):
        with pytest.raises(ConfigError, match="--maps-keep must be a number of GiB > 0 and at most"):
            DetectOptions(save_maps="npy", maps_keep=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="--maps-keep bounds the error maps that --save-maps writes"):
        DetectOptions(maps_keep=1.0)
    assert DetectOptions(save_maps="png", maps_keep=0.5).maps_keep == 0.5 and DetectOptions().maps_keep is None

    source = str(frames_folder(tmp_path / "a", 6))
    base = ["detect", source, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet"]
    assert main([*base, "--maps-keep", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("mnad: error: --maps-keep bounds the error maps that --save-maps writes") == 1
    assert err.count("mnad: error:") == 1 and "Traceback" not in err
    assert main([*base, "--save-maps", "npy", "--maps-keep", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("mnad: error: --maps-keep must be a number of GiB > 0") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()
