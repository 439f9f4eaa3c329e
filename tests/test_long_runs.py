"""scripts/long_runs.py, the driver of issue #19's long runs, on a tiny synthetic job: a job runs to its result, a
rerun does nothing again, a stopped run resumes, a failing step is named, and `status` says where a run stands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_script

SCRIPT = "scripts/long_runs.py"
TINY = ("model.image_size=32", "model.width=8", "train.epochs=2", "train.bf16=false", "train.channels_last=false")


def test_the_jobs_name_their_recipes_and_result_folders() -> None:
    jobs = load_script(SCRIPT).JOBS
    assert {jobs[f"fp32_seed{s}"].seed for s in (0, 1, 2)} == {0, 1, 2}
    assert all("train.bf16=false" in jobs[f"fp32_seed{s}"].overrides for s in (0, 1, 2))
    assert jobs["paper"].recipe == "ped2_pred" and jobs["paper"].curve[-1] == 60
    assert len({job.result for job in jobs.values()}) == len(jobs)


def test_a_job_runs_to_its_result_reruns_as_a_no_op_and_resumes_after_a_stop(synthetic_root: Path, tmp_path: Path) -> None:
    script = load_script(SCRIPT)
    job = script.Job("synthetic_pred", "tiny", why="a test", overrides=TINY, curve=(2,))
    runs, results = tmp_path / "runs", tmp_path / "results"
    result = script.run_job("tiny", job, runs, str(synthetic_root), 1, results=str(results))

    assert json.loads((result / "metrics.json").read_text())["metrics"]["micro_auc"] > 0
    assert [r["epoch"] for r in json.loads((result / "epoch_curve.json").read_text())["epochs"]] == [2]
    assert len((result / "train_log.jsonl").read_text().splitlines()) == 2
    commands = (result / "commands.txt").read_text().splitlines()
    assert commands[0] == "# a test"
    assert [c.split()[1] for c in commands if not c.startswith("#")] == ["train", "evaluate", "scripts/epoch_curve.py"]
    assert len([c for c in commands if c.startswith("# 20") and " UTC, " in c]) == 3  # each command's when and where
    status = script.job_status("tiny", job, runs)
    assert (status["epochs_done"], status["epochs"], status["training_pids"], status["model"]) == (2, 2, [], True)

    log = runs / "tiny" / "commands.log"
    before = log.read_text().splitlines()
    script.run_job("tiny", job, runs, str(synthetic_root), 1, results=str(results))
    assert log.read_text().splitlines()[len(before) + 1:] == [before[-1]]  # only the curve, which skips what it has

    (runs / "tiny" / "model.safetensors").unlink()  # as a run stopped after its last checkpoint leaves it
    (result / "metrics.json").unlink()
    script.run_job("tiny", job, runs, str(synthetic_root), 1, results=str(results))
    assert "--resume" in log.read_text().splitlines()[len(before) + 3]
    assert (result / "metrics.json").exists()
    assert len((result / "train_log.jsonl").read_text().splitlines()) == 2  # the resume trained no epoch again


def test_a_failing_step_is_named_and_the_job_stops(tmp_path: Path) -> None:
    script = load_script(SCRIPT)
    job = script.Job("synthetic_pred", "tiny", why="a test", overrides=TINY)
    with pytest.raises(script.StepFailed, match=r"mnad train .* exited with status 2"):
        script.run_job("tiny", job, tmp_path / "runs", str(tmp_path / "no-data"), 1, results=str(tmp_path / "results"))
    assert not (tmp_path / "results").exists()


def test_status_of_a_job_never_started(tmp_path: Path) -> None:
    script = load_script(SCRIPT)
    status = script.job_status("paper", script.JOBS["paper"], tmp_path)
    assert (status["epochs_done"], status["epochs"], status["training_pids"], status["evaluated"]) == (0, None, [], False)
    assert not (tmp_path / "ped2_pred").exists()


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="reads /proc/locks (Linux)")
def test_status_names_the_process_training_a_run_and_pause_stops_it(tmp_path: Path) -> None:
    script = load_script(SCRIPT)
    run = tmp_path / "ped2_pred"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mnad.checkpoint import RunFolderLock; "
                               f"RunFolderLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        status = script.job_status("paper", script.JOBS["paper"], tmp_path)
        assert (status["training_pids"], status["paused"]) == ([holder.pid], False)
        holder.send_signal(signal.SIGSTOP)
        for _ in range(50):  # the stop is asynchronous
            if script.paused(holder.pid):
                break
            time.sleep(0.1)
        assert script.job_status("paper", script.JOBS["paper"], tmp_path)["paused"]
        holder.send_signal(signal.SIGCONT)
    finally:
        holder.kill()
        holder.wait()
    assert script.training_pids(run) == []  # the lock went with the process
