"""An ONNX export scores with the settings it was exported with: other model.* or graph-fixed eval.* settings are
refused (API and CLI) before anything is written; several streams on one export are refused before any window moves;
--threads reaches ONNX Runtime; a stream count below 1 is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_onnx_export

from mnad.checkpoint import load_model
from mnad.cli import build_parser, load_scoring_model, main
from mnad.config import check_same_model
from mnad.detect import detect
from mnad.errors import ConfigError
from mnad.evaluate import evaluate
from mnad.export import export_onnx, load_onnx
from mnad.stream import StreamScorer, score_streams

# each setting the graph fixes at export, as a --set override, and the option that asks for it on the command line
FIXED = [("eval.gamma=100", ["--gamma", "100"]), ("eval.test_update=false", ["--no-test-update"]),
         ("eval.psnr_peak=max", ["--set", "eval.psnr_peak=max"]), ("eval.regular_score=paper", ["--set", "eval.regular_score=paper"])]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny model file, its ONNX export and a frame folder."""
    return tiny_onnx_export(tmp_path_factory.mktemp("onnx_settings"))


@pytest.mark.parametrize(("override", "option"), FIXED)
def test_a_scorer_of_an_export_refuses_the_eval_settings_its_graph_fixed(exported, override: str, option: list[str]) -> None:
    onnx = load_onnx(exported[1])
    StreamScorer.for_model(onnx, onnx.config, normalization="causal")  # its own settings: scored
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]}=.*the export has.*exported"):
        StreamScorer.for_model(onnx, onnx.config.override([override]), normalization="causal")


def test_gamma_is_not_compared_where_the_graph_does_not_use_it(exported, tmp_path: Path) -> None:
    model, config = load_model(exported[0])
    export_onnx(model, config.override(["eval.test_update=false"]), tmp_path / "n.onnx")
    onnx = load_onnx(tmp_path / "n.onnx")
    StreamScorer.for_model(onnx, onnx.config.override(["eval.gamma=100"]), normalization="causal")


def test_evaluate_refuses_an_export_with_other_settings(exported, tmp_path: Path) -> None:
    onnx = load_onnx(exported[1])
    with pytest.raises(ConfigError, match="eval.gamma=100.0 .the export has"):  # before the data root is read
        evaluate(onnx, onnx.config.override(["eval.gamma=100"]), tmp_path / "no_data")


@pytest.mark.parametrize(("override", "option"), FIXED)
@pytest.mark.parametrize("command", ["detect", "evaluate"])
def test_cli_refuses_an_export_with_other_eval_settings(exported, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        command: str, override: str, option: list[str]) -> None:
    head = ["detect", str(exported[2])] if command == "detect" else ["evaluate", "--data-root", str(tmp_path / "no_data")]
    out = tmp_path / "out"
    assert main([*head, "--checkpoint", str(exported[1]), *option, "--out", str(out), "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mnad: error:")]
    assert len(errors) == 1 and override.split("=")[0] in errors[0] and "export" in errors[0], errors
    assert not out.exists()


@pytest.mark.parametrize("override", ["model.t_length=3", "model.image_size=64"])
@pytest.mark.parametrize("kind", [0, 1])  # the model file, its export
def test_detect_refuses_other_model_settings_before_out_is_touched(exported, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                   kind: int, override: str) -> None:
    out = tmp_path / "out"
    assert main(["detect", str(exported[2]), "--checkpoint", str(exported[kind]), "--set", override, "--out", str(out), "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mnad: error:")]
    assert len(errors) == 1 and override.split("=")[0] in errors[0], errors
    assert not out.exists()
    # an earlier run there is left as it was
    out.mkdir()
    (out / "scores.csv").write_text("earlier\n")
    assert main(["detect", str(exported[2]), "--checkpoint", str(exported[kind]), "--set", override, "--out", str(out),
                 "--overwrite", "--quiet"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["scores.csv"] and (out / "scores.csv").read_text() == "earlier\n"


def test_detect_api_checks_the_model_before_out_is_made(exported, tmp_path: Path) -> None:
    for model, config in (load_model(exported[0]), (onnx := load_onnx(exported[1]), onnx.config)):
        with pytest.raises(ConfigError, match="model.t_length=3"):
            detect(model, config.override(["model.t_length=3"]), str(exported[2]), tmp_path / "out", progress=False)
        assert not (tmp_path / "out").exists()


def test_check_same_model_compares_an_exports_model_settings(exported) -> None:
    onnx = load_onnx(exported[1])
    check_same_model(onnx, onnx.config)
    with pytest.raises(ConfigError, match=r"model.memory_size=7 \(the model has 10\).*export"):
        check_same_model(onnx, onnx.config.override(["model.memory_size=7"]))


def test_several_streams_on_one_export_are_refused_before_any_window_moves(exported) -> None:
    onnx = load_onnx(exported[1])
    scorers = [StreamScorer.for_model(onnx, onnx.config, normalization="causal") for _ in range(2)]
    frame = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match="several sources at once need a PyTorch model"):
        score_streams(scorers, [frame, frame])
    assert [s.state().frames_seen for s in scorers] == [0, 0]
    assert score_streams(scorers[:1], [frame])[0] is None  # one stream of an export: as push


@pytest.mark.parametrize("threads", [["--threads", "1"], ["--set", "train.threads=1"]])
@pytest.mark.parametrize("command", ["detect", "evaluate"])
def test_threads_reach_onnx_runtime(exported, tmp_path: Path, command: str, threads: list[str]) -> None:
    head = ["detect", str(exported[2])] if command == "detect" else ["evaluate", "--data-root", str(tmp_path)]
    args = build_parser().parse_args([*head, "--checkpoint", str(exported[1]), *threads, "--out", str(tmp_path / "o")])
    model, config = load_scoring_model(args)
    assert config.train.threads == 1
    assert model.step.session.get_session_options().intra_op_num_threads == 1  # unset (ONNX Runtime's default) reads 0


def test_load_onnx_takes_threads_from_the_exports_config(exported) -> None:
    onnx = load_onnx(exported[1], threads=lambda config: 1 + config.model.t_length)
    assert onnx.step.session.get_session_options().intra_op_num_threads == 1 + onnx.config.model.t_length
    with pytest.raises(ConfigError, match="threads must be a whole number >= 0"):
        load_onnx(exported[1], threads=-1)


@pytest.mark.parametrize("streams", [0, -2, 1.5, True])
def test_for_streams_refuses_a_count_below_one(exported, streams: object) -> None:
    model, config = load_model(exported[0])
    with pytest.raises(ConfigError, match=r"streams must be a whole number >= 1"):
        StreamScorer.for_streams(model, config, streams)
