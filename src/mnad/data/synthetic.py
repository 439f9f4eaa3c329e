"""Small synthetic surveillance-like dataset: pedestrians on a walkway; fast bikes and wide carts are anomalies.

Used as the package's embedded demo (nothing to download) and in tests. The layout matches the
Ped2/Avenue convention read by the rest of the package: ``<split>/frames/<NN>/<NNN>.jpg`` and
``frame_labels_<name>.npy``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from mnad.errors import DataError, os_reason

_SS = 4  # supersampling: draw at 4x and downscale, so sub-pixel motion stays smooth at small sizes
_REF = 64.0  # all sizes and speeds below are in pixels of a 64x64 frame and get scaled to `size`
_BGR = tuple[int, int, int]
N_TRAIN, N_TEST, N_FRAMES = 4, 4, 60  # the demo's scene: 4 training and 4 test videos of 60 frames


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Fixed scene at high resolution: grass strip on top, paved walkway with tile seams, lighting gradient."""
    big, u = size * _SS, size * _SS / _REF
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
    top = 0.3 * big
    img = np.where((yy >= top)[..., None], np.float32([150, 158, 165]), np.float32([70, 120, 80]))
    img = img + (yy / big * 30.0)[..., None]  # brighter towards the camera
    tile = 10 * u
    seams = (yy >= top) & (((xx + 0.3 * (yy - top)) % tile < u) | ((yy - top) % tile < u))
    img[seams] -= 20.0
    img += rng.normal(0.0, 6.0, (big, big, 1)).astype(np.float32)  # static grain, same in every frame
    return np.clip(img, 0, 255).astype(np.uint8)


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x), round(y)


def _draw_person(img: np.ndarray, x: float, y: float, u: float, color: _BGR, phase: float) -> None:
    """Upright figure standing at feet position (x, y) (high-res px): swinging legs, elliptic body, round head."""
    th = max(1, round(0.9 * u))
    swing = 1.3 * u * np.sin(phase)
    for sgn in (-1, 1):
        cv2.line(img, _pt(x, y - 4 * u), _pt(x + sgn * swing, y), color, th, cv2.LINE_AA)
    cv2.ellipse(img, _pt(x, y - 6.5 * u), _pt(1.6 * u, 3.2 * u), 0, 0, 360, color, -1, cv2.LINE_AA)
    cv2.circle(img, _pt(x, y - 11 * u), round(1.5 * u), color, -1, cv2.LINE_AA)


def _draw_bike(img: np.ndarray, x: float, y: float, u: float, color: _BGR, direction: int) -> None:
    """Cyclist (about 12x14 px at size 64): two wheels, a frame and a leaning rider."""
    th = max(1, round(0.8 * u))
    for sgn in (-1, 1):
        cv2.circle(img, _pt(x + sgn * 3.8 * u, y - 2 * u), round(2 * u), (30, 30, 30), th, cv2.LINE_AA)
    cv2.line(img, _pt(x - 3.8 * u, y - 2 * u), _pt(x + 3.8 * u, y - 2 * u), (30, 30, 30), th, cv2.LINE_AA)
    cv2.ellipse(img, _pt(x, y - 7 * u), _pt(2.2 * u, 3.4 * u), 20 * direction, 0, 360, color, -1, cv2.LINE_AA)
    cv2.circle(img, _pt(x + 1.2 * direction * u, y - 11.5 * u), round(1.8 * u), color, -1, cv2.LINE_AA)


def _draw_cart(img: np.ndarray, x: float, y: float, u: float, color: _BGR) -> None:
    """Wide box on wheels (about 18x10 px at size 64), far wider than any pedestrian."""
    cv2.rectangle(img, _pt(x - 9 * u, y - 11 * u), _pt(x + 9 * u, y - 2.5 * u), color, -1, cv2.LINE_AA)
    for sgn in (-1, 1):
        cv2.circle(img, _pt(x + sgn * 6 * u, y - 1.5 * u), round(1.5 * u), (30, 30, 30), -1, cv2.LINE_AA)


def _walkers(rng: np.random.Generator, size: int, s: float) -> list[dict]:
    """2-4 pedestrians on random lanes of the walkway, each walking at a slow constant speed."""
    people = []
    for _ in range(int(rng.integers(2, 5))):
        shade = int(rng.integers(20, 110))
        tint = rng.integers(-25, 26, 3)
        people.append({
            "y0": rng.uniform(0.5, 0.95) * size, "v": rng.uniform(0.5, 1.5) * s, "d0": rng.uniform(0, 2 * size),
            "slope": rng.uniform(-0.15, 0.15), "dir": int(rng.choice([-1, 1])), "phase": rng.uniform(0, 2 * np.pi),
            "color": tuple(int(c) for c in np.clip(shade + tint, 0, 255)),
        })
    return people


def _position(d: float, y0: float, slope: float, direction: int, extent: float, size: int) -> tuple[float, float]:
    """Feet position after travelling d px from just outside the entry edge (left for +1, right for -1)."""
    x = -extent + d if direction > 0 else size + extent - d
    return x, y0 + slope * d


def _anomaly_plan(rng: np.random.Generator, kind: str, size: int, n_frames: int) -> dict:
    """Timing and path of a test video's anomaly; it enters about a third of the way in, partly visible at once."""
    s = size / _REF
    t0 = int(np.clip(n_frames // 3 + rng.integers(-n_frames // 15, n_frames // 15 + 1), 1, n_frames - 1))
    half_w = (6 if kind == "bike" else 9) * s
    v = (5.0 if kind == "bike" else 1.8) * s  # bike: ~5x a pedestrian's speed
    period = size + 1.4 * half_w
    # A bike crosses in ~15 frames, so a few ride by back to back to keep the anomaly on for a few dozen.
    passes = max(1, round(0.45 * n_frames * v / period)) if kind == "bike" else 1
    return {
        "t0": t0, "v": v, "period": period, "passes": passes, "extent": 0.7 * half_w,
        "y0": rng.uniform(0.6, 0.95) * size, "dir": int(rng.choice([-1, 1])),
        "color": (40, 40, 200) if kind == "bike" else (40, 110, 190),
    }


def _render_video(out_dir: Path, rng: np.random.Generator, bg: np.ndarray, size: int, n_frames: int,
                  anomaly: str | None) -> np.ndarray:
    """Write one video's frames; return its per-frame labels (1 where the anomalous object is visible)."""
    s, u = size / _REF, size * _SS / _REF
    people = _walkers(rng, size, s)
    period = size + 2 * 4 * s  # a pedestrian re-enters as soon as it has fully left the frame
    plan = _anomaly_plan(rng, anomaly, size, n_frames) if anomaly is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = np.zeros(n_frames, np.int64)
    for t in range(n_frames):
        img = bg.copy()
        for p in sorted(people, key=lambda p: p["y0"]):  # farther (higher) figures first, nearer ones on top
            d = (p["d0"] + p["v"] * t) % period
            x, y = _position(d, p["y0"], p["slope"], p["dir"], 4 * s, size)
            _draw_person(img, x * _SS, y * _SS, u, p["color"], p["phase"] + 0.9 * p["v"] / s * t)
        mask = np.zeros(img.shape[:2], np.uint8)
        if plan is not None and t >= plan["t0"] and plan["v"] * (t - plan["t0"]) < plan["passes"] * plan["period"]:
            d = plan["v"] * (t - plan["t0"]) % plan["period"]
            x, y = _position(d, plan["y0"], 0.0, plan["dir"], plan["extent"], size)
            for canvas, col in ((img, plan["color"]), (mask, 255)):
                if anomaly == "bike":
                    _draw_bike(canvas, x * _SS, y * _SS, u, col, plan["dir"])
                else:
                    _draw_cart(canvas, x * _SS, y * _SS, u, col)
        small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        small += rng.normal(0.0, 2.0, small.shape)  # mild sensor noise
        path = out_dir / f"{t:03d}.jpg"
        if not cv2.imwrite(str(path), np.clip(small, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"{path}: not written")  # OpenCV says only False (a full disk, a folder gone)
        # "Visible" = at least two output pixels mostly covered by the anomalous object.
        labels[t] = int((cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA) > 127).sum() >= 2)
    return labels


def video_name(index: int, count: int = 0) -> str:
    """The folder name of video ``index`` (0-based) of a split of ``count`` videos: 1-based, zero-padded to the
    width of ``count`` (at least 2), so that sorted name order, in which labels are read, is creation order
    (with 101 videos, 001 ... 101, not 01, 10, 100, 11)."""
    return f"{index + 1:0{max(2, len(str(count)))}d}"


def training_lengths(*, n_train: int = N_TRAIN, n_frames: int = N_FRAMES) -> dict[str, int]:
    """The training videos ``make_synthetic_dataset`` writes with these parameters, by name, and their frame counts:
    what training will find there, known before anything is written."""
    return {video_name(i, n_train): n_frames for i in range(n_train)}


def make_synthetic_dataset(root: str | Path, *, name: str = "synthetic", n_train: int = N_TRAIN, n_test: int = N_TEST,
                           n_frames: int = N_FRAMES, size: int = 64, seed: int = 0) -> Path:
    """Generate the synthetic dataset under ``root/name`` and return that directory.

    Training videos show only pedestrians; each test video additionally has one anomaly (alternating a
    fast cyclist and a wide cart) entering about a third of the way in. Deterministic given ``seed``.
    A write that fails (no such folder, no permission, a full disk) is one DataError naming ``root``, and the folders
    this call created are removed again.
    """
    if n_frames < 3 or size < 16 or n_train < 1 or n_test < 1:
        raise ValueError("need n_frames >= 3, size >= 16 and at least one training and one test video")
    rng = np.random.default_rng(seed)
    out = Path(root) / name
    bg = _background(size, rng)
    created: Path | None = None  # the outermost folder this call creates, removed if the scene cannot be written whole
    try:
        if not out.exists():
            created = out
            while not created.parent.exists() and created.parent != created:
                created = created.parent
        for i in range(n_train):
            _render_video(out / "training" / "frames" / video_name(i, n_train), rng, bg, size, n_frames, None)
        labels = [_render_video(out / "testing" / "frames" / video_name(i, n_test), rng, bg, size, n_frames,
                                "bike" if i % 2 == 0 else "cart") for i in range(n_test)]
        np.save(out / f"frame_labels_{name}.npy", np.concatenate(labels)[None, :])
    except OSError as exc:
        if created is not None:  # a half-written scene would read as a (wrong) dataset later
            shutil.rmtree(created, ignore_errors=True)
        raise DataError(f"{root}: cannot write the synthetic scene there ({os_reason(exc)})") from exc
    return out
