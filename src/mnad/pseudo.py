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
MIN_SCORED = 9  # a longer model clip: at least this many scored frames before the region speeds up, and as many after
MAX_PSEUDO = 32  # pseudo-anomalies at most (about 1300 frames to score), however long the footage


def clip_shape(t_length: int = 1, lag: int = 0) -> tuple[int, int]:
    """(lead, length) of the pseudo-anomalies scored by a model whose ``t_length``-frame clips score the frame ``lag``
    before their last: frames 0..lead as the footage has them, lead+1..length-1 sped up. LEAD and LEAD + EVENT where
    those leave at least MIN_SCORED scored frames on each side of the speed-up (every model of the recipes: prediction
    with 5 frames, reconstruction with 1 or 16), else longer: the first scored frame is t_length - 1 - lag (the clip's
    lead-in) and the last is lag before the end, so a longer clip moves the speed-up and the end on."""
    if isinstance(t_length, bool) or isinstance(lag, bool) or not 0 <= lag < t_length:
        raise ValueError(f"a clip of {t_length} frame(s) cannot score the frame {lag} before its last")
    lead = max(LEAD, t_length - 1 - lag + MIN_SCORED - 1)
    return lead, max(LEAD + EVENT, lead + lag + 1 + MIN_SCORED)


def source_frames(t_length: int = 1, lag: int = 0) -> int:
    """Footage a pseudo-anomaly needs from its start for such a model (the last frame read is lead + SPEED * (length -
    1 - lead); SPEED - 1 more are kept, as the committed calibrations had them)."""
    lead, length = clip_shape(t_length, lag)
    return lead + SPEED * (length - lead)


SOURCE_FRAMES = source_frames()  # the recipes' models' (clip_shape): 80


class SpedUpRegion(Video):
    """``length`` frames of ``video`` from ``start``: frames 0..``lead`` as they are, then a square region (half the
    frame's side, centred at ``centre``, fractions of width and height) taken SPEED times further ahead each frame
    (frame i shows ``start + lead + SPEED * (i - lead)`` there). The committed calibrations were made with LEAD and
    LEAD + EVENT (docs/method.md 9.2 states them); a model with longer clips gets longer ones (``clip_shape``)."""

    def __init__(self, video: Video, start: int, centre: tuple[float, float], lead: int = LEAD,
                 length: int = LEAD + EVENT) -> None:
        if not 0 <= lead < length - 1:
            raise ValueError(f"a pseudo-anomaly of {length} frames cannot show {lead + 1} as they are")
        self.video, self.start, self.centre, self.lead, self.length = video, start, centre, lead, length
        self.name, self.path = f"{video.name}[{start}:+{length}, x{SPEED}]", video.path
        self.pixel_range = video.pixel_range  # its frames are the video's, mapped as it maps them

    def __len__(self) -> int:
        return self.length

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        frame = self.video.frame(self.start + index, size, channels)
        if index <= self.lead:
            return frame
        ahead = self.video.frame(self.start + self.lead + SPEED * (index - self.lead), size, channels)
        top, left = region_corner(self.centre, size)
        frame = frame.copy()
        frame[top:top + size // 2, left:left + size // 2] = ahead[top:top + size // 2, left:left + size // 2]
        return frame

    def changes(self, size: int, channels: int) -> bool:
        """Whether any of its frames differs from the one before it (as ``calibrate.FootageWatch`` asks of footage)."""
        previous = None
        for index in range(len(self)):
            frame = self.frame(index, size, channels)
            if previous is not None and not np.array_equal(frame, previous):
                return True
            previous = frame
        return False

    def labels(self, scored: int, lag: int = 0) -> np.ndarray:
        """Which of the ``scored`` frames are pseudo-anomalous: every frame after the region started moving too fast.
        A clip scores its target frame, ``lag`` frames before the clip's last (``t_length - 1 - target_index``: 0 for a
        prediction model, half the clip for a reconstruction model), so the scored frames end ``lag`` before the last."""
        if isinstance(scored, bool) or not 0 <= scored <= len(self) - lag or lag < 0:
            raise ValueError(f"{scored} scored frames lagging {lag} do not fit {len(self)} frames")
        return np.arange(len(self) - lag - scored, len(self) - lag) > self.lead


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


def pseudo_anomalies(videos: list[Video], size: int, channels: int, *, t_length: int = 1,
                     lag: int = 0) -> list[SpedUpRegion]:
    """Pseudo-anomalies of ``videos`` for a model whose ``t_length``-frame clips score the frame ``lag`` before their
    last (``clip_shape``; the defaults give the recipes' 40 frames): one may start every STEP frames where the sped-up
    region has the footage it needs; at most MAX_PSEUDO of those, spread evenly over the footage (hours of it would
    otherwise cost more to score than the footage itself), each where something moves."""
    (lead, length), needed = clip_shape(t_length, lag), source_frames(t_length, lag)
    starts = [(video, start) for video in videos for start in range(0, len(video) - needed + 1, STEP)]
    if len(starts) > MAX_PSEUDO:
        starts = [starts[i] for i in np.linspace(0, len(starts) - 1, MAX_PSEUDO).round().astype(int)]
    last = lead + SPEED * (length - 1 - lead)  # the last source frame the clip reads (its region's, in its last frame)
    made = []
    for video, start in starts:
        # motion over the frames the sped-up region is read from, and no further (was: up to start + needed - 1, two
        # frames past the last read, whose motion made a clip that never changes)
        centre = motion_centre(video, start + lead, start + last + 1, size, channels)
        if centre is not None and (clip := SpedUpRegion(video, start, centre, lead, length)).changes(size, channels):
            made.append(clip)  # one that never changes (its motion between the frames it skips) would only be refused
    return made
