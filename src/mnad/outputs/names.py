"""What each output file and folder is called: an evaluation's and a training run's files, ``mnad detect``'s
folder (its files, its row segments, map shards and annotated video's files, named by their first frame, and a
source's folder in a run over several), and the functions that make those names."""

from __future__ import annotations

import re
from pathlib import Path

SCORES_FILE = "scores.csv"
METRICS_FILE = "metrics.json"
TRAIN_LOG = "train_log.jsonl"
FIGURES_DIR = "figures"  # `mnad figures --out <report>/figures` puts the memory figures on the report page
FIGURES_INDEX = "figures.json"

# The annotated video is Matroska (mp4v inside): a file cut short by SIGKILL or a power cut plays up to the muxer's last
# write, where an MP4 is unreadable without the index written at its close
VIDEO_SUFFIX = ".mkv"
EVENTS_JSONL, EVENTS_CSV, SUMMARY_FILE, MAPS_DIR = "events.jsonl", "events.csv", "summary.json", "maps"
STATE_FILE = "stream_state.safetensors"  # a detect source's scorer state and position, for --resume (written with summary.json)
ANNOTATED_VIDEO = f"annotated{VIDEO_SUFFIX}"
ANNOTATED_DIR = "annotated"  # the annotated video of a run longer than one segment: its files, named by their first frame
OLD_ANNOTATED_VIDEO = "annotated.mp4"  # what runs before the Matroska files wrote: still an earlier run's output
ROWS_DIR = "rows"  # the row files of a run longer than one segment (--rows-segment): rows/<first frame>/, each a segment
ROW_FILES = (SCORES_FILE, EVENTS_JSONL, EVENTS_CSV)  # a row segment's files, as a run within one segment writes them
FRAME_DIGITS = 12  # frame numbers in file names: 10**12 frames are 1,268 years at 25 fps
MAP_SHARD_FRAMES, SHARD_DIGITS = 10_000, 8  # maps/ holds folders of 10,000 maps each: 2 M files a day in one folder
# stalls `ls`, backups and some filesystems


def frame_name(index: int) -> str:
    """A frame number as file names carry it (error maps, the annotated video's segments): zero-padded to
    ``FRAME_DIGITS``, so that the names sort in frame order for any run; a run cannot know its length when it starts."""
    return f"{index:0{FRAME_DIGITS}d}"


def segment_name(first: int) -> str:
    """The annotated video's file that begins at frame ``first``, relative to the run's folder, once it has several."""
    return f"{ANNOTATED_DIR}/{frame_name(first)}{VIDEO_SUFFIX}"


def row_segment_name(first: int) -> str:
    """The row segment (scores.csv, events.jsonl, events.csv) that begins at frame ``first``, relative to the run's
    folder, once it has several: ``rows/<first frame, 12 digits>``, named as the annotated video's files are
    (``segment_name``), so that they sort in time order."""
    return f"{ROWS_DIR}/{Path(segment_name(first)).stem}"


ROW_SEGMENT = re.compile(rf"\d{{{FRAME_DIGITS}}}")  # a row segment's folder name in rows/


def map_name(index: int, kind: str) -> str:
    """Frame ``index``'s error map (``kind``: 'npy' or 'png'), relative to the run's folder:
    ``maps/<index // MAP_SHARD_FRAMES, 8 digits>/<index, 12 digits>.<kind>``; the names sort in frame order."""
    return f"{MAPS_DIR}/{index // MAP_SHARD_FRAMES:0{SHARD_DIGITS}d}/{frame_name(index)}.{kind}"


MAP_SHARD = re.compile(rf"\d{{{SHARD_DIGITS}}}")  # a map shard's folder name in maps/
MAP_FILE = re.compile(rf"\d{{{FRAME_DIGITS}}}\.(?:npy|png)")  # a map's file name in its shard
VIDEO_SEGMENT = re.compile(rf"\d{{{FRAME_DIGITS}}}{re.escape(VIDEO_SUFFIX)}")  # an annotated video's file in annotated/

STREAM_FOLDER = re.compile(r"\d+_[A-Za-z0-9._-]+")  # the name of a source's folder (detect.stream_folder): no path
