"""`mnad calibrate` chooses the scoring without labels, on pseudo-anomalies made from the calibration footage: the
pseudo-anomalies are what they claim, the choice is the best candidate, and the calibrated model scores as chosen."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.calibrate import WINDOWS, calibrate, candidate_name, choose_scoring, describe_scoring, with_calibration
from mnad.calibration import Calibration
from mnad.config import load_config, recipe_names
from mnad.data import Video, split_videos
from mnad.data.synthetic import make_synthetic_dataset
from mnad.model import MNAD
from mnad.pseudo import (
    EVENT,
    LEAD,
    MAX_PSEUDO,
    MIN_SCORED,
    SOURCE_FRAMES,
    SPEED,
    clip_shape,
    motion_centre,
    pseudo_anomalies,
    region_corner,
    source_frames,
)
from mnad.stream import StreamScorer


class MovingSquare(Video):
    """A bright 4-pixel square moving one pixel per frame along a row, on a dark 32 x 32 background."""

    def __init__(self, frames: int = 100, row: int = 6, moving: bool = True) -> None:
        self.frames, self.row, self.moving = frames, row, moving
        self.name, self.path = "square", Path("square")

    def __len__(self) -> int:
        return self.frames

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        image = np.zeros((size, size, channels), np.uint8)
        x = index % (size - 4) if self.moving else 3
        image[self.row:self.row + 4, x:x + 4] = 255
        image[-1, -1] = index % 256  # every frame differs, so the footage is not still
        return image


def test_pseudo_anomalies_speed_up_one_region_where_the_footage_moves() -> None:
    video = MovingSquare()
    made = pseudo_anomalies([video], 32, 3)
    assert [v.start for v in made] == list(range(0, len(video) - SOURCE_FRAMES + 1, 30))
    clip = made[0]
    cx, cy = clip.centre
    assert abs(cy * 32 - 8) < 1.5  # the square's row (6..9) is where it moves
    top, left = region_corner(clip.centre, 32)
    for i in range(len(clip)):
        frame, ahead = clip.frame(i, 32, 3), video.frame(clip.start + LEAD + SPEED * (i - LEAD), 32, 3)
        own = video.frame(clip.start + i, 32, 3)
        inside = (slice(top, top + 16), slice(left, left + 16))
        if i <= LEAD:
            assert np.array_equal(frame, own)
        else:  # the region comes from SPEED times further ahead, the rest of the frame plays on
            assert np.array_equal(frame[inside], ahead[inside])
            rest = np.ones((32, 32), bool)
            rest[inside] = False
            assert np.array_equal(frame[rest], own[rest])
    assert clip.labels(len(clip) - 4).tolist() == [i > LEAD for i in range(4, len(clip))]
    # footage that never moves (only the corner pixel's counter) makes pseudo-anomalies only where it changes
    assert motion_centre(MovingSquare(moving=False), 0, 10, 32, 3) == pytest.approx((31.5 / 32, 31.5 / 32))
    assert pseudo_anomalies([MovingSquare(frames=SOURCE_FRAMES - 1)], 32, 3) == []
    # long footage: at most MAX_PSEUDO, spread from its start to its end
    long = pseudo_anomalies([MovingSquare(frames=3000)], 32, 3)
    assert len(long) == MAX_PSEUDO and long[0].start == 0 and long[-1].start == (3000 - SOURCE_FRAMES) // 30 * 30


def terms(rng: np.random.Generator, videos: int, frames: int, patch_psnr_drop: float = 0.0, patch_d_rise: float = 0.0,
          labels: list[np.ndarray] | None = None) -> dict[str, list[np.ndarray]]:
    out: dict[str, list[np.ndarray]] = {"psnr": [], "patch_psnr": [], "distance": [], "patch_distance": []}
    for v in range(videos):
        marked = labels[v] if labels is not None else np.zeros(frames, bool)
        out["psnr"].append(rng.normal(30, 1, frames))
        out["patch_psnr"].append(rng.normal(20, 1, frames) - patch_psnr_drop * marked)
        out["distance"].append(np.abs(rng.normal(0.01, 0.001, frames)))
        out["patch_distance"].append(np.abs(rng.normal(0.02, 0.002, frames)) + patch_d_rise * marked)
    return out


def test_the_choice_is_the_candidate_that_separates_the_pseudo_anomalies() -> None:
    rng = np.random.default_rng(0)
    labels = [np.arange(36) > 16 for _ in range(3)]
    normal = terms(rng, 4, 150)
    # only the worst patch's PSNR sees the pseudo-anomaly: PSNR-only over the patch, simplest window among ties
    choice = choose_scoring(normal, terms(rng, 3, 36, patch_psnr_drop=6.0, labels=labels), labels, scored_with=tiny_config())
    assert (choice.psnr_region, choice.alpha, choice.smoothing) == ("patch", 1.0, 1)
    assert len(choice.auc) == 6 * len(WINDOWS) and choice.auc[choice.name] == max(choice.auc.values())
    assert choice.auc[candidate_name("frame", None, 1)] < 0.7
    # only the worst block's D sees it: D over the patch is mixed in with the configured weight
    choice = choose_scoring(normal, terms(rng, 3, 36, patch_d_rise=0.05, labels=labels), labels, scored_with=tiny_config())
    assert (choice.distance_region, choice.alpha) == ("patch", 0.6)
    # a model without memory has no D: only PSNR candidates; a fixed window: only that window
    choice = choose_scoring(normal, terms(rng, 3, 36, patch_d_rise=0.05, labels=labels), labels,
                            scored_with=tiny_config(memory=False), windows=(5,))
    assert set(choice.auc) == {candidate_name(p, None, 5) for p in ("frame", "patch")} and choice.alpha == 1.0


def test_calibrate_records_the_chosen_scoring_and_the_model_scores_with_it(tmp_path: Path, caplog) -> None:
    root = tmp_path / "data"
    make_synthetic_dataset(root, n_train=1, n_test=1, n_frames=SOURCE_FRAMES + 10, size=32, seed=1)
    videos = split_videos(root, "synthetic", "training")
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model).eval()
    cal = calibrate(model, config, videos, false_alarm_rate=0.05, progress=False)
    assert len(cal.pseudo_anomaly_auc) == 6 * len(WINDOWS)
    best = max(cal.pseudo_anomaly_auc, key=cal.pseudo_anomaly_auc.get)  # the first of equals, as CANDIDATES orders them
    p_region, _, rest = best.partition(" PSNR")
    assert cal.psnr_region == p_region and best.endswith(f", {cal.smoothing}-frame mean")
    assert (cal.alpha == 1.0) == ("D" not in rest) and (" D" not in rest or rest.startswith(f" + {cal.distance_region} D"))
    assert describe_scoring(cal) == f"{best} (chosen on pseudo-anomalies: AUC {cal.pseudo_anomaly_auc[best]:.4f}, best of 18)"
    scored = with_calibration(config, cal)
    assert (scored.eval.psnr_region, scored.eval.distance_region, scored.eval.smoothing) == (
        cal.psnr_region, cal.distance_region, cal.smoothing)
    assert scored.eval.alpha == cal.alpha and Calibration.from_dict(cal.to_dict()) == cal
    StreamScorer.for_model(model, scored, normalization="calibrated")  # accepted: the terms match
    with pytest.raises(Exception, match="run `mnad calibrate` again"):
        other_alpha = 0.6 if cal.alpha == 1.0 else 1.0
        StreamScorer.for_model(model, scored.override([f"eval.alpha={other_alpha}"]), normalization="calibrated")
    # as configured: no choice; a given window is kept and only the terms are chosen
    as_configured = calibrate(model, config, videos, false_alarm_rate=0.05, scoring="config", progress=False)
    assert as_configured.pseudo_anomaly_auc == {} and as_configured.alpha == config.eval.alpha
    assert (as_configured.psnr_region, as_configured.distance_region) == (config.eval.psnr_region, config.eval.distance_region)
    fixed = calibrate(model, config, videos, false_alarm_rate=0.05, smoothing=3, progress=False)
    assert fixed.smoothing == 3 and all(name.endswith(", 3-frame mean") for name in fixed.pseudo_anomaly_auc)
    # footage too short to make a pseudo-anomaly from: said, and scored as configured
    short = make_synthetic_dataset(tmp_path / "short", n_train=1, n_test=1, n_frames=30, size=32, seed=1)
    with caplog.at_level(logging.WARNING, logger="mnad.calibrate"):
        cal = calibrate(model, config, split_videos(short.parent, "synthetic", "training"), false_alarm_rate=0.05, progress=False)
    assert "long enough" in caplog.text and cal.pseudo_anomaly_auc == {}


def test_pseudo_anomalies_are_sized_from_the_model_clip() -> None:
    """A pseudo-anomaly holds the model's clip and scored frames on both sides of its speed-up, whatever model.t_length
    (was: always 40 frames: a 42-frame clip was refused as footage too short, a 39-frame reconstruction clip scored no
    sped-up frame); the recipes' models keep the 40 frames their committed calibrations were made with."""
    for name in recipe_names():
        model = load_config(name).model
        assert clip_shape(model.t_length, model.lag) == (LEAD, LEAD + EVENT), name
        assert source_frames(model.t_length, model.lag) == SOURCE_FRAMES == 80, name
        made = pseudo_anomalies([MovingSquare(frames=110)], 32, 3, t_length=model.t_length, lag=model.lag)
        assert [(v.start, v.lead, len(v)) for v in made] == [(0, LEAD, 40), (30, LEAD, 40)], name
    for task in ("pred", "recon"):
        for t_length in range(2 if task == "pred" else 1, 65):
            model = tiny_config(task=task, t_length=t_length).model
            lead, length = clip_shape(t_length, model.lag)
            needed = source_frames(t_length, model.lag)
            made = pseudo_anomalies([MovingSquare(frames=needed)], 32, 3, t_length=t_length, lag=model.lag)
            assert len(made) == 1 and (made[0].lead, len(made[0])) == (lead, length)
            assert pseudo_anomalies([MovingSquare(frames=needed - 1)], 32, 3, t_length=t_length, lag=model.lag) == []
            assert needed > lead + SPEED * (length - 1 - lead)  # the last frame the region reads is in the footage
            labels = made[0].labels(length - t_length + 1, model.lag)
            assert labels.sum() >= MIN_SCORED and (~labels).sum() >= MIN_SCORED, (task, t_length)


@pytest.mark.parametrize(("task", "t_length"), [("pred", 42), ("recon", 39)])
def test_calibrate_chooses_on_pseudo_anomalies_for_a_long_clip(task: str, t_length: int,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """A model clip as long as the old 40-frame pseudo-anomaly or longer: the scoring is chosen on pseudo-anomalies of
    its own size (was: a 42-frame clip failed with 'fewer than the 42 of one clip' on 100-frame footage; a 39-frame
    reconstruction clip had no pseudo-anomalous frame, NaN AUCs and a ConfigError); footage too short for them is
    scored as configured, with one warning."""
    torch.manual_seed(0)
    config = tiny_config(task=task, t_length=t_length)
    model = MNAD(config.model).eval()
    rng = np.random.default_rng(0)
    needed = source_frames(t_length, config.model.lag)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(needed)]
    footage = Frames(frames)
    calibration = calibrate(model, config, [footage], false_alarm_rate=0.05, smoothing=1, progress=False)
    assert calibration.pseudo_anomaly_auc and all(np.isfinite(v) for v in calibration.pseudo_anomaly_auc.values())
    with caplog.at_level(logging.WARNING, logger="mnad"):
        short = calibrate(model, config, [Frames(frames[:needed - 1])], false_alarm_rate=0.05, smoothing=1,
                          progress=False)
    assert not short.pseudo_anomaly_auc
    said = [r.getMessage() for r in caplog.records if "pseudo-anomalies" in r.getMessage()]
    assert len(said) == 1 and f"long enough ({needed} frames, for this model's {t_length}-frame clips)" in said[0]


class Frames(Video):
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames, self.name, self.path, self.pixel_range = frames, "frames", Path("frames"), ()

    def __len__(self) -> int:
        return len(self.frames)

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        return self.frames[index]


def test_a_pseudo_anomaly_is_made_only_where_the_frames_it_reads_move(caplog: pytest.LogCaptureFixture) -> None:
    """Motion is looked for over exactly the source frames the sped-up region reads (LEAD .. LEAD + SPEED * (EVENT -
    1)), and a clip that never changes is skipped (was: motion two frames past the last read made a pseudo-anomaly
    that never changes, and calibrate failed with 'calibration footage does not change' where --scoring config
    calibrated)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    last = LEAD + SPEED * (EVENT - 1)

    def moving_from(first: int, stop: int = 100) -> list[np.ndarray]:
        frames = [base.copy() for _ in range(100)]
        for i in range(first, stop):
            frames[i][8:16, 8:16] = (i * 7) % 255
        return frames

    assert pseudo_anomalies([Frames(moving_from(last + 1))], 32, 3) == []  # moves only after the frames read
    assert len(pseudo_anomalies([Frames(moving_from(last))], 32, 3)) == 1  # the last frame read moves
    # a flash in a frame the region skips (neither a whole frame, below LEAD + EVENT, nor one SPEED-th): no motion shown
    skipped = LEAD + SPEED * 10 + 1
    assert pseudo_anomalies([Frames(moving_from(skipped, skipped + 1))], 32, 3) == []
    assert len(pseudo_anomalies([Frames(moving_from(skipped - 1, skipped))], 32, 3)) == 1
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model).eval()
    with caplog.at_level(logging.WARNING, logger="mnad"):
        calibration = calibrate(model, config, [Frames(moving_from(last + 1))], false_alarm_rate=0.05, progress=False)
    assert not calibration.pseudo_anomaly_auc  # scored as configured, as --scoring config does
    assert any("does not move in any stretch a pseudo-anomaly" in r.getMessage() for r in caplog.records)
