"""An alert says where in the frame: the event's peak frame's worst-predicted patch (the region patch PSNR scores), in
the source frame's pixels."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mnad.scoring import error_map, patch_psnr, worst_patch_box


def test_the_worst_patch_box_is_the_patch_patch_psnr_scores() -> None:
    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32))
    predicted = target + 0.05 * torch.from_numpy(rng.standard_normal((1, 3, 64, 64)).astype(np.float32))
    predicted[..., 40:48, 12:20] += 0.8  # a badly predicted object
    errors = error_map(predicted, target)[0].numpy()
    x, y, w, h = worst_patch_box(errors)
    assert (w, h) == (8, 8) and x <= 12 < x + w and y <= 40 < y + h  # 1/8 of the side, over the object
    worst = float(errors[y:y + h, x:x + w].mean())
    assert -10 * math.log10(worst) == pytest.approx(float(patch_psnr(predicted, target)[0]), abs=1e-4)
    assert worst_patch_box(errors[None]) == (x, y, w, h)  # error_map's (1, H, W) for one frame


def test_source_box_scales_each_axis_to_the_source_frame() -> None:
    from mnad.detect import source_box

    errors = np.zeros((32, 32), np.float32)
    errors[28:32, 28:32] = 1.0  # the bottom-right patch (4 x 4 at 32 x 32)
    assert source_box(errors, (240, 360, 3)) == (315, 210, 45, 30)  # 360 x 240 source: x by 11.25, y by 7.5


def test_detect_events_say_where_their_peak_frame_was_worst(model_file: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import mnad.stream
    from mnad.calibrate import with_calibration
    from mnad.calibration import Calibration
    from mnad.checkpoint import load_model
    from mnad.detect import DetectOptions, detect

    folder = tmp_path / "f"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(folder / f"{i:03d}.png"), rng.integers(0, 255, (30, 90, 3), dtype=np.uint8))  # 90 x 30 source
    build = mnad.stream.scoring_step

    def hot_corner(model, config, device=None):  # every frame's error map worst in its top-right 4 x 4 patch (at 32 x 32)
        step = build(model, config, device)

        def spoiled(*args):
            result = step(*args)
            errors = torch.zeros_like(result.error_map)
            errors[..., 0:4, 28:32] = 1.0
            return result._replace(error_map=errors)
        return spoiled

    monkeypatch.setattr(mnad.stream, "scoring_step", hot_corner)
    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=-1.0,
                      false_alarm_rate=0.05, smoothing=1, frames=100)  # every frame above it: one event
    detect(model, with_calibration(config, cal), str(folder), tmp_path / "o", DetectOptions(min_event_frames=1),
           progress=False)
    [event] = [json.loads(line) for line in (tmp_path / "o" / "events.jsonl").read_text().splitlines()]
    # x by 90/32, y by 30/32: columns 28-32 are pixels 78.75-90, rows 0-4 are 0-3.75
    assert (event["peak_x"], event["peak_y"], event["peak_width"], event["peak_height"]) == (78, 0, 12, 4)
    header = (tmp_path / "o" / "events.csv").read_text().splitlines()[0].split(",")
    assert header[-6:-2] == ["peak_x", "peak_y", "peak_width", "peak_height"]  # then alert_frame, alert_time


@pytest.mark.parametrize("size", [40, 56, 72, 136])
def test_the_patches_cover_the_frame_to_its_edges(size: int) -> None:
    """Sizes whose 1/8 side is odd (5 at 40) have blocks every side // 2 pixels that stop short of the far edge: a
    block flush with it is added (was: the last 1-7 pixels in no block, an error there unseen by patch PSNR)."""
    target = torch.zeros(1, 3, size, size)
    predicted = target.clone()
    predicted[..., -1, -1] = 1.0  # only the bottom-right pixel is wrong
    side = size // 8
    assert worst_patch_box(error_map(predicted, target)[0].numpy()) == (size - side, size - side, side, side)
    assert float(patch_psnr(predicted, target)[0]) < 100  # was: 120 dB, the clamp of no error at all


@pytest.mark.parametrize("size", [32, 128, 192, 256])
def test_sizes_whose_blocks_tile_the_frame_score_as_before(size: int) -> None:
    rng = np.random.default_rng(size)
    values = torch.from_numpy(rng.random((2, 1, size, size)).astype(np.float32))
    side = size // 8
    plain = torch.nn.functional.avg_pool2d(values, side, stride=side // 2)  # the grid the committed results used
    from mnad.scoring import _worst_patch

    assert torch.equal(_worst_patch(values), plain.flatten(1).amax(1))
