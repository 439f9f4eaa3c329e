"""Shared fixtures: tiny generated datasets and configs, and the real Ped2 data beside the repo (read-only)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch

from mnad.checkpoint import save_model
from mnad.config import Config
from mnad.data import capture as capture_module
from mnad.data.synthetic import make_synthetic_dataset
from mnad.data.videos import Video
from mnad.model import MNAD

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PED2 = SHARED / "data" / "ped2"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, do not fight a busy machine for cores, and stay bit-reproducible;
    restored after each test because some code under test sets the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in every test, as in a terminal, however the suite was started: a job started in
    the background (`cmd &`, as a CI may start it) begins with SIGINT ignored, and a test that sends itself a Ctrl-C
    then sees nothing happen."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding ``synthetic/`` (2 training, 2 test videos of 24 frames, 32x32)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, n_train=2, n_test=2, n_frames=24, size=32, seed=0)
    return root


def tiny_config(**model: object) -> Config:
    """A model small enough to train in seconds: 32x32 frames, width 8 (64-d queries)."""
    config = Config(name="tiny", dataset="synthetic")
    config.model.image_size = 32
    config.model.width = 8
    config.train.epochs = 1
    for key, value in model.items():
        setattr(config.model, key, value)
    config.validate()
    return config


@pytest.fixture
def ped2_root() -> Path:
    if not (PED2 / "testing" / "frames").is_dir():
        pytest.skip(f"real Ped2 data not found at {PED2}")
    return PED2


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny model (``tiny_config``, seed 0) saved as a model file."""
    torch.manual_seed(0)
    config = tiny_config()
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    save_model(path, MNAD(config.model), config)
    return path


def load_script(relative: str) -> ModuleType:
    """A script of the repo (e.g. ``scripts/long_runs.py``) imported as a module, under its file's name."""
    name = Path(relative).stem
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def kill_when(code: str, args: list[str], ready: Callable[[], bool], *, timeout: float = 120) -> None:
    """Run ``python -c code *args`` with the repo's sources, one thread, wait until ``ready()`` (failing with its stderr
    if it ends or ``timeout`` seconds pass first), then SIGKILL it: a run killed outright (a power cut, the OOM killer)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.01)
    finally:
        process.kill()
        process.communicate(timeout=60)


def edited_state_metadata(metadata: dict[str, str], info: dict, *, older: bool = False) -> dict[str, str]:
    """A saved stream state's safetensors ``metadata`` with its ``mnad_stream_state`` JSON replaced by ``info`` and its
    metadata hash made again (a hand-made state whose fields ``_restore`` checks), or, ``older``, without format and
    metadata hash (as an mnad before ``stream.STATE_FORMAT`` wrote it)."""
    import json

    from mnad.stream import state_metadata_digest

    edited = {**metadata, "mnad_stream_state": json.dumps(info)}
    if older:
        return {k: v for k, v in edited.items() if k not in ("format", "meta_sha256")}
    return {**edited, "meta_sha256": state_metadata_digest(edited)}


def frames_folder(folder: Path, n: int, size: int = 32, corrupt_at: int | None = None) -> Path:
    """A frame folder of ``n`` random-noise PNG frames; ``corrupt_at``: that frame's file is damaged."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:05d}.png"), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    if corrupt_at is not None:
        (folder / f"{corrupt_at:05d}.png").write_bytes(b"\x89PNG not really")
    return folder


def tiny_onnx_export(folder: Path) -> tuple[Path, Path, Path]:
    """In ``folder``: a tiny model file (``tiny_config``, seed 0), its ONNX export as load_model reads the model, and a
    frame folder of 8 frames; returns (model file, ONNX file, frame folder)."""
    from mnad.checkpoint import load_model
    from mnad.export import export_onnx

    torch.manual_seed(0)
    config = tiny_config()
    save_model(folder / "m.safetensors", MNAD(config.model), config)
    model, config = load_model(folder / "m.safetensors")
    export_onnx(model, config, folder / "m.onnx")
    return folder / "m.safetensors", folder / "m.onnx", frames_folder(folder / "frames", 8)


def noise_video(path: Path, n: int, fps: float, size: int = 32) -> Path:
    """An MJPG .avi of ``n`` random-noise frames: its header gives the frame count."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size, size))
    rng = np.random.default_rng(0)
    for _ in range(n):
        writer.write(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    writer.release()
    return path


class FakeVideo(Video):
    """A video that only has a name and a length: for readers that must not look at its frames (labels; entry points
    whose checks come before any footage is read)."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.path, self.n = name, Path(name), n

    def __len__(self) -> int:
        return self.n

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        raise AssertionError("frames read where none should be (labels, or before the checks)")


class CountedCapture:
    """OpenCV's capture of a file, noting the passes that decode (grab or read) its frames."""

    def __init__(self, capture: object, path: str, passes: Counter) -> None:
        self.capture, self.path, self.passes, self.decoding = capture, path, passes, False

    def _decodes(self) -> None:
        if not self.decoding:
            self.decoding = True
            self.passes[self.path] += 1

    def grab(self) -> bool:
        self._decodes()
        return self.capture.grab()

    def read(self) -> tuple[bool, np.ndarray | None]:
        self._decodes()
        return self.capture.read()

    def __getattr__(self, name: str) -> object:
        return getattr(self.capture, name)


@pytest.fixture
def decode_passes(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """The passes that decode each video file (by its name): ``open_capture`` wrapped by ``CountedCapture``."""
    passes: Counter = Counter()
    opened = capture_module.open_capture
    monkeypatch.setattr(capture_module, "open_capture", lambda path: CountedCapture(opened(path), Path(path).name, passes))
    return passes


@pytest.fixture
def undeletable_doomed(monkeypatch: pytest.MonkeyPatch) -> None:
    """``mnad.outputs``' rmtree fails (EACCES) on a folder renamed to its hidden ``.tmp`` name before deletion
    (``outputs.doomed_name``), and works on anything else: a segment or shard that cannot be deleted."""
    import errno
    import shutil

    import mnad.outputs.detect_folder

    real = shutil.rmtree

    def refuse(path: object, *args: object, **kwargs: object) -> None:
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied")
        real(path, *args, **kwargs)

    monkeypatch.setattr(mnad.outputs.detect_folder.shutil, "rmtree", refuse)
