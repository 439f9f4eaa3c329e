"""Fuzzing the readers: frames, videos, labels and checkpoints get random and mutated bytes.

The only acceptable failure is an mnad error (a subclass of MNADError) naming the file: never a crash, a bare
OpenCV/numpy/JSON exception or a hang. Bounded (derandomized, fixed example counts) so CI time and results are stable.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnad.checkpoint import load_model, read_checkpoint, save_model, tensor_digest
from mnad.data.labels import load_labels
from mnad.data.pixels import prepare_frame, read_image
from mnad.data.videos import Video, VideoFile
from mnad.errors import MNADError
from mnad.model import MNAD

# MNAD_FUZZ_EXAMPLES=3000 pytest tests/test_fuzz.py: a longer, randomised search (the suite runs a fixed, small one)
EXAMPLES = int(os.environ.get("MNAD_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 80, deadline=None, derandomize=not EXAMPLES, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


class FakeVideo(Video):
    """Just a name and a frame count, for the label readers."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.path, self.n = name, Path(name), n

    def __len__(self) -> int:
        return self.n


def mutations(valid: bytes, max_edits: int = 6) -> st.SearchStrategy[bytes]:
    """``valid`` with a few bytes overwritten, cut short, or with bytes inserted or removed."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(valid)
        for _ in range(draw(st.integers(1, max_edits))):
            kind = draw(st.sampled_from(["set", "set", "truncate", "insert", "delete"]))
            if not data:
                break
            # bias towards the start, where headers (sizes, counts, offsets) live
            pos = draw(st.one_of(st.integers(0, min(len(data) - 1, 64)), st.integers(0, len(data) - 1)))
            if kind == "set":
                data[pos] = draw(st.integers(0, 255))
            elif kind == "truncate":
                del data[pos:]
            elif kind == "insert":
                data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
            else:
                del data[pos : pos + draw(st.integers(1, 16))]
        return bytes(data)

    return mutate()


def outcome(exc: MNADError, path: Path) -> str:
    """The kind of refusal, for ``--hypothesis-show-statistics``: the error class and its message without the path."""
    return f"{type(exc).__name__}: {str(exc).replace(str(path), '')[:60]}"


def encoded(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


_rng = np.random.default_rng(0)
_IMAGE = (_rng.random((24, 20, 3)) * 255).astype(np.uint8)
VALID_IMAGES = [encoded(".jpg", _IMAGE), encoded(".png", _IMAGE), encoded(".bmp", _IMAGE), encoded(".tiff", _IMAGE),
                encoded(".png", (_IMAGE[:, :, 0].astype(np.uint16) * 257)), encoded(".png", np.dstack([_IMAGE, _IMAGE[:, :, :1]]))]
frame_bytes = st.one_of(st.binary(max_size=512), st.sampled_from(VALID_IMAGES).flatmap(mutations))


def check_labels(path: Path) -> None:
    """The label reader either gives 0/1 labels of the right lengths or a clear error naming the file."""
    try:
        labels = load_labels(path, VIDEOS)
    except MNADError as exc:
        assert str(path) in str(exc)
        event(outcome(exc, path))
        return
    event("accepted")
    assert [len(x) for x in labels] == [5, 3]
    assert all(set(np.unique(x)) <= {0, 1} for x in labels)


@FUZZ
@given(data=frame_bytes, ext=st.sampled_from([".jpg", ".png", ".tif", ".bmp"]))
def test_fuzz_frame_reader(tmp_path: Path, data: bytes, ext: str) -> None:
    path = tmp_path / f"frame{ext}"
    path.write_bytes(data)
    try:
        image = read_image(path)
        frame = prepare_frame(image, 16, 3, path)
    except MNADError as exc:
        assert str(path) in str(exc)
        event(outcome(exc, path))
        return
    event("accepted")
    assert frame.shape == (16, 16, 3) and frame.dtype == np.uint8


def _valid_video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("video") / "valid.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    assert writer.isOpened()
    for i in range(6):
        writer.write(np.roll(_IMAGE.repeat(2, 0)[:24].repeat(2, 1)[:, :32], i, axis=1))
    writer.release()
    return path.read_bytes()


@pytest.fixture(scope="module")
def valid_video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return _valid_video(tmp_path_factory)


def test_valid_video_reads(tmp_path: Path, valid_video: bytes) -> None:
    path = tmp_path / "v.avi"
    path.write_bytes(valid_video)
    video = VideoFile(path)
    assert len(video) == 6 and video.frame(5, 16, 3).shape == (16, 16, 3)


@FUZZ
@given(choice=st.integers(0, 3), seed_bytes=st.binary(max_size=400), data=st.data())
def test_fuzz_video_reader(tmp_path: Path, valid_video: bytes, choice: int, seed_bytes: bytes, data: st.DataObject) -> None:
    payload = seed_bytes if choice == 0 else data.draw(mutations(valid_video, max_edits=8))
    path = tmp_path / "clip.avi"
    path.write_bytes(payload)
    try:
        video = VideoFile(path)
        n = len(video)
        frames = [video.frame(i, 16, 3) for i in range(n)]
    except MNADError as exc:
        assert str(path) in str(exc)
        event(outcome(exc, path))
        return
    event("accepted")
    assert n >= 1 and all(f.shape == (16, 16, 3) for f in frames)


VIDEOS = [FakeVideo("01", 5), FakeVideo("02", 3)]
label_arrays = hnp.arrays(
    dtype=st.one_of(hnp.scalar_dtypes(), hnp.unicode_string_dtypes(max_len=3)),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
)


def _npy_bytes(array: np.ndarray, tmp_path: Path) -> bytes:
    path = tmp_path / "a.npy"
    np.save(path, array, allow_pickle=False)
    return path.read_bytes()


@FUZZ
@given(array=label_arrays, mangle=st.integers(0, 2), data=st.data())
def test_fuzz_npy_labels(tmp_path: Path, array: np.ndarray, mangle: int, data: st.DataObject) -> None:
    path = tmp_path / "labels.npy"
    payload = _npy_bytes(array, tmp_path)
    if mangle == 1:
        payload = data.draw(mutations(payload))
    elif mangle == 2:
        payload = data.draw(st.binary(max_size=200))
    path.write_bytes(payload)
    check_labels(path)


csv_cell = st.one_of(st.sampled_from(["01", "02", "03", "", "1", "3", "5", "0", "-1", "nan", "inf", "1e3", " 2 ", "9" * 30]),
                     st.text(max_size=6))
csv_rows = st.lists(st.lists(csv_cell, min_size=0, max_size=5), max_size=6)
csv_headers = st.sampled_from([
    "video,first_abnormal_frame,last_abnormal_frame", "video,start,end", "video,start,end,frames", "video,first", "",
])


@FUZZ
@given(header=csv_headers, rows=csv_rows, raw=st.one_of(st.none(), st.binary(max_size=200)))
def test_fuzz_csv_labels(tmp_path: Path, header: str, rows: list[list[str]], raw: bytes | None) -> None:
    path = tmp_path / "labels.csv"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text("\n".join([header] + [",".join(r) for r in rows]) + "\n", encoding="utf-8")
    check_labels(path)


@FUZZ
@given(text=st.one_of(
    st.text(max_size=120),
    st.lists(st.sampled_from(["TestVideoFile{end+1}.gt_frame = [", "1:3", "2", "];\n", "9" * 5000, ":", " ", "٣"]), max_size=12).map("".join),
))
def test_fuzz_ucsd_m_labels(tmp_path: Path, text: str) -> None:
    path = tmp_path / "labels.m"
    path.write_text(text, encoding="utf-8")
    check_labels(path)


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    config = tiny_config()
    config.model.width = 2
    config.model.memory_size = 3
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    save_model(path, MNAD(config.model), config)
    return path.read_bytes()


def test_valid_checkpoint_loads(tmp_path: Path, valid_checkpoint: bytes) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(valid_checkpoint)
    model, config = load_model(path)
    assert config.model.width == 2 and model.memory is not None


@settings(FUZZ, max_examples=EXAMPLES or 150)
@given(data=st.data())
def test_fuzz_checkpoint_reader(tmp_path: Path, valid_checkpoint: bytes, data: st.DataObject) -> None:
    header_len = int.from_bytes(valid_checkpoint[:8], "little")
    # mostly mutate the header (sizes, dtypes, offsets, metadata), sometimes anywhere
    where = data.draw(st.sampled_from(["header", "header", "anywhere", "random"]))
    if where == "random":
        payload = data.draw(st.binary(max_size=300))
    elif where == "header":
        head = data.draw(mutations(valid_checkpoint[: 8 + header_len], max_edits=4))
        payload = head + valid_checkpoint[8 + header_len :]
    else:
        payload = data.draw(mutations(valid_checkpoint, max_edits=4))
    path = tmp_path / "fuzzed.safetensors"
    path.write_bytes(payload)
    try:
        tensors, config, extra = read_checkpoint(path)
        load_model(path)
    except MNADError as exc:
        assert str(path) in str(exc)
        event(outcome(exc, path))
        return
    event("accepted")
    # accepted only if the content is intact: the same tensors (their SHA-256) and the same config
    original_path = tmp_path / "original.safetensors"
    original_path.write_bytes(valid_checkpoint)
    original, original_config, _ = read_checkpoint(original_path)
    assert tensor_digest(tensors) == tensor_digest(original) and config == original_config
