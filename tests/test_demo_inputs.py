"""`mnad demo` refuses bad options before it writes its synthetic scene, and a scene it cannot write is one error
line naming the folder: either way the folder it would have made is not left behind."""
from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import pytest
import torch

from mnad.cli import main
from mnad.data.synthetic import make_synthetic_dataset
from mnad.errors import DataError


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["demo", "--quiet", *argv])
    captured = capsys.readouterr()
    assert code == 2
    assert "synthetic scene" not in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mnad: error:"), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(("options", "words"), [
    (["--epochs", "0"], "train.epochs"),
    (["--set", "train.batch_size=100000", "--epochs", "1"], "fewer than one batch"),
])
def test_bad_training_options_refused_before_the_scene(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       options: list[str], words: str) -> None:
    out = tmp_path / "demo"
    assert words in refused([*options, "--out", str(out)], capsys)
    assert not out.exists()


def test_missing_device_refused_before_the_scene(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine, whatever it has
    out = tmp_path / "demo"
    assert "--device cuda" in refused(["--device", "cuda", "--out", str(out)], capsys)
    assert not out.exists()


def test_refused_demo_without_out_leaves_no_temporary_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    refused(["--epochs", "0"], capsys)
    assert list(tmp_path.iterdir()) == []


def test_unmakeable_out_folder_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    out = Path("/proc/mnad-demo-test")  # /proc takes no new folder, whoever asks
    assert str(out) in refused(["--out", str(out)], capsys)
    assert not out.exists()


def test_scene_write_failing_midway_removes_what_it_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = []

    def imwrite(path: str, *args: object) -> bool:  # a disk that fills after a few frames: OpenCV only says False
        written.append(path)
        if len(written) == 5:
            return False
        Path(path).write_bytes(b"jpeg")
        return True

    monkeypatch.setattr(cv2, "imwrite", imwrite)
    root = tmp_path / "out" / "data"
    with pytest.raises(DataError, match="cannot write the synthetic scene") as caught:
        make_synthetic_dataset(root, n_train=1, n_test=1, n_frames=10, size=16)
    assert str(root) in str(caught.value)
    assert len(written) == 5
    assert list(tmp_path.iterdir()) == []  # out/ was made by the call: gone again


def test_scene_write_failing_keeps_an_existing_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    monkeypatch.setattr(cv2, "imwrite", lambda *args: False)
    with pytest.raises(DataError):
        make_synthetic_dataset(tmp_path, n_train=1, n_test=1, n_frames=10, size=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]  # synthetic/ was the call's; the rest is not


def test_training_lengths_match_the_written_scene(tmp_path: Path) -> None:
    from mnad.data.synthetic import training_lengths  # what the demo's checks count the scene's clips from

    root = make_synthetic_dataset(tmp_path, n_train=2, n_test=1, n_frames=5, size=16)
    found = {d.name: len(list(d.iterdir())) for d in (root / "training" / "frames").iterdir()}
    assert found == training_lengths(n_train=2, n_frames=5)
