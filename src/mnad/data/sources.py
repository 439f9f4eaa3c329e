"""Videos as sequences of frames: a folder of images or a video file, decoded with OpenCV.

Every frame comes out as uint8 (H, W, channels), resized to a square ``size`` with bilinear interpolation and in
OpenCV's BGR order, as in the published runs. Frames are ordered by their position in a sorted listing, never by
numbers parsed out of their names.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mnad.errors import DataError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
VIDEO_EXTENSIONS = {".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".webm"}


def to_channels(image: np.ndarray, channels: int, source: str | Path) -> np.ndarray:
    """Any decoded image (gray, BGR, BGRA; 8 or 16 bit) -> uint8 (H, W, channels)."""
    if image.dtype == np.uint16:  # 16-bit TIFF/PNG: keep the high byte
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise DataError(f"{source}: unsupported pixel type {image.dtype} (expected 8- or 16-bit integers)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] not in (1, 3):
        raise DataError(f"{source}: unsupported channel count {image.shape[2]}")
    if channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif channels == 1 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    return image


def prepare_frame(image: np.ndarray, size: int, channels: int, source: str | Path) -> np.ndarray:
    image = to_channels(image, channels, source)
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return resized.reshape(size, size, channels)


def read_image(path: Path) -> np.ndarray:
    """Decode one image file as it is stored (any depth, any channels); a clear error if it cannot be."""
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: safe with any characters in the path
    except OSError as exc:
        raise DataError(f"{path}: cannot read frame ({exc.strerror or exc})") from exc
    if data.size == 0:
        raise DataError(f"{path}: frame file is empty (0 bytes)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except (cv2.error, MemoryError) as exc:  # e.g. a damaged header claiming a huge size
        raise DataError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1][:200]})") from exc
    if image is None:
        raise DataError(f"{path}: not a readable image (corrupt, truncated or not an image)")
    return image


class Video:
    """A named sequence of frames. Subclasses say where the frames come from."""

    name: str
    path: Path

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        """Frame ``index`` as uint8 (size, size, channels)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} frames, {self.path})"


class FrameFolder(Video):
    """A folder of image files, one per frame, in sorted name order."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        if not self.path.is_dir():
            raise DataError(f"{self.path}: frame folder not found")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))
        if not self.files:
            raise DataError(f"{self.path}: no frames (no {'/'.join(sorted(IMAGE_EXTENSIONS))} files)")
        self._shape: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.files)

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        path = self.files[index]
        image = read_image(path)
        if self._shape is None:
            self._shape = image.shape[:2]
        elif image.shape[:2] != self._shape:
            raise DataError(f"{path}: frame is {image.shape[1]}x{image.shape[0]}, the video's first frame is {self._shape[1]}x{self._shape[0]}")
        return prepare_frame(image, size, channels, path)


class VideoFile(Video):
    """A video file (.avi, .mp4, ...). Decoded whole on first use: video codecs cannot seek cheaply."""

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        self._frames: list[np.ndarray] | None = None
        self._decoded_as: tuple[int, int] | None = None
        self._count: int | None = None

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise DataError(f"{self.path}: cannot open video (unknown format or damaged file)")
        return capture

    def _decode(self, size: int, channels: int) -> list[np.ndarray]:
        if self._frames is None or self._decoded_as != (size, channels):
            capture, frames = self._open(), []
            while True:
                ok, image = capture.read()
                if not ok:
                    break
                frames.append(prepare_frame(image, size, channels, self.path))
            capture.release()
            if not frames:
                raise DataError(f"{self.path}: video has no decodable frames")
            self._frames, self._decoded_as = frames, (size, channels)
        return self._frames

    def __len__(self) -> int:
        if self._frames is not None:
            return len(self._frames)
        if self._count is None:  # count by grabbing: container frame counts are often wrong
            capture, count = self._open(), 0
            while capture.grab():
                count += 1
            capture.release()
            if count == 0:
                raise DataError(f"{self.path}: video has no decodable frames")
            self._count = count
        return self._count

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        return self._decode(size, channels)[index]


class FrameRange(Video):
    """Frames ``start:stop`` of another video: the held-out tail of own footage, kept for calibration."""

    def __init__(self, video: Video, start: int, stop: int) -> None:
        self.video, self.start, self.stop = video, start, stop
        self.name, self.path = f"{video.name}[{start}:{stop}]", video.path

    def __len__(self) -> int:
        return self.stop - self.start

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.video.frame(self.start + index, size, channels)


def open_video(path: str | Path) -> Video:
    """A frame folder or a video file, chosen by what ``path`` is."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return VideoFile(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: neither a frame folder nor a video file ({'/'.join(sorted(VIDEO_EXTENSIONS))})")
