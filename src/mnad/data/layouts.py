"""Where the videos of a dataset split live, for the layouts in use.

- standard (Liu et al., used by MNAD): ``<root>/<dataset>/{training,testing}/frames/<video>/<frame>.jpg``
- video files: ``<root>/<dataset>/{training,testing}/videos/<video>.avi`` or ``{training,testing}_videos/`` (Avenue)
- the original UCSD archive: ``<root>/UCSDped2/{Train,Test}/Train001/001.tif`` (``*_gt`` mask folders skipped)
- any folder of frame folders and/or video files (own footage): pass it directly; a frame folder too (its one video).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mnad.data.footage import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, folder_entries, footage_in
from mnad.data.videos import FrameFolder, Video, VideoFile, check_decode_room
from mnad.errors import DataError

UCSD_SPLITS = {"training": "Train", "testing": "Test"}
UCSD_NAMES = {"ped1": "UCSDped1", "ped2": "UCSDped2"}


def dataset_dir(data_root: str | Path, dataset: str = "") -> Path:
    """The folder that holds the splits: ``<root>/<dataset>``, its UCSD archive name, or the root itself."""
    root = Path(data_root)
    if not root.exists():
        raise DataError(f"{root}: data root not found")
    if not root.is_dir():
        raise DataError(f"{root}: data root is a file, expected a folder")
    for name in (dataset, UCSD_NAMES.get(dataset, "")):
        if name and (root / name).is_dir():
            return root / name
    if split_dir(root, "training") or split_dir(root, "testing"):
        return root
    wanted = f" (looked for {root / dataset})" if dataset else ""
    raise DataError(f"{root}: no dataset here{wanted}; expected training/ and testing/ folders (docs/data.md has the layouts)")


def split_dir(directory: Path, split: str) -> Path | None:
    candidates = [directory / split / "frames", directory / split / "videos", directory / f"{split}_videos", directory / split]
    candidates.append(directory / UCSD_SPLITS[split])
    return next((c for c in candidates if c.is_dir()), None)


def list_videos(folder: str | Path, pixel_range: Sequence[int] = (), *,
                decode_as: tuple[int, int] | None = None) -> list[Video]:
    """Every video in a folder, in sorted name order: sub-folders of frames and video files, their 16-bit frames
    mapped by ``pixel_range`` (the model's ``model.pixel_range``); a folder of frames is itself the one video. Which of
    the two a folder is, and the refusal of one that mixes them, is ``footage_in``'s rule. Only what lies directly in
    the folder is read: a sub-folder is a video (a frame folder), and one holding video files is an error saying so.
    ``decode_as`` (size, channels): the caller will read every frame at that size (training, evaluation), so each video
    file's length is counted by its one decode to disk (``VideoFile``), and the decoded frames of all of them are
    checked to fit now (``check_decode_room``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {'is a file, expected a folder of videos' if folder.exists() else 'folder not found'}")
    entries = [e for e in folder_entries(folder) if not e.name.startswith(".") and not e.name.endswith("_gt")]
    for entry in entries:
        if entry.is_symlink() and not entry.exists() and entry.suffix.lower() in VIDEO_EXTENSIONS | {""}:
            # a link to a video or frame folder that is gone (a moved disk): the video would be left out, unsaid
            raise DataError(f"{entry}: a link to {os.readlink(entry)}, which does not exist (a video left out?); "
                            "fix or remove the link")
    if footage_in(folder, entries).images:  # a single frame folder given directly
        videos: list[Video] = [FrameFolder(folder, pixel_range=pixel_range)]
    else:
        videos = [sub_folder_video(entry, folder, pixel_range) if entry.is_dir()
                  else VideoFile(entry, pixel_range=pixel_range, decode_as=decode_as)
                  for entry in entries if entry.is_dir() or entry.suffix.lower() in VIDEO_EXTENSIONS]
    if not videos:
        raise DataError(f"{folder}: no videos (no frame folders and no {'/'.join(sorted(VIDEO_EXTENSIONS))} files)")
    check_unique_names(videos, folder)
    if decode_as is not None:
        check_decode_room(videos, *decode_as, where=folder)
    return videos


def sub_folder_video(entry: Path, folder: Path, pixel_range: Sequence[int] = ()) -> FrameFolder:
    """A sub-folder of a folder of videos, which is one video: a frame folder (``footage_in``'s rule). One that holds
    video files, or frame folders, is refused as such: videos further down are not read (a folder's footage is what
    lies in it, never a guess at which sub-folders are videos and which are groups of them)."""
    footage = footage_in(entry)
    if footage.images:
        return FrameFolder(entry, pixel_range=pixel_range)
    if inside := footage.videos_held():
        raise DataError(f"{entry}: holds {' and '.join(inside)}, not frames; only the video files and frame folders "
                        f"directly in {folder} are read (a sub-folder is one video's frames): give {entry.name}/ itself "
                        f"as the footage, or move its videos up into {folder.name}/")
    folders = sorted(p.name for p in entry.iterdir() if p.is_dir())
    layout = (f"; it holds folders ({', '.join(folders[:3])}): a dataset's layout (training/frames/<video>/)? read it "
              "with --data-root and the dataset (--dataset, or a recipe's), not as own footage") if folders else ""
    raise DataError(f"{entry}: folder has no frames ({'/'.join(sorted(IMAGE_EXTENSIONS))} files){layout}")


def check_unique_names(videos: list[Video], where: str | Path) -> None:
    """Videos are told apart by name (labels, held-out videos, scores.csv, reports): a frame folder ``a/`` beside a
    video file ``a.avi`` (or ``a.avi`` beside ``a.mp4``) would be two videos named ``a``, their labels mixed up."""
    seen: dict[str, Video] = {}
    for video in videos:
        other = seen.setdefault(video.name, video)
        if other is not video:
            raise DataError(f"{where}: two videos named {video.name!r} ({Path(other.path).name} and {Path(video.path).name}); "
                            "rename one, each video needs its own name")


def find_split(data_root: str | Path, dataset: str, split: str) -> Path | None:
    """The folder of ``split`` under a dataset layout at ``data_root``; None where there is no such layout (own
    footage: the caller reads ``data_root`` as a folder of videos, and says what is wrong with it if it is none)."""
    if split not in UCSD_SPLITS:
        raise ValueError(f"split must be 'training' or 'testing', got {split!r}")
    try:
        directory = dataset_dir(data_root, dataset)
    except DataError:
        return None
    return split_dir(directory, split)


def split_videos(data_root: str | Path, dataset: str, split: str, pixel_range: Sequence[int] = (), *,
                 decode_as: tuple[int, int] | None = None) -> list[Video]:
    """The videos of ``split`` ('training' or 'testing') of a dataset, in sorted order, their 16-bit frames mapped by
    ``pixel_range`` (the model's ``model.pixel_range``); ``decode_as`` as ``list_videos`` takes it."""
    if split not in UCSD_SPLITS:
        raise ValueError(f"split must be 'training' or 'testing', got {split!r}")
    directory = dataset_dir(data_root, dataset)
    found = split_dir(directory, split)
    if found is None:
        raise DataError(f"{directory}: no {split} split (looked for {split}/frames, {split}/videos, {split}_videos, {UCSD_SPLITS[split]})")
    return list_videos(found, pixel_range, decode_as=decode_as)
