from mnad.data.clips import ClipDataset, FrameStore, split_clip, to_tensor
from mnad.data.labels import find_label_file, load_labels
from mnad.data.layouts import dataset_dir, list_videos, split_videos
from mnad.data.videos import FrameFolder, Video, VideoFile, open_video

__all__ = [
    "ClipDataset",
    "FrameFolder",
    "FrameStore",
    "Video",
    "VideoFile",
    "dataset_dir",
    "find_label_file",
    "list_videos",
    "load_labels",
    "open_video",
    "split_clip",
    "split_videos",
    "to_tensor",
]
