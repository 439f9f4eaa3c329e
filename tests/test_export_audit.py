"""Audit of export, int8, calibrate's output, figures, demo, pseudo-anomalies and the compiled step's cache (2026-11-30):
each test fails without its fix."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import frames_folder, tiny_config

import mnad.aot
import mnad.calibrate
from mnad.atomic import atomic_write
from mnad.checkpoint import load_model, save_model
from mnad.cli import main
from mnad.data import Video, open_video
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.export import export_onnx, load_onnx
from mnad.figures import memory_figures
from mnad.model import MNAD
from mnad.pseudo import LEAD, pseudo_anomalies
from mnad.stream import StreamScorer

CLIPS = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[MNAD, object, Path]:
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    folder = tmp_path_factory.mktemp("audit")
    save_model(folder / "m.safetensors", model, config)
    return model, config, folder


def still_folder(folder: Path, n: int, value: int = 100) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:05d}.png"), np.full((32, 32, 3), value, np.uint8))
    return folder


def test_int8_export_refuses_footage_that_never_changes(tiny, tmp_path: Path) -> None:
    """An int8 export calibrated on a still picture (was: written, exit 0, every activation range fitted to one
    picture) is refused as calibrate refuses such footage; nothing is written."""
    model, config, _ = tiny
    still = still_folder(tmp_path / "still", 20)
    with pytest.raises(DataError, match="still.*does not change"):
        export_onnx(model, config, tmp_path / "m.onnx", int8=True, calibration=[open_video(still)], calibration_clips=CLIPS)
    assert not list(tmp_path.glob("*.onnx*"))


def test_int8_export_on_fewer_clips_than_asked_says_so(tiny, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, config, _ = tiny
    noise = frames_folder(tmp_path / "noise", 7)  # 3 clips of 5 frames
    with caplog.at_level(logging.WARNING, logger="mnad"):
        export_onnx(model, config, tmp_path / "m.onnx", int8=True, calibration=[noise], calibration_clips=CLIPS)  # a path is opened
    assert "3 clips of 5 frames, fewer than the 4 asked" in caplog.text
    assert load_onnx(tmp_path / "m.onnx").int8["calibration"]["clips"] == 3


def test_export_checks_its_arguments_before_any_work(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Non-whole clip counts (was: TypeError traceback, or True taken as 1 clip), footage given as one path (was:
    AttributeError, its characters taken for videos), an opset torch cannot export with (was: OnnxExporterError or
    RuntimeError tracebacks), and outputs that cannot be written (was: found after the minutes of quantising)."""
    model, config, _ = tiny
    noise = open_video(frames_folder(tmp_path / "noise", 12))
    out = tmp_path / "m.onnx"
    for clips in (2.5, True, 0):
        with pytest.raises(ConfigError, match="--calibration-clips must be a whole number"):
            export_onnx(model, config, out, int8=True, calibration=[noise], calibration_clips=clips)
    with pytest.raises(ConfigError, match="must be a list of videos.*got str"):
        export_onnx(model, config, out, int8=True, calibration=str(tmp_path / "noise"))
    for opset in (5, 100):
        with pytest.raises(ConfigError, match=f"opset {opset}: .*use the default, 18"):
            export_onnx(model, config, out, opset=opset)
    with pytest.raises(ConfigError, match="opset must be a whole number"):
        export_onnx(model, config, out, opset="18")
    assert not list(tmp_path.glob("*.onnx*"))

    def not_reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("traced although the output cannot be written")

    monkeypatch.setattr(torch.onnx, "export", not_reached)
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(DataError, match="dir.onnx: cannot write a file there .it is a folder"):
        export_onnx(model, config, tmp_path / "dir.onnx", int8=True, calibration=[noise], calibration_clips=CLIPS)
    (tmp_path / "side.onnx.json").mkdir()
    with pytest.raises(DataError, match=r"side.onnx.json: cannot write a file there .it is a folder"):
        export_onnx(model, config, tmp_path / "side.onnx")
    assert not (tmp_path / "side.onnx").exists()


def test_missing_onnx_packages_are_one_error(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """onnx (to export) or onnxruntime (to score an export) not installed: one `mnad: error:` line naming the package
    and the extra (was: OnnxExporterError / ModuleNotFoundError tracebacks)."""
    model, config, folder = tiny
    export_onnx(model, config, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"m.onnx: scoring an ONNX export needs onnxruntime.*mnad\[export\]"):
        load_onnx(tmp_path / "m.onnx")
    video = frames_folder(tmp_path / "v", 8)
    assert main(["detect", str(video), "--checkpoint", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "d"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "mnad: error:" in err and "onnxruntime" in err and "Traceback" not in err
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ConfigError, match=r"an ONNX export needs onnx, which is not installed"):
        export_onnx(model, config, tmp_path / "n.onnx")
    assert main(["export", "--checkpoint", str(folder / "m.safetensors"), "--out", str(tmp_path / "n.onnx")]) == 2
    assert not (tmp_path / "n.onnx").exists()


def test_calibrate_output_is_checked_before_the_footage_is_scored(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """`calibrate --out` naming a folder, or under a file (was: the footage scored for minutes, then `cannot write (Is a
    directory)` / `(File exists)`)."""
    _, _, folder = tiny
    video = frames_folder(tmp_path / "v", 30)

    def not_reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("footage scored although the output cannot be written")

    monkeypatch.setattr(mnad.calibrate, "calibrate", not_reached)
    (tmp_path / "dir.safetensors").mkdir()
    (tmp_path / "afile").write_text("x")
    for out, message in ((tmp_path / "dir.safetensors", "it is a folder"), (tmp_path / "afile" / "c.safetensors", "afile is a file")):
        assert main(["calibrate", "--checkpoint", str(folder / "m.safetensors"), "--data", str(video), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"mnad: error: {out}: " in err and message in err


def test_figures_refuse_a_device_this_machine_lacks(tiny, tmp_path: Path, synthetic_root: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`figures --device cuda` on a CPU machine, `--device gpu` (was: AssertionError / RuntimeError tracebacks);
    `--seed -1` named as --seed (was: `overrides: train.seed`, a field figures does not use)."""
    model, config, folder = tiny
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cuda: CUDA is not available"):
            memory_figures(model, config, synthetic_root, tmp_path / "f", device="cuda")
    base = ["figures", "--checkpoint", str(folder / "m.safetensors"), "--data-root", str(synthetic_root), "--out", str(tmp_path / "f")]
    assert main([*base, "--device", "gpu"]) == 2
    assert "mnad: error: --device gpu: not a device" in capsys.readouterr().err
    assert main([*base, "--seed", "-1"]) == 2
    assert "mnad: error: --seed must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_demo_checks_everything_before_it_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --seed abc` / `--seed -1` (was: ValueError tracebacks, from the scene's generator),
    `--out` a file (was: NotADirectoryError traceback), and `--out` holding an earlier demo run without --overwrite (was:
    its scene regenerated with the new seed under it, then the run refused)."""
    for args in (["--seed", "abc"], ["--seed", "-1"]):
        assert main(["demo", "--out", str(tmp_path / "d"), "--quiet", *args]) == 2
        err = capsys.readouterr().err
        assert "mnad: error:" in err and "seed" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()
    (tmp_path / "afile").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "afile"), "--quiet"]) == 2
    assert "afile is a file, not a folder" in capsys.readouterr().err
    earlier = tmp_path / "earlier"
    (earlier / "run").mkdir(parents=True)
    (earlier / "run" / "config.json").write_text("{}")
    assert main(["demo", "--out", str(earlier), "--seed", "3", "--quiet"]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert not (earlier / "data").exists()  # its scene untouched (here: none made)


class Square(Video):
    """A bright square moving two pixels per frame: footage with motion to make pseudo-anomalies from."""

    def __init__(self, frames: int = 90) -> None:
        self.frames, self.name, self.path = frames, "square", Path("square")

    def __len__(self) -> int:
        return self.frames

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        image = np.zeros((size, size, channels), np.uint8)
        x = (2 * index) % (size - 6)
        image[10:16, x:x + 6] = 255
        image[-1, -1] = index % 256
        return image


def test_pseudo_anomaly_labels_follow_the_scored_frame_of_a_reconstruction_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reconstruction model's clip scores its middle frame, not its last: the pseudo-anomalous labels must mark the
    frames scored after the region sped up (was: shifted by the 7 frames of a 16-frame clip, normal frames labelled
    pseudo-anomalous)."""
    torch.manual_seed(0)
    config = tiny_config(task="recon", t_length=16)
    model = MNAD(config.model)
    videos = [Square()]
    made = pseudo_anomalies(videos, 32, 3)
    captured = {}

    def capture(normal, pseudo, labels, **kwargs):
        captured["labels"] = labels
        raise RuntimeError("captured")

    monkeypatch.setattr(mnad.calibrate, "choose_scoring", capture)
    monkeypatch.setattr(mnad.calibrate, "footage_terms", lambda model, config, videos, **kw: {
        "psnr": [np.zeros(len(v) - config.model.t_length + 1) for v in videos]})
    with pytest.raises(RuntimeError, match="captured"):
        mnad.calibrate.choose_on_pseudo_anomalies(model, config, videos, {}, smoothing=None, progress=False)
    scorer = StreamScorer.for_model(model, config, normalization="video")
    indices = [row.index for i in range(len(made[0])) if (row := scorer.push(made[0].frame(i, 32, 3))) is not None]
    assert captured["labels"][0].tolist() == [i > LEAD for i in indices]


def test_compiled_step_cache_is_built_once_by_concurrent_scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Two scorers (processes or threads) compiling the same step at once (was: both compiled for minutes, and the
    package of one could be paired with the record of the other, or replaced between its check and its load): one
    builds, the other waits and loads that package; every package loaded is the one its record describes."""
    monkeypatch.setenv("MNAD_CACHE_DIR", str(tmp_path))
    loaded: list[bool] = []

    def fake_build(self, shapes, package, record) -> None:
        time.sleep(0.3)
        package.write_bytes(np.random.default_rng().bytes(64))  # each build's package differs, as real builds do
        digest = hashlib.sha256(package.read_bytes()).hexdigest()
        time.sleep(0.1)
        atomic_write(record, json.dumps({"format": mnad.aot.PACKAGE_FORMAT, "sha256": digest}).encode())

    class FakeLoader:
        def __init__(self, path: str, *args: object) -> None:
            kept = json.loads(Path(path).with_suffix(".json").read_text())
            loaded.append(hashlib.sha256(Path(path).read_bytes()).hexdigest() == kept["sha256"])

    monkeypatch.setattr(mnad.aot.AotStep, "_build", fake_build)
    monkeypatch.setattr(torch._C._aoti, "AOTIModelPackageLoader", FakeLoader)
    config = tiny_config()
    model = MNAD(config.model)
    steps = [mnad.aot.AotStep(model, config) for _ in range(3)]
    shapes = ((1, 12, 32, 32), (1, 3, 32, 32), (10, 64))
    threads = [threading.Thread(target=step._runner, args=(shapes,)) for step in steps]
    with caplog.at_level(logging.WARNING, logger="mnad"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sum(step.builds for step in steps) == 1
    assert loaded == [True, True, True]
    assert "does not match its record" not in caplog.text


def test_an_export_records_the_fp32_path_its_graph_runs(tmp_path: Path) -> None:
    """The export of a model whose config says eval.compile (a model calibrated with `--compile`), bf16 or
    channels_last: the sidecar says what the graph does, fp32 (was: the model's config, so `detect` on the export
    failed with `eval.compile applies to PyTorch models`, after `export` exited 0)."""
    torch.manual_seed(0)
    config = tiny_config().override(["eval.compile=true", "eval.bf16=true", "eval.channels_last=true"])
    save_model(tmp_path / "m.safetensors", MNAD(config.model), config)
    assert main(["export", "--checkpoint", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "m.onnx")]) == 0
    exported = load_onnx(tmp_path / "m.onnx").config.eval
    assert (exported.compile, exported.bf16, exported.channels_last) == (False, False, False)
    video = frames_folder(tmp_path / "v", 8)
    assert main(["detect", str(video), "--checkpoint", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "d"), "--quiet"]) == 0


def test_calibrate_saves_the_models_own_record(tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The calibrated model keeps its training record and run settings: the calibrating run's --threads, --set
    train.lr, --channels-last (and --compile, which made every later run of it compile) were written into it; a change
    of the model's settings (`--set model.memory_size=5`) is refused as evaluate refuses it (was: exit 0, the footage
    scored with the config of another model)."""
    _, config, folder = tiny
    video = frames_folder(tmp_path / "v", 30)
    base = ["calibrate", "--checkpoint", str(folder / "m.safetensors"), "--data", str(video), "--false-alarm-rate", "0.1",
            "--scoring", "config", "--quiet", "--out", str(tmp_path / "c.safetensors")]
    assert main([*base, "--threads", "1", "--channels-last", "--set", "train.lr=0.5", "--gamma", "0.5"]) == 0
    _, saved = load_model(tmp_path / "c.safetensors")
    assert saved.train == config.train and saved.model == config.model
    assert saved.eval.channels_last == config.eval.channels_last and saved.eval.compile == config.eval.compile
    assert saved.eval.gamma == 0.5 and saved.eval.normalization == "calibrated"  # how it scores: the calibration's
    capsys.readouterr()
    assert main([*base, "--overwrite", "--set", "model.memory_size=5"]) == 2
    assert "model.memory_size=5 (the model has 10)" in capsys.readouterr().err


def test_figures_read_a_broken_test_split_as_an_error_not_the_training_videos(tiny, tmp_path: Path, synthetic_root: Path,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A test split with a fault (here a video folder without frames) made figures silently draw the training videos,
    exit 0; now the fault is the error. A root without a test split still falls back to its training videos."""
    import shutil

    _, _, folder = tiny
    root = tmp_path / "root"
    shutil.copytree(synthetic_root, root)
    (root / "synthetic" / "testing" / "frames" / "09").mkdir()
    args = ["figures", "--checkpoint", str(folder / "m.safetensors"), "--data-root", str(root), "--out", str(tmp_path / "f"),
            "--clips", "2", "--frames", "1", "--queries", "20"]
    assert main(args) == 2
    assert "09: folder has no frames" in capsys.readouterr().err
    shutil.rmtree(root / "synthetic" / "testing")
    assert main(args) == 0
    names = {clip["video"] for clip in json.loads((tmp_path / "f" / "figures.json").read_text())["clips"]}
    assert names <= {v.name for v in (root / "synthetic" / "training" / "frames").iterdir()}


def test_calibrate_data_naming_nothing_is_refused(tiny, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """`calibrate --data` followed by nothing (was: the run's held-out part used instead, or its absence reported)."""
    _, _, folder = tiny
    assert main(["calibrate", "--checkpoint", str(folder / "m.safetensors"), "--data", "--out", str(tmp_path / "c.safetensors")]) == 2
    assert "mnad: error: --data names no footage" in capsys.readouterr().err


def test_export_leaves_the_callers_model_as_it_was(tmp_path: Path) -> None:
    """export_onnx turned the caller's model to fp32 and eval mode in place (a bf16 model came back fp32, a model in
    training came back in eval mode); and a sidecar nested past Python's stack was a RecursionError traceback."""
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model).to(torch.bfloat16).train()
    export_onnx(model, config, tmp_path / "m.onnx")
    assert next(model.parameters()).dtype == torch.bfloat16 and model.training
    Path(f"{tmp_path / 'm.onnx'}.json").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(CheckpointError, match="m.onnx.json: not a readable sidecar"):
        load_onnx(tmp_path / "m.onnx")


def test_footage_paths_are_opened_by_the_api_as_the_cli_takes_them(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A folder of video files given to the API (calibrate, export_onnx) is read as `--data` reads it, every video in it
    (was: the CLI alone expanded it; the API took it for a frame folder without frames); a folder that cannot be listed
    is one error naming it (was: a PermissionError traceback from the CLI's own check)."""
    from conftest import noise_video

    model, config, folder = tiny
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.avi", "b.avi"):
        noise_video(videos / name, 12, 10.0)
    assert [v.name for v in mnad.calibrate.footage_videos([videos])] == ["a", "b"]
    export_onnx(model, config, tmp_path / "m.onnx", int8=True, calibration=[str(videos)], calibration_clips=CLIPS)
    assert [v["path"] for v in load_onnx(tmp_path / "m.onnx").int8["calibration"]["videos"]] == [str(videos / "a.avi"), str(videos / "b.avi")]
    iterdir = Path.iterdir

    def unlistable(self: Path):
        if self == videos:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", unlistable)
    assert main(["export", "--checkpoint", str(folder / "m.safetensors"), "--int8", "--calibration-data", str(videos),
                 "--out", str(tmp_path / "n.onnx")]) == 2
    assert f"mnad: error: {videos}: cannot list the folder (Permission denied)" in capsys.readouterr().err


def test_calibrating_a_shipped_model_never_reads_the_current_folders_holdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`calibrate --checkpoint ped2-pred` without --data looked for holdout.json in the current folder (the shipped
    name's "parent"): run from a run folder, it calibrated the shipped model on that run's held-out footage."""
    (tmp_path / "holdout.json").write_text("[]")
    monkeypatch.chdir(tmp_path)
    assert main(["calibrate", "--checkpoint", "ped2-pred", "--out", str(tmp_path / "c.safetensors"), "--quiet"]) == 2
    assert "mnad: error: ped2-pred: a shipped model keeps no held-out footage; pass --data" in capsys.readouterr().err


def test_compiled_step_cache_on_a_file_system_without_locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where flock is refused (ENOLCK on some NFS mounts) the step is built and loaded unlocked, not a traceback."""
    import errno
    import fcntl

    monkeypatch.setenv("MNAD_CACHE_DIR", str(tmp_path))

    def fake_build(self, shapes, package, record) -> None:
        package.write_bytes(b"package")
        atomic_write(record, json.dumps({"format": mnad.aot.PACKAGE_FORMAT, "sha256": hashlib.sha256(b"package").hexdigest()}).encode())

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(mnad.aot.AotStep, "_build", fake_build)
    monkeypatch.setattr(torch._C._aoti, "AOTIModelPackageLoader", lambda path, *args: path)
    monkeypatch.setattr(fcntl, "flock", no_locks)
    config = tiny_config()
    step = mnad.aot.AotStep(MNAD(config.model), config)
    assert step._runner(((1, 12, 32, 32), (1, 3, 32, 32), (10, 64))).endswith(".pt2") and step.builds == 1


def test_an_export_records_only_the_model_it_was_made_from(tiny, tmp_path: Path) -> None:
    """export_onnx with a config of another model (was: memory_size=5 recorded beside 10 items, a graph traced at
    64x64 for a 32x32 model, both exit 0; t_length a RuntimeError traceback); a sidecar whose items do not fit its
    config (as such an export wrote it) is refused on load."""
    from mnad.export import _sidecar_digest

    model, config, _ = tiny
    for change in ("model.memory_size=5", "model.image_size=64", "model.t_length=3"):
        with pytest.raises(ConfigError, match=f"{change.split('=')[0]}="):
            export_onnx(model, config.override([change]), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    export_onnx(model, config, tmp_path / "m.onnx")
    side_path = Path(f"{tmp_path / 'm.onnx'}.json")
    side = json.loads(side_path.read_text(encoding="utf-8"))
    side["config"]["model"]["memory_size"] = 5
    side["sha256"] = _sidecar_digest(side)
    side_path.write_text(json.dumps(side), encoding="utf-8")
    with pytest.raises(CheckpointError, match="the memory items do not match the config"):
        load_onnx(tmp_path / "m.onnx")


def test_calibrate_never_writes_over_a_training_checkpoint(tiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`calibrate --out run/last.safetensors` (was: the run's training checkpoint replaced by a model file: the run
    could no longer be resumed), refused before the footage is scored."""
    _, _, folder = tiny
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.safetensors").write_bytes(b"training state")
    video = frames_folder(tmp_path / "v", 30)
    assert main(["calibrate", "--checkpoint", str(folder / "m.safetensors"), "--data", str(video), "--false-alarm-rate", "0.1",
                 "--scoring", "config", "--quiet", "--out", str(tmp_path / "run" / "last.safetensors")]) == 2
    assert "the name of a run's training checkpoint" in capsys.readouterr().err
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == b"training state"


def test_int8_work_files_on_a_full_disk_are_one_error(tiny, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The quantiser's work files in a full temporary folder (was: an OSError traceback); nothing is written."""
    import errno

    model, config, _ = tiny
    noise = frames_folder(tmp_path / "noise", 12)
    write_bytes = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if self.name == "fp32.onnx":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DataError, match=r"fp32.onnx: cannot write the int8 quantiser's work files \(disk full"):
        export_onnx(model, config, tmp_path / "m.onnx", int8=True, calibration=[noise], calibration_clips=CLIPS)
    assert not (tmp_path / "m.onnx").exists()


def test_compiled_step_cache_is_pruned_of_old_and_surplus_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each model, calibration, frame size or mnad version builds another package and none was ever deleted (was: the
    cache grew for ever, tens of MB a package). A build prunes packages unused for KEEP_DAYS days and all but the
    KEEP_PACKAGES most recently used, never the one just built nor one another process holds the lock of; a load marks
    its package used."""
    monkeypatch.setenv("MNAD_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "aoti"
    folder.mkdir()
    now = time.time()

    def package(key: str, days_ago: float) -> None:
        (folder / f"{key}.pt2").write_bytes(b"x")
        (folder / f"{key}.json").write_text("{}")
        os.utime(folder / f"{key}.json", (now - days_ago * 86400,) * 2)

    for i in range(mnad.aot.KEEP_PACKAGES + 3):  # recent ones, the 3 oldest beyond the count
        package(f"recent{i:02d}", days_ago=i / 100)
    package("old", days_ago=mnad.aot.KEEP_DAYS + 1)
    package("held", days_ago=mnad.aot.KEEP_DAYS + 2)
    (folder / "mnad-aoti-killed").mkdir()
    os.utime(folder / "mnad-aoti-killed", (now - 2 * 86400,) * 2)
    held = os.open(folder / ".held.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        deleted = mnad.aot.prune(folder, keep="recent00", now=now)
    finally:
        os.close(held)
    surplus = {f"recent{i:02d}" for i in range(mnad.aot.KEEP_PACKAGES, mnad.aot.KEEP_PACKAGES + 3)}
    assert set(deleted) == surplus | {"old"}
    assert {p.stem for p in folder.glob("*.pt2")} == {f"recent{i:02d}" for i in range(mnad.aot.KEEP_PACKAGES)} | {"held"}
    assert not (folder / "mnad-aoti-killed").exists()

    # the runner: a build prunes, a load from the cache marks the package used
    def fake_build(self, shapes, package, record) -> None:
        package.write_bytes(b"built")
        atomic_write(record, json.dumps({"format": mnad.aot.PACKAGE_FORMAT,
                                         "sha256": hashlib.sha256(b"built").hexdigest()}).encode())

    monkeypatch.setattr(mnad.aot.AotStep, "_build", fake_build)
    monkeypatch.setattr(torch._C._aoti, "AOTIModelPackageLoader", lambda *args: None)
    config = tiny_config()
    model = MNAD(config.model)
    step = mnad.aot.AotStep(model, config)
    shapes = ((1, 12, 32, 32), (1, 3, 32, 32), (10, 64))
    step._runner(shapes)
    key = step.key(shapes)
    # the new one is now the most recent: one more of the recent ones goes
    assert (folder / f"{key}.pt2").exists() and not (folder / f"recent{mnad.aot.KEEP_PACKAGES - 1:02d}.pt2").exists()
    os.utime(folder / f"{key}.json", (now - 5 * 86400,) * 2)
    again = mnad.aot.AotStep(model, config)
    again._runner(shapes)
    assert again.builds == 0 and (folder / f"{key}.json").stat().st_mtime > now - 60


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_cuda_exports_as_its_cpu_copy_does(tiny, tmp_path: Path) -> None:
    """The export traces a CPU copy of the model (its example inputs are CPU tensors): a model loaded on a GPU exports
    (was: torch's device-mismatch RuntimeError, re-raised as a traceback) the weights and memory its CPU copy does, and the
    caller's model stays on the GPU."""
    _, config, folder = tiny
    model, _ = load_model(folder / "m.safetensors", map_location="cuda")
    export_onnx(model, config, tmp_path / "gpu.onnx")
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    cpu, _ = load_model(folder / "m.safetensors")
    export_onnx(cpu, config, tmp_path / "cpu.onnx")
    sides = [json.loads(Path(f"{tmp_path / name}.onnx.json").read_text(encoding="utf-8")) for name in ("gpu", "cpu")]
    assert sides[0]["weights_sha256"] == sides[1]["weights_sha256"]
    assert sides[0]["memory_items"] == sides[1]["memory_items"]
    assert load_onnx(tmp_path / "gpu.onnx").config.eval.bf16 is False  # it loads, as an fp32 graph
