"""The hand-run benchmarks work (on tiny settings; their numbers are not checked here, only their bookkeeping)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_realtime_candidate_is_a_valid_config() -> None:
    realtime = load_script("realtime")
    for name, spec in realtime.CANDIDATES.items():
        config = realtime.candidate_config(spec, gamma=2.0)
        assert config.eval.bf16 and config.eval.channels_last, name
        for override in spec["set"]:
            section, _, rest = override.partition(".")
            key, _, value = rest.partition("=")
            assert getattr(getattr(config, section), key) == tomllib.loads(f"v = {value}")["v"], (name, override)


def test_realtime_benchmark_writes_json_that_the_performance_doc_renders(tmp_path: Path) -> None:
    realtime = load_script("realtime")
    out = tmp_path / "results" / "realtime.json"
    assert realtime.main(["--quick", "--threads", "1", "--frames", "2", "--warmup", "0", "--camera", "90", "60",
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
    assert nomem["meets_target"] == (nomem["fps"] >= 25 and committed >= 0.96)

    make_doc = load_script("make_performance_doc")
    shutil.copy(ROOT / "benchmarks" / "results" / "speed.json", out.parent / "speed.json")
    text = make_doc.render(out.parent)
    section = text[text.index("## Real-time CPU recipe"):]
    assert "`pred128-nomem`: the same without memory" in section and "`ped2_pred_nomem_fast`" in section
    assert f"{100 * committed:.2f}" in section and "Quick run" in section


def test_realtime_benchmark_refuses_an_unknown_candidate(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        load_script("realtime").main(["--quick", "--candidates", "pred999", "--out", str(tmp_path / "x.json")])


def test_profile_benchmark_splits_the_frame_time_and_the_doc_renders_it(tmp_path: Path) -> None:
    profile = load_script("profile_step")
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

    make_doc = load_script("make_performance_doc")
    shutil.copy(ROOT / "benchmarks" / "results" / "speed.json", out.parent / "speed.json")
    section = make_doc.render(out.parent).split("## Where a frame's time goes")[1]
    assert "64×64 | mnad-fast" in section and "convolution (ms)" in section and "Quick run" in section
