"""What mnad reads back. scores.csv (``mnad.outputs.read_scores``): numpy's parser for speed, the row-by-row reader
as the rule; both give the same videos, and a damaged file is one DataError naming the file and the line of the first
bad row. A stream state (``StreamScorer.restore``, which ``load_state`` goes through): checked for every caller."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import edited_state_metadata, tiny_config

from mnad import outputs
from mnad.calibration import Calibration
from mnad.errors import CheckpointError, DataError
from mnad.model import MNAD
from mnad.outputs import evaluation
from mnad.stream import StreamScorer, StreamState

HEADER = ",".join(outputs.SCORES_HEADER)


def by_rows(path: Path) -> list[outputs.VideoRows]:
    """What the row-by-row reader (the rule) reads of ``path``."""
    text = path.read_bytes().decode("utf-8")
    return evaluation._scores_by_rows(text, next(csv.reader(io.StringIO(text, newline=""))))


def same(got: list[outputs.VideoRows], want: list[outputs.VideoRows]) -> bool:
    def as_tuple(v: outputs.VideoRows) -> tuple:
        label = None if v.labels is None else (v.labels.dtype, v.labels.tolist())
        return (v.name, v.frames.dtype, v.frames.tolist(), v.score.dtype, np.nan_to_num(v.score, nan=-7.0).tolist(), label,
                np.nan_to_num(v.psnr, nan=-7.0).tolist(), v.updated.dtype, v.updated.tolist())

    return [as_tuple(v) for v in got] == [as_tuple(v) for v in want]


def written(tmp_path: Path, text: str, name: str = "scores.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


GOOD = {
    "written by mnad, labelled": None,  # made by scores_csv_bytes below
    "names to quote, unlabelled": None,
    "videos interleaved": "video,frame,score,label\r\na,4,0.5,0\r\nb,4,0.25,1\r\na,5,0.75,1\r\nb,5,0.125,0\r\n",
    "blank lines, spaces": "video,frame,score,label\r\n a ,4, 0.5 ,1\r\n\r\n a ,5,1e-3,0\r\n",
    "old file: no psnr, no memory_updated": "video,frame,score\na,4,0.5\na,5,0.6\n",
    "empty psnr and memory_updated": "video,frame,score,psnr,memory_updated\na,4,0.5,,\na,5,0.6,30.5,1\n",
    "line endings \\r": "video,frame,score\ra,4,0.5\ra,5,0.6\r",
    "line endings mixed": "video,frame,score\r\na,4,0.5\ra,5,0.6\na,6,0.7\r\n",
    "a value Python reads and numpy not": "video,frame,score\na,4_0,1_5\n",
    "non-finite scores (refused by the report, not here)": "video,frame,score\na,4,nan\na,5,inf\na,6,-Infinity\n",
    "extra columns, repeated names": "video,frame,score,note,score\na,4,0.5,hi there,0.7\n",
    "header only": HEADER + "\r\n",
}


def good_text(case: str) -> str:
    if case == "written by mnad, labelled":
        videos = [SimpleNamespace(name=n, frames=np.arange(4, 9), psnr=np.linspace(20, 30, 5), patch_psnr=np.linspace(10, 20, 5),
                                  distance=np.full(5, 3.75e-6), patch_distance=np.full(5, 1e-9), regular=np.linspace(0, 1, 5),
                                  updated=np.array([1, 0, 0, 1, 0]), score=np.linspace(0, 1, 5), labels=np.array([0, 0, 1, 1, 0]))
                  for n in ("01", "02")]
        return outputs.scores_csv_bytes(videos).decode()
    if case == "names to quote, unlabelled":
        videos = [SimpleNamespace(name=n, frames=np.arange(3), psnr=np.ones(3), patch_psnr=np.ones(3), distance=np.ones(3),
                                  patch_distance=np.ones(3), regular=np.ones(3), updated=np.zeros(3, int), score=np.arange(3.0),
                                  labels=None)
                  for n in ('a,b', 'say "hi"', "two\nlines", "café #1", "", "cr\r\nlf")]
        return outputs.scores_csv_bytes(videos).decode()
    return GOOD[case]


@pytest.mark.parametrize("case", list(GOOD))
def test_the_fast_reader_reads_what_the_row_by_row_reader_reads(tmp_path: Path, case: str) -> None:
    path = written(tmp_path, good_text(case))
    got = outputs.read_scores(path)
    assert same(got, by_rows(path))
    if case == "videos interleaved":
        assert [v.name for v in got] == ["a", "b"] and got[0].frames.tolist() == [4, 5] and got[1].labels.tolist() == [1, 0]
    if case == "names to quote, unlabelled":
        assert [v.name for v in got] == ['a,b', 'say "hi"', "two\nlines", "café #1", "", "cr\r\nlf"] and got[0].labels is None
    if case == "extra columns, repeated names":
        assert got[0].score.tolist() == [0.7]  # the last column of a name, as csv.DictReader takes it


@pytest.mark.parametrize(("body", "said"), [
    ("a,4,0.5\na,5,high\n", r"line 3: score 'high' is not a number"),
    ("a,4,0.5\na,4.5,0.5\n", r"line 3: frame '4.5' is not an integer"),
    ("a,4,0.5\n\na,5\n", r"line 4: 2 fields, the header has 3"),  # a row cut short (was: its score read as NaN)
    ("a,4,0.5\n  \n", r"line 3: 1 fields, the header has 3"),
    ("a,4,0.5,9\n", r"line 2: 4 fields, the header has 3"),  # a name with an unquoted comma shifts the columns
    ("a,99999999999999999999,0.5\n", r"line 2: frame '99999999999999999999' is out of range"),  # was: a traceback
])
def test_a_bad_row_is_named_by_its_line(tmp_path: Path, body: str, said: str) -> None:
    path = written(tmp_path, "video,frame,score\n" + body)
    with pytest.raises(DataError, match=rf"scores\.csv: not an mnad scores file \({said}\)"):
        outputs.read_scores(path)


def test_labels_are_checked_per_row(tmp_path: Path) -> None:
    header = "video,frame,score,label\n"
    with pytest.raises(DataError, match=r"scores\.csv: not an mnad scores file \(line 3: label 'x' is not an integer\)"):
        outputs.read_scores(written(tmp_path, header + "a,4,0.5,1\na,5,0.5,x\n"))
    # a video labelled on some rows only (was: read as unlabelled, dropped from the ROC without a word)
    with pytest.raises(DataError, match=r"line 4: video 'a' has no label here and one on line 2"):
        outputs.read_scores(written(tmp_path, header + "a,4,0.5,1\nb,4,0.5,\na,5,0.5,\n"))
    assert outputs.read_scores(written(tmp_path, header + "a,4,0.5,1\nb,4,0.5,\n"))[1].labels is None  # per video


def test_a_quoted_field_left_open_is_named(tmp_path: Path) -> None:
    path = written(tmp_path, 'video,frame,score\na,4,0.5\n"b,5,0.5\n')
    with pytest.raises(DataError, match=r"scores\.csv: not an mnad scores file \(line 3: "):
        outputs.read_scores(path)


def test_a_file_mnad_writes_is_read_by_numpy_not_row_by_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast reader is the one that runs on mnad's own files (row by row, a day of a camera, 1 M rows, takes 4x as long)."""
    path = written(tmp_path, good_text("written by mnad, labelled") + good_text("names to quote, unlabelled").split("\n", 1)[1])

    def refused(*args: object) -> None:
        raise AssertionError("read row by row")

    monkeypatch.setattr(evaluation, "_scores_by_rows", refused)
    assert [v.name for v in outputs.read_scores(path)] == ["01", "02", 'a,b', 'say "hi"', "two\nlines", "café #1", "", "cr\r\nlf"]


# ------------------------------------------------------------------------------------------ a stream state restored


def stream_scorer(*overrides: str, seed: int = 0, **options: object) -> StreamScorer:
    torch.manual_seed(seed)
    config = tiny_config().override(list(overrides))
    return StreamScorer.for_model(MNAD(config.model).eval(), config, **options)


def pushed(scorer: StreamScorer, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [scorer.push(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def test_a_state_restored_in_python_continues_exactly() -> None:
    whole, first, second = (stream_scorer(normalization="causal", smoothing=3) for _ in range(3))
    rng = np.random.default_rng(0)
    video = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(12)]
    want = [whole.push(f) for f in video]
    head = [first.push(f) for f in video[:7]]
    second.restore(first.state())
    got = head + [second.push(f) for f in video[7:]]
    assert [(r.index, r.smoothed) for r in got if r] == [(r.index, r.smoothed) for r in want if r]


CALIBRATION = Calibration(psnr_low=5.0, psnr_high=40.0, distance_low=0.0, distance_high=2.0, threshold=0.5,
                          false_alarm_rate=0.05, smoothing=5, frames=100)


@pytest.mark.parametrize(("restored_into", "said"), [
    (lambda: stream_scorer(seed=1, normalization="causal"), r"model '[0-9a-f]{64}' \(this scorer: '[0-9a-f]{64}'\)"),
    (lambda: stream_scorer("eval.alpha=0.9", normalization="causal"), r"alpha 0\.6 \(this scorer: 0\.9\)"),
    (lambda: stream_scorer(normalization="causal", smoothing=3), r"smoothing 5 \(this scorer: 3\)"),
    (lambda: stream_scorer(normalization="calibrated", calibration=CALIBRATION), r"normalization 'causal' \(this scorer: 'calibrated'\)"),
], ids=["other-weights", "other-alpha", "other-smoothing", "other-normalisation"])
def test_restore_refuses_a_state_of_another_model_or_scorer(restored_into, said: str) -> None:
    """(was: taken by restore(), which only load_state checked: wrong scores without a word)"""
    first = stream_scorer("eval.alpha=0.6", normalization="causal", smoothing=5)
    pushed(first, 6)
    target = restored_into()
    before = target.state()
    with pytest.raises(CheckpointError, match=r"^the stream state belongs to another model or scorer: .*" + said):
        target.restore(first.state())
    assert target.state().frames_seen == before.frames_seen == 0  # nothing changed


def damaged(state: StreamState, **fields: object) -> StreamState:
    return StreamState(**{**vars(state), **fields})


@pytest.mark.parametrize(("change", "said"), [
    (lambda s: damaged(s, belongs_to=None), r"does not record the model it belongs to"),
    (lambda s: damaged(s, items=s.items.double()), r"memory items must be torch\.float32 \(10, 64\), got torch\.float64"),
    (lambda s: damaged(s, items=s.items[:5]), r"memory items must be torch\.float32 \(10, 64\), got torch\.float32 \(5, 64\)"),
    (lambda s: damaged(s, items=s.items.fill_(float("nan"))), r"memory items hold NaN"),
    (lambda s: damaged(s, items=None), r"memory items must be .*got None"),
    (lambda s: damaged(s, frames_seen=-1), r"frames_seen must be an integer >= 0, got -1"),
    (lambda s: damaged(s, frames_seen="6"), r"frames_seen must be an integer >= 0, got '6'"),
    (lambda s: damaged(s, window=s.window[:1]), r"window must hold the last 5 of its 6 frames seen .*got 1 frames"),
    (lambda s: damaged(s, window=[w.astype(np.float32) for w in s.window]), r"window frame 0: expected a numpy uint8 array"),
    (lambda s: damaged(s, psnr_range=(30.0, float("nan"))), r"psnr_range must be \(low, high\)"),
    (lambda s: damaged(s, distance_range=(2.0, 1.0)), r"distance_range must be \(low, high\), finite with low <= high"),
    (lambda s: damaged(s, psnr_range=None), r"psnr_range must be"),
    (lambda s: damaged(s, recent=[0.5, float("inf")]), r"recent must be at most 5 finite scores"),
    (lambda s: damaged(s, recent=[0.5] * 6), r"recent must be at most 5 finite scores"),
    (lambda s: damaged(s, recent="0.5"), r"recent must be at most 5 finite scores"),
    (lambda s: {"items": s.items}, r"must be a StreamState .*got a dict"),
], ids=["no-record", "items-dtype", "items-shape", "items-nan", "items-none", "seen-negative", "seen-text", "window-short",
        "window-float", "psnr-nan", "distance-reversed", "psnr-none", "recent-inf", "recent-long", "recent-text", "dict"])
def test_restore_refuses_a_damaged_state_with_one_error(change, said: str) -> None:
    """(was: a traceback at restore or a later frame, or wrong scores)"""
    first = stream_scorer(normalization="causal", smoothing=5)
    pushed(first, 6)
    target = stream_scorer(normalization="causal", smoothing=5)
    with pytest.raises(CheckpointError, match=r"^the stream state.*" + said):
        target.restore(change(first.state()))
    assert target.state().frames_seen == 0 and target.state().window == []  # nothing changed
    target.restore(first.state())  # the whole one: taken
    assert target.state().frames_seen == 6


def test_load_state_checks_the_metadata_as_restore_does(tmp_path: Path) -> None:
    """Metadata edited by hand (its hash made again) is checked all the same: said, naming the file (was: KeyError,
    TypeError)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    first = stream_scorer(normalization="causal", smoothing=5)
    pushed(first, 6)
    path = tmp_path / "state.safetensors"
    first.save_state(path)
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    for edit, said in [(lambda i: i.pop("frames_seen"), r"frames_seen must be an integer >= 0, got None"),
                       (lambda i: i.update(recent={"a": 1}), r"recent must be at most 5 finite scores"),
                       (lambda i: i.update(psnr_range=[1]), r"psnr_range must be")]:
        info = json.loads(meta["mnad_stream_state"])
        edit(info)
        save_file(tensors, str(path), metadata=edited_state_metadata(meta, info))
        with pytest.raises(CheckpointError, match=r"state\.safetensors: the stream state's " + said):
            stream_scorer(normalization="causal", smoothing=5).load_state(path)
