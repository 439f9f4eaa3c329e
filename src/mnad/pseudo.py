"""Pseudo-anomalies made from normal footage, on which ``mnad calibrate`` chooses how to score a camera without labels
(``calibrate.choose_scoring``, docs/method.md section 9.2).

A pseudo-anomaly is a stretch of normal footage in which one region moves SPEED times too fast: inside a square of half
the frame's side, centred where the footage moves, the frames come from further ahead in time while the rest of the
frame plays on normally. Something moving too fast where others walk is the commonest kind of anomaly in the field's
benchmarks, and skipping frames is the field's usual way of faking it without labels. The sizes below were fixed
before they were run on any model.
"""

from __future__ import annotations

import numpy as np

from mnad.data import Video

SPEED = 3  # the sped-up region plays SPEED frames per frame
LEAD = 20  # the last frame shown as it is (frames 0..LEAD: LEAD + 1 of them; the trailing mean starts from normal scores)
EVENT = 20  # LEAD + EVENT frames in all: frames LEAD+1..LEAD+EVENT-1 (EVENT - 1 of them) play the region too fast
STEP = 30  # frames between the starts of pseudo-anomalies cut from one video (each is scored on its own)
SOURCE_FRAMES = LEAD + SPEED * EVENT  # footage a start needs (the last frame read is LEAD + SPEED * (EVENT - 1))
MAX_PSEUDO = 32  # pseudo-anomalies at most (about 1300 frames to score), however long the footage


class SpedUpRegion(Video):
    """LEAD + EVENT frames of ``video`` from ``start``: frames 0..LEAD as they are, then a square region (half the
    frame's side, centred at ``centre``, fractions of width and height) taken SPEED times further ahead each frame
    (frame i shows ``start + LEAD + SPEED * (i - LEAD)`` there). The committed calibrations were made with these counts
    (docs/method.md 9.2 states them)."""

    def __init__(self, video: Video, start: int, centre: tuple[float, float]) -> None:
        self.video, self.start, self.centre = video, start, centre
        self.name, self.path = f"{video.name}[{start}:+{LEAD + EVENT}, x{SPEED}]", video.path
        self.pixel_range = video.pixel_range  # its frames are the video's, mapped as it maps them

    def __len__(self) -> int:
        return LEAD + EVENT

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        frame = self.video.frame(self.start + index, size, channels)
        if index <= LEAD:
            return frame
        ahead = self.video.frame(self.start + LEAD + SPEED * (index - LEAD), size, channels)
        top, left = region_corner(self.centre, size)
        frame = frame.copy()
        frame[top:top + size // 2, left:left + size // 2] = ahead[top:top + size // 2, left:left + size // 2]
        return frame

    def labels(self, scored: int, lag: int = 0) -> np.ndarray:
        """Which of the ``scored`` frames are pseudo-anomalous: every frame after the region started moving too fast.
        A clip scores its target frame, ``lag`` frames before the clip's last (``t_length - 1 - target_index``: 0 for a
        prediction model, half the clip for a reconstruction model), so the scored frames end ``lag`` before the last."""
        if isinstance(scored, bool) or not 0 <= scored <= len(self) - lag or lag < 0:
            raise ValueError(f"{scored} scored frames lagging {lag} do not fit {len(self)} frames")
        return np.arange(len(self) - lag - scored, len(self) - lag) > LEAD


def region_corner(centre: tuple[float, float], size: int) -> tuple[int, int]:
    """(top, left) of the half-side square centred at ``centre`` (fractions), moved inside a size x size frame."""
    half = size // 2
    return (int(np.clip(round(centre[1] * size) - half // 2, 0, size - half)),
            int(np.clip(round(centre[0] * size) - half // 2, 0, size - half)))


def motion_centre(video: Video, start: int, stop: int, size: int, channels: int) -> tuple[float, float] | None:
    """Centroid (x, y as fractions) of the absolute frame differences over frames ``start:stop``: where the footage
    moves; None where nothing does."""
    previous, motion = None, np.zeros((size, size))
    for i in range(start, stop):
        frame = video.frame(i, size, channels).astype(np.float64).mean(-1)
        if previous is not None:
            motion += np.abs(frame - previous)
        previous = frame
    total = motion.sum()
    if total <= 0:
        return None
    ys, xs = np.mgrid[0:size, 0:size]
    return float((motion * xs).sum() / total + 0.5) / size, float((motion * ys).sum() / total + 0.5) / size


def pseudo_anomalies(videos: list[Video], size: int, channels: int) -> list[SpedUpRegion]:
    """Pseudo-anomalies of ``videos``: one may start every STEP frames where the sped-up region has the footage it
    needs; at most MAX_PSEUDO of those, spread evenly over the footage (hours of it would otherwise cost more to score
    than the footage itself), each where something moves."""
    starts = [(video, start) for video in videos for start in range(0, len(video) - SOURCE_FRAMES + 1, STEP)]
    if len(starts) > MAX_PSEUDO:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, MAX_PSEUDO).round().astype(int)]
    made = []
    for video, start in starts:
        centre = motion_centre(video, start + LEAD, start + SOURCE_FRAMES, size, channels)
        if centre is not None:
            made.append(SpedUpRegion(video, start, centre))
    return made
