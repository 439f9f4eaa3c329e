"""int8 scoring: the exported graph's convolutions quantised with ONNX Runtime, calibrated on normal frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import tiny_config

from mnad.checkpoint import save_model
from mnad.cli import main
from mnad.data import split_videos
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.export import export_onnx, load_onnx
from mnad.model import MNAD
from mnad.quantize import check_int8
from mnad.stream import StreamScorer

CLIPS = 12  # a tiny model calibrates in a second on a dozen clips


@pytest.fixture(scope="module")
def exported(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny model (32x32, width 8), its fp32 export and its int8 export calibrated on the synthetic training videos."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("int8")
    config = tiny_config().override(["eval.gamma=1.0"])  # every frame updates the memory: the fp32 update runs in the int8 graph
    model = MNAD(config.model)
    save_model(folder / "m.safetensors", model, config)
    export_onnx(model, config, folder / "m.onnx")
    normal = split_videos(synthetic_root, "synthetic", "training")
    export_onnx(model, config, folder / "m.int8.onnx", int8=True, calibration=normal, calibration_clips=CLIPS)
    return folder / "m.safetensors", folder / "m.onnx", folder / "m.int8.onnx"


def score(path: Path, synthetic_root: Path) -> np.ndarray:
    """(PSNR, patch PSNR, D, E_t, updated) of each scored frame of the synthetic test videos, in order."""
    model = load_onnx(path, threads=1)
    scorer = StreamScorer.for_model(model, model.config, normalization="video")
    rows = []
    for video in split_videos(synthetic_root, "synthetic", "testing"):
        scorer.new_video()
        for i in range(len(video)):
            if (r := scorer.push(video.frame(i, 32, 3))) is not None:
                rows.append((r.psnr, r.patch_psnr, r.distance, r.regular, r.updated))
    return np.array(rows)


def test_int8_export_scores_close_to_fp32(exported: tuple[Path, Path, Path], synthetic_root: Path) -> None:
    _, fp32, int8 = exported
    graph = onnx.load(str(int8)).graph
    weights = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    int8_convs = [n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in producers
                  and weights[producers[n.input[1]].input[0]].data_type == onnx.TensorProto.INT8]
    fp32_convs = [n.name for n in graph.node if n.op_type == "Conv" and n.input[1] in weights]
    # the convolutions inside the U-Net read int8 weights; those of the queries and of the frame's ends (the first,
    # which reads the frames, and the decoder's head, which makes the frame) stay fp32 ...
    assert len(int8_convs) == 12 and load_onnx(int8).int8["fp32_convolutions"] == fp32_convs
    assert [name.split("/")[-2] for name in fp32_convs] == ["stage1.0", "stage4.3", "head.0", "head.3", "head.6"]
    # ... and no operator of the memory maths or of the scores reads a dequantised (8-bit) tensor
    readers = {n.op_type for n in graph.node for i in n.input if i in producers and producers[i].op_type == "DequantizeLinear"}
    assert readers <= {"Conv", "ConvTranspose", "MaxPool", "Concat", "QuantizeLinear"}
    reference, quantised = score(fp32, synthetic_root), score(int8, synthetic_root)
    assert reference.shape == quantised.shape == (2 * (24 - 4), 5)
    assert quantised[:, 4].all()  # every frame updated the memory in the int8 graph too
    assert not np.array_equal(reference[:, 0], quantised[:, 0])  # it is another graph, not the fp32 one
    np.testing.assert_allclose(quantised[:, 0], reference[:, 0], atol=0.3)  # PSNR, dB: int8 activations move it a little
    np.testing.assert_allclose(quantised[:, 1], reference[:, 1], atol=0.5)  # the worst patch's PSNR
    np.testing.assert_allclose(quantised[:, 2], reference[:, 2], atol=0.02)  # D: unit queries against unit items
    assert np.corrcoef(quantised[:, 0], reference[:, 0])[0, 1] > 0.95


def test_int8_sidecar_records_calibration_and_is_checked(exported: tuple[Path, Path, Path], synthetic_root: Path,
                                                         tmp_path: Path) -> None:
    _, fp32, int8 = exported
    assert load_onnx(fp32).int8 is None
    record = load_onnx(int8).int8
    calibration = record["calibration"]
    assert record["quantised_ops"] == ["Conv", "Relu", "MaxPool"] and record["format"] == "QDQ"
    assert calibration["clips"] == CLIPS and calibration["frames_per_clip"] == 5
    training = split_videos(synthetic_root, "synthetic", "training")
    assert [v["path"] for v in calibration["videos"]] == [str(v.path) for v in training]  # spread over both videos
    assert sum(len(v["clip_starts"]) for v in calibration["videos"]) == CLIPS
    assert all(0 <= s <= 24 - 5 for v in calibration["videos"] for s in v["clip_starts"])
    # an edited provenance, or the int8 graph swapped for the fp32 one, is refused before use
    side = json.loads(Path(f"{int8}.json").read_text(encoding="utf-8"))
    side["int8"]["calibration"]["clips"] = 1000
    (tmp_path / "a.onnx").write_bytes(int8.read_bytes())
    (tmp_path / "a.onnx.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_onnx(tmp_path / "a.onnx")
    (tmp_path / "b.onnx").write_bytes(fp32.read_bytes())
    (tmp_path / "b.onnx.json").write_text(Path(f"{int8}.json").read_text(encoding="utf-8"))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_onnx(tmp_path / "b.onnx")


def test_int8_export_needs_normal_footage(exported: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model_file, fp32, _ = exported
    from mnad.checkpoint import load_model

    model, config = load_model(model_file)
    with pytest.raises(ConfigError, match="calibrated on normal footage"):
        export_onnx(model, config, tmp_path / "m.onnx", int8=True)
    with pytest.raises(ConfigError, match="--calibration-clips must be a whole number >= 1"):
        export_onnx(model, config, tmp_path / "m.onnx", int8=True, calibration=[object()], calibration_clips=0)  # type: ignore[list-item]
    assert not (tmp_path / "m.onnx").exists()
    with pytest.raises(ConfigError, match="--int8"):  # --int8 asked of a model that would not score in int8
        check_int8(load_onnx(fp32), fp32)
    with pytest.raises(ConfigError, match="mnad export"):
        check_int8(model, model_file)


def test_cli_int8_export_evaluate_detect(exported: tuple[Path, Path, Path], synthetic_root: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    model_file, fp32, _ = exported
    out = tmp_path / "m.int8.onnx"
    normal = synthetic_root / "synthetic" / "training" / "frames"
    assert main(["export", "--checkpoint", str(model_file), "--int8", "--calibration-data", str(normal), "--calibration-clips", "8",
                 "--out", str(out)]) == 0
    assert "int8" in capsys.readouterr().out and load_onnx(out).int8["calibration"]["clips"] == 8
    assert main(["export", "--checkpoint", str(model_file), "--int8", "--data-root", str(synthetic_root), "--calibration-clips", "8",
                 "--out", str(tmp_path / "root.int8.onnx")]) == 0  # the training videos of the model's dataset
    assert load_onnx(tmp_path / "root.int8.onnx").int8["calibration"] == load_onnx(out).int8["calibration"]
    source = str(synthetic_root / "synthetic" / "testing" / "frames" / "01")
    assert main(["detect", source, "--checkpoint", str(out), "--int8", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    assert len((tmp_path / "d" / "scores.csv").read_text().splitlines()) == 1 + 24 - 4
    assert main(["evaluate", "--checkpoint", str(out), "--int8", "--data-root", str(synthetic_root), "--out", str(tmp_path / "e"),
                 "--report", str(tmp_path / "r"), "--top-k", "1", "--quiet"]) == 0  # the report's thumbnails score with it too
    assert (tmp_path / "r" / "report.html").is_file()
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["metrics"]["frames_scored"] == 2 * (24 - 4)
    capsys.readouterr()
    # user mistakes: one `mnad: error:` line each, nothing written
    bad = [
        ["export", "--checkpoint", str(model_file), "--int8", "--calibration-data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.onnx")],
        ["export", "--checkpoint", str(model_file), "--int8", "--out", str(tmp_path / "x.onnx")],
        ["export", "--checkpoint", str(model_file), "--calibration-data", str(normal), "--out", str(tmp_path / "x.onnx")],
        ["export", "--checkpoint", str(model_file), "--int8", "--calibration-data", str(normal / "01"), "--calibration-clips", "0",
         "--out", str(tmp_path / "x.onnx")],
        ["evaluate", "--checkpoint", str(model_file), "--int8", "--data-root", str(synthetic_root), "--quiet"],
        ["detect", source, "--checkpoint", str(fp32), "--int8", "--out", str(tmp_path / "f"), "--quiet"],
    ]
    for argv in bad:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("mnad: error: ") and "Traceback" not in err, err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "f").exists()


def test_calibration_footage_too_short_is_a_data_error(exported: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import cv2

    from mnad.checkpoint import load_model
    from mnad.data import open_video

    model, config = load_model(exported[0])
    short = tmp_path / "short"
    short.mkdir()
    for i in range(3):  # fewer frames than one clip of 5
        cv2.imwrite(str(short / f"{i}.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match="too few frames"):
        export_onnx(model, config, tmp_path / "m.onnx", int8=True, calibration=[open_video(short)])


def test_int8_benchmark_rows_score_each_path(exported: tuple[Path, Path, Path]) -> None:
    """benchmarks/int8.py times the int8 export, the fp32 export and PyTorch through the same StreamScorer."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("int8_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "int8.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["int8_bench"] = bench
    spec.loader.exec_module(bench)
    weights, fp32, int8 = exported
    paths = {"weights": str(weights), "fp32": str(fp32), "int8": str(int8)}
    rows = {row: bench.work({"row": row, "size": 32, "threads": 1, "warmup": 1, "frames": 3, "paths": paths})
            for row in ("onnx-int8", "onnx-fp32", "mnad-fp32")}
    assert all(len(r["times_s"]) == len(r["cpu_s"]) == 3 and r["peak_rss_mib"] > 0 for r in rows.values())
    np.testing.assert_allclose(rows["onnx-fp32"]["psnr"], rows["mnad-fp32"]["psnr"], atol=1e-3)
    np.testing.assert_allclose(rows["onnx-int8"]["psnr"], rows["onnx-fp32"]["psnr"], atol=0.3)


def test_int8_benchmark_pt2e_row_quantises_the_same_convolutions_and_scores_close_to_fp32(exported: tuple[Path, Path, Path]) -> None:
    """The candidate PT2E row (benchmarks/int8.py --pt2e): the scoring step quantised by torchao with the convolutions
    mnad.quantize keeps fp32 left alone, compiled, scored through the same StreamScorer."""
    pytest.importorskip("torchao")
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("int8_bench", Path(__file__).resolve().parents[1] / "benchmarks" / "int8.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["int8_bench"] = bench
    spec.loader.exec_module(bench)
    weights, fp32, int8 = exported
    job = {"size": 32, "threads": 1, "warmup": 1, "frames": 3, "data_root": None, "calibration_clips": 4,
           "paths": {"weights": str(weights), "fp32": str(fp32), "int8": str(int8)}}
    pt2e, eager = (bench.work(job | {"row": row}) for row in ("pt2e-int8", "mnad-fp32"))
    assert len(pt2e["times_s"]) == 3 and pt2e["updates"] == eager["updates"]
    np.testing.assert_allclose(pt2e["psnr"], eager["psnr"], atol=0.3)
    assert max(abs(a - b) for a, b in zip(pt2e["psnr"], eager["psnr"], strict=True)) > 0  # it did quantise something
