"""A benchmark run that did not do what was asked never replaces a committed result and never exits 0; a --quick run
never writes over the committed file by default. The workers are faked (no subprocess, nothing timed): only the
benchmarks' bookkeeping runs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = '{"committed": true}\n'


def benchmark(name: str) -> ModuleType:
    return load_script(f"benchmarks/{name}.py")


def committed(tmp_path: Path, name: str) -> Path:
    """A stand-in for a committed results file."""
    path = tmp_path / "results" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(COMMITTED)
    return path


SCORE = {"times_s": [0.1, 0.1], "cpu_s": [0.1, 0.1], "peak_rss_mib": 100.0, "updates": 2, "frames_scored": 2}


def run_frame_rate(monkeypatch: pytest.MonkeyPatch, out: Path, fail: str | None) -> int:
    bench = benchmark("frame_rate")

    def worker(job: dict) -> dict:
        if job["candidate"] == fail:
            return {"error": "Traceback ...\nRuntimeError: boom"}
        return SCORE | {"image_size": 128, "width": 64, "memory": True, "alpha": 1.0, "parameters": 1}

    monkeypatch.setattr(bench, "run_worker", worker)
    return bench.main(["--frames", "2", "--rounds", "1", "--candidates", "pred128-nomem,pred128-psnr", "--out", str(out)])


def run_memory(monkeypatch: pytest.MonkeyPatch, out: Path, fail: str | None) -> int:
    bench = benchmark("memory")
    monkeypatch.setenv("MNAD_CACHE_DIR", str(out.parent / "cache"))  # main sets it for its workers
    monkeypatch.setattr(bench, "prepare", lambda folder, size: (folder / "model.safetensors", folder / "model.onnx"))

    def worker(job: dict) -> dict:
        if job["path"] == fail:
            return {"error": "RuntimeError: boom"}
        return {"peak_rss_mib": 100.0, "stages_rss_peak_mib": {"import": [90.0, 95.0]}}

    monkeypatch.setattr(bench, "run_worker", worker)
    return bench.main(["--paths", "fp32", "onnx", "--size", "64", "--frames", "1", "--out", str(out)])


def run_contention(monkeypatch: pytest.MonkeyPatch, out: Path, fail: str | None) -> int:
    bench = benchmark("contention")

    def one(job: dict, load: str) -> dict:
        if load == fail:
            return {"error": "RuntimeError: boom"}
        return {"fps": 2.0, "cpu_per_frame": 1.0, "torch_threads": 1, "frames_timed": 3, "peak_rss_mib": 100.0,
                "competitor_cores": 0.5}

    monkeypatch.setattr(bench, "run_one", one)
    return bench.main(["--sizes", "64", "--threads", "1", "--policies", "unset", "--extra", "--loads", "idle", "busy",
                       "--out", str(out)])


def run_int8(monkeypatch: pytest.MonkeyPatch, out: Path, fail: str | None) -> int:
    bench = benchmark("int8")
    monkeypatch.setattr(bench, "export_models", lambda args, size, tmp: {"paths": {}})

    def worker(job: dict) -> dict:
        if job["row"] == fail:
            return {"error": "RuntimeError: boom"}
        return SCORE | {"psnr": [30.0, 31.0] if job["row"] == "onnx-int8" else [30.5, 31.0]}

    monkeypatch.setattr(bench, "run_worker", worker)
    return bench.main(["--sizes", "128", "--frames", "2", "--rounds", "1", "--out", str(out)])


def run_speed(monkeypatch: pytest.MonkeyPatch, out: Path, fail: str | None) -> int:
    bench = benchmark("speed")
    monkeypatch.setattr(bench, "prepare_weights", lambda args, path: ({}, "fake weights"))

    def worker(job: dict, threads: int) -> dict:
        kind = job["kind"]
        if fail is not None and fail in (kind, job.get("config")):
            return {"error": "RuntimeError: boom"}
        return {"matmul": {"fp32": {"gflops_median": 100.0}, "bf16": {"gflops_median": 200.0}},
                "flops": {"score_gflop_per_frame": {"64": 1.0}, "train_gflop_per_step": 3.0},
                "check": {"ok": True},
                "score": SCORE,
                "train": SCORE | {"losses": [1.0], "first_step_s": 0.1}}[kind]

    monkeypatch.setattr(bench, "run_worker", worker)
    return bench.main(["--quick", "--sizes", "64", "--score-configs", "reference,mnad-fast", "--train-configs", "reference",
                       "--out", str(out)])


# benchmark -> (how to run it with fake workers, the row made to fail)
RUNS = {
    "frame_rate": (run_frame_rate, "pred128-psnr"),
    "memory": (run_memory, "onnx"),
    "contention": (run_contention, "busy"),
    "int8": (run_int8, "mnad-fp32"),
    "speed": (run_speed, "mnad-fast"),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_a_run_with_an_errored_row_leaves_the_committed_result_and_exits_1(
        name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run, row = RUNS[name]
    out = committed(tmp_path, f"{name}.json")
    assert run(monkeypatch, out, fail=row) == 1
    assert out.read_text() == COMMITTED  # untouched
    failed = out.with_name(f"{name}.failed.json")
    assert json.loads(failed.read_text())["failures"]  # the run's results, beside it, saying what failed
    errors = [line for line in capsys.readouterr().err.splitlines() if ": error:" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{name}.py: error: ") and str(failed) in errors[0] and row in errors[0]


@pytest.mark.parametrize("name", list(RUNS))
def test_a_run_without_failures_replaces_the_result_and_exits_0(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same fake runs, nothing failing: the rule above is the failed row's doing, not the fakes'."""
    run, _ = RUNS[name]
    out = committed(tmp_path, f"{name}.json")
    assert run(monkeypatch, out, fail=None) == 0
    result = json.loads(out.read_text())
    assert "committed" not in result and "failures" not in result
    assert not out.with_name(f"{name}.failed.json").exists()


def test_a_failed_equivalence_check_leaves_the_committed_speed_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = committed(tmp_path, "speed.json")
    assert run_speed(monkeypatch, out, fail="check") == 1
    assert out.read_text() == COMMITTED
    assert json.loads(out.with_name("speed.failed.json").read_text())["failures"] == ["the equivalence check"]


def test_a_row_that_failed_in_one_round_only_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = benchmark("frame_rate")
    calls: list[str] = []

    def worker(job: dict) -> dict:
        calls.append(job["candidate"])
        if len(calls) == 1:
            return {"error": "RuntimeError: boom"}
        return SCORE | {"image_size": 128, "width": 64, "memory": False, "alpha": 1.0, "parameters": 1}

    monkeypatch.setattr(bench, "run_worker", worker)
    out = committed(tmp_path, "frame_rate.json")
    assert bench.main(["--frames", "2", "--rounds", "2", "--candidates", "pred128-nomem", "--out", str(out)]) == 1
    assert out.read_text() == COMMITTED
    (row,) = json.loads(out.with_name("frame_rate.failed.json").read_text())["candidates"]
    assert row["rounds_failed"] == 1 and row["fps"] == 10.0


def test_a_quick_run_writes_beside_the_committed_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = benchmark("frame_rate")
    out = committed(tmp_path, "frame_rate.json")
    monkeypatch.setattr(bench, "DEFAULT_OUT", out)
    monkeypatch.setattr(bench, "run_worker", lambda job: SCORE | {"image_size": 128, "width": 64, "memory": True,
                                                                   "alpha": 1.0, "parameters": 1})
    assert bench.main(["--quick", "--candidates", "pred128-nomem"]) == 0
    assert out.read_text() == COMMITTED
    assert json.loads(out.with_name("frame_rate.quick.json").read_text())["quick"] is True
    # where --out is given, it is the file written
    speed = benchmark("speed")
    assert speed.parse_args(["--quick"]).out == speed.DEFAULT_OUT.with_name("speed.quick.json")
    assert speed.parse_args([]).out == speed.DEFAULT_OUT
    assert speed.parse_args(["--quick", "--out", "x.json"]).out == Path("x.json")


def test_no_quick_benchmark_defaults_to_its_committed_file() -> None:
    """Every benchmark with --quick takes its output through speed.results_path (no argparse default of the committed
    path), and every benchmark whose workers can fail ends through speed.finish."""
    quick = 0
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        text = path.read_text()
        if '"--quick"' in text:
            quick += 1
            assert "results_path(args.out, DEFAULT_OUT, args.quick)" in text, path.name
            assert not re.search(r'"--out"[^\n]*default=', text), path.name
        if '{"error":' in text and path.name != "speed.py":
            assert f'finish("{path.name}", args.out' in text, path.name
    assert quick >= 8


def test_int8_without_its_onnx_fp32_row_measures_no_psnr_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 rows' PSNR gap is against onnx-fp32: where that row failed the gap is None (was int8 against itself,
    0.000 dB), and the document says it was not measured."""
    out = committed(tmp_path, "int8.json")
    assert run_int8(monkeypatch, out, fail="onnx-fp32") == 1
    result = json.loads(out.with_name("int8.failed.json").read_text())
    (summary,) = result["summary"]
    assert summary["row"] == "onnx-int8" and summary["psnr_abs_diff_vs_onnx_fp32_db"] is None
    assert summary["speedup_vs_onnx_fp32"] is None
    lines = [line for line in benchmark("make_performance_doc").int8_section(result, "int8.json") if "`onnx-int8`" in line]
    assert any("PSNR against `onnx-fp32` was not measured" in line for line in lines)
    assert not any("PSNR differs" in line for line in lines)
    # with the row, the gap is measured: the fakes' PSNR differ by 0.5 dB on the first frame, 0 on the second
    out.with_name("int8.failed.json").unlink()
    assert run_int8(monkeypatch, out, fail=None) == 0
    (summary,) = json.loads(out.read_text())["summary"]
    assert summary["psnr_abs_diff_vs_onnx_fp32_db"] == {"mean": 0.25, "max": 0.5}


def test_the_performance_doc_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A write that fails (here: the target is a folder) leaves no part-written document and says so in one error line."""
    import mnad.atomic

    make_doc = benchmark("make_performance_doc")
    monkeypatch.setattr(make_doc, "render", lambda results: "# Performance\n")
    out = tmp_path / "performance.md"
    out.write_text("previous\n")
    calls: list[Path] = []
    write = mnad.atomic.atomic_write

    def spy(path: Path, data: bytes, **kwargs: object) -> None:
        calls.append(Path(path))
        write(path, data, **kwargs)

    monkeypatch.setattr(mnad.atomic, "atomic_write", spy)
    assert make_doc.main(["--out", str(out)]) == 0
    assert calls == [out] and out.read_text() == "# Performance\n"
    (tmp_path / "folder.md").mkdir()
    assert make_doc.main(["--out", str(tmp_path / "folder.md")]) == 1
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert line.startswith("make_performance_doc.py: error: ") and "folder.md" in line
