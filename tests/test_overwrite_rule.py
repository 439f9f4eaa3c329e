"""One rule for every command's outputs (``outputs.check_replace``): an earlier result where a command writes is
refused before any work unless ``--overwrite``, and an overwrite leaves the earlier files whole until the new ones are
written. And a stopped `mnad train` says truly whether an epoch is kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import frames_folder, tiny_config

from mnad.checkpoint import TRAIN_STATE_FILE
from mnad.cli import KEPT_WHEN_STOPPED, NO_EPOCH_FINISHED, NOTHING_WRITTEN, kept_when_stopped, main
from mnad.errors import DataError, Terminated

EARLIER = b"an earlier run's file\n"


def _earlier(*paths: Path) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(EARLIER)


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mnad: error:")]
    assert len(lines) == 1, lines
    return lines[0]


# (command line, the earlier outputs there): each refused before its work. The checkpoint and data do not exist,
# except for detect, which loads its model and opens its sources first: the refusal names the earlier output, not them.
def _cases(tmp: Path, model: Path) -> dict[str, tuple[list[str], list[Path]]]:
    missing, data = str(tmp / "missing.safetensors"), str(tmp / "no-data")
    return {
        "evaluate --out": (["evaluate", "--checkpoint", missing, "--data-root", data, "--out", str(tmp / "e")],
                           [tmp / "e" / "metrics.json"]),
        "evaluate --report": (["evaluate", "--checkpoint", missing, "--data-root", data, "--out", str(tmp / "e"),
                               "--report", str(tmp / "r")], [tmp / "r" / "report.html"]),
        "evaluate --report, no --out": (["evaluate", "--checkpoint", missing, "--data-root", data, "--report", str(tmp / "r")],
                                        [tmp / "r" / "scores.csv"]),
        "figures": (["figures", "--checkpoint", missing, "--data-root", data, "--out", str(tmp / "f")], [tmp / "f" / "tsne.png"]),
        "report --out": (["report", str(tmp / "eval"), "--out", str(tmp / "page")], [tmp / "page" / "report.html"]),
        "calibrate": (["calibrate", "--checkpoint", missing, "--data", data, "--out", str(tmp / "c.safetensors")],
                      [tmp / "c.safetensors"]),
        "export": (["export", "--checkpoint", missing, "--out", str(tmp / "m.onnx")], [tmp / "m.onnx.json"]),
        "demo": (["demo", "--out", str(tmp / "d")], [tmp / "d" / "run" / "eval" / "scores.csv"]),
        "train": (["train", "--data-root", data, "--out", str(tmp / "t")], [tmp / "t" / "config.json", tmp / "t" / "model.safetensors"]),
        "detect": (["detect", str(tmp / "frames"), "--checkpoint", str(model), "--out", str(tmp / "o")],
                   [tmp / "o" / "scores.csv"]),
    }


CASES = list(_cases(Path("."), Path(".")))


@pytest.mark.parametrize("case", CASES)
def test_each_command_refuses_an_earlier_output_before_its_work(case: str, tmp_path: Path, model_file: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """evaluate --out, --report, figures and report --out wrote over an earlier result without a word (was: exit 0,
    the earlier scores, report or figures gone); now every command that writes refuses one, naming it, before it
    loads a model or reads footage, as train, detect, demo, calibrate and export do; the earlier files are untouched."""
    argv, earlier = _cases(tmp_path, model_file)[case]
    _earlier(*earlier)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text("{}")  # `mnad report`'s source: never read, the refusal comes first
    frames_folder(tmp_path / "frames", 8)  # detect's source
    assert main(argv) == 2
    line = _one_error(capsys)
    assert "--overwrite" in line and any(str(p) in line or str(p.parent) in line for p in earlier), line
    assert all(p.read_bytes() == EARLIER for p in earlier)
    assert not (tmp_path / "d" / "data").exists()  # demo: its scene is not generated under a refused run


def test_the_rule_has_one_home() -> None:
    """calibrate and export used calibrate.check_replace; evaluate, figures and report had none: one function now."""
    import mnad.calibrate
    import mnad.export
    import mnad.figures
    import mnad.report.build
    from mnad import outputs

    assert not hasattr(mnad.calibrate, "check_replace") or mnad.calibrate.check_replace is outputs.check_replace
    assert mnad.export.check_replace is outputs.check_replace
    assert mnad.figures.check_replace_in is outputs.check_replace_in is mnad.report.build.check_replace_in


@pytest.fixture(scope="module")
def evaluated(synthetic_root: Path, model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mnad.checkpoint import load_model
    from mnad.evaluate import evaluate

    out = tmp_path_factory.mktemp("overwrite") / "eval"
    evaluate(*load_model(model_file), synthetic_root, out_dir=out, progress=False)
    return out


def test_evaluate_overwrite_replaces_the_pair(evaluated: Path, synthetic_root: Path, model_file: Path, tmp_path: Path) -> None:
    """evaluate(out_dir=) over an earlier evaluation: refused before scoring (a DataError naming both files), replaced
    with overwrite=True (was: replaced silently)."""
    from mnad.checkpoint import load_model
    from mnad.evaluate import evaluate

    out = tmp_path / "eval"
    _earlier(out / "scores.csv", out / "metrics.json")
    with pytest.raises(DataError, match="scores.csv, .*metrics.json: hold the output of an earlier run.*--overwrite"):
        evaluate(*load_model(model_file), synthetic_root, out_dir=out, progress=False)
    assert (out / "scores.csv").read_bytes() == EARLIER
    evaluate(*load_model(model_file), synthetic_root, out_dir=out, progress=False, overwrite=True)
    assert (out / "scores.csv").read_bytes() == (evaluated / "scores.csv").read_bytes()
    assert json.loads((out / "metrics.json").read_text())["metrics"]


def test_report_redraws_its_own_page_and_refuses_another(evaluated: Path, tmp_path: Path) -> None:
    """`mnad report EVAL` redraws EVAL/report's page each time (its job; the page is drawn from that folder's own
    outputs); `--out DIR` holding a page refuses it unless --overwrite (was: replaced silently)."""
    from mnad.report import rebuild_report

    page = rebuild_report(evaluated)
    assert rebuild_report(evaluated) == page  # again: its own folder, no --overwrite needed
    _earlier(tmp_path / "page" / "report.html")
    with pytest.raises(DataError, match="report.html: holds the output of an earlier run; choose another --out or pass --overwrite"):
        rebuild_report(evaluated, out=tmp_path / "page")
    assert (tmp_path / "page" / "report.html").read_bytes() == EARLIER
    assert rebuild_report(evaluated, out=tmp_path / "page", overwrite=True).read_bytes().startswith(b"<!")


def test_evaluate_report_overwrite(synthetic_root: Path, model_file: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`mnad evaluate --report R` twice: the second refused (was: the earlier report's thumbnails and provenance
    replaced); with --overwrite it is made again."""
    argv = ["evaluate", "--checkpoint", str(model_file), "--data-root", str(synthetic_root), "--report", str(tmp_path / "r"),
            "--top-k", "0", "--quiet"]
    assert main(argv) == 0
    provenance = (tmp_path / "r" / "provenance.json").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    assert "--report" in _one_error(capsys)
    assert (tmp_path / "r" / "provenance.json").read_bytes() == provenance
    assert main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "r" / "report.html").is_file()


def test_figures_overwrite(synthetic_root: Path, model_file: Path, tmp_path: Path) -> None:
    from mnad.checkpoint import load_model
    from mnad.figures import memory_figures

    model, config = load_model(model_file)
    _earlier(tmp_path / "f" / "figures.json")
    options = {"frames": 1, "clips": 8, "max_queries": 50}
    with pytest.raises(DataError, match="figures.json: holds the output of an earlier run"):
        memory_figures(model, config, synthetic_root, tmp_path / "f", **options)
    assert (tmp_path / "f" / "figures.json").read_bytes() == EARLIER
    record = memory_figures(model, config, synthetic_root, tmp_path / "f", overwrite=True, **options)
    assert json.loads((tmp_path / "f" / "figures.json").read_text()) == record


# ------------------------------------------------------------------------------------------- a stopped `mnad train`


@pytest.mark.parametrize(("where", "said"), [("split_holdout", NOTHING_WRITTEN), ("train_step", NO_EPOCH_FINISHED),
                                             ("on_epoch", KEPT_WHEN_STOPPED["train"])])
def test_a_stopped_training_says_whether_an_epoch_is_kept(where: str, said: str, synthetic_root: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Stopped before its first epoch ended, `mnad train` said "the last finished epoch is kept: continue with
    --resume", though none was and --resume is refused; train() now records the epochs its checkpoint holds on the
    stop (``epochs_kept``; absent: stopped before it wrote anything) and the last line says what is true."""
    import mnad.train

    def stop(*args: object, **kwargs: object) -> None:
        raise Terminated()

    config = tiny_config()
    config.train.epochs = 2
    if where != "on_epoch":
        monkeypatch.setattr(mnad.train, where, stop)
    with pytest.raises(Terminated) as info:
        mnad.train.train(config, synthetic_root, tmp_path / "run", progress=False, on_epoch=stop if where == "on_epoch" else None)
    assert kept_when_stopped("train", info.value) == said
    assert (tmp_path / "run" / TRAIN_STATE_FILE).is_file() == (where == "on_epoch")
