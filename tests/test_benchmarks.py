"""The hand-run benchmarks work (on tiny settings; their numbers are not checked here, only their bookkeeping)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
import tomllib
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from conftest import load_script, tiny_config
from safetensors.torch import save_file

import mnad.stream
import mnad.train
from mnad.config import Config
from mnad.model import MNAD
from mnad.model.memory import updated_memory

ROOT = Path(__file__).resolve().parents[1]


def benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py imported as a module."""
    return load_script(f"benchmarks/{name}.py")


def test_every_frame_rate_candidate_is_a_valid_config() -> None:
    frame_rate = benchmark("frame_rate")
    for name, spec in frame_rate.CANDIDATES.items():
        config = frame_rate.candidate_config(spec, gamma=2.0)
        assert config.eval.bf16 and config.eval.channels_last, name
        for override in spec["set"]:
            section, _, rest = override.partition(".")
            key, _, value = rest.partition("=")
            assert getattr(getattr(config, section), key) == tomllib.loads(f"v = {value}")["v"], (name, override)


def test_frame_rate_benchmark_writes_json_that_the_performance_doc_renders(tmp_path: Path) -> None:
    frame_rate = benchmark("frame_rate")
    out = tmp_path / "results" / "frame_rate.json"
    assert frame_rate.main(["--quick", "--threads", "1", "--frames", "2", "--warmup", "0", "--camera", "90", "60",
                          "--candidates", "pred128-nomem,pred128-psnr", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {r["candidate"]: r for r in result["candidates"]}
    assert list(rows) == ["pred128-nomem", "pred128-psnr"]
    nomem, psnr = rows["pred128-nomem"], rows["pred128-psnr"]
    assert nomem["memory"] is False and nomem["memory_updates"] == 0 and nomem["image_size"] == 128
    assert psnr["memory"] is True and psnr["memory_updates"] == psnr["frames_scored"] == 2  # gamma 2: every frame updates
    assert all(r["fps"] > 0 and r["peak_rss_mib"] > 0 for r in rows.values())
    # the AUC is the committed one, not a number of this run
    committed = json.loads((ROOT / "results" / "ped2_pred_nomem_fast" / "metrics.json").read_text())["metrics"]["micro_auc"]
    assert nomem["accuracy"]["micro_auc_mean"] == committed
    assert nomem["numbers_reached"] == (nomem["fps"] >= 25 and committed >= 0.96) and "meets_target" not in nomem
    assert nomem["fast_enough"] == (nomem["fps"] >= 25) and "real_time" not in nomem  # frames/s only: not "real time"

    make_doc = benchmark("make_performance_doc")
    shutil.copy(ROOT / "benchmarks" / "results" / "speed.json", out.parent / "speed.json")
    text = make_doc.render(out.parent)
    section = text[text.index("## Frame rate of the CPU recipes"):]
    assert "`pred128-nomem`: the same without memory" in section and "`ped2_pred_nomem_fast`" in section
    assert f"{100 * committed:.2f}" in section and "Quick run" in section


def test_the_frame_rate_benchmark_is_named_for_what_it_measures() -> None:
    """It measures frames/s next to offline AUCs (per-video min-max, some scorings chosen on test labels): no file, id or
    result of it says "real-time" (it was benchmarks/realtime.py, results/realtime.json, ids realtime128...)."""
    assert not (ROOT / "benchmarks" / "realtime.py").exists() and not (ROOT / "benchmarks" / "results" / "realtime.json").exists()
    frame_rate = benchmark("frame_rate")
    assert frame_rate.DEFAULT_OUT.name == "frame_rate.json" and "realtime" not in frame_rate.SCHEMA
    assert not [name for name in frame_rate.CANDIDATES if "realtime" in name]
    # the ids of runs made before the rename are shown under the new ones, each of which the benchmark still runs
    make_doc = benchmark("make_performance_doc")
    assert set(make_doc.RENAMED_CANDIDATES.values()) <= set(frame_rate.CANDIDATES)
    assert not re.search(r"real-?time", "\n".join(line for line in (ROOT / "benchmarks" / "README.md").read_text().splitlines()
                                                   if line.startswith("#")), flags=re.IGNORECASE)  # no heading says it
    assert not re.search(r"`realtime128|`pred192-realtime|`realtime\.json", (ROOT / "docs" / "performance.md").read_text())


def test_the_performance_doc_reads_frame_rate_results_under_their_old_name(tmp_path: Path) -> None:
    """A results folder from before the rename (realtime.json, ids realtime128..., command benchmarks/realtime.py) renders
    as the committed frame_rate.json does, under today's names."""
    make_doc = benchmark("make_performance_doc")
    old = tmp_path / "results"
    old.mkdir()
    shutil.copy(ROOT / "benchmarks" / "results" / "speed.json", old / "speed.json")
    shutil.copy(ROOT / "benchmarks" / "results" / "frame_rate.json", old / "realtime.json")
    text = make_doc.render(old)
    committed = make_doc.render(ROOT / "benchmarks" / "results")
    section = lambda t: t[t.index("## Frame rate of the CPU recipes"):t.index("\n## ", t.index("## Frame rate"))]  # noqa: E731
    assert section(text).replace(str(old), "benchmarks/results").replace("realtime.json", "frame_rate.json") == section(committed)
    assert "`smoothed128`" in section(text) and "`realtime128`" not in section(text) and "`realtime.json`" in text
    assert make_doc.command_text("python benchmarks/realtime.py --quick") == \
        "`python benchmarks/frame_rate.py --quick` (run as `benchmarks/realtime.py`, its name then)"
    assert make_doc.command_text("python benchmarks/frame_rate.py") == "`python benchmarks/frame_rate.py`"


def test_the_performance_doc_shows_renamed_recipes_under_their_new_name() -> None:
    renamed = benchmark("make_performance_doc").renamed
    assert renamed("ped2_pred_realtime") == "ped2_pred_fast_smoothed"
    assert renamed("ped2_pred_realtime_seed1, ped2_pred_realtime_compiled") == "ped2_pred_fast_smoothed_seed1, ped2_pred_fast_smoothed_compiled"
    assert renamed("ped2_pred_192_realtime") == "ped2_pred_192_smoothed"
    # a name that only begins like a renamed one keeps its name
    assert renamed("ped2_pred_realtime_x") == "ped2_pred_realtime_x"


def test_frame_rate_benchmark_refuses_an_unknown_candidate(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        benchmark("frame_rate").main(["--quick", "--candidates", "pred999", "--out", str(tmp_path / "x.json")])


def test_train_profile_splits_the_step_time_by_kind_and_the_doc_renders_it(tmp_path: Path) -> None:
    profile = benchmark("profile_train")
    out = tmp_path / "results" / "profile_train.json"
    assert profile.main(["--quick", "--threads", "1", "--size", "16", "--batch", "2", "--configs", "mnad-fast",
                         "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    kinds = row["ms_per_step_by_kind"]
    # the forward and backward convolutions, BatchNorm and Adam are each found, and nothing is counted twice
    for kind in ("convolution forward", "convolution backward", "BatchNorm", "ReLU", profile.OPTIMIZER):
        assert kinds[kind] > 0, kind
    assert sum(kinds.values()) == pytest.approx(1000 * row["profiled_step_s"], rel=0.05)
    gflop = result["gflop_by_operator"]
    assert gflop["convolution_backward"] > gflop["convolution"] > 0  # the backward does about twice the forward's work
    assert row["conv_bound_step_s"] == pytest.approx((kinds["convolution forward"] + kinds["convolution backward"]) / 1000)
    assert row["conv_backward_gflops"] == pytest.approx(gflop["convolution_backward"] / kinds["convolution backward"] * 1000)
    # each row is judged against the peak measured beside it, not once at the start
    peak = sum(row["bf16_peak_gflops"].values()) / 2
    assert row["fraction_of_bf16_peak"] == pytest.approx(sum(gflop.values()) / row["step_s"] / peak)

    make_doc = benchmark("make_performance_doc")
    shutil.copy(ROOT / "benchmarks" / "results" / "speed.json", out.parent / "speed.json")
    section = make_doc.render(out.parent).split("## Where a training step's time goes")[1]
    assert "16×16, batch 2" in section and "| mnad-fast |" in section and "Quick run" in section


def test_train_profile_finds_adam_by_its_caller() -> None:
    kind_of = benchmark("profile_train").kind_of
    assert kind_of("aten::mul_", ["Optimizer.step#Adam.step"]) == benchmark("profile_train").OPTIMIZER
    assert kind_of("aten::mul_", []) == "other operators"
    assert kind_of("aten::convolution_backward") == "convolution backward"
    assert kind_of("aten::mkldnn_convolution") == "convolution forward"
    assert kind_of("aten::native_batch_norm_backward") == "BatchNorm"


def test_profile_benchmark_splits_the_frame_time_and_the_doc_renders_it(tmp_path: Path) -> None:
    profile = benchmark("profile_step")
    out = tmp_path / "results" / "profile.json"
    assert profile.main(["--quick", "--threads", "1", "--configs", "mnad-fast", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    kinds = row["ms_per_frame_by_kind"]
    assert row["config"] == "mnad-fast" and row["size"] == 64 and row["frames"] == 2
    assert kinds["convolution"] > 0 and kinds["ReLU"] > 0  # the eager fast path runs its ReLUs as separate operators
    assert sum(kinds.values()) >= row["profiled_ms_per_frame"] * (1 - 1e-9)  # the remainder fills the frame: nothing lost
    assert row["conv_bound_fps"] == pytest.approx(1000 / kinds["convolution"])
    assert row["conv_gflops"] == pytest.approx(row["gflop_per_frame"] * row["conv_bound_fps"])

    make_doc = benchmark("make_performance_doc")
    shutil.copy(ROOT / "benchmarks" / "results" / "speed.json", out.parent / "speed.json")
    section = make_doc.render(out.parent).split("## Where a frame's time goes")[1]
    assert "64×64 | mnad-fast" in section and "convolution (ms)" in section and "Quick run" in section


def test_speed_settings_and_rows_come_from_configs_toml() -> None:
    speed = benchmark("speed")
    data = tomllib.loads((ROOT / "benchmarks" / "configs.toml").read_text())
    full = speed.parse_args([])
    assert full.sizes == data["settings"]["full"]["sizes"] and full.score_list == data["settings"]["full"]["score_configs"]
    quick = speed.parse_args(["--quick", "--train-configs", ""])
    assert quick.sizes == data["settings"]["quick"]["sizes"] and quick.train_list == []
    assert quick.score_list == data["settings"]["full"]["score_configs"]  # settings.quick leaves it to settings.full
    assert speed.SCORE_CONFIGS["mnad-compiled"] == speed.Row("mnad", data["score"]["mnad-compiled"]["description"],
                                                             bf16=True, channels_last=True, compile=True, target=True)
    with pytest.raises(SystemExit):
        speed.parse_args(["--train-configs", "mnad-imaginary"])


def test_speed_training_rows_and_train_run_the_same_step(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/speed.py times mnad.train.train_step, the function train()'s loop calls: no copy of the step."""
    calls: list[tuple[bool, bool]] = []
    step = mnad.train.train_step

    def spy(model, optimizer, clip, cfg, **kwargs):
        calls.append((cfg.bf16, cfg.channels_last))
        return step(model, optimizer, clip, cfg, **kwargs)

    monkeypatch.setattr(mnad.train, "train_step", spy)
    config = tiny_config()
    config.train.batch_size = 20
    mnad.train.train(config, synthetic_root, tmp_path / "run", progress=False)
    assert calls == [(False, False)] * 2  # 2 videos of 24 frames: 40 clips of 5, 2 batches of 20

    calls.clear()
    torch.manual_seed(0)
    save_file(MNAD(config.model).state_dict(), str(tmp_path / "weights.safetensors"))
    speed = benchmark("speed")
    job = {"threads": 1, "device": "cpu", "weights": str(tmp_path / "weights.safetensors"), "gamma": 2.0,
           "model": dataclasses.asdict(config.model), "config": "mnad-fast", "size": 32, "batch": 2, "warmup": 1, "steps": 2}
    result = speed.work_train(job)
    assert calls == [(True, True)] * 3 and len(result["losses"]) == 3 and len(result["times_s"]) == 2


def _speed_job(config, tmp_path: Path) -> dict:
    torch.manual_seed(0)
    save_file(MNAD(config.model).state_dict(), str(tmp_path / "weights.safetensors"))
    return {"threads": 1, "device": "cpu", "weights": str(tmp_path / "weights.safetensors"), "gamma": 2.0,
            "model": dataclasses.asdict(config.model), "kind": "score", "size": 32, "warmup": 1, "frames": 2}


def test_speed_scoring_rows_time_the_stream_scorer(tmp_path: Path) -> None:
    """mnad's scoring rows push frames through mnad.stream.StreamScorer: one result per clip, every frame timed
    after the warm-up, the memory updated after every frame (gamma 2)."""
    speed = benchmark("speed")
    job = _speed_job(tiny_config(), tmp_path)
    results = {name: speed.work_score(dict(job, config=name)) for name in ("mnad-fp32", "mnad-fast")}
    for name, r in results.items():
        # warm-up + timed frames scored: the t_length - 1 frames before the first filled its window, untimed
        assert r["frames_scored"] == r["updates"] == job["warmup"] + job["frames"], name
        assert len(r["times_s"]) == len(r["cpu_s"]) == job["frames"] and all(t > 0 for t in r["times_s"]), name
    assert results["mnad-fast"]["mean_psnr"] == pytest.approx(results["mnad-fp32"]["mean_psnr"], abs=0.05)


def test_speed_onnx_row_scores_as_pytorch_does(tmp_path: Path) -> None:
    speed = benchmark("speed")
    job = _speed_job(tiny_config(), tmp_path)
    onnx = str(tmp_path / "m.onnx")
    speed.work_export(dict(job, kind="export", onnx=onnx))
    fp32 = speed.work_score(dict(job, config="mnad-fp32"))
    exported = speed.work_score(dict(job, config="onnx", onnx=onnx))
    assert exported["frames_scored"] == exported["updates"] == fp32["frames_scored"]
    assert exported["mean_psnr"] == pytest.approx(fp32["mean_psnr"], abs=1e-3)


@pytest.mark.parametrize("normalization", ["video", "causal"])
def test_long_stream_benchmark_writes_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, normalization: str) -> None:
    long_stream = benchmark("long_stream")
    out = tmp_path / "long_stream.json"
    monkeypatch.setattr(sys, "argv", ["long_stream.py", "--seconds", "0.4", "--fps", "25", "--size", "32", "--width", "8",
                                      "--sample-every", "2", "--normalization", normalization, "--out", str(out)])
    long_stream.main()
    result = json.loads(out.read_text())
    assert result["frames"] == 10 and result["frames_scored"] == 10 - 4  # clips of 5 frames
    assert result["setup"]["normalization"] == normalization
    # at the start, after every 2nd frame (by its index; frames 0-3 only fill the first clip), at the end
    assert [s["frame"] for s in result["rss_samples"]] == [0, 6, 8, 10, 10]


def test_int8_bound_counts_every_convolution_once_and_the_doc_renders_it(tmp_path: Path) -> None:
    bound = benchmark("int8_bound")
    out = tmp_path / "results" / "int8_bound.json"
    assert bound.main(["--sizes", "128", "--out", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    speed = json.loads((ROOT / "benchmarks" / "results" / "speed.json").read_text())
    # the ONNX graph's convolutions against FlopCounterMode's count of the same step (which adds the memory's matmuls)
    counted = speed["flops"]["score_gflop_per_frame"]["128"]
    assert row["total_gflop"] == pytest.approx(counted, rel=2e-3) and row["total_gflop"] < counted
    assert sum(layer["gflop"] for layer in row["layers"]) == pytest.approx(row["total_gflop"])
    assert {layer["op"] for layer in row["layers"] if layer["runs_as"] == "int8"} == {"Conv"}
    assert all(row["gflop"][kind] > 0 for kind in ("int8", "kept", "transposed"))
    cases = row["bound"]["cases"]
    assert cases["as_built"]["bound_fps"] < cases["rest_in_bf16"]["bound_fps"] < cases["all_int8"]["bound_fps"]
    # int8 everywhere at twice the bf16 peak is at most twice the bf16 limit
    bf16_limit = row["bound"]["peaks_gflops"]["bf16"] / row["total_gflop"]
    assert cases["all_int8"]["bound_fps"] == pytest.approx(2 * bf16_limit)

    make_doc = benchmark("make_performance_doc")
    shutil.copy(ROOT / "benchmarks" / "results" / "speed.json", out.parent / "speed.json")
    section = make_doc.render(out.parent).split("## int8 scoring: the bound on the AMX Xeon")[1]
    assert "| 128×128 | 16.3 |" in section and "`rest_in_bf16`" in section


def test_int8_range_compares_both_weight_ranges_with_fp32(ped2_root: Path, tmp_path: Path) -> None:
    bench = benchmark("int8_range")
    out = tmp_path / "int8_range.json"
    assert bench.main(["--data-root", str(ped2_root.parent), "--calibration-clips", "4", "--clips", "3", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["split"] == "training" and result["clips"] == 3
    assert [r["graph"] for r in result["rows"]] == ["int8-7bit", "int8-8bit"]
    for row in result["rows"]:  # quantised, so not fp32's to the bit, but within a dB on the shipped model
        assert 0 < row["psnr_abs_diff_db"]["mean"] <= row["psnr_abs_diff_db"]["max"] < 1


def test_train_precision_compares_each_setting_with_fp32_and_renders(ped2_root: Path, tmp_path: Path) -> None:
    from mnad.checkpoint import save_model

    bench = benchmark("train_precision")
    config = tiny_config()
    torch.manual_seed(1)
    save_model(tmp_path / "tiny.safetensors", MNAD(config.model), config)
    out = tmp_path / "results" / "train_precision.json"
    assert bench.main(["--data-root", str(ped2_root.parent), "--checkpoint", str(tmp_path / "tiny.safetensors"),
                       "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["weights"] for r in result["runs"]] == ["trained", "trained", "init", "init"]
    for start, rows in result["summary"].items():
        assert set(rows) == set(bench.SETTINGS) - {"fp32"} | {bench.OTHER_BATCH}, start
        # other kernels, the same maths: within float rounding; bf16: further off; another batch: further still
        assert min(rows["fp32-cl"]["grad_cosine_min"].values()) > 0.999
        assert rows["bf16-cl"]["grad_relative_error_max"]["all"] > 10 * rows["fp32-cl"]["grad_relative_error_max"]["all"]
        assert rows[bench.OTHER_BATCH]["grad_relative_error_max"]["all"] > rows["bf16-cl"]["grad_relative_error_max"]["all"]
    # the variants are undone: the package's own numerics afterwards
    import mnad.model.mnad as mnad_model

    model = MNAD(config.model)
    both = bench.Setting(bf16=True, channels_last=True, bf16_read=True, fp32_modules=("encoder.stage4",))
    with bench.numeric_variant(model, both):
        assert "forward" in vars(model.encoder.stage4) and mnad_model.outside_autocast.__module__ == "train_precision"
    assert "forward" not in vars(model.encoder.stage4) and mnad_model.outside_autocast.__module__ == "mnad.model.mnad"

    make_doc = benchmark("make_performance_doc")
    shutil.copy(ROOT / "benchmarks" / "results" / "speed.json", out.parent / "speed.json")
    section = make_doc.render(out.parent).split("## bf16 training against fp32")[1]
    assert "### the shipped model" in section and "| `bf16-cl-head` |" in section and "`fp32-other-batch`" in section


def test_demo_benchmark_reads_the_auc_line_the_cli_prints(capsys: pytest.CaptureFixture[str]) -> None:
    from mnad.cli import print_metrics

    demo = benchmark("demo")

    print_metrics({"micro_auc": 0.98204, "macro_auc": 0.9, "per_video_auc": {"01": 0.9}, "videos": 1,
                   "frames_scored": 10, "abnormal_frames": 3, "note": ""})
    match = demo.AUC_LINE.search(capsys.readouterr().out)
    assert match is not None and float(match.group(1)) == 98.20


def test_demo_benchmark_writes_nothing_when_the_demo_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = benchmark("demo")
    monkeypatch.setattr(demo.sys, "executable", "false")  # the demo's process exits 1
    monkeypatch.setattr(demo, "busy_cores", lambda: 0.0)
    with pytest.raises(SystemExit, match="mnad demo failed"):
        demo.main(["--out", str(tmp_path / "demo.json")])
    assert not (tmp_path / "demo.json").exists()


def test_demo_benchmark_fails_when_the_demo_prints_no_auc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    demo = benchmark("demo")
    monkeypatch.setattr(demo.sys, "executable", "true")  # exits 0, prints nothing
    monkeypatch.setattr(demo, "busy_cores", lambda: 0.0)
    with pytest.raises(SystemExit, match="printed no frame-level AUC"):
        demo.main(["--out", str(tmp_path / "demo.json")])
    assert not (tmp_path / "demo.json").exists()


def test_flop_counts_are_of_the_scoring_and_training_steps_themselves(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counts run stream.ScoringStep and train.train_step (was: a hand-built copy of each, which missed patch D's
    product): work added to either step is counted."""
    flops = benchmark("flops")
    config = tiny_config(image_size=32)
    score, train = flops.score_gflop_per_frame(config), flops.train_gflop_per_step(config, 2)
    assert 0 < score < train
    extra = torch.zeros(64, 128), torch.zeros(128, 32)  # 2 * 64 * 128 * 32 FLOP
    added = 2 * 64 * 128 * 32 / 1e9
    scoring_forward, forward_losses = mnad.stream.ScoringStep.forward, mnad.train.forward_losses

    def heavier_scoring(self, *args):  # noqa: ANN001, ANN202
        torch.mm(*extra)
        return scoring_forward(self, *args)

    def heavier_losses(*args):  # noqa: ANN001, ANN202
        torch.mm(*extra)
        return forward_losses(*args)

    monkeypatch.setattr(mnad.stream.ScoringStep, "forward", heavier_scoring)
    monkeypatch.setattr(mnad.train, "forward_losses", heavier_losses)
    assert flops.score_gflop_per_frame(config) == pytest.approx(score + added, rel=1e-12)
    assert flops.train_gflop_per_step(config, 2) == pytest.approx(train + added, rel=1e-12)


def test_speed_check_judges_the_memory_update_on_the_references_queries(tmp_path: Path) -> None:
    """The equivalence check holds mnad's memory update to the reference's on the reference's own queries, not to the
    end-to-end items: with items nearly parallel every query is near a tie, the two sides' rounding of the queries assigns
    some to other items, and the updated items differ far beyond rounding though both compute the same function (at
    256x256 with the random initialisation one tied query did that: items Δ 1.4e-3, the check failed). The end-to-end
    difference and the near ties are still reported, and the doc says why."""
    speed, make_doc = benchmark("speed"), benchmark("make_performance_doc")
    config = Config()  # the reference's model: width 64, 4 + 1 frames, 10 items of 512
    config.model.image_size = 32
    torch.manual_seed(0)
    state = MNAD(config.model).state_dict()
    state["memory.items"] = F.normalize(torch.ones(10, 512) + 1e-6 * torch.rand(10, 512), dim=1)  # all but parallel
    save_file(state, str(tmp_path / "weights.safetensors"))
    job = {"threads": 1, "device": "cpu", "weights": str(tmp_path / "weights.safetensors"), "gamma": 2.0,
           "model": dataclasses.asdict(config.model), "sizes": [32], "tol_psnr": 1e-3, "tol_loss": 1e-4,
           "check_train_size": 32, "check_train_batch": 2}
    out = speed.work_check(job)
    assert out["ok"] and out["train"]["rel_diff"] <= 1e-4
    for row in (out["score"]["32"], out["train"]):
        end_to_end = row.get("items_max_abs_diff", row.get("items_max_abs_diff_mnad_fp32"))
        assert row["same_function"] and end_to_end > 1e-4 and row["near_ties"] > 0, row
        assert row["items_max_abs_diff_same_queries"] <= 1e-6, row
    doc = "\n".join(make_doc.checks_section({"checks": out}))
    assert "on the reference's own queries" in doc and f"{out['train']['near_ties']} of 32 queries near a tie" in doc


def _tied_memory() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthogonal items and queries each clearly nearest one item, but for query 0, on the bisector of items 0 and 1:
    nudged by 1e-6 towards item 0 (the reference's rounding) or towards item 1 (mnad's)."""
    torch.manual_seed(0)
    items = torch.eye(4, 8)
    queries = F.normalize(torch.eye(4, 8).repeat(3, 1) + 0.1 * torch.rand(12, 8), dim=1)
    tie = F.normalize(items[0] + items[1], dim=0)
    nudge = 1e-6 * (items[0] - items[1])
    ref_queries, mnad_queries = queries.clone(), queries.clone()
    ref_queries[0], mnad_queries[0] = tie + nudge, tie - nudge
    return items, ref_queries, mnad_queries


def test_speed_update_check_passes_a_near_tie_and_fails_a_wrong_update() -> None:
    speed = benchmark("speed")
    reference = load_script("benchmarks/reference_model.py").Memory().update
    items, ref_queries, mnad_queries = _tied_memory()
    items_ref = reference(ref_queries, items)
    # a near tie: the same function, the queries' rounding flips one query's item
    tied = speed.update_check(ref_queries, items, items_ref, updated_memory(mnad_queries, items), reference=reference)
    assert tied["items_max_abs_diff"] > 0.1 and tied["near_ties"] == 1
    assert tied["items_max_abs_diff_same_queries"] <= 1e-7 and tied["ok"]
    # no tie, the same queries on both sides: passes
    clear = torch.cat([ref_queries[1:], mnad_queries[1:]])
    same = speed.update_check(clear, items, reference(clear, items), updated_memory(clear, items), reference=reference)
    assert same["near_ties"] == 0 and same["items_max_abs_diff"] <= 1e-6 and same["ok"]

    # a wrong update (each item plus the plain sum of its queries, without the weights v'_km): fails, near ties or not
    def wrong(queries: torch.Tensor, items: torch.Tensor, max_over: str = "all") -> torch.Tensor:
        assigned = F.one_hot((queries @ items.t()).argmax(1), items.shape[0]).to(queries.dtype)
        return F.normalize(items + assigned.t() @ queries, dim=1)

    for queries, ref_items in ((ref_queries, items_ref), (clear, reference(clear, items))):
        bad = speed.update_check(queries, items, ref_items, wrong(queries, items), reference=reference, update=wrong)
        assert bad["items_max_abs_diff_same_queries"] > 1e-4 and not bad["ok"]
    # a step that leaves the memory as it was fails, with no near tie and with one (the tie excuses only the two items
    # its query may update, 0 and 1; items 2 and 3 moved in the reference's step and not in this one)
    stale = speed.update_check(clear, items, reference(clear, items), items, reference=reference)
    assert stale["items_max_abs_diff_same_queries"] <= 1e-6 and not stale["ok"]
    stale_tied = speed.update_check(ref_queries, items, items_ref, items, reference=reference)
    assert stale_tied["near_ties"] == 1 and stale_tied["end_to_end_judged"] and not stale_tied["ok"]
    assert tied["items_max_abs_diff_untied"] <= 1e-6 and tied["end_to_end_judged"]
    # ties within the margin only: the tie above is 1.4e-6 apart
    assert speed.near_ties(ref_queries, items, margin=1e-7) == 0


def test_a_benchmarks_command_line_is_relative_to_the_repo_and_quoted() -> None:
    command_line = benchmark("speed").command_line
    assert command_line(ROOT / "benchmarks" / "profile_train.py", ["--out", "a b.json"]) == \
        "python benchmarks/profile_train.py --out 'a b.json'"


def test_train_flops_by_operator_add_up_the_overloads_of_one_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two overloads of one operator (aten.mm.default, aten.mm.out) count under one name, added, not overwritten."""
    flops = benchmark("flops")
    counts = {torch.ops.aten.mm.default: 3e9, torch.ops.aten.mm.out: 2e9, torch.ops.aten.convolution.default: 1e9}
    monkeypatch.setattr(flops.FlopCounterMode, "get_flop_counts", lambda self: {"Global": counts})
    config = Config()
    config.model.image_size, config.model.width = 16, 8
    assert flops.train_gflop_by_operator(config, 1) == {"mm": 5.0, "convolution": 1.0}


def test_every_benchmark_records_its_command_line_the_same_way() -> None:
    """A benchmark's JSON says how it was run through speed.result_head, which writes speed.command_line (quoted, so an
    argument with a space can be run again as written), never a command line (or any other key of the head) built by hand."""
    heads = 0
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        for line in text.splitlines():
            if any(f'"{key}":' in line for key in ("command", "schema")) and "d['command']" not in line and 'd["command"]' not in line:
                assert path.name == "speed.py" and (line.startswith("    head: dict = {") or "command_line(script, argv)" in line), \
                    f"{path.name}: {line.strip()}"
        if "\nSCHEMA = " in text:
            assert "result_head(SCHEMA, __file__, argv, quick=" in text, f"{path.name} writes no result_head"
            heads += 1
    assert heads >= 12


def test_a_benchmarks_result_head_is_its_schema_time_command_quick_and_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    speed = benchmark("speed")
    monkeypatch.setattr(speed, "machine_info", lambda device: {"device": device})
    script = ROOT / "benchmarks" / "profile_train.py"
    head = speed.result_head("mnad-x-1", script, ["--out", "a b.json"], quick=True)
    assert list(head) == ["schema", "created", "command", "quick", "machine"]
    assert head["schema"] == "mnad-x-1" and head["quick"] is True and head["machine"] == {"device": "cpu"}
    assert head["command"] == speed.command_line(script, ["--out", "a b.json"]) == "python benchmarks/profile_train.py --out 'a b.json'"
    created = datetime.fromisoformat(head["created"])
    assert created.tzinfo is not None and created.utcoffset() == timedelta(0) and created.microsecond == 0
    assert speed.result_head("s", script, [], quick=False, device="cuda")["machine"] == {"device": "cuda"}
    assert speed.result_head("s", script, [], quick=False)["quick"] is False
    # a benchmark without a quick mode, or with its own machine record, leaves those keys to itself
    assert list(speed.result_head("s", script, [], quick=None)) == ["schema", "created", "command", "machine"]
    assert list(speed.result_head("s", script, [], quick=None, device=None) | {"machine": {}}) == ["schema", "created", "command", "machine"]


@pytest.mark.parametrize(("busy", "warned"), [(0.5, True), (0.1, False), (None, False)])
def test_a_timed_benchmark_starts_on_its_threads_and_warns_when_the_machine_is_busy(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], busy: float | None, warned: bool) -> None:
    speed = benchmark("speed")
    monkeypatch.setattr(speed, "busy_cores", lambda: busy)
    threads = torch.get_num_threads()
    try:
        before = speed.time.perf_counter()
        started, measured = speed.start_timing(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert measured == busy and started >= before
    err = capsys.readouterr().err
    assert ("WARNING: 0.50 cores busy: the machine is not idle" in err) is warned and (err == "") is not warned
