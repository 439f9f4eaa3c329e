"""Where in the frame mnad says an anomaly is: a bright square planted at a known place in non-square frames must be
where the error maps (maps/), the events' boxes, the annotated video's regions and the report's thumbnails put it,
for the frame scored (not one before or after it), with the model's scoring made to predict a black frame so that
each frame's error map is its own picture."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config

import mnad.stream
from mnad.calibrate import with_calibration
from mnad.calibration import Calibration
from mnad.detect import DetectOptions, detect
from mnad.model import MNAD
from mnad.outputs.annotated_video import video_files_in
from mnad.scoring import error_map

SIZE = 64  # the model's square


def square_at(t: int, height: int, width: int) -> tuple[int, int, int]:
    """(x, y, side) of frame t's square: it moves right and down, many pixels a frame, so that a map of the frame
    before or after would be off by that much."""
    side = max(min(height, width) // 6, 4)
    return (width // 8 + (width // 20) * t) % (width - side), (height // 4 + (height // 30) * t) % (height - side), side


def square_frame(t: int, height: int, width: int, channels: int = 3, dtype: type = np.uint8) -> np.ndarray:
    image = np.zeros((height, width, 3) if channels == 3 else (height, width), dtype)
    x, y, side = square_at(t, height, width)
    image[y:y + side, x:x + side] = 4000 if dtype == np.uint16 else 255
    return image


@pytest.fixture
def black_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scoring step as it is, but its error map that of a black prediction: each frame's map is its target's
    picture (squared, mean over channels), so it is bright exactly where the scored frame's square is."""
    forward = mnad.stream.ScoringStep.forward

    def black(self, inputs, target, items):
        return forward(self, inputs, target, items)._replace(error_map=error_map(torch.full_like(target, -1), target))

    monkeypatch.setattr(mnad.stream.ScoringStep, "forward", black)


def centre_off(mask: np.ndarray, t: int, height: int, width: int) -> float:
    """How far (source pixels, the worse axis) the centre of ``mask`` (any size, stretched over the source frame) is
    from the centre of frame t's square."""
    ys, xs = np.nonzero(mask)
    assert xs.size, f"frame {t}: nothing marked"
    x, y, side = square_at(t, height, width)
    cx, cy = (xs.mean() + 0.5) * width / mask.shape[1], (ys.mean() + 0.5) * height / mask.shape[0]
    return max(abs(cx - x - side / 2), abs(cy - y - side / 2))


@pytest.mark.parametrize(("height", "width", "channels", "task", "t_length", "depth"), [
    (240, 360, 3, "pred", 5, np.uint8),
    (361, 239, 1, "pred", 5, np.uint8),  # odd sides, portrait, grayscale model
    (239, 361, 3, "recon", 5, np.uint8),  # a frame scored 2 frames after it arrives
    (240, 360, 1, "pred", 5, np.uint16),  # 16-bit frames mapped by model.pixel_range
])
def test_detect_puts_each_frames_map_box_and_regions_on_its_square(tmp_path: Path, black_prediction: None, height: int,
                                                                  width: int, channels: int, task: str, t_length: int,
                                                                  depth: type) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    for t in range(12):
        cv2.imwrite(str(folder / f"{t:03d}.png"), square_frame(t, height, width, channels, depth))
    torch.manual_seed(0)
    config = tiny_config(image_size=SIZE, channels=channels, task=task, t_length=t_length,
                         pixel_range=[0, 4095] if depth == np.uint16 else [])
    calibration = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=-1.0,
                              false_alarm_rate=0.05, smoothing=3, frames=100)  # every frame alerts
    out = tmp_path / "o"
    detect(MNAD(config.model), with_calibration(config, calibration), str(folder), out,
           DetectOptions(min_event_frames=1, save_video=True, save_maps="npy"), progress=False)
    frames = [int(line.split(",")[0]) for line in (out / "scores.csv").read_text(encoding="utf-8").splitlines()[1:]]
    lag = config.model.lag
    assert frames == list(range(t_length - 1 - lag, 12 - lag))
    # a model pixel is width / 64 source pixels wide, height / 64 high: a map one frame off is 11 or more pixels off
    step = max(width, height) / SIZE
    for t in frames:  # maps/: float32 (image_size, image_size), row 0 the frame's top, in the model's pixels
        plane = np.load(out / "maps" / "00000000" / f"{t:012d}.npy")
        assert plane.dtype == np.float32 and plane.shape == (SIZE, SIZE)
        assert centre_off(plane > plane.max() / 2, t, height, width) < step
    [event] = [json.loads(line) for line in (out / "events.jsonl").read_text(encoding="utf-8").splitlines()]
    x, y, side = square_at(event["peak_frame"], height, width)
    left, top, w, h = event["peak_x"], event["peak_y"], event["peak_width"], event["peak_height"]
    inside = max(0, min(left + w, x + side) - max(left, x)) * max(0, min(top + h, y + side) - max(top, y))
    assert inside >= 0.5 * w * h  # the box (1/8 of the model's side, stretched to the source) is mostly on the square
    pictures = []
    for name in video_files_in(out):
        capture = cv2.VideoCapture(str(out / name))
        while (read := capture.read())[0]:
            pictures.append(read[1])
        capture.release()
    assert len(pictures) == len(frames)
    for t, picture in zip(frames, pictures, strict=True):
        shown = picture[:-90].astype(int)  # the frame part, above the timeline
        red = shown[..., 2] - shown[..., 1] > 60  # the regions' tint and outline
        red[:45] = red[-8:] = red[:, :8] = red[:, -8:] = False  # the state's text and the alert border
        assert centre_off(red, t, height, width) < step + 1


def data_root(root: Path, height: int, width: int, *, video_file: bool) -> Path:
    """``root/synthetic``: two test videos of 12 square frames, at height x width, as frame folders or .avi files."""
    for v in range(2):
        frames = [square_frame(t + 3 * v, height, width) for t in range(12)]
        if video_file:
            folder = root / "synthetic" / "testing" / "videos"
            folder.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(folder / f"{v + 1:02d}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (width, height))
            for image in frames:
                writer.write(image)
            writer.release()
        else:
            folder = root / "synthetic" / "testing" / "frames" / f"{v + 1:02d}"
            folder.mkdir(parents=True)
            for t, image in enumerate(frames):
                cv2.imwrite(str(folder / f"{t:03d}.png"), image)
    np.save(root / "synthetic" / "frame_labels_synthetic.npy", np.tile(np.arange(12) >= 6, 2).astype(np.int64))
    return root


@pytest.mark.parametrize("video_file", [False, True])
@pytest.mark.parametrize(("height", "width"), [(240, 360), (360, 240)])
def test_thumbnails_show_the_frame_at_its_aspect_with_its_regions_on_its_square(tmp_path: Path, black_prediction: None,
                                                                               height: int, width: int,
                                                                               video_file: bool) -> None:
    """The thumbnails' panels are drawn at the source frame's aspect, the heatmap and regions on the frame's square
    (was: every panel the model's square, a 240 x 360 frame squeezed to 176 x 176, objects shown 1.5 times as tall)."""
    from mnad.evaluate import evaluate
    from mnad.report import create_report

    root = data_root(tmp_path, height, width, video_file=video_file)
    torch.manual_seed(0)
    config = tiny_config(image_size=SIZE)
    model = MNAD(config.model)
    evaluate(model, config, root, out_dir=tmp_path / "e", progress=False)
    create_report(model, config, root, tmp_path / "e", tmp_path / "r", top_k=2)
    entries = json.loads((tmp_path / "r" / "thumbs" / "thumbs.json").read_text(encoding="utf-8"))
    assert entries
    long = 176  # the longer side of a panel
    panel = (long, round(long * height / width)) if width >= height else (round(long * width / height), long)
    for entry in entries:
        picture = cv2.imread(str(tmp_path / "r" / "thumbs" / entry["file"]))
        assert picture.shape[:2] == (panel[1], 3 * panel[0] + 8)
        t = entry["frame"] + 3 * (int(entry["video"]) - 1)  # the square's place in that video's frame
        frame = picture[:, :panel[0]].astype(int)
        assert centre_off(frame.min(-1) > 128, t, height, width) < 2 * max(height, width) / SIZE  # the frame shown is it
        regions = picture[:, 2 * panel[0] + 8:].astype(int)
        assert centre_off(regions[..., 2] - regions[..., 1] > 60, t, height, width) < 2 * max(height, width) / SIZE


def test_localisation_panels_keep_the_source_aspect() -> None:
    from mnad.report.thumbnails import localisation_image, panel_size

    assert panel_size(None, 176) == (176, 176)
    assert panel_size((240, 360), 176) == (176, 117) and panel_size((360, 240), 176) == (117, 176)
    assert panel_size((1, 5000), 176) == (176, 1)  # never a side of 0
    frame = np.zeros((SIZE, SIZE, 1), np.uint8)
    frame[8:16, 40:48] = 255  # rows 8-16, columns 40-48 of the model's square
    picture = localisation_image(frame, (frame[..., 0] / 255.0) ** 2, source=(240, 360))
    assert picture.shape == (117, 3 * 176 + 8, 3)
    ys, xs = np.nonzero(picture[:, :176].min(-1) > 128)  # the square, stretched back: x by 176/64, y by 117/64
    assert abs(xs.mean() - 44 * 176 / SIZE) < 1.5 and abs(ys.mean() - 12 * 117 / SIZE) < 1.5


def test_the_maps_on_disk_are_as_docs_detect_md_says(tmp_path: Path, black_prediction: None) -> None:
    """maps/ in the model's pixels (row 0 the top), npy float32 on [0, 1], png 8-bit scaled by each map's own largest
    value; docs/detect.md says so (was: 'each frame's error map', no shape, type, orientation or scale)."""
    height, width = 240, 360
    folder = tmp_path / "f"
    folder.mkdir()
    for t in range(7):
        image = square_frame(t, height, width)
        image[image == 0] = 64 if t == 6 else 0  # the last frame grey, not black: its map is not 0 outside the square
        cv2.imwrite(str(folder / f"{t:03d}.png"), image)
    config = tiny_config(image_size=SIZE)
    for kind in ("npy", "png"):
        detect(MNAD(config.model), config, str(folder), tmp_path / kind, DetectOptions(save_maps=kind), progress=False)
    for t in (4, 5, 6):
        exact = np.load(tmp_path / "npy" / "maps" / "00000000" / f"{t:012d}.npy")
        assert exact.dtype == np.float32 and exact.shape == (SIZE, SIZE) and 0 <= exact.min() and exact.max() <= 1
        assert centre_off(exact > exact.max() / 2, t, height, width) < width / SIZE
        picture = cv2.imread(str(tmp_path / "png" / "maps" / "00000000" / f"{t:012d}.png"), cv2.IMREAD_UNCHANGED)
        assert picture.dtype == np.uint8 and picture.shape == (SIZE, SIZE) and picture.max() == 255
        assert np.array_equal(picture, (exact / exact.max() * 255).astype(np.uint8))
    row = next(line for line in (Path(__file__).parents[1] / "docs" / "detect.md").read_text(encoding="utf-8").splitlines()
               if line.startswith("| `maps/`"))
    for said in ("`model.image_size` x `model.image_size`", "row 0 the frame's top", "`npy`: float32, values from 0 to 1",
                 "`png`: 8-bit grey, each map scaled by its own largest value", "(`cv2.resize(m, (width, height))`)"):
        assert said in row


@pytest.mark.parametrize("video_file", [False, True])
def test_memory_figures_draw_the_frame_and_its_nearest_items_at_the_source_aspect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                                video_file: bool) -> None:
    """matching.png's frames, and the nearest-item map over them, span the source frame's width and height (was: the
    model's square, a 240 x 360 frame squeezed as the thumbnails were)."""
    from matplotlib.axes import Axes

    from mnad.figures import memory_figures

    extents: list[tuple[float, ...] | None] = []
    original = Axes.imshow

    def recorded(self, data, *args, **kwargs):
        if np.ndim(data) == 3:  # the frame and the map over it (not the matching probabilities' 2-D image)
            extents.append(tuple(kwargs["extent"]) if kwargs.get("extent") is not None else None)
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(Axes, "imshow", recorded)
    root = data_root(tmp_path, 240, 360, video_file=video_file)
    torch.manual_seed(0)
    config = tiny_config(image_size=SIZE)
    memory_figures(MNAD(config.model), config, root, tmp_path / "f", frames=2, clips=4, max_queries=50)
    assert len(extents) == 2 * 2  # two frames shown, each with its map (an 8 x 8 query grid)
    assert set(extents) == {(-0.5, 359.5, 239.5, -0.5)}
