"""The catalogue of bad inputs (docs/reliability.md): one test per kind of input.

Each bad input gives one clear error (an MNADError: DataError, ConfigError or CheckpointError) whose message names the
file or field at fault, and leaves no partial output: training fails before it creates its run folder, evaluation
writes neither scores.csv nor metrics.json. Some inputs are not errors by design (mixed channel counts, 16-bit TIFFs,
stray non-image files): for those the test asserts the documented conversion.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.checkpoint import load_model
from mnad.cli import main
from mnad.config import Config, load_config
from mnad.data import FrameFolder, VideoFile, list_videos, load_labels, split_videos
from mnad.data.pixels import read_image, to_channels
from mnad.errors import CheckpointError, ConfigError, DataError, MNADError
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.train import train

N_FRAMES = 24  # per video in the synthetic_root fixture (2 training, 2 test videos, 32x32 JPEG)


# ------------------------------------------------------------------------------------------------------ helpers

@pytest.fixture
def root(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny synthetic dataset, to damage."""
    shutil.copytree(synthetic_root / "synthetic", tmp_path / "data" / "synthetic")
    return tmp_path / "data"


def frame_path(root: Path, split: str, video: str = "01", index: int = 5) -> Path:
    return root / "synthetic" / split / "frames" / video / f"{index:03d}.jpg"


def untrained() -> tuple[MNAD, Config]:
    config = tiny_config()
    torch.manual_seed(0)
    return MNAD(config.model), config


def train_fails(root: Path, out: Path, error: type[MNADError], match: str, config: Config | None = None) -> MNADError:
    """Training refuses the input with one clear error, before creating its run folder."""
    with pytest.raises(error, match=match) as info:
        train(config or tiny_config(), root, out, progress=False)
    assert not out.exists(), f"training left {sorted(p.name for p in out.iterdir())}"
    return info.value


def evaluate_fails(root: Path, out: Path, error: type[MNADError], match: str, **kwargs: object) -> MNADError:
    """Evaluation refuses the input with one clear error and writes no scores.csv and no metrics.json."""
    model, config = untrained()
    with pytest.raises(error, match=match) as info:
        evaluate(model, config, root, out_dir=out, progress=False, **kwargs)
    assert not out.exists() or list(out.iterdir()) == [], f"evaluation left {sorted(p.name for p in out.iterdir())}"
    return info.value


def fails_at(stage: str, root: Path, tmp_path: Path, match: str) -> MNADError:
    if stage == "train":
        return train_fails(root, tmp_path / "run", DataError, match)
    return evaluate_fails(root, tmp_path / "eval", DataError, match)


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2] if frames else (32, 32)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


# ------------------------------------------------------------------------------------------------------- frames

@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_corrupt_jpeg_frame(root: Path, tmp_path: Path, stage: str) -> None:
    bad = frame_path(root, "training" if stage == "train" else "testing")
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not JPEG data at all" * 10)
    error = fails_at(stage, root, tmp_path, "not a readable image")
    assert str(bad) in str(error)


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_truncated_jpeg_frame(root: Path, tmp_path: Path, stage: str) -> None:
    bad = frame_path(root, "training" if stage == "train" else "testing", index=17)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    error = fails_at(stage, root, tmp_path, "corrupt, truncated or not an image")
    assert str(bad) in str(error)


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_zero_byte_frame(root: Path, tmp_path: Path, stage: str) -> None:
    bad = frame_path(root, "training" if stage == "train" else "testing", video="02", index=0)
    bad.write_bytes(b"")
    error = fails_at(stage, root, tmp_path, r"frame file is empty \(0 bytes\)")
    assert str(bad) in str(error)


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_frames_of_different_sizes_in_one_video(root: Path, tmp_path: Path, stage: str) -> None:
    bad = frame_path(root, "training" if stage == "train" else "testing", index=10)
    assert cv2.imwrite(str(bad), np.full((30, 40, 3), 128, np.uint8))
    error = fails_at(stage, root, tmp_path, "frame is 40x30, the video's first frame is 32x32")
    assert str(bad) in str(error)


def test_float_tiff_frame_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "frame.tiff"
    assert cv2.imwrite(str(path), np.full((8, 8, 3), 0.5, np.float32))
    with pytest.raises(DataError, match="unsupported pixel type float32") as info:
        to_channels(read_image(path), 3, path)
    assert str(path) in str(info.value)


def test_mixed_gray_rgb_rgba_frames_are_converted(tmp_path: Path) -> None:
    """Not an error: every frame becomes the model's channel count (gray repeated, alpha dropped), as documented."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    gray = np.full((32, 32), 90, np.uint8)
    bgr = np.dstack([np.full((32, 32), v, np.uint8) for v in (10, 20, 30)])
    bgra = np.dstack([bgr, np.full((32, 32), 7, np.uint8)])
    for name, image in (("0.png", gray), ("1.png", bgr), ("2.png", bgra), ("3.bmp", bgr)):
        assert cv2.imwrite(str(folder / name), image)
    video = FrameFolder(folder)
    three = [video.frame(i, 16, 3) for i in range(4)]
    assert all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in three)
    assert (three[0] == 90).all()  # gray repeated on the three channels
    assert (three[1] == three[2]).all() and (three[2] == three[3]).all()  # alpha dropped, colour kept
    assert three[1][0, 0].tolist() == [10, 20, 30]
    one = [video.frame(i, 16, 1) for i in range(4)]
    assert all(f.shape == (16, 16, 1) for f in one) and (one[0] == 90).all()
    assert abs(int(one[2][0, 0, 0]) - round(0.114 * 10 + 0.587 * 20 + 0.299 * 30)) <= 1  # BGR -> gray


def test_16bit_tiff_frames_are_converted(tmp_path: Path) -> None:
    """Not an error: 16-bit frames keep their high byte (65535 -> 255, 0x1234 -> 0x12), gray or colour."""
    folder = tmp_path / "deep"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "0.tiff"), np.full((32, 32), 0x1234, np.uint16))
    assert cv2.imwrite(str(folder / "1.tiff"), np.dstack([np.full((32, 32), v, np.uint16) for v in (0, 0x8000, 65535)]))
    assert read_image(folder / "0.tiff").dtype == np.uint16
    video = FrameFolder(folder)
    assert (video.frame(0, 16, 3) == 0x12).all()
    assert video.frame(1, 16, 3)[0, 0].tolist() == [0, 0x80, 255]


def test_non_image_files_in_frame_folders_are_ignored(root: Path) -> None:
    """Not an error: stray files (Thumbs.db, notes, hidden files) beside the frames are skipped, by extension."""
    video_dir = frame_path(root, "training").parent
    for name in ("Thumbs.db", "notes.txt", ".DS_Store", "labels.csv", "._000.jpg"):
        (video_dir / name).write_bytes(b"\x00junk")
    (video_dir.parent / "README.md").write_text("training videos")
    videos = split_videos(root, "synthetic", "training")
    assert [v.name for v in videos] == ["01", "02"] and [len(v) for v in videos] == [N_FRAMES, N_FRAMES]
    assert videos[0].frame(N_FRAMES - 1, 32, 3).shape == (32, 32, 3)


def test_folder_without_frames_among_the_videos(root: Path, tmp_path: Path) -> None:
    stray = root / "synthetic" / "training" / "frames" / "03"
    stray.mkdir()
    (stray / "notes.txt").write_text("no frames here")
    error = train_fails(root, tmp_path / "run", DataError, "folder has no frames")
    assert str(stray) in str(error)


# ------------------------------------------------------------------------------------------------------- videos

def test_video_file_with_no_frames(tmp_path: Path) -> None:
    folder = tmp_path / "own footage"
    folder.mkdir()
    empty = write_video(folder / "empty.avi", [])
    assert empty.stat().st_size > 0  # a valid container holding no frames
    config = tiny_config()
    config.dataset = ""
    error = train_fails(folder, tmp_path / "run", DataError, "video has no decodable frames", config)
    assert str(empty) in str(error)


@pytest.mark.parametrize("content", [b"", b"RIFF\x10\x00\x00\x00AVI LIST" + bytes(range(256)) * 4], ids=["zero-bytes", "garbage"])
def test_damaged_video_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "clip.avi"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot open video") as info:
        len(VideoFile(path))
    assert str(path) in str(info.value)


# -------------------------------------------------------------------------------------------------- data layout

def test_empty_training_set(root: Path, tmp_path: Path) -> None:
    frames = root / "synthetic" / "training" / "frames"
    shutil.rmtree(frames)
    frames.mkdir()
    error = train_fails(root, tmp_path / "run", DataError, "no videos")
    assert str(frames) in str(error)


def test_training_videos_shorter_than_a_clip(root: Path, tmp_path: Path) -> None:
    for video in ("01", "02"):
        for i in range(4, N_FRAMES):  # 4 frames left; a prediction clip needs t_length = 5
            frame_path(root, "training", video, i).unlink()
    train_fails(root, tmp_path / "run", DataError, "0 training clips of 5 frames, fewer than one batch of 4")


def test_test_video_shorter_than_a_clip(root: Path, tmp_path: Path) -> None:
    for i in range(3, N_FRAMES):
        frame_path(root, "testing", "02", i).unlink()
    np.save(root / "synthetic" / "frame_labels_synthetic.npy", np.zeros(N_FRAMES + 3, np.int64))
    error = evaluate_fails(root, tmp_path / "eval", DataError, r"3 frame\(s\), fewer than the 5 of one clip")
    assert str(root / "synthetic" / "testing" / "frames" / "02") in str(error)


def test_data_root_is_a_file(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "data.zip"
    not_a_folder.write_bytes(b"PK\x03\x04")
    error = train_fails(not_a_folder, tmp_path / "run", DataError, "data root is a file, expected a folder")
    assert str(not_a_folder) in str(error)
    evaluate_fails(not_a_folder, tmp_path / "eval", DataError, "data root is a file")
    own = tiny_config()
    own.dataset = ""  # own footage: the root itself is listed
    train_fails(not_a_folder, tmp_path / "run", DataError, "is a file, expected a folder of videos", own)


def test_data_root_missing(tmp_path: Path) -> None:
    train_fails(tmp_path / "nowhere", tmp_path / "run", DataError, "data root not found")


# ------------------------------------------------------------------------------------------------------- labels

def test_labels_of_the_wrong_length(root: Path, tmp_path: Path) -> None:
    labels = root / "synthetic" / "frame_labels_synthetic.npy"
    np.save(labels, np.zeros(2 * N_FRAMES + 1, np.int64))
    error = evaluate_fails(root, tmp_path / "eval", DataError, f"{2 * N_FRAMES + 1} labels, but the 2 test videos have {2 * N_FRAMES} frames")
    assert str(labels) in str(error)


@pytest.mark.parametrize(("array", "match"), [
    (np.array(["0", "1"] * N_FRAMES), "labels must be numbers, got dtype <U1"),
    (np.zeros(2 * N_FRAMES, np.complex64), "labels must be numbers, got dtype complex64"),
    (np.full(2 * N_FRAMES, 0.5), r"must be 0 \(normal\) or 1 \(abnormal\), found \[0.5"),
    (np.zeros(2 * N_FRAMES, [("a", "i4")]), "labels must be numbers"),
    (np.array([None] * 2 * N_FRAMES, dtype=object), "not a readable .npy array"),  # would need pickle: refused
    (np.zeros((2, N_FRAMES)), r"must have shape \(N,\) or \(1, N\)"),
], ids=["strings", "complex", "fractions", "structured", "object-pickle", "two-rows"])
def test_labels_of_the_wrong_dtype(tmp_path: Path, array: np.ndarray, match: str) -> None:
    videos = split_videos_of_lengths(tmp_path, [N_FRAMES, N_FRAMES])
    path = tmp_path / "labels.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(DataError, match=match) as info:
        load_labels(path, videos)
    assert str(path) in str(info.value)


def test_labels_as_float_or_bool_zeros_and_ones_are_accepted(tmp_path: Path) -> None:
    videos = split_videos_of_lengths(tmp_path, [3, 2])
    for array in (np.array([0.0, 1.0, 1.0, 0.0, 1.0]), np.array([[False, True, True, False, True]]), np.array([0, 1, 1, 0, 1], np.uint8)):
        np.save(tmp_path / "l.npy", array)
        assert [x.tolist() for x in load_labels(tmp_path / "l.npy", videos)] == [[0, 1, 1], [0, 1]]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_labels(tmp_path: Path, value: float) -> None:
    videos = split_videos_of_lengths(tmp_path, [3, 2])
    path = tmp_path / "labels.npy"
    np.save(path, np.array([0.0, 1.0, value, 0.0, 0.0]))
    with pytest.raises(DataError, match=r"must be 0 \(normal\) or 1 \(abnormal\), found \[-?(nan|inf)\]") as info:
        load_labels(path, videos)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("text", "match"), [
    (b"video,start,end\n01,2,x\n", "line 2: frame counts and interval bounds must be integers"),
    (b"video,start,end\n07,1,2\n", "line 2: video '07' is not among the test videos"),
    (b"video,start,end\n01,2,99\n", "line 2: interval 2-99 outside video 01"),
    (b"video,start,end\n01,1,2\n\xff\xfe\x00garbage\n", "not a readable CSV file"),
    (b"name,begin\n01,1\n", "expected columns video, first_abnormal_frame, last_abnormal_frame"),
], ids=["not-integer", "unknown-video", "out-of-range", "not-utf8", "wrong-columns"])
def test_damaged_csv_labels(tmp_path: Path, text: bytes, match: str) -> None:
    videos = split_videos_of_lengths(tmp_path, [3, 2])
    path = tmp_path / "labels.csv"
    path.write_bytes(text)
    with pytest.raises(DataError, match=match) as info:
        load_labels(path, videos)
    assert str(path) in str(info.value)


def test_missing_or_unknown_label_file(root: Path, tmp_path: Path) -> None:
    evaluate_fails(root, tmp_path / "eval", DataError, "label file not found", labels_path=tmp_path / "none.npy")
    (tmp_path / "labels.txt").write_text("0 1 0")
    evaluate_fails(root, tmp_path / "eval", DataError, "unknown label format", labels_path=tmp_path / "labels.txt")


def split_videos_of_lengths(tmp_path: Path, lengths: list[int]) -> list:
    for n, length in enumerate(lengths, start=1):
        folder = tmp_path / "videos" / f"{n:02d}"
        folder.mkdir(parents=True)
        for i in range(length):
            cv2.imwrite(str(folder / f"{i:03d}.png"), np.zeros((8, 8), np.uint8))
    return list_videos(tmp_path / "videos")


# --------------------------------------------------------------------------------------------- NaN/Inf in config

@pytest.mark.parametrize("assignment", ["train.lr=nan", "train.lr=inf", "eval.alpha=inf", "eval.gamma=nan",
                                        "train.lambda_compact=-inf", "train.holdout=nan"])
def test_nan_or_inf_in_config(assignment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    field = assignment.split("=")[0]
    with pytest.raises(ConfigError, match=f"{field} must be a finite number"):
        Config().override([assignment])
    section, key = field.split(".")
    recipe = tmp_path / "bad.toml"
    recipe.write_text(f"[{section}]\n{key} = {assignment.split('=')[1]}\n")
    with pytest.raises(ConfigError, match=f"{recipe}: {field} must be a finite number"):
        load_config(recipe)
    assert main(["train", "--recipe", str(recipe), "--data-root", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mnad: error: {recipe}: {field} must be a finite number, got ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("assignment", "match"), [
    ("train.lr=0", "train.lr must be > 0"), ("model.memory_size=1", "model.memory_size must be >= 2"),
    ("train.seed=-1", r"train.seed must lie in \[0, 2\*\*32\)"), ("model.width=0", "model.width must be >= 1"),
    ("eval.smoothing=0", "eval.smoothing must be >= 1 frame"),
])
def test_out_of_range_config(assignment: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Config().override([assignment])


def test_evaluating_with_model_settings_changed_is_refused(root: Path, tmp_path: Path) -> None:
    model, config = untrained()
    config = config.override(["model.channels=1"])  # as `mnad evaluate --set model.channels=1` on a 3-channel model
    with pytest.raises(ConfigError, match=r"model.channels=1 \(the model has 3\)"):
        evaluate(model, config, root, out_dir=tmp_path / "eval", progress=False)
    assert not (tmp_path / "eval").exists()


def test_a_file_that_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "model.safetensors"
    assert cv2.imwrite(str(tmp_path / "x.jpg"), np.zeros((8, 8, 3), np.uint8))
    fake.write_bytes((tmp_path / "x.jpg").read_bytes())
    with pytest.raises(CheckpointError, match="not a readable safetensors file") as info:
        load_model(fake)
    assert str(fake) in str(info.value)


# ---------------------------------------------------------------------------------------------- paths and output

def test_paths_with_spaces_and_non_ascii_characters(root: Path, tmp_path: Path) -> None:
    """Not an error: frames are read with np.fromfile + imdecode and videos through their path, so any name works."""
    odd_root = tmp_path / "my data" / "ünïcødé 数据 ñ"
    odd_root.parent.mkdir()
    shutil.move(root, odd_root)
    (odd_root / "synthetic" / "training" / "frames" / "01").rename(odd_root / "synthetic" / "training" / "frames" / "vidéo 01 é")
    out = tmp_path / "run folder" / "résultats 結果"
    model_path = train(tiny_config(), odd_root, out, progress=False)
    model, config = load_model(model_path)
    metrics = evaluate(model, config, odd_root, out_dir=out / "éval", progress=False)
    assert metrics["frames_scored"] == 2 * (N_FRAMES - 4)
    assert (out / "éval" / "scores.csv").is_file() and (out / "éval" / "metrics.json").is_file()
    frames = [cv2.imread(str(p)) for p in sorted((odd_root / "synthetic" / "testing" / "frames" / "01").glob("*.jpg"))]
    video = VideoFile(write_video(tmp_path / "my data" / "caméra 1 – 夜.avi", frames))
    assert len(video) == N_FRAMES and video.frame(0, 32, 3).shape == (32, 32, 3)


def test_output_directory_that_cannot_be_written(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot write to the output folder") as info:
        train(tiny_config(), root, blocker / "run", progress=False)
    assert str(blocker / "run") in str(info.value)
    evaluate_fails(root, blocker / "eval", DataError, "cannot write there .*a file is a file, not a folder")  # before scoring

    def denied(*_: object, **__: object) -> None:  # a read-only folder (chmod does not stop root, so simulate it)
        raise PermissionError(13, "Permission denied")

    import mnad.checkpoint

    monkeypatch.setattr(mnad.atomic.tempfile, "mkstemp", denied)
    with pytest.raises(DataError, match=r"config.json: cannot write \(Permission denied\)"):
        train(tiny_config(), root, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()
    with pytest.raises(DataError, match=r"scores.csv: cannot write \(Permission denied\)"):
        evaluate(*untrained(), root, out_dir=tmp_path / "eval", progress=False)
    assert list((tmp_path / "eval").iterdir()) == []
