"""Detection on footage: sources, calibration, events, localisation outputs, ONNX export and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.calibrate import ALERT_SMOOTHING, calibrate, with_calibration
from mnad.checkpoint import load_model, read_checkpoint, save_model
from mnad.cli import main
from mnad.data import list_videos, split_videos
from mnad.data.streams import FrameSource, SourceOptions
from mnad.detect import DetectOptions, detect
from mnad.errors import DataError
from mnad.evaluate import score_videos
from mnad.events import EventTracker
from mnad.export import export_onnx, load_onnx
from mnad.scoring import RunningMinMax, causal_minmax, smooth
from mnad.stream import StreamScorer
from mnad.train import train, training_record


def write_mp4(frames_dir: Path, path: Path, fps: float = 25.0) -> None:
    files = sorted(frames_dir.iterdir())
    first = cv2.imread(str(files[0]))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (first.shape[1], first.shape[0]))
    for f in files:
        writer.write(cv2.imread(str(f)))
    writer.release()


@pytest.fixture(scope="module")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained on the synthetic scene; returns (run folder, calibrated model file)."""
    run = tmp_path_factory.mktemp("detect_run")
    config = tiny_config()
    config.train.epochs = 3
    train(config, synthetic_root, run, progress=False)
    model, config = load_model(run)
    cal = calibrate(model, config, split_videos(synthetic_root, "synthetic", "training"), false_alarm_rate=0.05, smoothing=3,
                    progress=False)
    save_model(run / "calibrated.safetensors", model, with_calibration(config, cal))
    return run, run / "calibrated.safetensors"


def test_running_minmax_equals_causal_minmax() -> None:
    values = np.random.default_rng(0).normal(size=50)
    running = RunningMinMax()
    np.testing.assert_allclose([running(v) for v in values], causal_minmax(values))


def test_event_tracker_hysteresis_and_min_length() -> None:
    tracker = EventTracker(0.5, hysteresis=0.1, min_frames=3)
    scores = [0.1, 0.6, 0.45, 0.7, 0.42, 0.2, 0.9, 0.1, 0.1]  # 0.45/0.42 stay above 0.4: one event, 1..4
    events = [e for i, s in enumerate(scores) if (e := tracker.push(i, i / 10, s)) is not None]
    assert [(e.start_frame, e.end_frame, e.peak_frame) for e in events] == [(1, 4, 3)]
    assert events[0].peak_score == pytest.approx(0.7) and events[0].end_time == pytest.approx(0.4)
    assert tracker.finish() is None  # the one-frame spike at 6 was too short


def test_frame_source_folder_glob_and_video(synthetic_root: Path, tmp_path: Path) -> None:
    folder = synthetic_root / "synthetic" / "testing" / "frames" / "01"
    n = len(list(folder.iterdir()))
    assert sum(1 for _ in FrameSource(str(folder))) == n
    assert sum(1 for _ in FrameSource(str(folder / "*.jpg"))) == n
    write_mp4(folder, tmp_path / "v.mp4", fps=10.0)
    source = FrameSource(str(tmp_path / "v.mp4"))
    frames = list(source)
    assert len(frames) == n and frames[1].time == pytest.approx(1 / 10) and source.fps == pytest.approx(10.0)


def test_live_source_that_never_connects_fails_after_bounded_retries() -> None:
    # nothing listens on this local port: each attempt fails at once; the source gave nothing, which is an error
    source = FrameSource("http://127.0.0.1:9/stream.mjpg", SourceOptions(reconnects=2, retry_delay=0.0, open_timeout=2))
    with pytest.raises(DataError, match="gave no frames"):
        list(source)


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such video file"):
        FrameSource(str(tmp_path / "nope.mp4"))


def test_calibration_threshold_matches_false_alarm_rate(trained: tuple[Path, Path], synthetic_root: Path) -> None:
    _, calibrated = trained
    model, config = load_model(calibrated)
    cal = config.eval.calibration
    assert config.eval.normalization == "calibrated"
    assert cal["psnr_low"] < cal["psnr_high"] and cal["frames"] > 0 and cal["smoothing"] == 3
    # on the footage it was fitted on, about 5% of the smoothed scores exceed the threshold
    results = score_videos(model, config, split_videos(synthetic_root, "synthetic", "training"), progress=False)
    from mnad.scoring import anomaly_score

    s = np.concatenate([smooth(anomaly_score(r.psnr, r.distance, alpha=0.6, normalization="calibrated", calibration=cal), 3)
                        for r in results])
    assert 0.02 <= np.mean(s > cal["threshold"]) <= 0.08


def test_detect_on_mp4_finds_the_anomalies_and_matches_offline_scores(trained: tuple[Path, Path], synthetic_root: Path,
                                                                        tmp_path: Path) -> None:
    run, calibrated = trained
    model, config = load_model(calibrated)
    labels = np.load(synthetic_root / "synthetic" / "frame_labels_synthetic.npy")[0]
    test_dir = synthetic_root / "synthetic" / "testing" / "frames"
    n = len(list((test_dir / "01").iterdir()))
    write_mp4(test_dir / "01", tmp_path / "01.mp4")
    out = tmp_path / "out"
    summary = detect(model, config, str(tmp_path / "01.mp4"), out, DetectOptions(save_video=True, save_maps="npy"), progress=False)
    assert summary["frames_scored"] == n - 4 and summary["calibrated"]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [int(r["frame"]) for r in rows] == list(range(4, n))
    score = np.array([float(r["score"]) for r in rows])
    smoothed = np.array([float(r["smoothed"]) for r in rows])
    assert summary["above_threshold_rate"] == pytest.approx(np.mean(smoothed > summary["threshold"]), abs=1e-5)
    video_labels = labels[:n][4:]
    assert score[video_labels == 1].mean() > score[video_labels == 0].mean()
    # events: JSON lines and CSV agree, and the alerts fall mostly on labelled frames
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert len(events) == len(list(csv.DictReader((out / "events.csv").open())))
    alerts = np.array([int(r["alert"]) for r in rows])
    if alerts.sum():
        assert video_labels[alerts == 1].mean() > video_labels.mean() - 0.1
    # localisation outputs
    assert len(list((out / "maps").rglob("*.npy"))) == n - 4
    assert np.load(out / "maps" / "00000000" / "000000000004.npy").shape == (32, 32)
    capture = cv2.VideoCapture(str(out / "annotated.mkv"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == n - 4
    # causal scores agree with the offline scoring of the same frames (mp4 compression aside)
    offline = score_videos(model, config, list_videos(test_dir)[:1], progress=False)[0]
    psnr_detect = np.array([float(r["psnr"]) for r in rows])
    assert np.corrcoef(psnr_detect, offline.psnr)[0, 1] > 0.95


def test_onnx_export_matches_pytorch(trained: tuple[Path, Path], synthetic_root: Path, tmp_path: Path) -> None:
    run, _ = trained
    model, config = load_model(run)
    config = config.override(["eval.gamma=1.0"])  # every frame updates the memory: the update is exercised too
    # the fast-path options do not leak into the graph: it is fp32 and matches fp32 PyTorch
    export_onnx(model, config.override(["eval.bf16=true", "eval.channels_last=true"]), tmp_path / "m.onnx")
    onnx = load_onnx(tmp_path / "m.onnx")
    torch.testing.assert_close(onnx.items, model.memory.items)
    videos = split_videos(synthetic_root, "synthetic", "testing")[:1]
    torch_scores = score_videos(model, config, videos, progress=False)[0]
    scorer = StreamScorer.for_model(onnx, onnx.config)
    size = config.model.image_size
    onnx_rows = [r for i in range(len(videos[0])) if (r := scorer.push(videos[0].frame(i, size, 3))) is not None]
    assert all(r.updated for r in onnx_rows)
    np.testing.assert_allclose([r.psnr for r in onnx_rows], torch_scores.psnr, atol=1e-4)
    np.testing.assert_allclose([r.distance for r in onnx_rows], torch_scores.distance, atol=1e-4)
    np.testing.assert_allclose([r.patch_distance for r in onnx_rows], torch_scores.patch_distance, atol=1e-4)
    np.testing.assert_allclose([r.regular for r in onnx_rows], torch_scores.regular, atol=1e-4)


def test_cli_calibrate_detect_export(trained: tuple[Path, Path], synthetic_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = trained
    normal = synthetic_root / "synthetic" / "training" / "frames"
    # too little footage for 1 % (40 frames) is refused, naming the file and what is needed
    assert main(["calibrate", "--checkpoint", str(run), "--data", str(normal), "--out", str(tmp_path / "cal.safetensors"), "--quiet"]) == 2
    assert "too short" in capsys.readouterr().err and not (tmp_path / "cal.safetensors").exists()
    assert main(["calibrate", "--checkpoint", str(run), "--data", str(normal), "--out", str(tmp_path / "cal.safetensors"), "--quiet",
                 "--false-alarm-rate", "0.05"]) == 0
    # the recipe asks for no smoothing (eval.smoothing 1): alerts still get the trailing mean of ALERT_SMOOTHING frames
    assert load_model(run)[1].eval.smoothing == 1
    assert load_model(tmp_path / "cal.safetensors")[1].eval.calibration["smoothing"] == ALERT_SMOOTHING
    source = str(synthetic_root / "synthetic" / "testing" / "frames" / "02")
    assert main(["detect", source, "--checkpoint", str(tmp_path / "cal.safetensors"), "--out", str(tmp_path / "d"), "--quiet"]) == 0
    # a window other than the one the threshold was fitted on is refused, naming the model and the fix
    assert main(["detect", source, "--checkpoint", str(tmp_path / "cal.safetensors"), "--out", str(tmp_path / "e"), "--quiet",
                 "--smoothing", "2"]) == 2
    assert "fitted on a 5-frame mean" in capsys.readouterr().err
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["calibrated"] is True
    assert main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    assert main(["detect", source, "--checkpoint", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "o" / "scores.csv").open()))
    assert len(rows) == 24 - 4


def test_train_on_own_footage_keeps_a_holdout_for_calibration(synthetic_root: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    footage = tmp_path / "my camera"
    footage.mkdir()
    for video in (synthetic_root / "synthetic" / "training" / "frames").iterdir():
        write_mp4(video, footage / f"{video.name}.mp4")
    args = ["train", "--data", str(footage), "--out", str(tmp_path / "run"), "--epochs", "1", "--quiet",
            "--set", "model.image_size=32", "--set", "model.width=8", "--recipe", "synthetic_pred"]
    assert main(args) == 0
    held = json.loads((tmp_path / "run" / "holdout.json").read_text())
    # a camera's model is set up for causal, localised scoring (the stream protocol's choice on held-out footage)
    scoring = json.loads((tmp_path / "run" / "config.json").read_text())["eval"]
    assert (scoring["psnr_region"], scoring["distance_region"]) == ("patch", "patch")
    # 10% of 24 frames is 2, fewer than one clip of 5: the held-out part is widened to 5 frames
    assert len(held) == 2 and all((h["start"], h["stop"]) == (19, 24) for h in held)
    # two held-out clips: enough frames only for a coarse rate, and a window of one frame (each part scores one: the
    # default 5-frame window would never be fitted whole, and is refused)
    assert main(["calibrate", "--checkpoint", str(tmp_path / "run"), "--out", str(tmp_path / "cal.safetensors"), "--quiet",
                 "--false-alarm-rate", "0.5", "--smoothing", "1"]) == 0
    # the calibrated model carries its training's record: the footage (never calibrated on) and the epochs (was: the
    # epochs dropped, so a report of it said nothing of its training)
    _, _, extra = read_checkpoint(tmp_path / "cal.safetensors")
    assert extra["epochs"] == 1 and [tuple(f) for f in extra["footage"]] == training_record(tmp_path / "run")["footage"]
    assert {path for path, _, _ in extra["footage"]} == {str(v.resolve()) for v in footage.iterdir()}
    # too little footage for a pseudo-anomaly: the camera's configured scoring, and the command says so
    assert "mnad: scoring: patch PSNR + patch D, 1-frame mean (as configured)" in capsys.readouterr().err


def test_detect_with_a_middle_frame_model_reports_each_frame_it_scores(synthetic_root: Path, tmp_path: Path) -> None:
    # recon with motion cues scores the middle frame of each clip: frames arrive 1 ahead of their score here
    from mnad.model import MNAD

    config = tiny_config(task="recon", t_length=4)
    torch.manual_seed(0)
    model = MNAD(config.model)
    folder = synthetic_root / "synthetic" / "testing" / "frames" / "01"
    n = len(list(folder.iterdir()))
    summary = detect(model, config, str(folder), tmp_path / "out", DetectOptions(save_maps="npy"), progress=False)
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    assert [int(r["frame"]) for r in rows] == list(range(2, n - 1))  # the first 2 and the last 1 are no clip's middle
    assert summary["frames_scored"] == n - 3
    assert sorted(p.name for p in (tmp_path / "out" / "maps").rglob("*.npy"))[0] == "000000000002.npy"
