"""Review of the report (2026-12-02): a run folder with its evaluation and report beside it taken for two, a report
folder left behind by a failed `mnad report`, a page's paths shown from a folder that is not there, a header saying
'None frames', a report.html said to be no folder, pictures named in an index but missing skipped, a damaged thumbnail
index read as none, and memory figures of other weights shown as the evaluated model's."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_report_audit import evaluation, one_error, page, scored_video

from mnad import outputs
from mnad.cli import main
from mnad.errors import DataError
from mnad.report import rebuild_report
from mnad.report.build import check_report_output
from mnad.report.provenance import write_provenance
from mnad.report.thumbnails import remove_thumbnails

PNG = cv2.imencode(".png", np.full((8, 8, 3), 200, np.uint8))[1].tobytes()


def _report_of(eval_dir: Path, report_dir: Path) -> Path:
    """A report folder as `mnad evaluate --out EVAL --report REPORT` leaves it: its provenance names the evaluation."""
    report_dir.mkdir(parents=True)
    write_provenance(report_dir, {"eval_dir": str(Path("..") / eval_dir.name), "run_dir": None})
    return report_dir


# ------------------------------------------------------------------------------------- mnad report PATH: what PATH is


def test_a_run_folder_holding_an_evaluation_and_its_report_is_one_report(tmp_path: Path) -> None:
    """`mnad evaluate --out RUN/eval --report RUN/report`, then `mnad report RUN`, as docs/report.md shows it (was:
    'several reports or evaluations (report, eval); name one': only an evaluation's EVAL/report counted as its report)."""
    run = tmp_path / "run"
    eval_dir = evaluation(run / "eval", [scored_video("01")])
    report_dir = _report_of(eval_dir, run / "report")
    assert main(["report", str(run)]) == 0
    assert (report_dir / "report.html").is_file() and not (eval_dir / "report").exists()
    # an evaluation no report names is still one of two
    evaluation(run / "eval2", [scored_video("01")])
    with pytest.raises(DataError, match="several reports or evaluations"):
        rebuild_report(run)


def test_report_html_names_its_folder_and_another_file_is_said_to_be_a_file(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """(was: 'folder not found' for a file that is there)"""
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    assert main(["report", str(eval_dir)]) == 0
    capsys.readouterr()
    assert main(["report", str(eval_dir / "report" / "report.html")]) == 0
    capsys.readouterr()
    assert main(["report", str(eval_dir / "metrics.json")]) == 2
    assert one_error(capsys).startswith(f"{eval_dir / 'metrics.json'}: a file, not a folder")


def test_a_damaged_evaluation_leaves_no_report_folder_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`mnad report EVAL` over a malformed metrics.json: one error, and no EVAL/report/provenance.json that a later
    `mnad evaluate --report EVAL/report` would refuse as an earlier report (was: the stub was written first)."""
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    (eval_dir / "metrics.json").write_text('{"metrics": [1, 2], "config": {}}')
    assert main(["report", str(eval_dir)]) == 2
    assert "metrics.json" in one_error(capsys)
    assert not (eval_dir / "report").exists()
    check_report_output(eval_dir / "report")  # not refused


def test_a_page_that_cannot_be_written_leaves_no_report_folder_behind(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The provenance was written before the page: a full disk at the page left EVAL/report/provenance.json alone,
    which a later `mnad evaluate --report EVAL/report` refused as an earlier report. Now both or neither."""
    import errno

    import mnad.atomic

    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    real = mnad.atomic.os.replace

    def full(src: object, dst: object) -> None:
        if str(dst).endswith("report.html"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(mnad.atomic.os, "replace", full)
    assert main(["report", str(eval_dir)]) == 2
    assert "report.html: cannot write (disk full)" in one_error(capsys)
    monkeypatch.undo()
    assert not (eval_dir / "report").exists()
    check_report_output(eval_dir / "report")  # not refused
    assert main(["report", str(eval_dir)]) == 0 and (eval_dir / "report" / "provenance.json").is_file()


def test_a_report_of_an_evaluation_looks_for_its_run_folder_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rebuild_report found the run folder for the provenance record, then build_report looked for it again (each
    look reads metrics.json and every model file's header)."""
    import mnad.report.build as build

    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    calls = []
    guess = build._guess_run_dir
    monkeypatch.setattr(build, "_guess_run_dir", lambda folder: calls.append(folder) or guess(folder))
    assert main(["report", str(eval_dir)]) == 0
    assert len(calls) == 1


def test_paths_are_shown_from_the_pages_own_folder(tmp_path: Path) -> None:
    """A page written elsewhere (--out) names the evaluation from where it lies, a folder that is there."""
    eval_dir = evaluation(tmp_path / "a" / "eval", [scored_video("01")])
    assert main(["report", str(eval_dir), "--out", str(tmp_path / "b" / "page")]) == 0
    assert "<code>../../a/eval</code>" in page(tmp_path / "b" / "page")


def test_a_header_without_counts_says_no_none(tmp_path: Path) -> None:
    """metrics.json without frames_scored and videos (was: 'None frames of None videos')."""
    video = scored_video("01")
    outputs.write_evaluation(tmp_path / "eval", [video], {"micro_auc": 1.0, "per_video_auc": {"01": 1.0}}, {"name": "tiny"})
    assert main(["report", str(tmp_path / "eval")]) == 0
    text = page(tmp_path / "eval" / "report")
    assert "None" not in text.split("</header>")[0]
    assert "frames of" not in text.split("</header>")[0]
    outputs.write_evaluation(tmp_path / "e2", [video], {"micro_auc": 1.0, "per_video_auc": {"01": 1.0}, "videos": 1}, {"name": "tiny"})
    assert main(["report", str(tmp_path / "e2")]) == 0
    assert "&middot; 1 videos</p>" in page(tmp_path / "e2" / "report")


# ------------------------------------------------------------------------------------------- pictures and their index


def _thumbs(report_dir: Path, files: bool) -> None:
    folder = report_dir / "thumbs"
    folder.mkdir(parents=True, exist_ok=True)
    entries = [{"file": "01_01_000004.png", "video": "01", "frame": 4, "score": 0.0, "label": 0}]
    (folder / "thumbs.json").write_text(json.dumps(entries))
    if files:
        (folder / "01_01_000004.png").write_bytes(PNG)


def test_a_thumbnail_named_in_its_index_but_missing_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """(was: skipped silently, the page saying there were no thumbnails)"""
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    report_dir = _report_of(eval_dir, tmp_path / "report")
    _thumbs(report_dir, files=True)
    assert main(["report", str(report_dir)]) == 0
    assert 'class="thumb"' in page(report_dir)
    (report_dir / "thumbs" / "01_01_000004.png").unlink()
    capsys.readouterr()
    assert main(["report", str(report_dir)]) == 2
    assert one_error(capsys).startswith(f"{report_dir / 'thumbs' / '01_01_000004.png'}: named in {report_dir / 'thumbs' / 'thumbs.json'}")


def test_a_memory_figure_named_in_its_index_but_missing_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    report_dir = _report_of(eval_dir, tmp_path / "report")
    (report_dir / "figures").mkdir()
    (report_dir / "figures" / "figures.json").write_text(json.dumps({"files": {"matching": "matching.png", "tsne": "tsne.png"}}))
    (report_dir / "figures" / "tsne.png").write_bytes(PNG)
    assert main(["report", str(report_dir)]) == 2
    assert one_error(capsys).startswith(f"{report_dir / 'figures' / 'matching.png'}: named in")


def test_a_damaged_thumbnail_index_is_an_error_not_an_empty_one(tmp_path: Path) -> None:
    """The one reader of thumbs.json (was: a second, lenient one took a damaged index for none, so removing the
    thumbnails dropped the index and left its PNGs named by nothing; and `evaluate --report` ran before saying so)."""
    _thumbs(tmp_path, files=True)
    (tmp_path / "thumbs" / "thumbs.json").write_text('[{"file": 3}]')
    with pytest.raises(DataError, match="thumbs.json"):
        remove_thumbnails(tmp_path)
    assert (tmp_path / "thumbs" / "thumbs.json").is_file() and (tmp_path / "thumbs" / "01_01_000004.png").is_file()
    with pytest.raises(DataError, match="thumbs.json"):
        check_report_output(tmp_path, overwrite=True)


def _figures(report_dir: Path, digest: str | None) -> None:
    (report_dir / "figures").mkdir()
    record = {"files": {"matching": "matching.png", "tsne": "tsne.png"}} | ({"weights_sha256": digest} if digest else {})
    (report_dir / "figures" / "figures.json").write_text(json.dumps(record))
    for name in ("matching.png", "tsne.png"):
        (report_dir / "figures" / name).write_bytes(PNG)


@pytest.mark.parametrize("drawn", ["a" * 64, "b" * 64, None])
def test_memory_figures_of_other_weights_are_left_out(tmp_path: Path, drawn: str | None) -> None:
    """figures.json records the weights it was drawn from; the page shows it only beside an evaluation of those weights
    (was: another checkpoint's figures shown as this model's). An older figures.json (no digest): shown, with a note."""
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")], model={"weights_sha256": "a" * 64, "run_dir": None})
    report_dir = _report_of(eval_dir, tmp_path / "report")
    _figures(report_dir, drawn)
    assert main(["report", str(report_dir)]) == 0
    memory = page(report_dir).split('<section id="memory">')[1].split("</section>")[0]
    shown = memory.count("<img")
    if drawn == "b" * 64:
        assert shown == 0 and "drawn from other weights (SHA-256 bbbbbbbbbbbbbbbb...)" in memory
    else:
        assert shown == 2
        assert ("did not record the weights" in memory) == (drawn is None)



def test_a_figures_index_with_a_digest_that_is_not_text_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    eval_dir = evaluation(tmp_path / "eval", [scored_video("01")])
    report_dir = _report_of(eval_dir, tmp_path / "report")
    _figures(report_dir, None)
    (report_dir / "figures" / "figures.json").write_text(json.dumps({"files": {}, "weights_sha256": 5}))
    assert main(["report", str(report_dir)]) == 2
    assert "weights_sha256 must be a string" in one_error(capsys)
