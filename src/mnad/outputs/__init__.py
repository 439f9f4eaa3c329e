"""Every output file format, written and read in one place; one module per concept:

- ``paths``: where a command writes, checked before the work (``output_path``, ``check_output_folder``,
  ``check_output_file``) and the one rule for an earlier result there (``check_replace``, ``check_replace_in``).
- ``reading``: mnad's files read checked (``read_text``, ``read_json``, ``read_json_if_present``) and the small
  checks of a JSON file's content (``is_number``, ``wrong_kinds``, ``config_problem``).
- ``names``: what each file and folder is called (``SCORES_FILE``, ``SUMMARY_FILE``, ``ROWS_DIR``...) and the names of
  a detect run's segments and maps (``frame_name``, ``segment_name``, ``row_segment_name``, ``map_name``).
- ``columns``: the per-frame columns of the two scores.csv files, an evaluation's and a detect run's, and the one
  formatter of a frame's terms both write (``frame_columns``).
- ``detect_folder``: a ``mnad detect`` run's folder, its layout and lifecycle (``DETECT_FILES``,
  ``detect_run_entries``, ``DetectFolder``, ``OldestFirst``, ``remove_segment``, ``remove_detect_temps``).
- ``evaluation``: an evaluation's scores.csv and metrics.json (``scores_csv_bytes``, ``read_scores``,
  ``metrics_json_bytes``, ``read_evaluation``, ``write_evaluation``, ``check_evaluation_output``) and the training log
  (``read_train_log``); the report's optional JSON files (provenance.json, thumbs/thumbs.json, figures/figures.json)
  are read by ``read_json_if_present`` with the check ``mnad.report.inputs`` gives for each.
- ``detect_summary``: what a detect run's summary.json files hold, a source's and the run's (``SourceSummary``,
  ``RunSummary``, ``StreamOutcome``; ``as_json`` is what is written).
- ``detect_writer``: what a detect run writes there as frames are scored (``DetectWriter``: scores.csv, events.jsonl
  and events.csv, in ``rows/<first frame>/`` each for a longer run, summary.json, ``maps/``) and reads back
  (``read_detect_scores``); with several sources, one such folder per source and a ``summary.json`` of the whole run
  beside them, which names those folders from the run's start (``write_detect_summary``; ``detect_run_entries`` reads
  it back).
- ``annotated_video``: a detect run's annotated video (``ANNOTATED_VIDEO``, ``segment_name``), written in files of
  bounded length, each read back when it closes, the oldest deleted past --video-keep (``SegmentedVideo``,
  ``encoder_rate``, ``VIDEO_SEGMENT_SECONDS``, ``FIRST_FILE_SECONDS``).

Each module imports only those above it in this list (``evaluation`` the ``detect_folder``'s checks of what a detect
run's files are, to refuse an evaluation in a detect run's folder). The names are re-exported here: ``from mnad.outputs
import X`` is the way callers import them; a test that patches a name patches it in the module that looks it up. The
report (``mnad.report``) and ``scripts/`` read these files through this package, so a change of format is made in one
place.
"""

from mnad.outputs.annotated_video import (
    FIRST_FILE_SECONDS,
    MAX_VIDEO_FPS,
    MIN_VIDEO_FPS,
    VIDEO_SEGMENT_SECONDS,
    SegmentedVideo,
    encoder_rate,
    video_files_in,
)
from mnad.outputs.columns import (
    DETECT_SCORES_HEADER,
    FRAME_COLUMNS,
    SCORES_HEADER,
    UNSMOOTHED_COLUMN,
    frame_columns,
    score_text,
    shown_score,
)
from mnad.outputs.detect_folder import (
    DETECT_FILES,
    EARLIER_DIR,
    MOVING_MARK,
    STAGING_DIR,
    DetectFolder,
    OldestFirst,
    detect_run_entries,
    detect_run_folders,
    detect_summary_problem,
    doomed_name,
    foreign_outputs,
    is_detect_scores,
    is_detect_summary,
    other_command_outputs,
    remove_detect_temps,
    remove_segment,
)
from mnad.outputs.detect_summary import RunSummary, SourceSummary, StreamOutcome
from mnad.outputs.detect_writer import (
    ROWS_SEGMENT_SECONDS,
    ROWS_TIME_SLACK,
    DetectWriter,
    event_line,
    events_after,
    first_row_frame,
    last_row_frame,
    read_detect_scores,
    row_segments_in,
    rows_after,
    wall_clock,
    write_detect_summary,
)
from mnad.outputs.evaluation import (
    EVALUATION_FILES,
    ScoredVideo,
    VideoRows,
    check_evaluation_output,
    metrics_json_bytes,
    metrics_problem,
    read_evaluation,
    read_metrics,
    read_scores,
    read_train_log,
    scores_csv_bytes,
    write_evaluation,
)
from mnad.outputs.names import (
    ANNOTATED_DIR,
    ANNOTATED_VIDEO,
    EVENTS_CSV,
    EVENTS_JSONL,
    FIGURES_DIR,
    FIGURES_INDEX,
    FRAME_DIGITS,
    MAP_FILE,
    MAP_SHARD,
    MAP_SHARD_FRAMES,
    MAPS_DIR,
    METRICS_FILE,
    OLD_ANNOTATED_VIDEO,
    ROW_FILES,
    ROW_SEGMENT,
    ROWS_DIR,
    SCORES_FILE,
    SHARD_DIGITS,
    STATE_FILE,
    STREAM_FOLDER,
    SUMMARY_FILE,
    TRAIN_LOG,
    VIDEO_SEGMENT,
    VIDEO_SUFFIX,
    frame_name,
    map_name,
    row_segment_name,
    segment_name,
)
from mnad.outputs.paths import (
    check_output_file,
    check_output_folder,
    check_replace,
    check_replace_in,
    output_path,
    writable_ancestor,
)
from mnad.outputs.reading import (
    JSON_KIND_NAMES,
    config_problem,
    is_number,
    kind_name,
    read_json,
    read_json_if_present,
    read_text,
    wrong_kinds,
)

__all__ = [
    "ANNOTATED_DIR",
    "ANNOTATED_VIDEO",
    "DETECT_FILES",
    "DETECT_SCORES_HEADER",
    "DetectFolder",
    "DetectWriter",
    "EARLIER_DIR",
    "EVALUATION_FILES",
    "EVENTS_CSV",
    "EVENTS_JSONL",
    "FIGURES_DIR",
    "FIGURES_INDEX",
    "FIRST_FILE_SECONDS",
    "FRAME_COLUMNS",
    "FRAME_DIGITS",
    "JSON_KIND_NAMES",
    "MAPS_DIR",
    "MAP_FILE",
    "MAP_SHARD",
    "MAP_SHARD_FRAMES",
    "MAX_VIDEO_FPS",
    "METRICS_FILE",
    "MIN_VIDEO_FPS",
    "MOVING_MARK",
    "OLD_ANNOTATED_VIDEO",
    "OldestFirst",
    "ROWS_DIR",
    "ROWS_SEGMENT_SECONDS",
    "ROWS_TIME_SLACK",
    "ROW_FILES",
    "ROW_SEGMENT",
    "RunSummary",
    "SCORES_FILE",
    "SCORES_HEADER",
    "SHARD_DIGITS",
    "STAGING_DIR",
    "STATE_FILE",
    "STREAM_FOLDER",
    "SUMMARY_FILE",
    "ScoredVideo",
    "SegmentedVideo",
    "SourceSummary",
    "StreamOutcome",
    "TRAIN_LOG",
    "UNSMOOTHED_COLUMN",
    "VIDEO_SEGMENT",
    "VIDEO_SEGMENT_SECONDS",
    "VIDEO_SUFFIX",
    "VideoRows",
    "check_evaluation_output",
    "check_output_file",
    "check_output_folder",
    "check_replace",
    "check_replace_in",
    "config_problem",
    "detect_run_entries",
    "detect_run_folders",
    "detect_summary_problem",
    "doomed_name",
    "encoder_rate",
    "event_line",
    "events_after",
    "first_row_frame",
    "foreign_outputs",
    "frame_columns",
    "frame_name",
    "is_detect_scores",
    "is_detect_summary",
    "is_number",
    "kind_name",
    "last_row_frame",
    "rows_after",
    "map_name",
    "metrics_json_bytes",
    "metrics_problem",
    "other_command_outputs",
    "output_path",
    "read_detect_scores",
    "read_evaluation",
    "read_json",
    "read_json_if_present",
    "read_metrics",
    "read_scores",
    "read_text",
    "read_train_log",
    "remove_detect_temps",
    "remove_segment",
    "row_segment_name",
    "row_segments_in",
    "score_text",
    "shown_score",
    "scores_csv_bytes",
    "segment_name",
    "video_files_in",
    "wall_clock",
    "writable_ancestor",
    "write_detect_summary",
    "write_evaluation",
    "wrong_kinds",
]
