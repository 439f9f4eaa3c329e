"""Several cameras in one process: frames of several streams scored in one batch, each stream with its own memory,
window, normaliser, events and outputs, and each scoring exactly as it would alone (up to batched rounding)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.checkpoint import save_model
from mnad.cli import main
from mnad.data.streams import SourceOptions
from mnad.detect import DetectOptions, detect, stream_folder
from mnad.errors import ConfigError, DataError
from mnad.export import export_onnx, load_onnx
from mnad.model import MNAD
from mnad.run_folder import LOCK_FILE
from mnad.stream import FrameResult, StreamScorer, score_streams, scoring_step

# gamma between the E_t of these random frames: some frames update the memory and some do not
GAMMA = 0.15
SCORES = ("psnr", "patch_psnr", "distance", "patch_distance", "regular", "score", "smoothed")


def model_and_config(gamma: float = GAMMA, **model: object) -> tuple[MNAD, object]:
    torch.manual_seed(0)
    config = tiny_config(**model).override([f"eval.gamma={gamma}"])
    return MNAD(config.model).eval(), config


def video(n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def alone(model: MNAD, config: object, frames: list[np.ndarray], **options) -> list[FrameResult]:
    scorer = StreamScorer.for_model(model, config, **options)
    return [r for f in frames if (r := scorer.push(f)) is not None]


def assert_same_rows(got: list[FrameResult], expected: list[FrameResult]) -> None:
    assert [r.index for r in got] == [r.index for r in expected]
    assert [r.updated for r in got] == [r.updated for r in expected]
    for name in SCORES:
        # S_t is scaled by the running range, narrow in a stream's first frames: rounding in the raw terms grows there
        atol = 1e-4 if name in ("score", "smoothed") else 1e-7
        np.testing.assert_allclose([getattr(r, name) for r in got], [getattr(r, name) for r in expected], rtol=1e-5, atol=atol,
                                   err_msg=name)


def test_batched_step_reads_and_updates_each_samples_own_memory() -> None:
    model, config = model_and_config(gamma=1.0)
    torch.manual_seed(1)
    inputs, target = torch.rand(2, 12, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    items = torch.stack([model.memory.items, torch.nn.functional.normalize(torch.rand_like(model.memory.items), dim=1)])
    with torch.inference_mode():
        regular = [scoring_step(model, config)(inputs[i:i + 1], target[i:i + 1], items[i]).regular.item() for i in (0, 1)]
        # gamma between the two samples' E_t: exactly one of them updates its memory
        config = config.override([f"eval.gamma={sum(regular) / 2}"])
        step = scoring_step(model, config)
        single = [step(inputs[i:i + 1], target[i:i + 1], items[i]) for i in (0, 1)]
        batched = step(inputs, target, items)
    assert batched.items.shape == items.shape
    for i in (0, 1):
        for name in ("psnr", "patch_psnr", "distance", "patch_distance", "regular"):
            torch.testing.assert_close(getattr(batched, name)[i:i + 1], getattr(single[i], name), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(batched.items[i], single[i].items, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(batched.error_map[i:i + 1], single[i].error_map, rtol=1e-5, atol=1e-7)
    kept = int(np.argmax(regular))  # the one above gamma keeps its memory, bit for bit; the other's moved
    assert torch.equal(batched.items[kept], items[kept]) and not torch.equal(batched.items[1 - kept], items[1 - kept])
    # each read its own items: the two samples' D differ from what either would get with the other's memory
    with torch.inference_mode():
        swapped = step(inputs, target, items.flip(0))
    assert not torch.allclose(swapped.distance, batched.distance)


@pytest.mark.parametrize("memory", [True, False])
def test_each_stream_scores_as_it_would_alone(memory: bool) -> None:
    """Streams of different lengths, one starting late and one too short to make a clip, sit out the rounds they have
    no frame for; each one's PSNR, D, E_t, memory updates, S_t and trailing mean equal its run alone."""
    model, config = model_and_config(memory=memory)
    videos = [video(24, 0), video(11, 1), video(3, 2), video(16, 3)]
    starts = [0, 0, 2, 5]
    options = {"normalization": "causal", "smoothing": 3, "maps": True}
    expected = [alone(model, config, v, **options) for v in videos]
    scorers = StreamScorer.for_streams(model, config, len(videos), **options)
    got: list[list[FrameResult]] = [[] for _ in videos]
    for t in range(max(s + len(v) for s, v in zip(starts, videos, strict=True))):
        frames = [v[t - s] if 0 <= t - s < len(v) else None for s, v in zip(starts, videos, strict=True)]
        for rows, row in zip(got, score_streams(scorers, frames), strict=True):
            if row is not None:
                rows.append(row)
    assert [len(r) for r in got] == [20, 7, 0, 12]
    for rows, want in zip(got, expected, strict=True):
        assert_same_rows(rows, want)
        for a, b in zip(rows, want, strict=True):
            np.testing.assert_allclose(a.error_map, b.error_map, rtol=1e-5, atol=1e-7)
    if memory:
        assert any(r.updated for rows in got for r in rows) and not all(r.updated for rows in got for r in rows)
        for scorer, v in zip(scorers, videos, strict=True):  # the memories went their own ways
            single = StreamScorer.for_model(model, config)
            for f in v:
                single.push(f)
            torch.testing.assert_close(scorer.items, single.items, rtol=1e-5, atol=1e-6)


def test_streams_scored_together_share_one_step() -> None:
    model, config = model_and_config()
    a, b = StreamScorer.for_model(model, config), StreamScorer.for_model(model, config)
    with pytest.raises(ConfigError, match="share one scoring step"):
        score_streams([a, b], video(2, 0))
    with pytest.raises(ConfigError, match="consume"):  # a result is taken once, for the clip handed out
        a.consume(a.step(torch.zeros(1, 12, 32, 32), torch.zeros(1, 3, 32, 32), model.memory.items))


def test_output_folder_names_are_safe() -> None:
    url = "rtsp://admin:secret@10.0.0.5:554/live/ch 1?token=abc"
    assert stream_folder(0, url, 2) == "0_10.0.0.5_live_ch_1"  # no credentials, no query
    assert stream_folder(3, "0", 12) == "03_camera0"
    assert stream_folder(1, "footage/cam*.jpg", 2) == "1_footage"
    assert stream_folder(1, "/data/../lobby.mp4", 2) == "1_lobby"
    assert stream_folder(0, "...", 2) == "0_source"


# ------------------------------------------------------------------------------------------------ mnad detect


def frames_folder(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.png"), f)
    return folder


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def assert_same_csv(got: Path, expected: Path) -> None:
    a, b = read_rows(got), read_rows(expected)
    assert [r["frame"] for r in a] == [r["frame"] for r in b]
    assert [r["memory_updated"] for r in a] == [r["memory_updated"] for r in b]
    for name in ("time", "psnr", "patch_psnr", "distance", "patch_distance", "regular_score", "score", "smoothed"):
        np.testing.assert_allclose([float(r[name]) for r in a], [float(r[name]) for r in b], atol=2e-5, err_msg=name)


def test_detect_on_several_sources(tmp_path: Path) -> None:
    """Three sources of different kinds, lengths and frame rates in one run: each in its own folder with the outputs
    it would have alone; one source keeps the usual layout; a rerun does not destroy the outputs."""
    model, config = model_and_config()
    folder = frames_folder(tmp_path / "lobby", video(24, 0))
    mp4 = tmp_path / "gate.mp4"
    writer = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (32, 32))
    for f in video(15, 1):
        writer.write(f)
    writer.release()
    short = frames_folder(tmp_path / "yard", video(9, 2))
    sources = [str(folder), str(mp4), str(short)]
    out = tmp_path / "out"
    summary = detect(model, config, sources, out, progress=False)
    names = ["0_lobby", "1_gate", "2_yard"]
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) == sorted([*names, "summary.json"])
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["sources"] == 3 and summary["failed"] == 0 and summary["frames_scored"] == 20 + 11 + 5
    assert [s["folder"] for s in summary["streams"]] == names and [s["source"] for s in summary["streams"]] == sources
    for name, source in zip(names, sources, strict=True):
        single = tmp_path / f"alone_{name}"
        assert detect(model, config, [source], single, progress=False)["source"] == source  # one source: the usual layout
        assert (single / "scores.csv").is_file()
        assert_same_csv(out / name / "scores.csv", single / "scores.csv")
        own = json.loads((out / name / "summary.json").read_text())
        assert own["source"] == source and own["ended_by"] == "end of source"
        assert (out / name / "events.csv").is_file() and (out / name / "events.jsonl").is_file()
    assert json.loads((out / "1_gate" / "summary.json").read_text())["source_fps"] == pytest.approx(10.0)
    with pytest.raises(DataError, match="earlier run"):
        detect(model, config, sources, out, progress=False)
    detect(model, config, sources, out, DetectOptions(overwrite=True, max_frames=8), progress=False)
    assert [s["frames_scored"] for s in json.loads((out / "summary.json").read_text())["streams"]] == [4, 4, 4]


def test_a_failing_stream_does_not_stop_the_others(tmp_path: Path) -> None:
    model, config = model_and_config()
    good = frames_folder(tmp_path / "good", video(30, 0))
    broken = frames_folder(tmp_path / "broken", video(20, 1))
    (broken / "00012.png").write_bytes(b"not a picture")  # lost mid-stream: frames 0-11 read, 8 of them scored
    sources = [str(good), str(broken), "57"]  # and a camera that is not there: gives no frame at all
    options = DetectOptions(source=SourceOptions(reconnects=0, retry_delay=0.0, open_timeout=1, read_timeout=1))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="2 of 3 sources failed") as caught:
        detect(model, config, sources, out, options, progress=False)
    assert "00012.png" in str(caught.value) and "57: the source gave no frames" in str(caught.value)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 2 and [s["failed"] for s in summary["streams"]] == [False, True, True]
    assert [s["frames_scored"] for s in summary["streams"]] == [26, 8, 0]
    assert summary["streams"][2]["folder"] is None and not any(p.name.startswith("2_") for p in out.iterdir())
    assert len(read_rows(out / "0_good" / "scores.csv")) == 26 and len(read_rows(out / "1_broken" / "scores.csv")) == 8
    assert json.loads((out / "1_broken" / "summary.json").read_text())["ended_by"].startswith("error: ")


def test_detect_cli_with_several_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, config = model_and_config()
    model_file = tmp_path / "m.safetensors"
    save_model(model_file, model, config)
    a, b = frames_folder(tmp_path / "a", video(8, 0)), frames_folder(tmp_path / "b", video(6, 1))
    run = ["--checkpoint", str(model_file), "--quiet"]
    assert main(["detect", str(a), str(b), "--out", str(tmp_path / "o"), *run]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["frames_scored"] == 4 + 2 and (tmp_path / "o" / "1_b" / "scores.csv").is_file()
    # a bad source is refused before anything is read or written
    assert main(["detect", str(a), str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "p"), *run]) == 2
    err = capsys.readouterr().err
    assert "missing.mp4: no such video file" in err and "Traceback" not in err and not (tmp_path / "p").exists()
    # a source that scores nothing fails the run (exit 2) after the others' outputs are written
    short = frames_folder(tmp_path / "short", video(3, 2))
    assert main(["detect", str(a), str(short), "--out", str(tmp_path / "q"), *run]) == 2
    assert "1 of 2 sources failed" in capsys.readouterr().err and (tmp_path / "q" / "0_a" / "scores.csv").is_file()
    # an exported model scores one source at a time
    export_onnx(model, config, tmp_path / "m.onnx")
    assert main(["detect", str(a), str(b), "--checkpoint", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "need a PyTorch model" in capsys.readouterr().err and not (tmp_path / "r").exists()
    onnx = load_onnx(tmp_path / "m.onnx")
    assert detect(onnx, onnx.config, [str(a)], tmp_path / "s", progress=False)["frames_scored"] == 4


def test_multistream_benchmark_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # the script sets it for itself: restored after the test
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "multistream.py"
    spec = importlib.util.spec_from_file_location("multistream", path)
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "multistream", script)
    spec.loader.exec_module(script)
    out = tmp_path / "multistream.json"
    assert script.main(["--quick", "--streams", "1", "2", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {(r["streams"], r["mode"]): r for r in result["rows"]}
    assert set(rows) == {(n, mode) for n in (1, 2) for mode in ("one-at-a-time", "batched", "detect")}
    assert all(r["fps_total"] > 0 for r in rows.values())
    assert rows[2, "batched"]["max_psnr_difference_db"] < 1e-3  # batching changes rounding, not the scores
    assert result["gflop_per_frame"]["8"] > 0 and result["fps_ceiling"]["8"] > 0
