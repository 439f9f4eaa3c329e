"""Localisation thumbnails of the highest-scoring frames (``thumbs/*.png`` and ``thumbs/thumbs.json``).

They need the model and the frames, so they are made once, by ``mnad evaluate --report``; the page only reads them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from mnad.errors import DataError
from mnad.outputs import SCORES_FILE, VideoRows, read_json_if_present, read_scores
from mnad.report.inputs import thumbs_problem

# mnad.checkpoint and mnad.scoring (torch, cv2) are imported where thumbnails are made: `mnad report`, which only reads
# them, imports this module and would wait seconds for torch

THUMBS_DIR = "thumbs"
THUMBS_INDEX = "thumbs.json"
TOP_K = 8  # localisation thumbnails a report shows by default: the frames scored highest


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "video"


def _indexed_files(report_dir: Path) -> set[str]:
    """The file names the report folder's thumbs.json lists, read by the one reader (``read_thumbnail_index``): none
    when there is none, and a damaged one a DataError (was: read leniently here, a damaged index gave no names and the
    earlier thumbnails were left behind, named by nothing)."""
    return {Path(entry["file"]).name for entry in read_thumbnail_index(Path(report_dir))}


def pick_top_frames(videos: list[VideoRows], k: int, *, gap: int = 5) -> list[tuple[int, int]]:
    """(video index, row index) of the k highest scores, at least ``gap`` frames apart within a video, so the
    thumbnails show different moments rather than one event's neighbouring frames.

    Rows are taken by score, ties by video index, then frame number, then row index. Only the head of that order is
    sorted (a day of one camera is a million rows, of which a handful are kept): the rows scored at least the m-th
    highest score, ties at it included, are exactly the first rows of the full order; m grows until k frames are
    chosen or every row has been walked."""
    if k <= 0 or not videos:
        return []
    scores = np.concatenate([np.asarray(v.score, dtype=np.float64) for v in videos])
    frames = np.concatenate([np.asarray(v.frames, dtype=np.int64) for v in videos])
    ends = np.cumsum([len(v.frames) for v in videos])  # row g of the concatenation is in the first video ending after g
    starts = ends - [len(v.frames) for v in videos]
    n = scores.size
    chosen: list[tuple[int, int, int]] = []  # (video index, frame, row index)
    walked = 0  # a larger head begins with the smaller one, in the same order: its first rows were walked already
    m = max(64, 2 * k * gap)  # enough when the rows passed over are the chosen frames' neighbours
    while len(chosen) < k and walked < n:
        head = np.arange(n) if m >= n else np.flatnonzero(scores >= np.partition(scores, n - m)[n - m])
        video = np.searchsorted(ends, head, side="right")
        by_rank = np.lexsort((head, frames[head], video, -scores[head]))
        for g, vi in zip(head[by_rank][walked:].tolist(), video[by_rank][walked:].tolist(), strict=True):
            frame = int(frames[g])
            if not any(cv == vi and abs(cf - frame) < gap for cv, cf, _ in chosen):
                chosen.append((vi, frame, g - int(starts[vi])))
                if len(chosen) == k:
                    break
        walked = head.size
        m *= 4
    return [(vi, i) for vi, _, i in chosen]


def panel_size(source: tuple[int, int] | None, display: int) -> tuple[int, int]:
    """(width, height) of a thumbnail's panels: the source frame's (height, width) ``source`` scaled so that its longer
    side is ``display`` pixels; a square of ``display`` where it is not known (None)."""
    if source is None:
        return display, display
    height, width = source
    if height < 1 or width < 1:
        raise DataError(f"a source frame of {height} x {width} pixels has no thumbnail: its sides must be at least 1")
    if width >= height:
        return display, max(round(display * height / width), 1)
    return max(round(display * width / height), 1), display


def localisation_image(frame: np.ndarray, error: np.ndarray, *, display: int = 176,
                       source: tuple[int, int] | None = None) -> np.ndarray:
    """Three panels as in the paper's Fig. 4: the frame, its prediction-error heatmap, and the regions whose error
    is above the frame's mean. ``frame``: uint8 (H, W, C) BGR or gray, as the model read it (the source frame resized
    to the model's square, each axis on its own); ``error``: (H, W), the model's pixels too. ``source``: the source
    frame's (height, width): the panels are drawn at its aspect (``panel_size``), the model's square stretched back as
    ``mnad detect`` draws its regions on the frame, so that the frame looks as the camera saw it and the heatmap and
    regions land on it; None: square panels. Returns BGR uint8."""
    import cv2

    from mnad.scoring import abnormal_regions

    bgr = frame if frame.ndim == 3 and frame.shape[2] == 3 else cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    size = panel_size(source, display)
    interpolation = cv2.INTER_LINEAR if size[0] >= bgr.shape[1] and size[1] >= bgr.shape[0] else cv2.INTER_AREA
    base = cv2.resize(bgr, size, interpolation=interpolation)
    err = cv2.resize(error.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    top = float(err.max())
    heat = cv2.applyColorMap(np.clip(err / top * 255 if top > 0 else err * 0, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    blend = cv2.addWeighted(base, 0.45, heat, 0.55, 0)
    mask = cv2.resize(abnormal_regions(error).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
    regions = (base * 0.35).astype(np.uint8)
    tint = cv2.addWeighted(base, 0.4, np.full_like(base, (0, 0, 255)), 0.6, 0)
    regions[mask] = tint[mask]
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(regions, contours, -1, (255, 255, 255), 1)
    sep = np.full((size[1], 4, 3), 255, np.uint8)
    return np.hstack([base, sep, blend, sep, regions])


def source_size(video: Any, index: int) -> tuple[int, int] | None:
    """(height, width) of ``video``'s frame ``index`` before the model's resize: a frame folder's image file as it
    decodes, a video file's frame size as its container reports it (no frame decoded: the thumbnails read their clips
    from the one decode at the model's size), the whole video's for a part of one (``FrameRange``); None for a video
    of another kind, or a container that reports no size."""
    import cv2

    from mnad.data.capture import opened_capture
    from mnad.data.videos import FrameFolder, FrameRange, VideoFile

    if isinstance(video, FrameRange):
        return source_size(video.video, video.start + index)
    if isinstance(video, FrameFolder):
        height, width = video.image(index).shape[:2]
        return height, width
    if isinstance(video, VideoFile):
        capture = opened_capture(video.path, str(video.path))
        try:
            height, width = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        finally:
            capture.release()
        return (height, width) if height > 0 and width > 0 else None
    return None


def clip_error_map(model: Any, config: Any, frames: np.ndarray, device: str) -> np.ndarray:
    """The pixel-wise prediction error (H, W) of one clip's target frame: the clip (uint8 (T, H, W, C) frames) scored
    by a fresh streaming scorer, i.e. with the trained memory items (the evaluation's test-time updates are not
    replayed)."""
    from mnad.stream import StreamScorer

    scorer = StreamScorer.for_model(model, config, normalization="video", device=device, maps=True)
    rows = [scorer.push(frame) for frame in frames]
    return rows[-1].error_map


def write_thumbnails(
    model: Any,
    config: Any,
    data_root: str | Path,
    eval_dir: str | Path,
    report_dir: str | Path,
    *,
    top_k: int = TOP_K,
    device: str = "cpu",
) -> list[dict]:
    """Localisation thumbnails of the top-k scoring test frames (PNG files in ``report_dir/thumbs``) and their index.

    Each frame's clip is run through the model again with the trained memory items (the evaluation's test-time
    updates are not replayed), and ``scoring.error_map`` is drawn over it (``clip_error_map``). Each video file holding
    a top frame is decoded once (the evaluation's decode is not kept: its disk is freed when the evaluation ends).
    """
    import cv2

    from mnad.atomic import atomic_write_many
    from mnad.data import VideoFile, split_videos
    from mnad.scoring import abnormal_regions

    rows = read_scores(Path(eval_dir) / SCORES_FILE)
    m = config.model
    videos = {v.name: v for v in split_videos(data_root, config.dataset, "testing", m.pixel_range)}
    top = pick_top_frames(rows, top_k, gap=max(5, m.t_length))
    for vi in {vi for vi, _ in top}:  # a video file drawn from is counted by its one decode, then read from it
        if isinstance(video := videos.get(rows[vi].name), VideoFile) and video.decode_as is None:
            video.decode_as = (m.image_size, m.channels)
    check_evaluated_videos(rows, videos, {vi for vi, _ in top}, m.t_length - 1 - m.target_index, data_root, eval_dir)
    out = Path(report_dir) / THUMBS_DIR
    out.mkdir(parents=True, exist_ok=True)
    old_index = out / THUMBS_INDEX
    earlier = _indexed_files(Path(report_dir))  # an earlier report's thumbnails: removed once this one's are written
    entries = []
    files: dict[Path, bytes] = {}
    model = model.to(device)  # each clip is scored by a StreamScorer, on its own eval-mode copy
    for rank, (vi, i) in enumerate(top, start=1):
        video_rows, frame_index = rows[vi], int(rows[vi].frames[i])
        video = videos[video_rows.name]
        first = frame_index - m.target_index  # the clip whose target is this frame
        frames = video.frames(first, m.t_length, m.image_size, m.channels)
        error = clip_error_map(model, config, frames, device)
        name = f"{rank:02d}_{_safe_name(video_rows.name)}_{frame_index:06d}.png"
        # drawn at the source frame's aspect: the model read it squeezed into its square
        ok, png = cv2.imencode(".png", localisation_image(frames[m.target_index], error, source=source_size(video, frame_index)))
        if not ok:
            raise DataError(f"{out / name}: could not encode the thumbnail")
        files[out / name] = png.tobytes()
        label = None if video_rows.labels is None else int(video_rows.labels[i])
        entries.append({
            "file": name, "video": video_rows.name, "frame": frame_index, "score": float(video_rows.score[i]), "label": label,
            "error_mean": float(error.mean()), "error_max": float(error.max()),
            "region_fraction": float(abnormal_regions(error).mean()),  # share of the frame marked as abnormal regions
        })
    files[old_index] = json.dumps(entries, indent=2).encode()
    atomic_write_many(files)  # the thumbnails and their index land together
    for name in earlier - {p.name for p in files}:
        (out / name).unlink(missing_ok=True)
    return entries


def check_evaluated_videos(rows: list[VideoRows], videos: dict[str, Any], drawn: set[int], after: int,
                           data_root: str | Path, eval_dir: str | Path) -> None:
    """Before any thumbnail is drawn: ``data_root``'s test videos are the ones ``eval_dir`` scored. Every scored video
    is there by name, and each of those a thumbnail is drawn from (``drawn``: indices into ``rows``) has the frames
    its scores say: its last scored frame, then the ``after`` frames no clip centres on. Another data root (another
    copy, videos cut or re-extracted) would otherwise draw other footage under these scores, or fail in the middle
    with an IndexError. One ``DataError`` naming both folders. (Only the drawn videos are counted: a video file is
    counted by a decode, which the thumbnails' reading then uses.)"""
    def differs(what: str) -> DataError:
        return DataError(f"{data_root}: {what}: this data root differs from the one {eval_dir} evaluated; pass the "
                         "data root that was evaluated (the report draws the evaluated frames)")

    missing = [r.name for r in rows if r.name not in videos]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise differs(f"test video {missing[0]!r}{more} scored by the evaluation is not there")
    for vi in sorted(drawn):
        video_rows = rows[vi]
        if not len(video_rows.frames):
            continue
        expected = int(np.max(video_rows.frames)) + after + 1
        found = len(videos[video_rows.name])
        if found != expected:
            raise differs(f"test video {video_rows.name!r} has {found} frames, the evaluated one {expected}")


def remove_thumbnails(report_dir: str | Path) -> None:
    """Take an earlier report's thumbnails out of ``report_dir`` (a report made again with ``top_k`` 0 must not show
    another evaluation's): the index first, so that a failure part way leaves files no page shows, never an index
    naming missing ones."""
    out = Path(report_dir) / THUMBS_DIR
    index = out / THUMBS_INDEX
    if not index.is_file():
        return
    earlier = _indexed_files(Path(report_dir))
    index.unlink()
    for name in earlier:  # only the files the index named: a user's own files in thumbs/ stay
        (out / name).unlink(missing_ok=True)


def read_thumbnail_index(report_dir: Path) -> list[dict]:
    """The entries of the report folder's thumbs/thumbs.json, checked to be what the page reads; [] when there is none."""
    path = report_dir / THUMBS_DIR / THUMBS_INDEX
    return read_json_if_present(path, "thumbnails index", thumbs_problem, [])
