"""Videos as the model's readers see them: a named sequence of frames, each read as uint8 (size, size, channels)
(``mnad.data.pixels``) from a folder of image files (``FrameFolder``), a video file decoded once to disk
(``VideoFile``) or a part of another video (``FrameRange``); ``open_video`` chooses by what a path is.
"""

from __future__ import annotations

import errno
import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mnad.data.capture import check_whole, decode_frames, opened_capture, reported_frames
from mnad.data.decoded import DecodedFrames, decode_dir, usable_space
from mnad.data.footage import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, frame_files
from mnad.data.pixels import finish_narrow, open_narrow, pixel_range_of, prepare_frame, read_image, release_narrow
from mnad.errors import ConfigError, DataError, printable


class Video:
    """A named sequence of frames. Subclasses say where the frames come from."""

    name: str
    path: Path
    keeps_frames = False  # frame() reads frames already decoded and kept (a video file's): a cache would copy them
    pixel_range: tuple[int, ...] = ()  # model.pixel_range: how 16-bit frames map onto 0..255 (to_8bit)

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        """Frame ``index`` as uint8 (size, size, channels)."""
        raise NotImplementedError

    def expected_frames(self) -> int:
        """Its length as known without decoding a video file (``VideoFile`` overrides it): for planning, not indexing."""
        return len(self)

    def frame_rate(self) -> float | None:
        """Its frame rate as its footage records it (a video file's container: ``VideoFile``), or None where none is
        known (a frame folder)."""
        return None

    def frames(self, start: int, count: int, size: int, channels: int) -> np.ndarray:
        """Frames ``start`` to ``start + count`` as uint8 (count, size, size, channels)."""
        return np.stack([self.frame(i, size, channels) for i in range(start, start + count)])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} frames, {self.path})"


class FrameFolder(Video):
    """A folder of image files (or a given list of them), one per frame, in natural name order."""

    def __init__(self, path: str | Path, name: str | None = None, *, files: list[Path] | None = None,
                 pixel_range: Sequence[int] = ()) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.pixel_range = pixel_range_of(pixel_range)
        if files is None:
            if not self.path.is_dir():
                raise DataError(f"{self.path}: frame folder not found")
            files = list(self.path.iterdir())
        self.files = frame_files(files, self.path)
        if not self.files:
            raise DataError(f"{self.path}: no frames (no {'/'.join(sorted(IMAGE_EXTENSIONS))} files)")
        self._shape: tuple[int, int] | None = None
        # a reader may stop before the 16-bit warning's decision point (a few clips): it is decided when the folder
        # is released (weakref.finalize: also at the process's end), on the frames read, none read for it
        open_narrow(self.path)
        weakref.finalize(self, release_narrow, str(self.path))

    def __len__(self) -> int:
        return len(self.files)

    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as decoded (any size and depth), checked to have the size of the video's first frame. An
        index out of range (negative included: not counted from the end) is an IndexError saying so, as a video
        file's."""
        if not 0 <= index < len(self.files):
            raise IndexError(f"{self.path}: frame {index} out of range (the folder has {len(self.files)} frames)")
        path = self.files[index]
        image = read_image(path)
        if self._shape is None:
            self._shape = image.shape[:2]
        elif image.shape[:2] != self._shape:
            raise DataError(f"{path}: frame is {image.shape[1]}x{image.shape[0]}, the video's first frame is {self._shape[1]}x{self._shape[0]}")
        return image

    def frame(self, index: int, size: int, channels: int, *, reading: int | None = None) -> np.ndarray:
        """Frame ``index``; ``reading``: the frames of it a reader reads (a part: ``FrameRange``), on which the 16-bit
        warning decides where fewer than the folder's (default: all of them)."""
        return prepare_frame(self.image(index), size, channels, self.files[index], self.pixel_range, self.path,
                             len(self.files) if reading is None else min(reading, len(self.files)))


def check_decode_room(videos: Sequence[Video], size: int, channels: int, where: str | Path | None = None) -> None:
    """One check, before any of them is decoded, that the video files among ``videos`` (whole, each of them, as
    ``VideoFile`` decodes them) fit in ``decode_dir`` at ``size``: a folder of videos that together do not fit would
    otherwise fail at the first that does not, hours of decoding in. Frame counts are the videos' own where counted,
    else their containers' (read without decoding); a video already decoded at that size needs nothing more. Said
    as one ``DataError`` naming ``where`` (default: the folder holding the videos), the space needed and available
    and TMPDIR. Each video is checked again when decoded (the disk may fill meanwhile)."""
    files = {id(v): v for v in (getattr(v, "video", v) for v in videos)  # a FrameRange decodes its whole video
             if isinstance(v, VideoFile) and (size, channels) not in v._decoded}
    if not files:
        return
    frames = sum(v.expected_frames() for v in files.values())
    need = frames * size * size * channels
    folder = decode_dir()
    if where is None:
        where = os.path.commonpath([os.path.abspath(v.path.parent) for v in files.values()])
    free, said = usable_space(folder, where)
    if need > free:
        tmpdir = f"TMPDIR is {printable(os.environ['TMPDIR'])}" if os.environ.get("TMPDIR") else "TMPDIR is not set"
        raise DataError(f"{printable(where)}: its {len(files)} video files decoded at {size}x{size} ({frames} frames) need "
                        f"{need / 1e9:.1f} GB on disk, and {said} ({tmpdir}); set TMPDIR to a folder on a disk with room "
                        "(or use a smaller model.image_size, or fewer videos)")


class VideoFile(Video):
    """A video file (.avi, .mp4, ...). Video codecs cannot seek cheaply and exactly, so the first frame asked at a size
    decodes the whole video, once, into a temporary file on disk (``decode_dir``), from which frames are then read at
    random: the decoded frames of an hour of footage at 256x256 (17.7 GB) do not fit in memory. The file is checked
    to fit (a ``DataError`` naming the video and the folder if not) and lasts as long as this object.

    Its length is the count of frames that decode (containers' counts are often wrong), so it costs a decode. A
    caller that will read every frame at one size says so with ``decode_as`` (size, channels): the length is then
    counted by that decode to disk, one pass (training, evaluation). Without it, the length asked before any frame is
    counted by a pass of its own (a caller that needs only an estimate asks ``expected_frames``: the container's, no
    decode), and the decode is a second; a process told the count by the one that decoded it (``counted_elsewhere``: torchrun's ranks) makes none."""

    keeps_frames = True

    def __init__(self, path: str | Path, name: str | None = None, *, pixel_range: Sequence[int] = (),
                 decode_as: tuple[int, int] | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.pixel_range = pixel_range_of(pixel_range)  # OpenCV decodes video to 8 bits: a range set is refused
        self.decode_as = decode_as
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        self._decoded: dict[tuple[int, int], DecodedFrames] = {}  # by (size, channels): a second size keeps the first
        self._count: int | None = None
        self._reported: int | None = None  # the container's count (0: none), read once
        self._rate: float | None = None  # the container's frame rate (0.0: none usable), read once

    def __getstate__(self) -> dict:
        # an open file does not pickle (a spawned worker): the copy decodes again when first read
        return {**self.__dict__, "_decoded": {}}

    def _open(self) -> cv2.VideoCapture:
        return opened_capture(self.path, printable(self.path))

    def _room(self, folder: Path, frames: int, frame_bytes: int, size: int) -> None:
        """A clear error, before decoding, where the decoded frames would not fit in ``folder``."""
        need = frames * frame_bytes
        free, where = usable_space(folder, self.path)
        if need > free:
            raise DataError(f"{printable(self.path)}: its {frames} frames decoded at {size}x{size} need "
                            f"{need / 1e9:.1f} GB, and {where}; set TMPDIR to a folder on a disk with room "
                            "(or use a smaller model.image_size)")

    def expected_frames(self) -> int:
        """The frames its decode will write: its count where counted, else its container's (no decode; 0 if none)."""
        if self._count is not None:
            return self._count
        if self._reported is None:
            self._read_container()
        return self._reported

    def frame_rate(self) -> float | None:
        """The frame rate its container reports, where ``mnad.data.streams.valid_fps`` takes it (as ``FrameSource`` reads
        a file's: a container may report 0, NaN or nonsense), else None; read once, without decoding."""
        if self._rate is None:
            self._read_container()
        return self._rate or None

    def _read_container(self) -> None:
        """The container's frame count and frame rate, both read by one opening of the file (no decode)."""
        from mnad.data.streams import valid_fps  # here: mnad.data.streams imports this module

        capture = self._open()
        try:
            reported, rate = reported_frames(capture), capture.get(cv2.CAP_PROP_FPS)
        finally:
            capture.release()
        self._reported, self._rate = reported, float(rate) if valid_fps(rate) else 0.0

    def counted_elsewhere(self, count: int) -> None:
        """Its length as another process counted it by its decode (the torchrun rank that scores it), for a process
        that needs the count (labels, the order of the scores) but not the frames: it is not decoded here for it. Were
        it decoded here later, the decode is checked against this count."""
        if self._count is None:
            self._count = count

    def _write_error(self, folder: Path, exc: OSError, frames: DecodedFrames) -> DataError:
        return DataError(f"{printable(self.path)}: cannot write its decoded frames to {printable(folder)} "
                         f"({exc.strerror or exc}, after {frames.count} frames of {frames.frame_bytes / 1e6:.2f} MB); "
                         "set TMPDIR to a folder on a disk with room")

    def _decode(self, size: int, channels: int) -> DecodedFrames:
        found = self._decoded.get((size, channels))
        if found is not None:
            return found
        capture, frames = self._open(), None
        folder = decode_dir()
        try:
            self._room(folder, self._count or reported_frames(capture), size * size * channels, size)
            try:
                frames = DecodedFrames(folder, size, channels)
            except OSError as exc:
                if exc.errno == errno.EMFILE:
                    raise DataError(f"{printable(self.path)}: too many video files open at once (each decoded video "
                                    "holds one file; the limit on open files is reached): raise it (ulimit -n), or "
                                    "convert the videos to frame folders") from exc
                raise DataError(f"{printable(self.path)}: cannot write its decoded frames to {printable(folder)} "
                                f"({exc.strerror or exc}); set TMPDIR to a writable folder") from exc
            written = frames

            def ended() -> None:  # every frame read, before the file's checks
                finish_narrow(self.path)  # all its frames seen: a 16-bit one's warning decides (a video of fewer than 50)
                try:
                    written.finish()
                except OSError as exc:  # the last buffered frames
                    raise self._write_error(folder, exc, written) from exc

            for image in decode_frames(capture, self.path, ended):
                frame = prepare_frame(image, size, channels, self.path, self.pixel_range)
                try:
                    frames.append(frame)
                except OSError as exc:  # the disk filled up meanwhile (other files, a count that was off)
                    raise self._write_error(folder, exc, frames) from exc
            if self._count is not None and frames.count != self._count:  # the clips were indexed by that count
                raise DataError(f"{printable(self.path)}: {frames.count} frames decode but {self._count} were counted "
                                "(a damaged file: frames that can be skipped but not decoded)")
        except BaseException:
            if frames is not None:
                frames.close()
            raise
        finally:
            capture.release()  # also where its decode never began (no room)
        self._count = frames.count
        self._decoded[(size, channels)] = frames
        return frames

    def __len__(self) -> int:
        if self._count is None and self.decode_as is not None:
            self._decode(*self.decode_as)  # counts as it decodes
        if self._count is None:  # count by grabbing: container frame counts are often wrong
            capture, count, reached = self._open(), 0, 0.0
            total, rate = reported_frames(capture), capture.get(cv2.CAP_PROP_FPS)
            while capture.grab():
                count += 1
                reached = capture.get(cv2.CAP_PROP_POS_MSEC)
            capture.release()
            if count == 0:
                raise DataError(f"{self.path}: video has no decodable frames")
            check_whole(self.path, count, total, "truncated or damaged file", fps=rate, reached_ms=reached)
            self._count = count
        return self._count

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        return self.frames(index, 1, size, channels)[0]

    def frames(self, start: int, count: int, size: int, channels: int) -> np.ndarray:
        decoded = self._decode(size, channels)
        try:
            return decoded.read(start, count)
        except OSError as exc:
            raise DataError(f"{printable(self.path)}: cannot read back its decoded frames {start}-{start + count - 1} "
                            f"({exc.strerror or exc})") from exc


class FrameRange(Video):
    """Frames ``start:stop`` of another video: the held-out tail of own footage, kept for calibration."""

    def __init__(self, video: Video, start: int, stop: int) -> None:
        self.video, self.start, self.stop = video, start, stop
        self.name, self.path = f"{video.name}[{start}:{stop}]", video.path
        self.keeps_frames = video.keeps_frames
        self.pixel_range = video.pixel_range  # frames are the video's, mapped as it maps them

    def frame_rate(self) -> float | None:
        return self.video.frame_rate()

    def __len__(self) -> int:
        return self.stop - self.start

    def frame(self, index: int, size: int, channels: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        if isinstance(self.video, FrameFolder):  # a part read alone (calibration's held-out tail): its 16-bit warning
            # decides on the part, not after frames of the folder this reader never reads
            return self.video.frame(self.start + index, size, channels, reading=len(self))
        return self.video.frame(self.start + index, size, channels)

    def frames(self, start: int, count: int, size: int, channels: int) -> np.ndarray:
        if not (0 <= start and count >= 1 and start + count <= len(self)):
            raise IndexError(start if start < 0 or start >= len(self) else start + count - 1)
        if isinstance(self.video, FrameFolder):  # frame by frame, each as ``frame`` reads it
            return Video.frames(self, start, count, size, channels)
        return self.video.frames(self.start + start, count, size, channels)


def open_video(path: str | Path, pixel_range: Sequence[int] = ()) -> Video:
    """A frame folder or a video file, chosen by what ``path`` is, its 16-bit frames mapped by ``pixel_range``."""
    path = Path(path)
    if path.is_dir():
        return FrameFolder(path, pixel_range=pixel_range)
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return VideoFile(path, pixel_range=pixel_range)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    raise DataError(f"{path}: neither a frame folder nor a video file ({'/'.join(sorted(VIDEO_EXTENSIONS))})")


def check_clip_lengths(videos: Sequence[Video], t_length: int, advice: str) -> None:
    """Refuse, before any is scored, videos shorter than one clip of ``t_length`` frames: no frame of them would be
    scored (nothing to fit or to compute an AUC from), and found only when reached they would fail hours of scoring
    in. One ``DataError`` naming the first, how many more, and ``advice`` (what to do)."""
    short = [v for v in videos if len(v) < t_length]
    if short:
        more = f" (and {len(short) - 1} more)" if len(short) > 1 else ""
        raise DataError(f"{short[0].path}: {len(short[0])} frame(s), fewer than the {t_length} of one clip, so no frame "
                        f"of it is scored{more}; {advice}")


def check_pixel_ranges(videos: Sequence[Video], pixel_range: object) -> None:
    """Refuse videos made by hand (``open_video(p)``, ``split_videos(...)`` without the range) that would read 16-bit
    frames otherwise than the model does: its thresholds or figures would come from frames it never saw."""
    wanted = pixel_range_of(pixel_range)
    wrong = [v for v in videos if tuple(getattr(v, "pixel_range", ())) != wanted]
    if wrong:
        raise ConfigError(f"{printable(wrong[0].name)}{f' and {len(wrong) - 1} other videos' if len(wrong) > 1 else ''}: read "
                          f"with pixel_range {list(getattr(wrong[0], 'pixel_range', ()))}, but the model's model.pixel_range "
                          f"is {list(wanted)}: open them with it (open_video(path, config.model.pixel_range)) or pass paths")
