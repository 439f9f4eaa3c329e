"""`mnad detect --resume`: a killed or stopped run continues in its --out. Each source's scorer state is saved with its
summary.json (``STATE_FILE``); a resumed file continues where it stopped (its scores those of an uninterrupted run), a
resumed camera keeps its memory, normaliser and trailing mean and numbers its frames after the earlier ones; the
earlier rows stay as they are, the summary counts the whole run. And a run that scored nothing leaves no outputs."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import frames_folder, tiny_config
from safetensors import safe_open

import mnad.detect
from mnad.checkpoint import load_model, save_model
from mnad.cli import main
from mnad.data.streams import FrameSource, RawFrame
from mnad.detect import DetectOptions, detect, stream_folder
from mnad.errors import ConfigError, DataError
from mnad.model import MNAD
from mnad.outputs import STATE_FILE, SUMMARY_FILE, read_detect_scores
from mnad.stream import StreamScorer


def _model(folder: Path, seed: int = 0, **settings: object) -> tuple[MNAD, object, Path]:
    torch.manual_seed(seed)
    config = tiny_config(**settings)
    path = folder / f"m{seed}.safetensors"
    save_model(path, MNAD(config.model), config)
    model, config = load_model(path)
    return model, config, path


def _same_scores(full: list[dict], resumed: list[dict], tolerance: float = 1e-5) -> None:
    assert [r["frame"] for r in resumed] == [r["frame"] for r in full]
    for a, b in zip(full, resumed, strict=True):
        assert a["time"] == b["time"]
        for key in ("psnr", "distance", "score", "smoothed_score"):
            if key in a:
                assert float(b[key]) == pytest.approx(float(a[key]), abs=tolerance), (key, a, b)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a command that failed (the scoring path's line may come before it), no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mnad: error:")]
    assert len(errors) == 1 and "Traceback" not in err and err.strip().splitlines()[-1] == errors[0], err
    return errors[0]


def _kill_at(monkeypatch: pytest.MonkeyPatch, frame: int) -> None:
    """The next run dies as a SIGKILL would kill it at ``frame``: nothing is completed (no close, no final summary or
    state), what it wrote while it ran stays."""
    score = mnad.detect._SourceRun.score

    def dying(self, row):  # noqa: ANN001, ANN202
        if self.base + row.index >= frame:
            raise RuntimeError("killed")
        score(self, row)

    monkeypatch.setattr(mnad.detect._SourceRun, "score", dying)
    monkeypatch.setattr(mnad.detect._SourceRun, "close", lambda self, *args: None)


def test_a_file_run_stopped_by_max_frames_resumes_as_one_run(tmp_path: Path) -> None:
    model, config, _ = _model(tmp_path)
    frames = str(frames_folder(tmp_path / "f", 30))
    full = detect(model, config, frames, tmp_path / "full", progress=False)
    first = detect(model, config, frames, tmp_path / "o", DetectOptions(max_frames=12), progress=False)
    assert first["resumed"] == 0 and (tmp_path / "o" / STATE_FILE).is_file()
    earlier = (tmp_path / "o" / "scores.csv").read_bytes()
    summary = detect(model, config, frames, tmp_path / "o", DetectOptions(resume=True), progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(tmp_path / "o"))
    assert summary["resumed"] == 1 and summary["frames_scored"] == full["frames_scored"] == 26
    assert summary["ended_by"] == "end of source" and summary["complete"] is True
    # the earlier rows are kept as written, in their own segment; the resumed run's follow in another
    assert summary["row_segments"] == ["rows/000000000004", "rows/000000000012"]
    assert (tmp_path / "o" / "rows" / "000000000004" / "scores.csv").read_bytes() == earlier
    # a run that ended at the end of its file resumes to nothing more, and says so as a whole run
    again = detect(model, config, frames, tmp_path / "o", DetectOptions(resume=True), progress=False)
    assert again["resumed"] == 2 and again["frames_scored"] == 26 and len(read_detect_scores(tmp_path / "o")) == 26


def test_a_killed_run_resumes_where_its_state_was_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A motion-cues model (its scores 2 frames late): the state saved at the first scored frame, rows written after it
    up to the kill, a last row cut by it. The resumed run scores again from the saved state, writes only the rows the
    killed run did not, and its scores are those of an uninterrupted run."""
    model, config, _ = _model(tmp_path, task="recon", t_length=5)
    frames = str(frames_folder(tmp_path / "f", 40))
    full = detect(model, config, frames, tmp_path / "full", progress=False)
    assert full["latency_frames"] == 2
    with monkeypatch.context() as patch:
        _kill_at(patch, 20)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, tmp_path / "o", progress=False)
    killed = json.loads((tmp_path / "o" / SUMMARY_FILE).read_text())
    assert killed["complete"] is False and killed["frames_scored"] == 1  # the summary (and state) of its first frame
    with (tmp_path / "o" / "scores.csv").open("a") as rows:
        rows.write("20,0.8")  # the row the kill cut
    earlier = (tmp_path / "o" / "scores.csv").read_bytes()
    summary = detect(model, config, frames, tmp_path / "o", DetectOptions(resume=True), progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(tmp_path / "o"))
    assert summary["frames_scored"] == full["frames_scored"] == 36 and summary["resumed"] == 1
    assert summary["row_segments"] == ["rows/000000000002", "rows/000000000020"]
    assert (tmp_path / "o" / "rows" / "000000000002" / "scores.csv").read_bytes() == earlier  # cut line and all


def _camera(monkeypatch: pytest.MonkeyPatch, frames: int, seed: int) -> None:
    """Every live source gives ``frames`` frames of noise, timed off the wall clock, then ends."""
    def live(self):  # noqa: ANN001, ANN202
        self.clocked, self.clock_start, self.fps = True, time.time(), 25.0
        started, rng = time.monotonic(), np.random.default_rng(seed)
        for _ in range(frames):  # timed as a camera's frames are: seconds after clock_start
            yield RawFrame(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), time.monotonic() - started)

    monkeypatch.setattr(FrameSource, "_live", live)


def test_a_camera_resumes_with_its_memory_and_numbers_its_frames_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, config, _ = _model(tmp_path)
    config = config.override(["eval.gamma=1e6"])  # every frame updates the memory (E_t < gamma)
    camera = "rtsp://camera.local/stream"
    _camera(monkeypatch, 12, seed=0)
    first = detect(model, config, camera, tmp_path / "o", progress=False)
    assert first["frames_scored"] == 8
    with safe_open(str(tmp_path / "o" / STATE_FILE), framework="pt") as handle:
        saved = handle.get_tensor("items")
    assert not torch.equal(saved, model.memory.items.cpu())  # updated at test time: carrying it on is seen
    seen: list[torch.Tensor] = []
    take = mnad.detect._SourceRun.take

    def taking(self, item):  # noqa: ANN001, ANN202
        if not seen:
            seen.append(self.scorer.items)
        return take(self, item)

    monkeypatch.setattr(mnad.detect._SourceRun, "take", taking)
    _camera(monkeypatch, 10, seed=1)
    summary = detect(model, config, camera, tmp_path / "o", DetectOptions(resume=True), progress=False)
    assert torch.equal(seen[0], saved)  # the memory the earlier run left, before the first new frame
    rows = read_detect_scores(tmp_path / "o")
    # the new footage is no continuation of the old: its frames 12-21, the first clip complete at 16 (a gap, counted)
    assert [int(r["frame"]) for r in rows] == [*range(4, 12), *range(16, 22)]
    assert summary["frames_scored"] == 14 and summary["reconnections"] == 1 and summary["resumed"] == 1
    assert summary["clock_start"] == first["clock_start"]  # one clock for the whole run: times go on from it
    assert float(rows[8]["time"]) >= float(rows[7]["time"])


def test_several_sources_resume_each_in_its_folder(tmp_path: Path) -> None:
    model, config, _ = _model(tmp_path)
    sources = [str(frames_folder(tmp_path / f"cam{i}", 20)) for i in range(2)]
    full = detect(model, config, sources, tmp_path / "full", progress=False)
    detect(model, config, sources, tmp_path / "o", DetectOptions(max_frames=9), progress=False)
    summary = detect(model, config, sources, tmp_path / "o", DetectOptions(resume=True), progress=False)
    assert summary["resumed"] == 1 and summary["frames_scored"] == full["frames_scored"] == 32
    for i, source in enumerate(sources):
        name = stream_folder(i, source, 2)
        # batched with the other source's frames as they came: equal up to the rounding of batched kernels
        _same_scores(read_detect_scores(tmp_path / "full" / name), read_detect_scores(tmp_path / "o" / name), 1e-3)
    with pytest.raises(DataError, match="the earlier run scored other sources"):  # not the same sources
        detect(model, config, sources[:1] + [str(frames_folder(tmp_path / "other", 8))], tmp_path / "o",
               DetectOptions(resume=True), progress=False)


def test_resume_without_an_earlier_run_starts_afresh_but_not_among_other_files(model_file: Path, tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A service whose command line always carries --resume (systemd Restart=always) starts on its first run: an --out
    that is missing or empty starts afresh, said in one line (was: refused). A folder of other files stays refused."""
    frames = str(frames_folder(tmp_path / "f", 8))
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "o", tmp_path / "empty"):
        assert main(["detect", frames, "--checkpoint", str(model_file), "--out", str(out), "--resume"]) == 0
        assert "no earlier detect run to resume: it starts afresh" in capsys.readouterr().err
        summary = json.loads((out / SUMMARY_FILE).read_text())
        assert summary["frames_scored"] == 4 and summary["resumed"] == 0 and (out / STATE_FILE).is_file()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's")
    assert main(["detect", frames, "--checkpoint", str(model_file), "--out", str(tmp_path / "mine"), "--quiet", "--resume"]) == 2
    assert "no earlier detect run to resume" in _error_line(capsys)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_resume_with_overwrite_is_refused(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="--resume continues the run in --out and --overwrite replaces it"):
        DetectOptions(resume=True, overwrite=True)
    with pytest.raises(ConfigError, match="--resume must be true or false"):
        DetectOptions(resume="yes")  # type: ignore[arg-type]
    frames = str(frames_folder(tmp_path / "f", 8))
    assert main(["detect", frames, "--checkpoint", str(model_file), "--out", str(tmp_path / "o"), "--quiet", "--resume",
                 "--overwrite"]) == 2
    assert _error_line(capsys).startswith("mnad: error: --resume continues")


def test_another_models_state_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, config, path = _model(tmp_path)
    _, _, other = _model(tmp_path, seed=1)
    frames = str(frames_folder(tmp_path / "f", 12))
    detect(model, config, frames, tmp_path / "o", DetectOptions(max_frames=8), progress=False)
    before = sorted((p.relative_to(tmp_path / "o"), p.read_bytes()) for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert main(["detect", frames, "--checkpoint", str(other), "--out", str(tmp_path / "o"), "--quiet", "--resume"]) == 2
    err = _error_line(capsys)
    assert str(tmp_path / "o" / STATE_FILE) in err and "another model" in err and "start afresh with --overwrite" in err
    after = sorted((p.relative_to(tmp_path / "o"), p.read_bytes()) for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert after == before  # nothing of the earlier run touched
    # the right model, in the precision the run scored in (the API's default fp32; the command line's is bf16 where native)
    assert main(["detect", frames, "--checkpoint", str(path), "--out", str(tmp_path / "o"), "--quiet", "--resume", "--fp32"]) == 0


def test_a_damaged_state_is_refused(tmp_path: Path) -> None:
    model, config, _ = _model(tmp_path)
    frames = str(frames_folder(tmp_path / "f", 12))
    detect(model, config, frames, tmp_path / "o", DetectOptions(max_frames=8), progress=False)
    state = tmp_path / "o" / STATE_FILE
    data = bytearray(state.read_bytes())
    data[-1] ^= 0xFF  # a byte of the last tensor (a window frame)
    state.write_bytes(bytes(data))
    with pytest.raises(DataError, match="hash does not match its contents"):
        detect(model, config, frames, tmp_path / "o", DetectOptions(resume=True), progress=False)


def test_a_state_saved_without_detects_position_is_refused(tmp_path: Path) -> None:
    model, config, _ = _model(tmp_path)
    frames = str(frames_folder(tmp_path / "f", 12))
    detect(model, config, frames, tmp_path / "o", DetectOptions(max_frames=8), progress=False)
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    scorer.load_state(tmp_path / "o" / STATE_FILE)
    scorer.save_state(tmp_path / "o" / STATE_FILE)  # the API's own state: no position, no counts
    with pytest.raises(DataError, match="not a detect run's stream state"):
        detect(model, config, frames, tmp_path / "o", DetectOptions(resume=True), progress=False)


@pytest.mark.parametrize("clock", [-5.0, "yesterday", True, [1.7e9]])
def test_a_state_whose_clock_is_no_wall_clock_time_is_refused(tmp_path: Path, clock: object) -> None:
    """A state made by hand (save_state with another extra, or JSON edited and its hashes made again): a camera's later
    frame and event times count from its clock_start, so one that is no time (was: taken if a number, NaN giving NaN
    times; else dropped silently) is refused like any other field that is not a detect run's."""
    model, config, _ = _model(tmp_path)
    frames = str(frames_folder(tmp_path / "f", 12))
    detect(model, config, frames, tmp_path / "o", DetectOptions(max_frames=8), progress=False)
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    extra = scorer.load_state(tmp_path / "o" / STATE_FILE)
    scorer.save_state(tmp_path / "o" / STATE_FILE, extra | {"clock_start": clock})
    with pytest.raises(DataError, match=r"clock_start .* is no wall-clock time"):
        detect(model, config, frames, tmp_path / "o", DetectOptions(resume=True), progress=False)


def test_save_state_keeps_the_callers_extra_under_its_hash(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    scorer.save_state(tmp_path / "s.safetensors", {"position": 7, "names": ["a"]})
    assert StreamScorer.for_model(model, config, normalization="causal").load_state(tmp_path / "s.safetensors") == {
        "position": 7, "names": ["a"]}
    scorer.save_state(tmp_path / "t.safetensors")
    assert scorer.load_state(tmp_path / "t.safetensors") == {}
    with pytest.raises(ConfigError, match="extra must be a JSON object"):
        scorer.save_state(tmp_path / "u.safetensors", {"x": float("nan")})
    with pytest.raises(ConfigError, match="extra must be a dict"):
        scorer.save_state(tmp_path / "u.safetensors", [1])  # type: ignore[arg-type]
    assert not (tmp_path / "u.safetensors").exists()


def test_a_run_that_scores_nothing_leaves_no_outputs(model_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = str(frames_folder(tmp_path / "f", 8))
    out = tmp_path / "o"
    args = ["detect", frames, "--checkpoint", str(model_file), "--out", str(out), "--quiet"]
    assert main([*args, "--max-frames", "3"]) == 2  # fewer frames than one clip of 5
    assert "no frame was scored" in capsys.readouterr().err
    assert not out.exists() or not [p for p in out.iterdir() if p.name != ".lock"]
    assert main(args) == 0  # the retry is no "earlier run"
    assert len(read_detect_scores(out)) == 4


RUN = """
import sys
import mnad.detect
from mnad.checkpoint import load_model
from mnad.detect import DetectOptions, detect
mnad.detect.SUMMARY_SECONDS = 0.05
model, config = load_model(sys.argv[1])
detect(model, config, sys.argv[2], sys.argv[3], DetectOptions(), progress=False)
"""


def test_a_run_killed_by_sigkill_resumes(model_file: Path, tmp_path: Path) -> None:
    from conftest import kill_when

    model, config = load_model(model_file)
    frames = str(frames_folder(tmp_path / "f", 300))
    out = tmp_path / "o"

    def scored() -> int:
        try:
            return json.loads((out / SUMMARY_FILE).read_text())["frames_scored"]
        except (FileNotFoundError, ValueError):
            return 0

    kill_when(RUN, [str(model_file), frames, str(out)], lambda: scored() >= 20)
    killed = json.loads((out / SUMMARY_FILE).read_text())
    assert killed["complete"] is False and (out / STATE_FILE).is_file()
    full = detect(model, config, frames, tmp_path / "full", progress=False)
    summary = detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(out))
    assert summary["frames_scored"] == full["frames_scored"] == 296 and summary["resumed"] == 1


def test_a_resumed_run_keeps_the_earlier_maps_and_video_and_adds_its_own(model_file: Path, tmp_path: Path) -> None:
    model, config = load_model(model_file)
    frames = str(frames_folder(tmp_path / "f", 16))
    out = tmp_path / "o"
    options = {"save_video": True, "save_maps": "npy"}
    detect(model, config, frames, out, DetectOptions(max_frames=9, **options), progress=False)
    earlier_video = (out / "annotated.mkv").read_bytes()
    summary = detect(model, config, frames, out, DetectOptions(resume=True, **options), progress=False)
    assert summary["annotated_video_files"] == ["annotated/000000000004.mkv", "annotated/000000000009.mkv"]
    assert (out / "annotated" / "000000000004.mkv").read_bytes() == earlier_video
    assert sorted(p.name for p in (out / "maps" / "00000000").iterdir()) == [f"{i:012d}.npy" for i in range(4, 16)]


def test_a_sources_folder_without_a_state_is_not_written_over(tmp_path: Path) -> None:
    model, config, _ = _model(tmp_path)
    sources = [str(frames_folder(tmp_path / f"cam{i}", 12)) for i in range(2)]
    detect(model, config, sources, tmp_path / "o", DetectOptions(max_frames=8), progress=False)
    state = tmp_path / "o" / stream_folder(1, sources[1], 2) / STATE_FILE
    state.unlink()  # as a run killed before that source's first summary leaves it
    rows = (state.parent / "scores.csv").read_bytes()
    with pytest.raises(DataError, match="no stream state here"):
        detect(model, config, sources, tmp_path / "o", DetectOptions(resume=True), progress=False)
    assert (state.parent / "scores.csv").read_bytes() == rows


def test_a_video_file_resumes_after_the_frames_it_took(model_file: Path, tmp_path: Path) -> None:
    """A video file's frames before the saved position are decoded and dropped (seeking is not frame-exact)."""
    from conftest import noise_video

    model, config = load_model(model_file)
    video = str(noise_video(tmp_path / "v.avi", 24, 25.0))
    full = detect(model, config, video, tmp_path / "full", progress=False)
    detect(model, config, video, tmp_path / "o", DetectOptions(max_frames=10), progress=False)
    summary = detect(model, config, video, tmp_path / "o", DetectOptions(resume=True), progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(tmp_path / "o"))
    assert summary["frames_scored"] == full["frames_scored"] == 20


def test_max_frames_scores_the_first_frames_of_a_late_scoring_model_and_a_resume_the_next(tmp_path: Path) -> None:
    """A reconstruction model whose target is its clip's middle frame (t_length 5: frame t scored once t + 2 has
    arrived) reads 2 frames more than --max-frames N, so that the first N frames are scored (frames 0 and 1 no clip
    can score); a resumed run's --max-frames M scores the next M (was: N read, 8 and 9 never scored, 6 rows)."""
    model, config, _ = _model(tmp_path, task="recon", t_length=5)
    frames = str(frames_folder(tmp_path / "f", 30))
    out = tmp_path / "o"
    first = detect(model, config, frames, out, DetectOptions(max_frames=10), progress=False)
    assert first["ended_by"] == "--max-frames" and first["frames_scored"] == 8
    assert [int(r["frame"]) for r in read_detect_scores(out)] == list(range(2, 10))
    second = detect(model, config, frames, out, DetectOptions(max_frames=5, resume=True), progress=False)
    assert second["ended_by"] == "--max-frames" and second["frames_scored"] == 13
    assert [int(r["frame"]) for r in read_detect_scores(out)] == list(range(2, 15))
    detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    full = detect(model, config, frames, tmp_path / "full", progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(out))
    assert full["frames_scored"] == 26


def test_a_run_killed_before_its_first_frame_resumes_from_the_start_in_place(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed before it scored a frame leaves header-only row files (and an empty maps/), no state: a plain rerun
    takes them for an earlier run's, and --resume starts the source from its beginning there (nothing of it is lost:
    it scored nothing; was: "nothing to resume", leaving only --overwrite). Rows without a state stay refused."""
    model, config, _ = _model(tmp_path)
    frames = str(frames_folder(tmp_path / "f", 12))
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        _kill_at(patch, 0)
        patch.setattr(mnad.detect, "_remove_outputs", lambda *args: None)  # a kill removes nothing
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, DetectOptions(save_maps="npy"), progress=False)
    assert (out / "scores.csv").is_file() and (out / "maps").is_dir() and not (out / STATE_FILE).exists()
    assert not read_detect_scores(out)
    with pytest.raises(DataError, match="holds the outputs of an earlier run"):
        detect(model, config, frames, out, DetectOptions(save_maps="npy"), progress=False)
    full = detect(model, config, frames, tmp_path / "full", DetectOptions(save_maps="npy"), progress=False)
    summary = detect(model, config, frames, out, DetectOptions(save_maps="npy", resume=True), progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(out))
    assert summary["frames_scored"] == full["frames_scored"] == 8 and summary["resumed"] == 0
    assert summary["row_segments"] == ["."] and (out / STATE_FILE).is_file()
    assert sorted(p.name for p in (out / "maps" / "00000000").iterdir()) == [f"{i:012d}.npy" for i in range(4, 12)]
    # the summary.json of a run that had not yet scored a frame (frames_scored 0) is no obstacle either
    (out / STATE_FILE).unlink()
    for name in ("scores.csv", "events.csv", "events.jsonl"):
        lines = (tmp_path / "full" / name).read_text().splitlines(keepends=True)
        (out / name).write_text(lines[0] if lines else "")
    (out / SUMMARY_FILE).write_text(json.dumps({**full, "frames_scored": 0, "complete": False, "ended_by": None}))
    for path in sorted((out / "maps").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    again = detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    assert again["frames_scored"] == 8 and not (out / "maps").exists()
    # rows but no state: not started afresh over them
    (out / STATE_FILE).unlink()
    rows = (out / "scores.csv").read_bytes()
    with pytest.raises(DataError, match="no stream state here, beside rows"):
        detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    assert (out / "scores.csv").read_bytes() == rows


def test_several_sources_killed_before_their_first_frame_resume_from_the_start(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's summary.json (frames_scored 0, written at its start) and each source's header-only folder: --resume
    starts every source afresh in its folder."""
    model, config, _ = _model(tmp_path)
    sources = [str(frames_folder(tmp_path / f"cam{i}", 10)) for i in range(2)]
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        _kill_at(patch, 0)
        patch.setattr(mnad.detect, "_complete", lambda *args: ([None, None], None, []))  # a kill completes nothing
        patch.setattr(mnad.detect, "_remove_outputs", lambda *args: None)  # and removes nothing
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, sources, out, progress=False)
    killed = json.loads((out / SUMMARY_FILE).read_text())
    assert killed["frames_scored"] == 0 and killed["complete"] is False
    names = [stream_folder(i, s, 2) for i, s in enumerate(sources)]
    assert any((out / n / "scores.csv").is_file() for n in names)
    assert not any((out / n / STATE_FILE).exists() for n in names)
    full = detect(model, config, sources, tmp_path / "full", progress=False)
    summary = detect(model, config, sources, out, DetectOptions(resume=True), progress=False)
    assert summary["frames_scored"] == full["frames_scored"] == 12 and summary["resumed"] == 0
    for name in names:
        _same_scores(read_detect_scores(tmp_path / "full" / name), read_detect_scores(out / name), 1e-3)


def test_a_resume_that_scores_no_new_frame_saves_its_position(tmp_path: Path) -> None:
    """A resumed file's position is restored, so that a part scoring no new frame saves it as it found it (was: 0, with
    the scorer's state at the real point; the next --resume crashed with KeyError, and the folder could not be
    resumed): the first new frame unreadable, then put back; a finished run resumed twice more."""
    import os

    model, config, _ = _model(tmp_path)
    frames = frames_folder(tmp_path / "f", 40)
    full = detect(model, config, str(frames), tmp_path / "full", progress=False)
    out = tmp_path / "o"
    detect(model, config, str(frames), out, DetectOptions(max_frames=30), progress=False)
    good, stat = (frames / "00030.png").read_bytes(), (frames / "00030.png").stat()
    (frames / "00030.png").write_bytes(b"\x89PNG not really".ljust(len(good), b"\0"))  # its size and time: the same footage
    os.utime(frames / "00030.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(DataError, match="00030"):
        detect(model, config, str(frames), out, DetectOptions(resume=True), progress=False)
    (frames / "00030.png").write_bytes(good)  # put back as it was
    os.utime(frames / "00030.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    summary = detect(model, config, str(frames), out, DetectOptions(resume=True), progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(out))
    assert summary["frames_scored"] == full["frames_scored"] == 36
    for resumed in (3, 4):  # a finished run: nothing more, as often as asked
        again = detect(model, config, str(frames), out, DetectOptions(resume=True), progress=False)
        assert again["resumed"] == resumed and again["frames_scored"] == 36 and len(read_detect_scores(out)) == 36


def test_a_camera_resumed_with_no_new_frame_keeps_its_numbering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, config, _ = _model(tmp_path)
    out, camera = tmp_path / "o", "rtsp://cam.local/s"
    _camera(monkeypatch, 12, 0)
    detect(model, config, camera, out, progress=False)
    for _ in range(2):  # a restart that got no frame (the camera gave 2: no clip) saves where the frames are numbered
        _camera(monkeypatch, 2, 1)
        assert detect(model, config, camera, out, DetectOptions(resume=True), progress=False)["frames_scored"] == 8
    _camera(monkeypatch, 10, 2)
    summary = detect(model, config, camera, out, DetectOptions(resume=True), progress=False)
    frames = [int(r["frame"]) for r in read_detect_scores(out)]
    assert frames == sorted(frames) and len(frames) == len(set(frames)) == summary["frames_scored"] == 8 + 6


def test_a_row_that_failed_to_be_written_is_scored_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row that fails to be written fails its source and no state is saved past it (was: the state of the frame
    saved at the end, and the resumed run skipped it, exit 0)."""
    import mnad.outputs.detect_writer as writer

    model, config, _ = _model(tmp_path)
    frames = str(frames_folder(tmp_path / "f", 40))
    full = detect(model, config, frames, tmp_path / "full", progress=False)
    score = writer.DetectWriter.score

    def failing(self, row, seconds, alert):  # noqa: ANN001, ANN202
        if row.index == 20:
            raise DataError("disk full (simulated)")
        score(self, row, seconds, alert)

    with monkeypatch.context() as patch:
        patch.setattr(writer.DetectWriter, "score", failing)
        with pytest.raises(DataError, match="disk full"):
            detect(model, config, frames, tmp_path / "o", progress=False)
    summary = detect(model, config, frames, tmp_path / "o", DetectOptions(resume=True), progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(tmp_path / "o"))
    assert summary["frames_scored"] == full["frames_scored"] == 36


def test_rows_lost_after_the_state_are_refused_in_one_line(model_file: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A state ahead of the rows on the disk (a power cut before they were durable; now they are fsynced before each
    state is saved) cannot write them again: refused, naming them (was: rows 81-99 missing, exit 0)."""
    frames = str(frames_folder(tmp_path / "f", 30))
    out = tmp_path / "o"
    args = ["detect", frames, "--checkpoint", str(model_file), "--out", str(out), "--quiet"]
    assert main([*args, "--max-frames", "20"]) == 0
    lines = (out / "scores.csv").read_bytes().splitlines(keepends=True)
    (out / "scores.csv").write_bytes(b"".join(lines[:-5]))  # the rows of frames 15-19 lost
    assert main([*args, "--resume"]) == 2
    line = _error_line(capsys)
    assert "frames 15-19 are missing" in line and "--overwrite" in line


def test_the_rows_are_made_durable_before_each_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mnad.outputs.detect_writer as writer

    model, config, _ = _model(tmp_path)
    calls: list[str] = []
    sync, save = writer.DetectWriter.sync, StreamScorer.save_state
    monkeypatch.setattr(writer.DetectWriter, "sync", lambda self: (calls.append("sync"), sync(self))[1])
    monkeypatch.setattr(StreamScorer, "save_state", lambda self, *a, **k: (calls.append("state"), save(self, *a, **k))[1])
    fsynced: list[int] = []
    real = mnad.outputs.detect_writer.os.fsync
    monkeypatch.setattr(mnad.outputs.detect_writer.os, "fsync", lambda fd: (fsynced.append(fd), real(fd))[1])
    detect(model, config, str(frames_folder(tmp_path / "f", 10)), tmp_path / "o", progress=False)
    assert calls.count("state") >= 2 and all(calls[i - 1] == "sync" for i, c in enumerate(calls) if c == "state")
    assert fsynced


def test_the_maps_and_closed_video_files_are_made_durable_before_each_state(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Each state is saved only once every error map written so far and every closed annotated video file are fsynced,
    and their folders (was: the rows only: a power cut could keep a state counting frames whose maps or pictures were
    lost, and a resumed file does not write those again)."""
    import os

    from mnad.outputs import video_files_in

    model, config, _ = _model(tmp_path)
    out = tmp_path / "o"
    synced: set[tuple[int, int]] = set()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.add((info.st_dev, info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    checked: list[int] = []
    written: list[Path] = []  # what the state about to be saved counts: the maps and the closed video files
    save, store = mnad.detect._SourceRun.save_state, StreamScorer.save_state

    def saving(self):  # noqa: ANN001, ANN202
        maps = sorted((out / "maps").rglob("*.npy"))
        written[:] = [*maps, *{p.parent for p in maps},
                      *(out / name for name in video_files_in(out) if self.video is None or name != self.video.open_name)]
        return save(self)

    def storing(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        for path in written:
            assert (path.stat().st_dev, path.stat().st_ino) in synced, path
        checked.append(len(written))
        return store(self, *args, **kwargs)

    monkeypatch.setattr(mnad.detect._SourceRun, "save_state", saving)
    monkeypatch.setattr(StreamScorer, "save_state", storing)
    detect(model, config, str(frames_folder(tmp_path / "f", 24)), out,
           DetectOptions(save_maps="npy", save_video=True, video_segment=0.2), progress=False)
    assert len(checked) >= 3 and checked[-1] == 20 + 1 + len(video_files_in(out))  # maps, their shard, video


def test_resume_refuses_other_footage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The saved state names its footage: another folder of the same name, or a file rewritten since, is refused in
    one line (was: compared by folder name only; a shorter video ended with 0 new frames, exit 0)."""
    from conftest import noise_video

    _, _, path = _model(tmp_path)
    first, other = frames_folder(tmp_path / "a" / "f", 20), frames_folder(tmp_path / "b" / "f", 20)
    out = tmp_path / "o"
    args = ["--checkpoint", str(path), "--out", str(out), "--quiet"]
    assert main(["detect", str(first), *args, "--max-frames", "10"]) == 0
    assert main(["detect", str(other), *args, "--resume"]) == 2
    assert "the earlier run scored" in _error_line(capsys)
    video = noise_video(tmp_path / "v.avi", 24, 25.0)
    assert main(["detect", str(video), "--checkpoint", str(path), "--out", str(tmp_path / "v"), "--quiet"]) == 0
    noise_video(tmp_path / "w.avi", 8, 25.0).replace(video)  # the file cut short
    assert main(["detect", str(video), "--checkpoint", str(path), "--out", str(tmp_path / "v"), "--quiet", "--resume"]) == 2
    assert "is not the footage the earlier run scored" in _error_line(capsys)


def test_a_video_file_shorter_than_the_position_fails() -> None:
    """A file that ends before the frame a resumed run continues at fails (was: 0 new frames, exit 0)."""
    import tempfile

    from conftest import noise_video

    with tempfile.TemporaryDirectory() as folder:
        source = FrameSource(str(noise_video(Path(folder) / "v.avi", 8, 25.0)))
        source.start = 12
        with pytest.raises(DataError, match="ended after 8 frames, before frame 12"):
            list(source)


def test_the_summary_counts_the_rows_on_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resumed run's frames_scored is that of the rows on the disk: a camera killed after its last saved state (was:
    the rows since it lost from the count), and a file whose resumed part ends among the frames it scores again."""
    model, config, _ = _model(tmp_path)
    out, camera = tmp_path / "c", "rtsp://cam.local/s"
    _camera(monkeypatch, 40, 0)
    with monkeypatch.context() as patch:
        _kill_at(patch, 30)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, camera, out, progress=False)
    _camera(monkeypatch, 10, 1)
    summary = detect(model, config, camera, out, DetectOptions(resume=True), progress=False)
    assert summary["frames_scored"] == len(read_detect_scores(out)) == 26 + 6
    frames, out = str(frames_folder(tmp_path / "f", 40)), tmp_path / "o"
    with monkeypatch.context() as patch:
        _kill_at(patch, 30)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, progress=False)
    summary = detect(model, config, frames, out, DetectOptions(resume=True, max_frames=5), progress=False)
    assert summary["frames_scored"] == len(read_detect_scores(out)) == 26
    summary = detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    assert summary["frames_scored"] == len(read_detect_scores(out)) == 36


def test_a_resume_after_a_killed_overwrite_deletes_the_run_it_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run an --overwrite set aside (.mnad-detect-earlier) goes once the resumed run ends well, as the overwrite's
    own end would have deleted it (was: kept for ever, unsaid)."""
    from mnad.outputs import EARLIER_DIR

    model, config, _ = _model(tmp_path)
    frames, out = str(frames_folder(tmp_path / "f", 20)), tmp_path / "o"
    detect(model, config, frames, out, DetectOptions(max_frames=8), progress=False)
    with monkeypatch.context() as patch:
        _kill_at(patch, 12)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, DetectOptions(overwrite=True), progress=False)
    assert (out / EARLIER_DIR).is_dir()
    import mnad.outputs.detect_writer as writer

    score = writer.DetectWriter.score

    def failing(self, row, seconds, alert):  # noqa: ANN001, ANN202
        if row.index == 14:
            raise DataError("disk full (simulated)")
        score(self, row, seconds, alert)

    with monkeypatch.context() as patch:  # a resume that fails keeps it, and says that one ending well deletes it
        patch.setattr(writer.DetectWriter, "score", failing)
        with pytest.raises(DataError, match="a --resume of this run deletes them once it ends well"):
            detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    assert (out / EARLIER_DIR).is_dir()
    summary = detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    assert summary["frames_scored"] == 16 and not (out / EARLIER_DIR).exists()


def test_sigterm_among_the_frames_scored_again_leaves_the_events_as_they_were(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A calibrated model's event open when a resumed file is stopped while it still scores again the frames the
    earlier run wrote: that run's to write (it did, or lost it open), not warned of as lost for want of a segment."""
    from mnad.calibrate import with_calibration
    from mnad.calibration import Calibration
    from mnad.errors import Terminated

    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=-1.0,
                      false_alarm_rate=0.05, smoothing=1, frames=100)
    config = with_calibration(config, cal)
    frames, out = str(frames_folder(tmp_path / "f", 30)), tmp_path / "o"
    with monkeypatch.context() as patch:
        _kill_at(patch, 20)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, progress=False)
    events = (out / "events.jsonl").read_bytes()
    score = mnad.detect._SourceRun.score

    def stopped(self, row):  # noqa: ANN001, ANN202
        if row.index == 12:
            raise Terminated()
        score(self, row)

    monkeypatch.setattr(mnad.detect._SourceRun, "score", stopped)
    with caplog.at_level("WARNING"), pytest.raises(Terminated):
        detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    assert "no row segment was open" not in caplog.text
    assert (out / "events.jsonl").read_bytes() == events
    # the event open where it stopped is kept open in its state (not ended there): a further resume goes on with it,
    # to the events of an uninterrupted run (was: none, the earlier run having lost it open at the kill)
    monkeypatch.setattr(mnad.detect._SourceRun, "score", score)
    summary = detect(model, config, frames, out, DetectOptions(resume=True), progress=False)
    detect(model, config, frames, tmp_path / "full", progress=False)
    assert _event_lines(out) == _event_lines(tmp_path / "full") and summary["events"] == 1


@pytest.mark.parametrize(("settings", "frames"), [({}, 8), ({"task": "recon", "t_length": 5}, 11)])
def test_a_video_file_now_shorter_than_what_was_taken_fails(tmp_path: Path, settings: dict, frames: int) -> None:
    """A state saved before its footage was recorded (not compared): a video file that ends before the frames the
    earlier run took (12 for a model scoring 2 frames late: the last 2 read again, the file ends within them) fails its
    source (was: 0 new frames, exit 0)."""
    from conftest import noise_video

    model, config, _ = _model(tmp_path, **settings)
    video, out = noise_video(tmp_path / "v.avi", 24, 25.0), tmp_path / "o"
    detect(model, config, str(video), out, DetectOptions(max_frames=10), progress=False)
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    extra = scorer.load_state(out / STATE_FILE)
    extra.pop("footage", None)
    scorer.save_state(out / STATE_FILE, extra)
    noise_video(tmp_path / "w.avi", frames, 25.0).replace(video)
    with pytest.raises(DataError, match=f"ended after {frames} frames"):
        detect(model, config, str(video), out, DetectOptions(resume=True), progress=False)


def test_rows_after_reads_back_only_the_ends_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``rows_after``: the whole rows after a frame across row segments, read from each file's end (a small tail here,
    grown as needed), a last line cut by a kill left out."""
    import mnad.outputs.detect_writer as writer
    from mnad.outputs import rows_after
    from mnad.outputs.columns import DETECT_SCORES_HEADER

    header = ",".join(DETECT_SCORES_HEADER) + "\r\n"

    def row(frame: int) -> str:
        return ",".join([str(frame), f"{frame / 25:.3f}", *["0.5"] * (len(DETECT_SCORES_HEADER) - 4), "0.250000", "1"]) + "\r\n"

    for first, last in ((0, 40), (41, 60)):
        folder = tmp_path / "rows" / f"{first:012d}"
        folder.mkdir(parents=True)
        (folder / "scores.csv").write_text(header + "".join(row(f) for f in range(first, last + 1)) + "61,0.2", newline="")
        for name in ("events.jsonl", "events.csv"):
            (folder / name).write_text("")
    monkeypatch.setattr(writer, "_TAIL_BYTES", 64)
    assert [r["frame"] for r in rows_after(tmp_path, 30)] == [str(f) for f in range(31, 61)]
    assert [r["alert"] for r in rows_after(tmp_path, 58)] == ["1", "1"]
    assert rows_after(tmp_path, 60) == []
    assert len(rows_after(tmp_path, -1)) == 61


@pytest.mark.parametrize(("move", "options"), [(True, {"rows_segment": 0.5}), (False, {"max_frames": 20})])
def test_no_state_is_saved_past_a_row_segment_not_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              move: bool, options: dict) -> None:
    """A closed row segment whose fsync failed (at a segment change, ``move``; or at the end) fails its source, and no
    state is saved past its rows (was: the next state saved, counting rows that may not be on the disk)."""
    import mnad.outputs.detect_writer as writer

    model, config, _ = _model(tmp_path)
    close = writer.DetectWriter._close_segment

    def failing(self, *, move):  # noqa: ANN001, ANN202
        if move == want:
            def bad(fd: int) -> None:
                raise OSError(5, "Input/output error")

            monkeypatch.setattr(writer.os, "fsync", bad)
        try:
            return close(self, move=move)
        finally:
            monkeypatch.setattr(writer.os, "fsync", real)

    want, real = move, writer.os.fsync
    monkeypatch.setattr(writer.DetectWriter, "_close_segment", failing)
    out = tmp_path / "o"
    with pytest.raises(DataError, match="cannot make the row segment durable"):
        detect(model, config, str(frames_folder(tmp_path / "f", 40)), out, DetectOptions(**options), progress=False)
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    assert scorer.load_state(out / STATE_FILE)["written"] == 4  # the first state, saved at the first row


def test_a_sources_folder_gone_is_refused_in_one_line(model_file: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Several sources: the folder of one the earlier run scored frames of, now missing, is refused (was: that source
    started afresh, its memory and numbering lost, exit 0)."""
    import shutil

    sources = [str(frames_folder(tmp_path / name, 20)) for name in ("f", "g")]
    out = tmp_path / "o"
    args = ["detect", *sources, "--checkpoint", str(model_file), "--out", str(out), "--quiet"]
    assert main([*args, "--max-frames", "10"]) == 0
    shutil.rmtree(out / stream_folder(1, sources[1], 2))
    assert main([*args, "--resume"]) == 2
    line = _error_line(capsys)
    assert "1_g: missing, but the earlier run scored 6 frames" in line and "--overwrite" in line
    assert not (out / stream_folder(1, sources[1], 2)).exists()


def test_a_byte_identical_copy_of_the_footage_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The state holds a fingerprint of the footage's file: a copy or restore of the same bytes with another
    modification time (cp, rsync without -t) resumes (was: refused, only --overwrite offered); one rewritten to the
    same size is refused; a state saved without a fingerprint (an earlier mnad's) is refused on the time alone."""
    import os

    from conftest import noise_video

    _, _, path = _model(tmp_path)

    def run(video: Path, out: str, *more: str) -> int:
        return main(["detect", str(video), "--checkpoint", str(path), "--out", str(tmp_path / out), "--quiet", *more])

    def copied_back(video: Path, data: bytes) -> None:
        stat = video.stat()
        video.unlink()
        video.write_bytes(data)
        os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))

    video = noise_video(tmp_path / "v.avi", 24, 25.0)
    assert run(video, "a", "--max-frames", "10") == 0
    copied_back(video, video.read_bytes())
    assert run(video, "a", "--resume") == 0
    assert json.loads((tmp_path / "a" / SUMMARY_FILE).read_text())["frames_scored"] == 20
    assert run(video, "b", "--max-frames", "10") == 0
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copied_back(video, bytes(data))
    assert run(video, "b", "--resume") == 2
    assert "its content differs" in _error_line(capsys)
    monkeypatch.setattr(mnad.detect, "_fingerprint", lambda *args: None)
    assert run(video, "c", "--max-frames", "10") == 0
    monkeypatch.undo()
    copied_back(video, video.read_bytes())
    assert run(video, "c", "--resume") == 2
    assert "is not the footage the earlier run scored (mtime_ns" in _error_line(capsys)


def test_a_map_that_fails_after_its_row_keeps_the_state_of_that_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A map that cannot be written after its frame's row was fails the source, and the final state counts that row
    (was: the state held back, with a false warning of a frame whose row was not written)."""
    import mnad.outputs.detect_writer as writer

    model, config, _ = _model(tmp_path)
    error_map = writer.DetectWriter.error_map

    def failing(self, index, error):  # noqa: ANN001, ANN202
        if index == 20:
            raise DataError("maps: disk full (simulated)")
        error_map(self, index, error)

    monkeypatch.setattr(writer.DetectWriter, "error_map", failing)
    out = tmp_path / "o"
    with pytest.raises(DataError, match="disk full"):
        detect(model, config, str(frames_folder(tmp_path / "f", 40)), out, DetectOptions(save_maps="npy"), progress=False)
    scorer = StreamScorer.for_model(model, config, normalization="causal")
    assert scorer.load_state(out / STATE_FILE)["written"] == int(read_detect_scores(out)[-1]["frame"]) == 20
    assert "was not written" not in caplog.text


def test_the_first_row_segment_moved_into_rows_is_made_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first segment's files renamed into rows/<first>/ at the first segment change: that folder, rows/ and the
    output folder are fsynced after the move (was: never that folder)."""
    import mnad.atomic

    model, config, _ = _model(tmp_path)
    out = tmp_path / "o"
    synced: list[str] = []
    real = mnad.atomic.fsync_dir
    monkeypatch.setattr(mnad.atomic, "fsync_dir", lambda folder: (synced.append(str(folder)), real(folder))[1])
    detect(model, config, str(frames_folder(tmp_path / "f", 40)), out, DetectOptions(rows_segment=0.5), progress=False)
    first = sorted((out / "rows").iterdir())[0]
    assert first.name == "000000000004" and str(first) in synced


def test_the_docs_say_what_a_resume_scores_again_and_refuses() -> None:
    """docs/detect.md: only a file's resume scores a frame whose row was not written again (a camera numbers on); a
    shorter video is refused at the start (exit 2), or fails as read under a state without a footage record; a
    byte-identical copy with another time resumes."""
    text = " ".join((Path(__file__).parents[1] / "docs" / "detect.md").read_text().split())
    assert "a `--resume` of a file, frame folder or glob scores that frame again (a camera's numbers its" in text
    assert "is refused at the start (its size differs" in text and "fails the source (`ended after N frames`, exit 1)" in text
    assert ("a byte-identical copy or restore of a video file with another modification time (`cp`, `rsync` without "
            "`-t`) continues (a folder's or glob's first frame file with another modification time is refused" in text)


def test_a_folder_whose_first_frame_is_unchanged_but_rewritten_is_refused(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A frame folder re-extracted in place (its first frame the same bytes, the others new) is other footage: the
    fingerprint covers its first frame file only, so its new modification time still refuses it (was, for a moment:
    resumed onto the new frames)."""
    import os
    import shutil

    _, _, path = _model(tmp_path)
    folder = frames_folder(tmp_path / "f", 12)
    assert main(["detect", str(folder), "--checkpoint", str(path), "--out", str(tmp_path / "o"), "--quiet",
                 "--max-frames", "8"]) == 0
    first = sorted(folder.iterdir())[0]
    kept = first.read_bytes()
    stat = first.stat()
    shutil.rmtree(folder)
    frames_folder(folder, 12, corrupt_at=None)  # the same names
    for later in sorted(folder.iterdir())[1:]:  # other pictures after the first
        later.write_bytes(sorted(folder.iterdir())[0].read_bytes())
    first.write_bytes(kept)
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**10))
    assert main(["detect", str(folder), "--checkpoint", str(path), "--out", str(tmp_path / "o"), "--quiet",
                 "--resume"]) == 2
    assert "is not the footage the earlier run scored (mtime_ns" in _error_line(capsys)



def test_a_folder_whose_later_frames_were_replaced_is_refused_and_one_of_more_frames_resumes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The footage record holds the frame files' names, sizes and modification times (``_frames_digest``): a folder
    whose first frame file is untouched but a later one was replaced (here by one of the same size, as noise frames
    all are) is other footage, refused in one line (was: resumed onto it, the fingerprint covering the first frame file
    only); frames added after the earlier run's are not compared, so a folder of more frames continues into them."""
    import shutil

    _, _, path = _model(tmp_path)
    folder = frames_folder(tmp_path / "f", 12)
    run = ["detect", str(folder), "--checkpoint", str(path), "--quiet"]
    assert main([*run, "--out", str(tmp_path / "o"), "--max-frames", "6"]) == 0
    shutil.copytree(tmp_path / "o", tmp_path / "grown")
    for i in range(12, 15):  # more frames after the earlier run's: continued into
        shutil.copy(folder / "00003.png", folder / f"{i:05d}.png")
    assert main([*run, "--out", str(tmp_path / "grown"), "--resume"]) == 0
    assert len(read_detect_scores(tmp_path / "grown")) == 15 - 4
    assert (folder / "00010.png").stat().st_size == (folder / "00003.png").stat().st_size
    (folder / "00010.png").write_bytes((folder / "00003.png").read_bytes())  # another picture, not yet scored
    assert main([*run, "--out", str(tmp_path / "o"), "--resume"]) == 2
    assert "is not the footage the earlier run scored (its first 12 frame files differ" in _error_line(capsys)


# events that come and go on the tiny model's noise frames: its calibrated smoothed scores hover about 0.45 (± 0.002),
# so a 0.45 threshold with a 0.001 hysteresis and 3-frame events gives, over 60 frames, events 4-6, 10-26, 29-31, 33-37
# and 40-49, and one open at the end from 52
EVENTS = {"hysteresis": 0.001, "min_event_frames": 3}


def _calibrated(model_file: Path, threshold: float = 0.45) -> tuple[MNAD, object]:
    from mnad.calibrate import with_calibration
    from mnad.calibration import Calibration

    model, config = load_model(model_file)
    cal = Calibration(psnr_low=0.0, psnr_high=40.0, distance_low=0.0, distance_high=1.0, threshold=threshold,
                      false_alarm_rate=0.05, smoothing=1, frames=100)
    return model, with_calibration(config, cal)


def _event_lines(out: Path) -> tuple[list[str], list[str]]:
    """Every line of the events files of a source's folder, its row segments in order: (events.jsonl, events.csv, the
    csv headers left out)."""
    from mnad.outputs import row_segments_in

    jsonl, table = [], []
    for segment in row_segments_in(out):
        jsonl += (out / segment / "events.jsonl").read_text().splitlines()
        table += (out / segment / "events.csv").read_text().splitlines()[1:]
    return jsonl, table


def _kill_after_events(monkeypatch: pytest.MonkeyPatch, frame: int) -> None:
    """The next run dies as a SIGKILL would between writing the event that frame ``frame`` ends (flushed) and that
    frame's row."""
    import mnad.outputs.detect_writer as writer

    score = writer.DetectWriter.score

    def dying(self, row, seconds, alert):  # noqa: ANN001, ANN202
        if row.index >= frame:
            raise RuntimeError("killed")
        score(self, row, seconds, alert)

    monkeypatch.setattr(writer.DetectWriter, "score", dying)
    monkeypatch.setattr(mnad.detect._SourceRun, "close", lambda self, *args: None)


@pytest.mark.parametrize(("kill", "between"), [(17, False), (45, False), (27, True), (32, True), (53, False), (27, False)])
def test_a_killed_file_resumes_to_the_events_of_an_uninterrupted_run(model_file: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch, kill: int,
                                                                     between: bool) -> None:
    """The event tracker is saved with the state and continued: a file killed inside an event (17: the state saved at
    frame 14, inside event 10-26; 45: at 44, inside 40-49; 53: at 49, inside 40-49, which frame 50 ends among the frames
    scored again, the event from 52 open at the kill) and resumed writes the events files of an uninterrupted run, line
    for line across its row segments (was: the event open at the kill had no line, and
    the resumed run began another at its first frame above the threshold); one written just before a kill cut the row
    of the frame that ended it (``between``: 27 ends 10-26, 32 ends 29-31) is not written twice; one that ends at the
    resumed run's first row of its own (27) is written into that row's segment (was: no segment open yet, the source
    failed); and the summary's ``events`` is the number of event lines on the disk."""
    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=0.2, **EVENTS)  # a state every 5 frames (each row segment's change)
    frames = str(frames_folder(tmp_path / "f", 60))
    full = detect(model, config, frames, tmp_path / "full", options, progress=False)
    expected = _event_lines(tmp_path / "full")
    assert [json.loads(line)["start_frame"] for line in expected[0]] == [4, 10, 29, 33, 40, 52]
    assert full["events"] == 6
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        (_kill_after_events if between else _kill_at)(patch, kill)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, options, progress=False)
    summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
    _same_scores(read_detect_scores(tmp_path / "full"), read_detect_scores(out))
    assert _event_lines(out) == expected
    assert summary["events"] == len(expected[0]) == 6
    assert summary["alert_frames"] == full["alert_frames"]


@pytest.mark.parametrize("between", [False, True])
def test_a_killed_camera_goes_on_with_its_open_event_after_the_gap(model_file: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, between: bool) -> None:
    """A camera killed inside a confirmed event, its last state saved long before (at its first scored frame): the
    resumed run rebuilds the tracker from that state and the rows written since, and the event open at the kill goes
    on after the gap, as across a reconnection, written once when it ends (was: no line at all); the events that ended
    between the state and the kill are counted (was: in the files, not in ``events``); a restart that scores no frame
    keeps it open in its state for the next (was: ended there, with no segment to write it in). Killed between the line of the
    event a frame ends and that frame's row (``between``), the event is not continued, nor written again: every alert
    row lies inside an event of the events files."""
    from mnad.events import EventTracker

    model, config = _calibrated(model_file)
    options, camera = DetectOptions(**EVENTS), "rtsp://cam.local/s"
    _camera(monkeypatch, 60, 0)
    detect(model, config, camera, tmp_path / "full", options, progress=False)
    full = [json.loads(line) for line in _event_lines(tmp_path / "full")[0]]
    cut = next(e for e in full[1:] if e["alert_frame"] < e["end_frame"])  # killed while it alerts, events before it
    kill = cut["end_frame"] + 1 if between else cut["alert_frame"] + 1
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        (_kill_after_events if between else _kill_at)(patch, kill)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, camera, out, options, progress=False)
    tracker = EventTracker(0.45, hysteresis=EVENTS["hysteresis"], min_frames=EVENTS["min_event_frames"])
    assert tracker.restore(StreamScorer.for_model(model, config).load_state(out / STATE_FILE)["tracker"])
    assert tracker.current is None or tracker.current.start_frame < full[0]["end_frame"]  # saved before the events
    before = len(_event_lines(out)[0])
    assert before >= 1 and (json.loads(_event_lines(out)[0][-1])["start_frame"] < cut["start_frame"]) != between
    if not between:  # a restart that got no row of its own (2 frames: no clip) keeps the event open in its state
        _camera(monkeypatch, 2, 2)
        assert detect(model, config, camera, out, replace(options, resume=True), progress=False)["events"] == before
        assert len(_event_lines(out)[0]) == before
    _camera(monkeypatch, 12, 1)
    summary = detect(model, config, camera, out, replace(options, resume=True), progress=False)
    lines, table = _event_lines(out)
    events = [json.loads(line) for line in lines]
    assert summary["events"] == len(events) == len(table) > before
    assert len({e["start_frame"] for e in events}) == len(events)  # none written twice
    went_on = next(e for e in events if e["start_frame"] == cut["start_frame"])
    assert went_on["alert_frame"] == cut["alert_frame"] and went_on["end_frame"] >= kill - 1
    for row in read_detect_scores(out):
        frame = int(row["frame"])
        assert row["alert"] == "0" or any(e["alert_frame"] <= frame <= e["end_frame"] for e in events), frame
    frames = [(e["start_frame"], e["end_frame"], e["alert_frame"], e["peak_score"]) for e in events]  # times: the wall clock's
    assert frames[:len(frames) - len(events) + events.index(went_on)] == [
        (e["start_frame"], e["end_frame"], e["alert_frame"], e["peak_score"]) for e in full if e["start_frame"] < cut["start_frame"]]


@pytest.mark.parametrize("saved", [None, {"tracker": {"event": "open"}}, {"last_event_line": "4"},
                                   {"last_event_line": [4, 6]}, {"last_event_start": 4}])
def test_a_state_without_the_tracker_resumes_as_before_and_a_damaged_one_is_refused(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saved: dict | None) -> None:
    """A state saved by an mnad before the event tracker was (no ``tracker``, no ``last_event_line``) still resumes, as it
    did: no open event, its events counted as then; one whose tracker or last event is not what detect saves is
    refused in one line."""
    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=0.2, **EVENTS)
    frames, out = str(frames_folder(tmp_path / "f", 60)), tmp_path / "o"
    resume_state = mnad.detect._SourceRun.resume_state

    def earlier(self):  # noqa: ANN001, ANN202
        state = resume_state(self)
        if saved is None:
            del state["tracker"], state["last_event_line"]
        return {**state, **(saved or {})}

    with monkeypatch.context() as patch:
        patch.setattr(mnad.detect._SourceRun, "resume_state", earlier)
        _kill_at(patch, 17)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, options, progress=False)
    if saved is not None:
        with pytest.raises(DataError, match="not .*state.*it cannot be resumed; start afresh with --overwrite"):
            detect(model, config, frames, out, replace(options, resume=True), progress=False)
        return
    summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
    assert summary["complete"] is True and summary["frames_scored"] == 56 and summary["resumed"] == 1
    starts = [json.loads(line)["start_frame"] for line in _event_lines(out)[0]]
    assert 10 not in starts and starts[0] == 4  # as before: the event open at the kill has no line
    # its next state has the tracker: a further resume continues it
    assert "tracker" in StreamScorer.for_model(model, config).load_state(out / STATE_FILE)


def test_events_after_reads_the_events_written_after_a_state(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``events_after``: the events written after the state's last line, across row segments, down to the segment of
    the state's last row (given no line, every line of those segments); a last line cut by a kill is no event, a line
    that is not one is left out with a warning."""
    from mnad.outputs import events_after

    def line(start: int) -> str:
        return json.dumps({"start_frame": start, "end_frame": start + 2}) + "\n"

    for first, starts, tail in ((0, [3, 9], ""), (20, [22, 30], "not json\n"), (40, [41], '{"start_frame": 4')):
        folder = tmp_path / "rows" / f"{first:012d}"
        folder.mkdir(parents=True)
        (folder / "scores.csv").write_text("frame\n")
        (folder / "events.jsonl").write_text("".join(line(s) for s in starts) + tail)
    with caplog.at_level("WARNING"):
        assert [e["start_frame"] for e in events_after(tmp_path, (9, 11, False), 25)] == [22, 30, 41]
    assert "line 3 is not an event" in caplog.text
    assert [e["start_frame"] for e in events_after(tmp_path, (3, 5, False), 19)] == [9, 22, 30, 41]
    assert [e["start_frame"] for e in events_after(tmp_path, (30, 32, False), 45)] == [41]
    assert [e["start_frame"] for e in events_after(tmp_path, None, 45)] == [41]  # the earlier segments not read
    assert [e["start_frame"] for e in events_after(tmp_path, (9, 12, False), 25)] == [22, 30, 41]  # gone: began after it
    assert events_after(tmp_path, (41, 43, False), 45) == []


def _event_spans(out: Path) -> list[tuple[int, int, bool]]:
    return [(e["start_frame"], e["end_frame"], e["open"]) for e in map(json.loads, _event_lines(out)[0])]


@pytest.mark.parametrize(("cut", "segment"), [("before the line", 0.2), ("before the line", 0.3), ("after the line", 0.2)])
def test_a_file_killed_at_its_close_resumes_to_its_last_open_event(model_file: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, cut: str,
                                                                   segment: float) -> None:
    """Every row written, then a SIGKILL inside ``close`` (while the video closes, before the open event's line; or
    after that line, before the state): the resumed file reaches the end of the source with no row of its own (its
    state saved at its last frame, the event open; or, 0.3 s row segments, at frame 53: frames 54-59 scored again), and
    writes the event open there as the uninterrupted run did (was: the state kept it open,
    never written, at every further --resume: 5 events, alert rows 54-59 in none), once (an ``open`` line already there
    for it is not written again)."""
    import mnad.outputs.detect_writer as writer

    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=segment, **EVENTS)
    frames = str(frames_folder(tmp_path / "f", 60))
    full = detect(model, config, frames, tmp_path / "full", options, progress=False)
    expected = _event_lines(tmp_path / "full")
    out = tmp_path / "o"

    def killed(*args: object) -> None:
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        if cut == "before the line":
            patch.setattr(mnad.detect._SourceRun, "close", killed)
        else:
            patch.setattr(writer.DetectWriter, "close_rows", killed)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, options, progress=False)
    assert len(read_detect_scores(out)) == 56  # every row
    for resumed in (1, 2):
        summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
        assert summary["resumed"] == resumed and summary["ended_by"] == "end of source"
        assert _event_lines(out) == expected and _event_spans(out)[-1] == (52, 59, True)
        assert summary["events"] == full["events"] == 6 and summary["alert_frames"] == full["alert_frames"]


@pytest.mark.parametrize(("cut", "again"), [("a row not written", None), ("killed after the line", None),
                                            ("a row not written", 25), ("a row not written", 27)])
def test_an_open_line_whose_state_was_not_saved_does_not_stand_for_its_event(model_file: Path, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch,
                                                                              cut: str, again: int | None) -> None:
    """Inside event 10-26 frame 20's row is not written (a full disk: no state saved past it), or the run stops at frame 20 and
    is killed between the open event's line and the state's save: the events files hold 10-20 marked ``open``, the
    state saved before has event 10 open. The resumed run writes the event complete, 10-26, after that line (was: the
    ``open`` line was taken for the event, and 10-26 was dropped as written: 10-20 open was all). Killed again
    (``again``: at 25, its state saved inside the event after the ``open`` line; or at 27, between 10-26's line and
    row 27), a further resume neither counts the ``open`` line twice nor writes 10-26 twice."""
    import mnad.outputs.detect_writer as writer

    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=0.2, **EVENTS)
    frames = str(frames_folder(tmp_path / "f", 60))
    full = detect(model, config, frames, tmp_path / "full", options, progress=False)
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        if cut == "a row not written":
            score = writer.DetectWriter.score

            def failing(self, row, seconds, alert):  # noqa: ANN001, ANN202
                if row.index == 20:
                    raise DataError("disk full")
                score(self, row, seconds, alert)

            patch.setattr(writer.DetectWriter, "score", failing)
            with pytest.raises(DataError, match="disk full"):
                detect(model, config, frames, out, options, progress=False)
        else:
            def killed(*args: object) -> None:
                raise RuntimeError("killed")

            patch.setattr(writer.DetectWriter, "close_rows", killed)
            with pytest.raises(RuntimeError, match="killed"):
                detect(model, config, frames, out, replace(options, max_frames=21), progress=False)
    assert _event_spans(out) == [(4, 6, False), (10, 20, True)]
    if again is not None:
        with monkeypatch.context() as patch:
            (_kill_at if again == 25 else _kill_after_events)(patch, again)
            with pytest.raises(RuntimeError, match="killed"):
                detect(model, config, frames, out, replace(options, resume=True), progress=False)
        assert _event_spans(out)[-1] == ((10, 20, True) if again == 25 else (10, 26, False))
    summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
    spans = _event_spans(tmp_path / "full")
    assert spans[1] == (10, 26, False)
    assert _event_spans(out) == [spans[0], (10, 20, True), *spans[1:]]
    assert summary["events"] == len(spans) + 1 == 7  # the event lines on the disk
    assert summary["alert_frames"] == full["alert_frames"]


def test_a_camera_whose_open_line_has_no_state_after_it_goes_on_with_its_event(model_file: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera whose row is not written inside a confirmed event (a full disk): its close writes the event marked
    ``open``, its state is not saved past the row. Resumed, the tracker rebuilt from the rows goes on with the event
    after the gap and writes it when it ends, after the ``open`` line (was: that line was taken for the event, and the
    event rebuilt from the rows dropped as written)."""
    import mnad.outputs.detect_writer as writer

    model, config = _calibrated(model_file)
    options, camera = DetectOptions(**EVENTS), "rtsp://cam.local/s"
    _camera(monkeypatch, 60, 0)
    detect(model, config, camera, tmp_path / "full", options, progress=False)
    full = [json.loads(line) for line in _event_lines(tmp_path / "full")[0]]
    cut = next(e for e in full[1:] if e["alert_frame"] < e["end_frame"])
    out = tmp_path / "o"
    score = writer.DetectWriter.score

    def failing(self, row, seconds, alert):  # noqa: ANN001, ANN202
        if row.index == cut["alert_frame"] + 1:
            raise DataError("disk full")
        score(self, row, seconds, alert)

    with monkeypatch.context() as patch:
        patch.setattr(writer.DetectWriter, "score", failing)
        with pytest.raises(DataError, match="disk full"):
            detect(model, config, camera, out, options, progress=False)
    assert _event_spans(out)[-1] == (cut["start_frame"], cut["alert_frame"] + 1, True)
    _camera(monkeypatch, 12, 1)
    summary = detect(model, config, camera, out, replace(options, resume=True), progress=False)
    events = [json.loads(line) for line in _event_lines(out)[0]]
    assert summary["events"] == len(events)
    went_on = [e for e in events if e["start_frame"] == cut["start_frame"]]
    assert len(went_on) == 2 and went_on[0]["open"] and went_on[1]["end_frame"] >= cut["alert_frame"] + 1
    for row in read_detect_scores(out):
        frame = int(row["frame"])
        assert row["alert"] == "0" or any(e["alert_frame"] <= frame <= e["end_frame"] for e in events), frame


def test_events_after_reads_the_lines_after_the_states_last_line(tmp_path: Path) -> None:
    """``events_after`` given the state's last line (start, end, marked open): the lines after that very line in file
    order, whatever their start (an open one of the same start among them); where that line is gone, those that began
    after its start."""
    from mnad.outputs import events_after

    lines = [(4, 6, False), (10, 20, True), (10, 23, True), (10, 26, False), (29, 31, False)]
    (tmp_path / "scores.csv").write_text("frame\n")
    (tmp_path / "events.jsonl").write_text("".join(
        json.dumps({"start_frame": a, "end_frame": b, "open": o}) + "\n" for a, b, o in lines))

    def spans(after: tuple[int, int, bool] | None) -> list[tuple[int, int]]:
        return [(e["start_frame"], e["end_frame"]) for e in events_after(tmp_path, after, 20)]

    assert spans((10, 20, True)) == [(10, 23), (10, 26), (29, 31)]
    assert spans((10, 23, True)) == [(10, 26), (29, 31)]
    assert spans((10, 26, False)) == [(29, 31)]
    # not there (its segment deleted by --rows-keep): those that began after it, and the later lines of its event
    # when it was marked open (was: its complete line not read back, not counted, and written again)
    assert spans((10, 21, True)) == [(10, 23), (10, 26), (29, 31)]
    assert spans((10, 25, False)) == [(29, 31)]
    assert spans(None) == [(a, b) for a, b, _ in lines]
    assert len(events_after(tmp_path, (4, 6, False), 20)) == 4
    # a line that is JSON but not an event's (an end frame that is no frame, or none) is left out, not a traceback
    with (tmp_path / "events.jsonl").open("a") as handle:
        handle.write(json.dumps({"start_frame": 40, "end_frame": [1]}) + "\n" + json.dumps({"start_frame": 41}) + "\n")
    assert spans((29, 31, False)) == []


def _killed_in_close_after_the_open_line(model: MNAD, config: object, frames: str, out: Path,
                                          options: DetectOptions, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that writes every row and the event open at the end (marked open), then is killed in its close, before
    its state is saved."""
    import mnad.outputs.detect_writer as writer

    def killed(self) -> None:  # noqa: ANN001
        raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(writer.DetectWriter, "close_rows", killed)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, options, progress=False)


@pytest.mark.parametrize("stopped", ["sigterm", "progress save, then a kill"])
def test_a_state_saved_among_the_frames_scored_again_after_an_open_line_writes_it_once(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stopped: str) -> None:
    """Part 1 writes every row and the event open at the end, killed before its state; part 2 resumes and saves a
    state while it scores frames again (SIGTERM between batches, whose close saves it; or the progress save, then a
    kill); part 3 resumes from it: the open line is the state's last line, never written again (was: twice)."""
    from mnad.errors import Terminated

    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=0.3, **EVENTS)
    frames = str(frames_folder(tmp_path / "f", 60))
    full = detect(model, config, frames, tmp_path / "full", options, progress=False)
    assert _event_spans(tmp_path / "full")[-1][2] is True  # the footage ends inside an event
    out = tmp_path / "o"
    _killed_in_close_after_the_open_line(model, config, frames, out, options, monkeypatch)
    score = mnad.detect._SourceRun.score

    def scored(self, row) -> None:  # noqa: ANN001
        score(self, row)
        if self.base + row.index == 55:
            if stopped == "sigterm":
                raise Terminated("SIGTERM")
            assert self.save_state()  # what progress() does once SUMMARY_SECONDS pass after this batch
            raise RuntimeError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(mnad.detect._SourceRun, "score", scored)
        if stopped != "sigterm":
            patch.setattr(mnad.detect._SourceRun, "close", lambda self, *a: None)
        with pytest.raises((Terminated, RuntimeError)):
            detect(model, config, frames, out, replace(options, resume=True), progress=False)
    summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
    assert _event_spans(out) == _event_spans(tmp_path / "full")
    assert summary["events"] == full["events"]


def test_a_second_open_line_of_the_same_start_is_counted(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk at row 20 leaves the event open there (10-20, open); the resume saves a state at row 20, a full disk
    at row 24 leaves 10-24 open, after the state's last line: the next resume counts it (was: one short)."""
    import mnad.outputs.detect_writer as writer

    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=0.2, **EVENTS)
    frames, out = str(frames_folder(tmp_path / "f", 60)), tmp_path / "o"
    score = writer.DetectWriter.score
    for fail_at, resume in ((20, False), (24, True)):
        def failing(self, row, seconds, alert, fail_at=fail_at) -> None:  # noqa: ANN001
            if row.index == fail_at:
                raise DataError("disk full")
            score(self, row, seconds, alert)

        with monkeypatch.context() as patch:
            patch.setattr(writer.DetectWriter, "score", failing)
            with pytest.raises(DataError, match="disk full"):
                detect(model, config, frames, out, replace(options, resume=resume), progress=False)
    assert [span for span in _event_spans(out) if span[2]] == [(10, 20, True), (10, 24, True)]
    summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
    assert summary["events"] == len(_event_spans(out))


def test_rows_keep_a_file_resumed_at_its_end_keeps_its_rows(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tiny --rows-keep: the resumed file that reaches its end with no row of its own writes the open event into a
    segment without rows, which prunes nothing: the last segment of rows stays, and a further --resume goes on (was:
    every row deleted, refused as rows missing)."""
    from mnad.outputs import row_segments_in

    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=0.2, rows_keep=1e-9, **EVENTS)
    frames, out = str(frames_folder(tmp_path / "f", 60)), tmp_path / "o"
    with monkeypatch.context() as patch:
        patch.setattr(mnad.detect._SourceRun, "close", lambda self, *a: (_ for _ in ()).throw(RuntimeError("killed")))
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, options, progress=False)
    detect(model, config, frames, out, replace(options, resume=True), progress=False)
    assert any(int(row["frame"]) == 59 for row in read_detect_scores(out))
    assert row_segments_in(out)[-1] == "rows/000000000060" and _event_spans(out)[-1][2] is True
    summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
    assert summary["complete"] is True


@pytest.mark.parametrize(("segment", "cut"), [(None, "the last row"), (None, "half the last row"),
                                              (None, "two rows"), (0.2, "the last row"), (0.2, "half the last row")])
def test_a_resume_writes_the_event_rows_a_kill_left_out_of_events_csv(model_file: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     segment: float | None, cut: str) -> None:
    """A kill between an event's events.jsonl line and its events.csv row (its row deleted), or one that cut the row
    half way, in the run's own files ('.') or in rows/<frame>: the resumed run makes events.csv whole from events.jsonl
    (was: that event never in events.csv, since the resumed run does not write a line events.jsonl holds), the cut row
    truncated and the missing rows appended, several of them too (``two rows``: the last deleted, the one before cut):
    the events files of an uninterrupted run, line for line."""
    from mnad.outputs import row_segments_in

    model, config = _calibrated(model_file)
    options = DetectOptions(**EVENTS) if segment is None else DetectOptions(rows_segment=segment, **EVENTS)
    frames, out = str(frames_folder(tmp_path / "f", 60)), tmp_path / "o"
    full = detect(model, config, frames, tmp_path / "full", options, progress=False)
    expected = _event_lines(tmp_path / "full")
    with monkeypatch.context() as patch:
        _kill_after_events(patch, 32)  # event 29-31's line and row written, then killed before row 32
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, options, progress=False)
    last = out / row_segments_in(out)[-1]
    assert (last == out) == (segment is None)
    assert json.loads((last / "events.jsonl").read_text().splitlines()[-1])["start_frame"] == 29
    rows = (last / "events.csv").read_bytes().splitlines(keepends=True)
    assert len(rows) >= (4 if cut == "two rows" else 2)  # the header and event rows
    kept = {"the last row": rows[:-1], "half the last row": [*rows[:-1], rows[-1][:len(rows[-1]) // 2]],
            "two rows": [*rows[:-2], rows[-2][:len(rows[-2]) // 2]]}[cut]
    (last / "events.csv").write_bytes(b"".join(kept))
    summary = detect(model, config, frames, out, DetectOptions(resume=True, rows_segment=options.rows_segment, **EVENTS),
                     progress=False)
    assert _event_lines(out) == expected
    assert summary["events"] == full["events"] == len(expected[1])


def test_mend_events_csv_appends_only_what_events_jsonl_holds_past_its_whole_rows(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """``mend_events_csv``: events.csv's rows are events.jsonl's whole lines, in the writer's columns (its header's);
    a cut last row is truncated, the missing ones appended; a whole one, or one a kill cut in the middle of its move
    (a file missing), is left as it is, and so is one whose rows are not events.jsonl's (with a warning)."""
    from mnad.events import Event
    from mnad.outputs import DetectWriter, mend_events_csv

    writer = DetectWriter(tmp_path / "o")
    events = [Event(4, 6, 5, 0.5, 0.16, 0.24, alert_frame=6, alert_time=0.24),
              Event(10, 26, 12, 1 / 3, 0.4, 1.04, open=True, peak_x=1, peak_y=2, peak_width=3, peak_height=4)]
    for event in events:
        writer.event(event, clock_start=1.7e9)
    writer.close_rows()
    table = tmp_path / "o" / "events.csv"
    whole = table.read_bytes()
    assert mend_events_csv(tmp_path / "o") == 0 and table.read_bytes() == whole
    header = whole.splitlines(keepends=True)[0]
    for kept in (whole[:-3], whole[:len(header) + 5], header, header[:4], b""):
        table.write_bytes(kept)
        assert mend_events_csv(tmp_path / "o") == len(events) - max(kept.count(b"\n") - 1, 0)
        assert table.read_bytes() == whole
    (tmp_path / "moved").mkdir()  # a kill in the middle of a move: events.csv gone ahead, not made up here
    (tmp_path / "moved" / "events.jsonl").write_bytes((tmp_path / "o" / "events.jsonl").read_bytes())
    assert mend_events_csv(tmp_path / "moved") == 0 and not (tmp_path / "moved" / "events.csv").exists()
    table.write_bytes(whole.replace(b"\n4,6,", b"\n4,7,")[:-3])  # not events.jsonl's rows: left as it is
    with caplog.at_level("WARNING"):
        assert mend_events_csv(tmp_path / "o") == 0
    assert table.read_bytes() == whole.replace(b"\n4,6,", b"\n4,7,")[:-3] and "left as it is" in caplog.text


@pytest.mark.parametrize(("cut", "done"), [("moving", 0), ("moving", 1), ("moving", 2), ("opening", 0), ("opening", 3),
                                           ("resumed moving", 1), ("resumed moving", 2)])
def test_a_kill_while_a_row_segment_moves_or_opens_resumes_to_whole_events_files(model_file: Path, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                                 cut: str, done: int) -> None:
    """Killed while the first row segment's files move into rows/<its first frame> (``moving``: its folder made and
    ``done`` of its 3 files renamed, scores.csv last; ``resumed moving``: the move a resumed run makes at its first
    row), or while the next segment opens (its folder made, none or all of its files made, no row yet): the resume
    finishes the move, or removes the empty segment, before it reads the rows (``mend_row_segments``; was: refused,
    that folder's scores.csv missing, or the folder already there), and the events files and rows are an uninterrupted
    run's, line for line, no event lost or doubled."""
    import mnad.outputs.detect_writer as writer

    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=1.0 if cut == "resumed moving" else 0.2, **EVENTS)
    frames, out = str(frames_folder(tmp_path / "f", 60)), tmp_path / "o"
    detect(model, config, frames, tmp_path / "full", options, progress=False)
    expected = _event_lines(tmp_path / "full")
    if cut == "resumed moving":  # killed within its first segment: the resumed run moves it at its first row
        with monkeypatch.context() as patch:
            _kill_at(patch, 20)
            with pytest.raises(RuntimeError, match="killed"):
                detect(model, config, frames, out, options, progress=False)
        assert not (out / "rows").exists()
    armed = [cut == "resumed moving"]
    rename, score, opening = Path.rename, writer.DetectWriter.score, writer.DetectWriter._open

    def arming(self, row, seconds, alert):  # noqa: ANN001, ANN202
        armed[0] |= row.index >= 9  # the first segment (frames 4-8) ends at frame 9
        score(self, row, seconds, alert)

    def renaming(self, target):  # noqa: ANN001, ANN202
        if armed[0] and cut != "opening":
            if done == 0:
                raise RuntimeError("killed")
            armed[1:] = [*armed[1:], 1]
            if len(armed) > done:
                raise RuntimeError("killed")
        return rename(self, target)

    def opened(self, segment):  # noqa: ANN001, ANN202
        if armed[0] and cut == "opening" and segment != ".":
            if done:
                opening(self, segment)  # its files made, with their headers
            else:
                (self.out_dir / segment).mkdir()
            raise RuntimeError("killed")
        opening(self, segment)

    with monkeypatch.context() as patch:
        patch.setattr(writer.DetectWriter, "score", arming)
        patch.setattr(Path, "rename", renaming)
        patch.setattr(writer.DetectWriter, "_open", opened)
        patch.setattr(mnad.detect._SourceRun, "close", lambda self, *args: None)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, replace(options, resume=cut == "resumed moving"), progress=False)
    assert (out / "rows").is_dir()
    summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
    assert _event_lines(out) == expected
    assert [r["frame"] for r in read_detect_scores(out)] == [r["frame"] for r in read_detect_scores(tmp_path / "full")]
    assert summary["events"] == len(expected[0])


def _drop_last_event(out: Path) -> None:
    """A power cut after the rows were written but before the events files' last line was on the disk (the files are
    written through the page cache, each on its own: no order among them until ``sync``): the latest segment's last
    event line and row are gone, its rows kept."""
    from mnad.outputs import row_segments_in

    last = out / row_segments_in(out)[-1]
    for name in ("events.jsonl", "events.csv"):
        lines = (last / name).read_bytes().splitlines(keepends=True)
        (last / name).write_bytes(b"".join(lines[:-1]))


@pytest.mark.parametrize("older", [False, True])
def test_a_row_on_the_disk_without_the_line_of_the_event_it_ended_gets_that_line(model_file: Path, tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch,
                                                                               older: bool) -> None:
    """A power cut kept the rows written after the last state (frames 25-28) but not the line of the event frame 27
    ended (10-26): the resumed file scores those frames again and writes that event, which no events file holds (was:
    taken for written, since its row was, and lost for good). ``older``: under a state saved before the last event line
    was (an earlier mnad's), events.csv is made whole from events.jsonl too (was: only under a state with it)."""
    model, config = _calibrated(model_file)
    options = DetectOptions(rows_segment=0.2, **EVENTS)  # a state at each row segment's first row: 24 the last here
    frames, out = str(frames_folder(tmp_path / "f", 60)), tmp_path / "o"
    full = detect(model, config, frames, tmp_path / "full", options, progress=False)
    expected = _event_lines(tmp_path / "full")
    resume_state = mnad.detect._SourceRun.resume_state

    def earlier(self):  # noqa: ANN001, ANN202
        state = resume_state(self)
        del state["tracker"], state["last_event_line"]
        return state

    with monkeypatch.context() as patch:
        if older:
            patch.setattr(mnad.detect._SourceRun, "resume_state", earlier)
        _kill_at(patch, 29)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, frames, out, options, progress=False)
    if older:  # the kill cut the event's events.csv row: events.jsonl is the record
        last = out / "rows" / "000000000024" / "events.csv"
        last.write_bytes(last.read_bytes()[:-5])
        detect(model, config, frames, out, replace(options, resume=True), progress=False)
        jsonl, table = _event_lines(out)
        assert [line.split(",")[:2] for line in table] == [[str(e["start_frame"]), str(e["end_frame"])]
                                                           for e in map(json.loads, jsonl)]
        return
    assert json.loads(_event_lines(out)[0][-1])["start_frame"] == 10 and len(read_detect_scores(out)) == 25
    _drop_last_event(out)
    summary = detect(model, config, frames, out, replace(options, resume=True), progress=False)
    assert sorted(map(json.loads, _event_lines(out)[0]), key=lambda e: e["start_frame"]) == [
        json.loads(line) for line in expected[0]]
    assert len(_event_lines(out)[1]) == len(expected[1])
    assert summary["events"] == full["events"] == 6


def test_a_camera_row_on_the_disk_without_the_line_of_the_event_it_ended_gets_that_line(
        model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera's rows after its last state are pushed to the tracker from the disk; one that ended an event whose line
    a power cut lost has it written by the resumed run, before its first new row, once (was: lost for good)."""
    model, config = _calibrated(model_file)
    options, camera = DetectOptions(**EVENTS), "rtsp://cam.local/s"
    _camera(monkeypatch, 60, 0)
    detect(model, config, camera, tmp_path / "full", options, progress=False)
    full = [json.loads(line) for line in _event_lines(tmp_path / "full")[0]]
    out = tmp_path / "o"
    with monkeypatch.context() as patch:
        _kill_at(patch, full[2]["end_frame"] + 3)  # its state saved at its first frame: the rows after it on the disk
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, camera, out, options, progress=False)
    assert [json.loads(line)["start_frame"] for line in _event_lines(out)[0]] == [e["start_frame"] for e in full[:3]]
    _drop_last_event(out)
    _camera(monkeypatch, 12, 1)
    summary = detect(model, config, camera, out, replace(options, resume=True), progress=False)
    lines, table = _event_lines(out)
    events = [json.loads(line) for line in lines]
    assert [(e["start_frame"], e["end_frame"], e["alert_frame"]) for e in events[:3]] == [
        (e["start_frame"], e["end_frame"], e["alert_frame"]) for e in full[:3]]
    assert summary["events"] == len(events) == len(table) and len({e["start_frame"] for e in events}) == len(events)


def test_a_camera_rebuilds_its_tracker_from_the_smoothed_scores_it_compared(model_file: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A camera's rows after its last state are pushed to the tracker as scores.csv holds their smoothed scores, which
    it writes with the digits that give the very number back: with the threshold between a row's score and that score
    to 6 decimals, the resumed run opens (or not) the event there as the killed run did (was: 6 decimals, so it did
    not open the event the killed run alerted in, or opened one the killed run never had)."""
    from mnad.events import EventTracker

    camera, kill = "rtsp://cam.local/s", 20
    model, config = _calibrated(model_file)
    exact: dict[int, float] = {}
    push = EventTracker.push

    def pushing(self, frame, stamp, score, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        exact[frame] = score
        return push(self, frame, stamp, score, *args, **kwargs)

    _camera(monkeypatch, 30, 0)
    with monkeypatch.context() as patch:
        patch.setattr(EventTracker, "push", pushing)
        detect(model, config, camera, tmp_path / "probe", DetectOptions(**EVENTS), progress=False)
    peak = max(range(4, kill), key=lambda f: exact[f])  # the state is saved at frame 4, its first: 5-19 pushed again
    assert peak > 4 and round(exact[peak], 6) != exact[peak]
    threshold = (exact[peak] + round(exact[peak], 6)) / 2  # above it exactly, not to 6 decimals, or the other way
    assert all(exact[f] < threshold for f in range(4, kill) if f != peak)
    model, config = _calibrated(model_file, threshold)
    options, out = DetectOptions(hysteresis=0.05, min_event_frames=3), tmp_path / "o"  # once open, it stays open
    with monkeypatch.context() as patch:
        _kill_at(patch, kill)
        with pytest.raises(RuntimeError, match="killed"):
            detect(model, config, camera, out, options, progress=False)
    alerted = [r for r in read_detect_scores(out) if r["alert"] == "1"]
    assert bool(alerted) == (exact[peak] > threshold)
    _camera(monkeypatch, 8, 1)
    detect(model, config, camera, out, replace(options, resume=True), progress=False)
    events = [json.loads(line) for line in _event_lines(out)[0]]
    assert any(e["start_frame"] == peak for e in events) == (exact[peak] > threshold), (events, exact[peak], threshold)
    for row in read_detect_scores(out):
        assert row["alert"] == "0" or any(e["alert_frame"] <= int(row["frame"]) <= e["end_frame"] for e in events)


def test_a_sigterm_while_a_batch_is_scored_saves_the_last_state(model_file: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    """A service manager's stop (SIGTERM) lands inside score_streams most of the time: the scorer had taken a frame whose
    row was not written, so the state was not saved at the end and a --resume went back to the last one saved (up to a
    minute earlier). The stop now waits for the batch's rows: the state saved at the end is of every row written, and
    the resumed run ends as an uninterrupted one."""
    import os
    import signal

    from mnad.errors import Terminated
    from mnad.interrupts import raise_terminated_on_signals, restore_handlers

    model, config = load_model(model_file)
    frames = str(frames_folder(tmp_path / "f", 40))
    full = detect(model, config, frames, tmp_path / "full", DetectOptions(), progress=False)
    score_streams, calls = mnad.detect.score_streams, []

    def stopped_inside(scorers, batch):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 20:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs at the next bytecode: inside the batch
        return score_streams(scorers, batch)

    handlers = raise_terminated_on_signals()
    try:
        with monkeypatch.context() as patch, caplog.at_level("WARNING"):
            patch.setattr(mnad.detect, "score_streams", stopped_inside)
            with pytest.raises(Terminated):
                detect(model, config, frames, tmp_path / "o", DetectOptions(), progress=False)
    finally:
        restore_handlers(handlers)
    assert not [r for r in caplog.records if "not saved at the end" in r.getMessage()]
    saved = StreamScorer.for_model(model, config, normalization="causal").load_state(tmp_path / "o" / STATE_FILE)
    last_row = (tmp_path / "o" / "scores.csv").read_text(encoding="utf-8").splitlines()[-1]
    assert saved["written"] == int(last_row.split(",")[0]) > 10  # the state is of the last row written
    resumed = detect(model, config, frames, tmp_path / "o", DetectOptions(resume=True), progress=False)
    assert resumed["frames_scored"] == full["frames_scored"]
