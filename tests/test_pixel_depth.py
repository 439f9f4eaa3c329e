"""16-bit frames (thermal and scientific cameras: 12- or 14-bit data, or radiometric counts in a narrow band, in 16-bit
containers) are mapped onto 0..255 by ``model.pixel_range``; without it they keep their high byte, as models trained
before the setting saw them, and a warning, once per video, says when that leaves almost nothing to see."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors import safe_open

from mnad.checkpoint import load_model, resolve_checkpoint
from mnad.config import Config, check_same_model
from mnad.data import list_videos, open_video
from mnad.data.pixels import NARROW_FRAMES, prepare_frame
from mnad.data.videos import FrameFolder
from mnad.errors import ConfigError, DataError

WARNING = "model.pixel_range"


def twelve_bit_folder(parent: Path, name: str = "thermal", frames: int = 3) -> Path:
    """A frame folder of 12-bit gray PNGs (values 0..4095, a ramp across each frame) in 16-bit containers."""
    folder = parent / name
    folder.mkdir(parents=True)
    ramp = np.tile(np.linspace(0, 4095, 32).round().astype(np.uint16), (32, 1))
    for i in range(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), ramp)
    return folder


def warnings_about_depth(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and WARNING in r.getMessage()]


def test_a_12bit_png_folder_has_contrast_with_the_range_set(tmp_path: Path) -> None:
    folder = twelve_bit_folder(tmp_path)
    assert cv2.imread(str(folder / "000.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    [video] = list_videos(tmp_path, pixel_range=[0, 4095])
    frame = video.frame(0, 32, 1)
    assert frame.dtype == np.uint8 and frame.min() == 0 and frame.max() == 255  # the whole 0..255
    dark = FrameFolder(folder).frame(0, 32, 1)  # no range: the high byte, as before the setting
    assert dark.max() == 15
    assert open_video(folder, [0, 4095]).frames(0, 3, 32, 3).max() == 255  # every way in takes the range


def test_a_narrow_band_maps_linearly_and_clips_outside(tmp_path: Path) -> None:
    folder = tmp_path / "radiometric"
    folder.mkdir()
    values = np.array([[6000, 7000, 8000, 9000, 10000]], np.uint16).repeat(5, axis=0)
    assert cv2.imwrite(str(folder / "0.tiff"), values)
    frame = FrameFolder(folder, pixel_range=[7000, 9000]).frame(0, 5, 1)[0, :, 0]  # 5x5 stays 5x5: no interpolation
    assert frame.tolist() == [0, 0, 128, 255, 255]


def test_the_warning_comes_once_per_video_naming_the_file_the_values_and_the_setting(tmp_path: Path, caplog) -> None:
    first, second = twelve_bit_folder(tmp_path, "a"), twelve_bit_folder(tmp_path, "b")
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        videos = list_videos(tmp_path)
        for _ in range(2):
            for video in videos:
                video.frames(0, len(video), 32, 3)
    said = warnings_about_depth(caplog)
    assert len(said) == 2  # one per video, not one per frame or per read
    assert str(first / "000.png") in said[0] and str(second / "000.png") in said[1]
    assert "0..4095" in said[0] and "--set model.pixel_range=[0,4095]" in said[0]


def test_a_live_source_is_warned_about_once(caplog) -> None:
    """detect prepares raw frames itself (``prepare_frame``), under the source's name: one warning for the source,
    after its first NARROW_FRAMES frames (a live source's length is not known)."""
    image = np.full((24, 24), 7000, np.uint16)
    image[:, 12:] = 9000
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        for i in range(NARROW_FRAMES + 5):
            assert prepare_frame(image, 16, 3, "rtsp://camera-under-test/stream").max() <= 35
            assert len(warnings_about_depth(caplog)) == (i + 1 >= NARROW_FRAMES)
        mapped = prepare_frame(image, 16, 3, "rtsp://camera-under-test/stream", [7000, 9000])
    said = warnings_about_depth(caplog)
    assert len(said) == 1 and "7000..9000" in said[0] and "[7000,9000]" in said[0]
    assert mapped.min() == 0 and mapped.max() == 255


def sixteen_bit_folder(parent: Path, name: str, frames: list[np.ndarray]) -> Path:
    folder = parent / name
    folder.mkdir()
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    return folder


WIDE = np.tile(np.linspace(0, 65535, 16).round().astype(np.uint16), (16, 1))  # a full-range camera's ramp
NARROW = np.tile(np.linspace(7000, 9000, 16).round().astype(np.uint16), (16, 1))  # radiometric counts
DARK = np.full((16, 16), 300, np.uint16)  # a lens cap, a night: a full-range camera seeing nothing


def read_all(folder: Path) -> None:
    video = FrameFolder(folder)
    for i in range(len(video)):
        video.frame(i, 16, 1)


def test_a_full_range_video_whose_first_frames_are_dark_is_not_warned_about(tmp_path: Path, caplog) -> None:
    """The warning was decided on each video's first 16-bit frame: a full-range camera whose first frames are dark
    (a lens cap, the night) was warned about, wrongly. It is decided on the first NARROW_FRAMES frames."""
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        read_all(sixteen_bit_folder(tmp_path, "dark_first", [DARK] * 10 + [WIDE] * 50))
    assert warnings_about_depth(caplog) == []


def test_a_narrow_video_whose_first_frame_spans_widely_is_warned_about(tmp_path: Path, caplog) -> None:
    """... and a narrow camera whose first frame happened to span widely was never warned about."""
    folder = sixteen_bit_folder(tmp_path, "wide_first", [WIDE] + [NARROW] * 59)
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        read_all(folder)
        read_all(folder)
    [said] = warnings_about_depth(caplog)  # once for the video
    assert said.startswith(f"{folder}: 49 of its first {NARROW_FRAMES} 16-bit frames span only 7000..9000")
    assert str(folder / "001.png") in said and "--set model.pixel_range=[7000,9000]" in said


def test_8bit_frames_and_full_range_16bit_frames_read_as_before(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    image = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert cv2.imwrite(str(folder / "0.png"), image)
    assert cv2.imwrite(str(folder / "1.png"), image.astype(np.uint16) * 257)  # 16-bit, the whole range: no warning
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        video = FrameFolder(folder)
        expected = cv2.resize(image, (32, 32), interpolation=cv2.INTER_LINEAR)
        assert np.array_equal(video.frame(0, 32, 3), expected)
        assert np.array_equal(video.frame(1, 32, 3), expected)  # (v * 257) >> 8 == v
    assert warnings_about_depth(caplog) == []


def test_an_8bit_frame_given_to_a_16bit_model_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "exported"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "0.jpg"), np.full((16, 16), 100, np.uint8))
    with pytest.raises(DataError, match=r"0\.jpg: an 8-bit frame, but model\.pixel_range = \[0, 4095\]"):
        FrameFolder(folder, pixel_range=[0, 4095]).frame(0, 16, 1)


@pytest.mark.parametrize("value", ["[4095, 0]", "[5, 5]", "[0]", "[0, 1, 2]", "[-1, 4095]", "[0, 65536]", "[0.0, 4095]",
                                   "[true, 4095]", "'0-4095'", "4095"])
def test_bad_ranges_are_refused_naming_the_field(value: str) -> None:
    with pytest.raises(ConfigError, match=r"\[model\]: pixel_range must be list|model\.pixel_range must be \[\]"):
        Config().override([f"model.pixel_range={value}"])
    with pytest.raises(ConfigError, match=r"model\.pixel_range"):
        FrameFolder.__init__(object.__new__(FrameFolder), ".", pixel_range=value)  # the API checks it too


def test_the_range_is_a_model_setting_saved_with_the_model() -> None:
    config = Config().override(["model.pixel_range=[0, 16383]"])
    assert config.model.pixel_range == [0, 16383]
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))).model.pixel_range == [0, 16383]

    class Trained:  # a model trained without the range: scoring it with one would read frames it never saw
        config = Config().model
    with pytest.raises(ConfigError, match=r"pixel_range=\[0, 16383\] \(the model has \[\]\)"):
        check_same_model(Trained(), config)


def test_a_model_saved_before_the_setting_loads_and_reads_frames_as_before() -> None:
    path = resolve_checkpoint("ped2-pred")
    with safe_open(str(path), "np") as handle:
        stored = json.loads(handle.metadata()["config"])
    assert "pixel_range" not in stored["model"]  # saved before the field existed
    _, config = load_model(path)
    assert config.model.pixel_range == []


def test_detects_annotated_video_shows_a_12bit_camera_as_the_model_sees_it(tmp_path: Path) -> None:
    """The annotated video maps 16-bit frames by the model's pixel range, as the model read them (was: the high byte,
    a 12-bit camera's picture nearly black)."""
    import torch
    from conftest import tiny_config

    from mnad.checkpoint import save_model
    from mnad.detect import DetectOptions, detect
    from mnad.model.mnad import MNAD

    torch.manual_seed(0)
    config = tiny_config().override(["model.pixel_range=[0, 4095]"])
    save_model(tmp_path / "m.safetensors", MNAD(config.model), config)
    model, config = load_model(tmp_path / "m.safetensors")
    folder = twelve_bit_folder(tmp_path, frames=config.model.t_length + 2)
    detect(model, config, [str(folder)], tmp_path / "o", DetectOptions(save_video=True), progress=False)
    capture = cv2.VideoCapture(str(tmp_path / "o" / "annotated.mkv"))
    ok, picture = capture.read()
    capture.release()
    assert ok and np.median(picture[: picture.shape[1] // 2]) > 60  # the ramp mapped onto 0..255, not its high byte (0..15)


def test_videos_opened_without_the_models_range_are_refused(tmp_path: Path) -> None:
    """Calibration footage (and figures' videos) given as Video objects must read 16-bit frames as the model does: a
    video opened without the range would give thresholds from frames the model never saw (values 0..15)."""
    from mnad.calibrate import footage_videos

    folder = twelve_bit_folder(tmp_path)
    with pytest.raises(ConfigError, match=r"thermal: read with pixel_range \[\], but the model's model.pixel_range is \[0, 4095\]"):
        footage_videos([open_video(folder)], [0, 4095])
    assert footage_videos([open_video(folder, [0, 4095])], [0, 4095])[0].pixel_range == (0, 4095)
    assert footage_videos([str(folder)], [0, 4095])[0].pixel_range == (0, 4095)  # a path is opened with it


def test_a_range_given_as_a_tuple_is_held_as_the_saved_model_holds_it() -> None:
    config = Config()
    config.model.pixel_range = (0, 4095)  # type: ignore[assignment]
    config.validate()
    assert config.model.pixel_range == [0, 4095] and config.override([]).model.pixel_range == [0, 4095]


def test_the_refusal_of_videos_opened_without_the_models_range_names_the_wrong_ones_range() -> None:
    """The message shows the range the wrong video was read with (was: the first video's, right or wrong)."""
    from types import SimpleNamespace

    from mnad.data.videos import check_pixel_ranges
    from mnad.errors import ConfigError

    right = SimpleNamespace(name="right", pixel_range=(0, 4095))
    wrong = SimpleNamespace(name="wrong", pixel_range=(100, 200))
    with pytest.raises(ConfigError) as raised:
        check_pixel_ranges([right, wrong], [0, 4095])
    assert str(raised.value).startswith("wrong: read with pixel_range [100, 200], but the model's")


def test_detect_on_a_short_narrow_16bit_folder_warns(tmp_path: Path, caplog) -> None:
    """`mnad detect` on a 16-bit frame folder shorter than NARROW_FRAMES: its length is known, so the warning decides on
    all of it (was: detect did not pass the length, and a short folder was never warned about)."""
    import torch
    from conftest import tiny_config

    from mnad.checkpoint import save_model
    from mnad.detect import DetectOptions, detect
    from mnad.model.mnad import MNAD

    torch.manual_seed(0)
    config = tiny_config()
    save_model(tmp_path / "m.safetensors", MNAD(config.model), config)
    model, config = load_model(tmp_path / "m.safetensors")
    folder = sixteen_bit_folder(tmp_path, "short_narrow", [NARROW] * (config.model.t_length + 3))
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        detect(model, config, [str(folder)], tmp_path / "o", DetectOptions(), progress=False)
    assert len(warnings_about_depth(caplog)) == 1


def test_detects_annotated_video_does_not_count_a_frame_twice_for_the_warning(model_file: Path, tmp_path: Path, caplog) -> None:
    """A full-range camera whose first 20 frames are narrow (of the first NARROW_FRAMES, most wide): not warned about.
    With --save-video each frame was also counted by the annotated video's mapping of it, so the warning was decided
    on the first 25 frames, 20 of them narrow, and wrongly given."""
    from mnad.detect import DetectOptions, detect

    model, config = load_model(model_file)
    folder = sixteen_bit_folder(tmp_path, "narrow_then_wide", [NARROW] * 20 + [WIDE] * 40)
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        detect(model, config, [str(folder)], tmp_path / "o", DetectOptions(save_video=True), progress=False)
    assert warnings_about_depth(caplog) == []


# ---------------------------------------------- readings that end before the warning's decision point (NARROW_FRAMES)


def test_detect_max_frames_on_a_narrow_16bit_folder_warns(model_file: Path, tmp_path: Path, caplog) -> None:
    """`detect --max-frames 10` on a 30-frame 12-bit folder: decided after 30 frames, which were never read, so the
    warning was lost. It decides on the frames the run reads, at its 10th."""
    from mnad.detect import DetectOptions, detect

    model, config = load_model(model_file)
    folder = sixteen_bit_folder(tmp_path, "narrow30", [NARROW] * 30)
    limit = config.model.t_length + 5
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        summary = detect(model, config, [str(folder)], tmp_path / "o", DetectOptions(max_frames=limit), progress=False)
    assert summary["ended_by"] == "--max-frames"
    [said] = warnings_about_depth(caplog)
    assert said.startswith(f"{folder}: {limit} of its first {limit} 16-bit frames span only 7000..9000")


class _NarrowCamera:
    """A capture of a 16-bit camera that gives ``frames`` narrow frames, then goes silent."""

    def __init__(self, frames: int) -> None:
        self.left = frames

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 0.0  # no frame count, no rate: a camera

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left == 0:
            return False, None
        self.left -= 1
        return True, NARROW.copy()

    def release(self) -> None:
        pass


def test_a_narrow_16bit_camera_lost_before_the_decision_point_is_warned_about(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A camera lost after 12 frames (fewer than NARROW_FRAMES, its length unknown): its warning is decided when the
    source ends, on the frames it gave (was: never)."""
    from mnad.data.streams import FrameSource, SourceOptions
    from mnad.detect import DetectOptions, detect

    model, config = load_model(model_file)
    monkeypatch.setattr(FrameSource, "_open_live", lambda self: _NarrowCamera(12))
    url = f"rtsp://127.0.0.1:9/{tmp_path.name}"  # a key of its own: the warning is said once per source per process
    options = DetectOptions(source=SourceOptions(reconnects=0, retry_delay=0))
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"), \
            pytest.raises(DataError, match="was lost after 12 frames"):  # one source: its loss ends the run
        detect(model, config, [url], tmp_path / "o", options, progress=False)
    [said] = warnings_about_depth(caplog)
    assert said.startswith(f"{url}: 12 of its first 12 16-bit frames span only 7000..9000")


@pytest.mark.parametrize("together", [False, True])
def test_a_held_out_part_shorter_than_its_folder_is_warned_about(tmp_path: Path, caplog, together: bool) -> None:
    """Calibration reads the held-out tail of a folder (a FrameRange): 30 frames of a 60-frame folder never reached
    the folder's decision point. The part's warning decides on the part, frame by frame or read together."""
    from mnad.data.videos import FrameRange

    folder = sixteen_bit_folder(tmp_path, "held", [WIDE] * 30 + [NARROW] * 30)
    part = FrameRange(FrameFolder(folder), 30, 60)
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        if together:
            part.frames(0, len(part), 16, 1)
        else:
            for i in range(len(part)):
                part.frame(i, 16, 1)
    [said] = warnings_about_depth(caplog)
    assert said.startswith(f"{folder}: 30 of its first 30 16-bit frames span only 7000..9000")


def test_training_clips_with_a_stride_that_skip_frames_are_warned_about(tmp_path: Path, caplog) -> None:
    """Clips every 4th frame of 2 frames read half of a 60-frame folder, never its 50th frame: preloading them decides
    the warning on the frames they use."""
    from mnad.data import ClipDataset, FrameStore

    folder = sixteen_bit_folder(tmp_path, "strided", [NARROW] * 60)
    dataset = ClipDataset(FrameStore([FrameFolder(folder)], 16, 1), 2, stride=4)
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        dataset.preload()
    [said] = warnings_about_depth(caplog)
    assert said.startswith(f"{folder}: 30 of its first 30 16-bit frames span only 7000..9000")


def test_a_reading_that_ends_early_on_full_range_frames_is_not_warned_about(tmp_path: Path, caplog) -> None:
    """Deciding at a reading's end keeps the rule: warned only where most frames seen are narrow, and once."""
    from mnad.data.pixels import finish_narrow

    folder = sixteen_bit_folder(tmp_path, "wide", [DARK] * 4 + [WIDE] * 6 + [NARROW] * 50)
    video = FrameFolder(folder)
    with caplog.at_level(logging.WARNING, logger="mnad.data.pixels"):
        for i in range(10):
            video.frame(i, 16, 1)
        finish_narrow(folder)
        for i in range(len(video)):  # decided: read again, nothing more is said or counted
            video.frame(i, 16, 1)
        finish_narrow(folder)
    assert warnings_about_depth(caplog) == []
