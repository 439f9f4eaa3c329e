"""The public helpers' arguments refused with one error naming what is wrong, before any work: ``prepare_frame`` (what
the stream scorer's message tells users to call) and ``train``'s options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

import mnad.train
from mnad.data.pixels import prepare_frame
from mnad.errors import ConfigError, DataError
from mnad.train import train

FRAME = np.zeros((8, 8, 3), np.uint8)


@pytest.mark.parametrize(("image", "words"), [
    (None, "no frame"),  # cv2.imread of a missing file, VideoCapture.read at the end
    (np.zeros((0, 0, 3), np.uint8), "at least 1x1"),
    (np.zeros((0, 5), np.uint8), "at least 1x1"),
    (np.zeros(5, np.uint8), "shape (5,)"),
    (np.zeros((2, 2, 3, 1), np.uint8), "shape (2, 2, 3, 1)"),
    ([[1, 2], [3, 4]], "got a list"),
])
def test_a_frame_that_is_no_image_is_a_data_error_naming_the_source(image: object, words: str) -> None:
    with pytest.raises(DataError, match="^camera-7: ") as caught:
        prepare_frame(image, 16, 3, "camera-7")  # type: ignore[arg-type]
    assert words in str(caught.value)


@pytest.mark.parametrize(("size", "channels", "words"), [
    (0, 3, "frame size"), (-1, 3, "frame size"), (1.5, 3, "frame size"), (True, 3, "frame size"),
    ("16", 3, "frame size"), (10**6, 3, "frame size"),
    (16, 2, "channel count"), (16, 0, "channel count"), (16, 3.0, "channel count"), (16, True, "channel count"),
])
def test_a_size_or_channel_count_no_model_has_is_a_config_error(size: object, channels: object, words: str) -> None:
    with pytest.raises(ConfigError, match=f"^camera-7: the {words}"):
        prepare_frame(FRAME, size, channels, "camera-7")  # type: ignore[arg-type]


def test_valid_frames_still_prepare() -> None:
    assert prepare_frame(FRAME, np.int64(16), 1, "x").shape == (16, 16, 1)  # a numpy integer is a whole number
    assert prepare_frame(np.zeros((5, 7), np.uint16), 16, 3, "x").shape == (16, 16, 3)
    assert prepare_frame(FRAME[::2, ::-1], 16, 3, "x").shape == (16, 16, 3)  # strided views as before


@pytest.mark.parametrize(("options", "words"), [
    ({"on_epoch": "x"}, "on_epoch must be a function"),
    ({"overwrite": "no"}, "overwrite must be True or False"),  # a true string: it would set the earlier run aside
    ({"resume": 1}, "resume must be True or False"),
    ({"progress": None}, "progress must be True or False"),
])
def test_a_wrong_train_option_is_refused_before_anything_is_written(synthetic_root: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, options: dict,
                                                                     words: str) -> None:
    def no_training(*args: object, **kwargs: object) -> None:  # the refusal comes before: nothing may train
        raise AssertionError("trained with a wrong option")

    monkeypatch.setattr(mnad.train, "_train", no_training)
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=f"^train\\(\\): {words}"):
        train(tiny_config(), synthetic_root, run, **options)
    assert not run.exists()
