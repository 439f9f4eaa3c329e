"""The 16-bit narrow-range warning is decided once per video whatever reads it, on the frames read: readers of a few
clips of a whole folder (`mnad figures`, an int8 export's calibration clips) never reached its decision point and
never ended it, and training clips with a stride that skip frames of a short folder, not preloaded
(train.cache_frames = false), never did either: the warning was lost."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import cv2
import pytest
import torch
from conftest import tiny_config
from test_pixel_depth import NARROW, _NarrowCamera

from mnad.data import ClipDataset, FrameStore
from mnad.data.pixels import NARROW_FRAMES
from mnad.data.videos import FrameFolder

WARNING = "model.pixel_range"


def narrow_folder(parent: Path, name: str, frames: int) -> Path:
    """``frames`` 16-bit frames spanning 7000..9000, each a little brighter than the one before (they change)."""
    folder = parent / name
    folder.mkdir()
    for i in range(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), NARROW + i)
    return folder


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and WARNING in r.getMessage()]


def test_figures_reading_a_few_clips_of_a_folder_decide_its_warning(tmp_path: Path, caplog) -> None:
    from mnad import figures
    from mnad.model import MNAD

    torch.manual_seed(0)
    config = tiny_config()
    folder = narrow_folder(tmp_path, "thermal", 60)
    videos: list = [FrameFolder(folder)]
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        positions = figures.clip_positions(videos, config.model.t_length, 1)
        figures.model_queries(MNAD(config.model), videos, positions)
        assert said(caplog) == []  # the reader may read more: not decided on a part
        del videos  # the figures are drawn: the folder is released
        gc.collect()
    t = config.model.t_length
    assert said(caplog) == [said(caplog)[0]]
    assert said(caplog)[0].startswith(f"{folder}: {t} of its first {t} 16-bit frames span only 7000..")


def test_int8_calibration_clips_of_a_folder_decide_its_warning(tmp_path: Path, caplog) -> None:
    from mnad import quantize

    config = tiny_config()
    folder = narrow_folder(tmp_path, "thermal", 60)
    videos: list = [FrameFolder(folder)]
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        picks = quantize.check_footage(videos, config, 2)
        feeds = list(quantize.calibration_feeds(videos, config, None, picks))
        assert len(feeds) == 2 and said(caplog) == []
        del videos
        gc.collect()
    [warning] = said(caplog)
    assert f"{folder}: " in warning and f"of its first {NARROW_FRAMES} " not in warning  # on the frames read, fewer


def test_a_folder_is_decided_when_its_last_reader_is_released(tmp_path: Path, caplog) -> None:
    """Two readers of one folder: the first released leaves the other's reading undecided; the last decides, once."""
    folder = narrow_folder(tmp_path, "shared", 60)
    first, second = FrameFolder(folder), FrameFolder(folder)
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        first.frame(0, 16, 1)
        del first
        gc.collect()
        assert said(caplog) == []
        for i in range(1, 5):
            second.frame(i, 16, 1)
        del second
        gc.collect()
    [warning] = said(caplog)
    assert warning.startswith(f"{folder}: 5 of its first 5 16-bit frames")


def test_strided_clips_not_preloaded_decide_a_short_folders_warning_after_one_epoch(tmp_path: Path, caplog) -> None:
    """train.cache_frames = false: clips of 2 frames every 4th of a 20-frame folder read 10 of its frames an epoch, never
    its 20th; the warning decides once every clip is read."""
    folder = narrow_folder(tmp_path, "strided", 20)
    video = FrameFolder(folder)
    dataset = ClipDataset(FrameStore([video], 16, 1, cache=False), 2, stride=4)
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        for i in reversed(range(len(dataset))):  # an epoch, in any order
            assert said(caplog) == []
            dataset[i]
        [warning] = said(caplog)
        for i in range(len(dataset)):  # the next epochs: said once
            dataset[i]
    assert said(caplog) == [warning]
    assert warning.startswith(f"{folder}: 10 of its first 10 16-bit frames span only 7000..")


def test_a_short_16bit_video_file_is_decided_by_its_decode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog) -> None:
    """Its decode reads every frame, but a video of fewer than NARROW_FRAMES (its length unknown until then) never
    reached the decision point."""
    from mnad.data import capture
    from mnad.data.videos import VideoFile

    path = tmp_path / "thermal.avi"
    path.write_bytes(b"")
    monkeypatch.setattr(capture, "open_capture", lambda _: _NarrowCamera(12))  # 12 narrow frames, no count
    video = VideoFile(path, decode_as=(16, 1))
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        assert len(video) == 12
    [warning] = said(caplog)
    assert warning.startswith(f"{path}: 12 of its first 12 16-bit frames span only 7000..9000")
