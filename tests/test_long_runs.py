"""scripts/long_runs.py, the driver of issue #19's long runs, on a tiny synthetic job: a job runs to its result, a
rerun does nothing again, a stopped run resumes (one stopped in its first epoch starts again), a failing step is named,
and `status` says where a run stands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, load_script

SCRIPT = "scripts/long_runs.py"
TINY = ("model.image_size=32", "model.width=8", "train.epochs=2", "train.bf16=false", "train.channels_last=false")


def test_the_jobs_name_their_recipes_and_result_folders() -> None:
    jobs = load_script(SCRIPT).JOBS
    assert {jobs[f"fp32_seed{s}"].seed for s in (0, 1, 2)} == {0, 1, 2}
    assert all("train.bf16=false" in jobs[f"fp32_seed{s}"].overrides for s in (0, 1, 2))
    assert jobs["paper"].recipe == "ped2_pred" and jobs["paper"].curve[-1] == 60
    # the paper's recipe trains as the CPU recipes do (item 3 found bf16 harmless), with and without memory
    for name in ("paper", "paper_nomem"):
        assert {"train.bf16=true", "train.channels_last=true"} <= set(jobs[name].overrides)
    assert "model.memory=false" in jobs["paper_nomem"].overrides
    assert len({job.result for job in jobs.values()}) == len(jobs)


def test_a_job_runs_to_its_result_reruns_as_a_no_op_and_resumes_after_a_stop(synthetic_root: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    script = load_script(SCRIPT)
    job = script.Job("synthetic_pred", "tiny", why="a test", overrides=TINY, curve=(2,))
    runs, results = tmp_path / "runs", tmp_path / "results"
    (tmp_path / "data").symlink_to(synthetic_root)
    monkeypatch.chdir(tmp_path)  # --runs and --data-root relative to the caller's folder, not the repo root
    result = script.run_job("tiny", job, Path("runs"), "data", 1, results=str(results))
    assert f"--data-root {tmp_path / 'data'} " in (runs / "tiny" / "commands.log").read_text()

    assert json.loads((result / "metrics.json").read_text())["metrics"]["micro_auc"] > 0
    assert [r["epoch"] for r in json.loads((result / "epoch_curve.json").read_text())["epochs"]] == [2]
    assert len((result / "train_log.jsonl").read_text().splitlines()) == 2
    commands = (result / "commands.txt").read_text().splitlines()
    assert commands[0] == "# a test"
    assert [c.split()[1] for c in commands if not c.startswith("#")] == ["train", "evaluate", "scripts/epoch_curve.py"]
    assert len([c for c in commands if c.startswith("# 20") and " UTC, " in c]) == 3  # each command's when and where
    status = script.job_status("tiny", job, Path("runs"), results=str(results))
    assert (status["epochs_done"], status["epochs"], status["training_pids"], status["model"]) == (2, 2, [], True)
    assert status["evaluated"] and status["run"] == str(runs / "tiny")  # where run_job put them

    log = runs / "tiny" / "commands.log"
    before = log.read_text().splitlines()
    script.run_job("tiny", job, Path("runs"), "data", 1, results=str(results))
    assert log.read_text().splitlines() == before  # its result exists: nothing runs
    (result / "epoch_curve.json").unlink()  # a stop after the evaluation: only the curve is scored
    script.run_job("tiny", job, Path("runs"), "data", 1, results=str(results))
    assert log.read_text().splitlines()[len(before) + 1:] == [before[-1]]
    assert [r["epoch"] for r in json.loads((result / "epoch_curve.json").read_text())["epochs"]] == [2]
    before = log.read_text().splitlines()

    (runs / "tiny" / "model.safetensors").unlink()  # as a run stopped after its last checkpoint leaves it
    (result / "metrics.json").unlink()
    script.run_job("tiny", job, Path("runs"), "data", 1, results=str(results))
    assert "--resume" in log.read_text().splitlines()[len(before) + 1]
    assert (result / "metrics.json").exists()
    assert len((result / "train_log.jsonl").read_text().splitlines()) == 2  # the resume trained no epoch again

    # a stop in the first epoch: mnad train wrote config.json before epoch 1 and no checkpoint yet; the rerun
    # starts the run again (--overwrite) and the run folder's commands.log keeps every earlier command
    run = runs / "tiny"
    for name in ("model.safetensors", "last.safetensors", "train_log.jsonl", "epoch_001.safetensors",
                 "epoch_002.safetensors"):
        (run / name).unlink()
    # nor had it recorded anything (a result train log would be another run's: check_same_run)
    (result / "metrics.json").unlink()
    (result / "train_log.jsonl").unlink()
    before = log.read_text().splitlines()
    script.run_job("tiny", job, Path("runs"), "data", 1, results=str(results))
    after = log.read_text().splitlines()
    assert after[:len(before)] == before and after[len(before) + 1].startswith("mnad train ")
    assert after[len(before) + 1].endswith(" --overwrite")
    assert len((run / "train_log.jsonl").read_text().splitlines()) == 2 and (result / "metrics.json").exists()
    # the train command that started again is the only train with --overwrite (evaluate always replaces its own)
    assert [c.split()[1] for c in (result / "commands.txt").read_text().splitlines()
            if c.endswith(" --overwrite") and c.startswith("mnad train ")] == ["train"]


def test_a_failing_step_is_named_and_the_job_stops(tmp_path: Path) -> None:
    script = load_script(SCRIPT)
    job = script.Job("synthetic_pred", "tiny", why="a test", overrides=TINY)
    with pytest.raises(script.StepFailed, match=r"mnad train .* exited with status 2"):
        script.run_job("tiny", job, tmp_path / "runs", str(tmp_path / "no-data"), 1, results=str(tmp_path / "results"))
    assert not (tmp_path / "results").exists()


def test_a_result_another_run_recorded_is_refused_before_training(tmp_path: Path) -> None:
    """A run folder lost with its machine and the job started again: the committed curve and train log are the lost
    run's, so neither training into them nor recording over them goes on until they are moved aside."""
    script = load_script(SCRIPT)
    job = script.Job("synthetic_pred", "tiny", why="a test", overrides=TINY, curve=(1,))
    result = tmp_path / "results" / "tiny"
    result.mkdir(parents=True)
    lost_log = "".join(json.dumps({"epoch": e, "loss_total": 0.5 / e}) + "\n" for e in (1, 2))
    (result / "train_log.jsonl").write_text(lost_log, encoding="utf-8")
    with pytest.raises(script.AnotherRunsResult, match="holds another run's curve"):
        script.run_job("tiny", job, tmp_path / "runs", str(tmp_path / "no-data"), 1, results=str(result.parent))
    assert not (tmp_path / "runs").exists()  # refused before anything ran
    run = tmp_path / "runs" / "tiny"
    run.mkdir(parents=True)
    (run / "train_log.jsonl").write_text(json.dumps({"epoch": 1, "loss_total": 0.7}) + "\n", encoding="utf-8")
    (run / "commands.log").write_text("# a command\n", encoding="utf-8")
    with pytest.raises(script.AnotherRunsResult):
        script.record_run("tiny", job, run, result)
    assert (result / "train_log.jsonl").read_text(encoding="utf-8") == lost_log  # kept
    # the same run, further on: its log starts with the one recorded, which is replaced by the longer one
    (run / "train_log.jsonl").write_text(lost_log + json.dumps({"epoch": 3}) + "\n", encoding="utf-8")
    script.record_run("tiny", job, run, result)
    assert (result / "train_log.jsonl").read_text(encoding="utf-8").count("\n") == 3


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
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from mnad.run_folder import RunFolderLock; "
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


def test_status_piped_to_a_reader_that_stops_early_ends_quietly(tmp_path: Path) -> None:
    """`long_runs.py status | head -1`: the reader is gone before the lines are written; no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, str(ROOT / SCRIPT), "status", "--runs", str(tmp_path)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode == -signal.SIGPIPE


def test_the_curve_is_scored_as_the_run_keeps_epochs(synthetic_root: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`long_runs.py curve`: the curve epochs kept so far are scored while the run has not ended; none kept, nothing runs."""
    script = load_script(SCRIPT)
    job = script.Job("synthetic_pred", "tiny", why="a test", overrides=TINY, curve=(1, 2))
    (tmp_path / "data").symlink_to(synthetic_root)
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    assert script.curve_so_far("tiny", job, Path("runs"), "data", 1, results=str(results)) == []
    assert not (results / "tiny").exists()

    run = tmp_path / "runs" / "tiny"
    script.execute(script.train_command(job, run.parent, str(tmp_path / "data"), 1), run)
    (run / "epoch_002.safetensors").unlink()  # as a run still training its second epoch leaves it
    assert script.job_status("tiny", job, Path("runs"))["checkpoint"] == {"epochs": 2, "batches_into_next": 0}
    assert script.curve_so_far("tiny", job, Path("runs"), "data", 1, results=str(results)) == [1]
    curve = json.loads((results / "tiny" / "epoch_curve.json").read_text())
    assert [e["epoch"] for e in curve["epochs"]] == [1] and curve["epochs"][0]["micro_auc"] > 0
    assert "scripts/epoch_curve.py" in (run / "commands.log").read_text().splitlines()[-1]
    # beside the curve, how far the run had trained and what trained it (the run goes on: no metrics.json yet)
    assert (results / "tiny" / "train_log.jsonl").read_bytes() == (run / "train_log.jsonl").read_bytes()
    commands = (results / "tiny" / "commands.txt").read_text().splitlines()
    assert commands[0] == "# a test" and [c.split()[1] for c in commands if not c.startswith("#")] == [
        "train", "scripts/epoch_curve.py"]
    assert not (results / "tiny" / "metrics.json").exists()


def test_status_reads_how_far_a_mid_epoch_checkpoint_is(tmp_path: Path) -> None:
    """`status` says where a resume would start: epochs done and batches into the next, from the checkpoint's header."""
    import torch

    from mnad.checkpoint import save_checkpoint
    from mnad.config import load_config

    script = load_script(SCRIPT)
    run = tmp_path / "run"
    run.mkdir()
    assert script.checkpoint_progress(run) is None  # none yet
    save_checkpoint(run / "last.safetensors", {"w": torch.zeros(2)}, load_config("synthetic_pred"), {"epoch": 3, "step": 17})
    assert script.checkpoint_progress(run) == {"epochs": 3, "batches_into_next": 17}
    (run / "last.safetensors").write_bytes(b"\x05")  # cut short while being replaced
    assert script.checkpoint_progress(run) is None
    (run / "last.safetensors").write_bytes((2**62).to_bytes(8, "little") + b"{}")  # a damaged length: nothing allocated
    assert script.checkpoint_progress(run) is None


def test_a_job_whose_result_exists_is_skipped_without_its_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A new machine: results/<job> is committed, the run folder is gone. Nothing trains again (hours), and the
    committed train_log.jsonl and commands.txt stay as they are; one line says the job was skipped."""
    script = load_script(SCRIPT)
    job = script.Job("synthetic_pred", "tiny", why="a test", overrides=TINY, curve=(2,))
    result = tmp_path / "results" / "tiny"
    result.mkdir(parents=True)
    committed = {"metrics.json": "{}", "train_log.jsonl": '{"epoch": 1}\n', "commands.txt": "# a test\n",
                 "epoch_curve.json": json.dumps({"epochs": [{"epoch": 2}]})}
    for name, text in committed.items():
        (result / name).write_text(text)
    # no data either: a step that ran would fail
    assert script.run_job("tiny", job, tmp_path / "runs", str(tmp_path / "no-data"), 1, results=str(tmp_path / "results")) == result
    assert not (tmp_path / "runs").exists()
    assert {p.name: p.read_text() for p in result.iterdir()} == committed
    assert capsys.readouterr().out == f"tiny: skipped: its result {result} exists\n"

    (result / "epoch_curve.json").unlink()  # a stop after the evaluation, on a machine without the run: said, not scored
    script.run_job("tiny", job, tmp_path / "runs", str(tmp_path / "no-data"), 1, results=str(tmp_path / "results"))
    assert capsys.readouterr().out == (f"tiny: skipped: its result {result} exists; curve epochs [2] not scored: "
                                       f"{tmp_path / 'runs' / 'tiny'} keeps no model of them\n")
    assert not (tmp_path / "runs").exists()


STEP = """
import pathlib, signal, sys, time
out = pathlib.Path(sys.argv[1])
got = []
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, lambda signum, frame: got.append(signum))
(out / "ready").write_text("")
while not got:
    time.sleep(0.05)
time.sleep(1)  # the epoch's files being written (subprocess.run's KeyboardInterrupt kills a step after 0.25 s)
(out / "finished").write_text(signal.Signals(got[0]).name)
print("step: stopped (what it kept)", file=sys.stderr)
sys.exit(128 + got[0])
"""

DRIVER = """
import sys
sys.path.insert(0, sys.argv[1] + "/tests")
from conftest import load_script
script = load_script("scripts/long_runs.py")
runs, step = sys.argv[2], sys.argv[3]
script.run_job = lambda name, job, *args, **kwargs: script.execute(["python", step, runs], script.Path(runs) / name)
sys.argv = ["long_runs.py", "run", "paper", "--runs", runs, "--data-root", runs]
script.main()
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_reaches_the_step_which_ends_as_it_chooses_then_one_line(tmp_path: Path, signum: int) -> None:
    """Ctrl-C in a terminal (SIGINT) or a session's stop (SIGTERM) goes to the whole process group: the step gets it
    and ends in its own time (mnad train completes the epoch's files and says what is kept); long_runs waits for it,
    then ends with one line and the signal's status, no traceback, running no later step."""
    (tmp_path / "step.py").write_text(STEP)
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(ROOT), str(tmp_path), str(tmp_path / "step.py")],
                              stderr=subprocess.PIPE, text=True, start_new_session=True)  # a group of its own
    try:
        for _ in range(1200):  # the step is up, its handlers set (no assertion on time: a bound on the wait)
            if (tmp_path / "ready").exists() or driver.poll() is not None:
                break
            time.sleep(0.1)
        assert (tmp_path / "ready").exists(), driver.stderr.read() if driver.poll() is not None else "no step"
        os.killpg(driver.pid, signum)  # as the terminal or a session stop sends it: to the group
        stderr = driver.communicate(timeout=120)[1]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    assert (tmp_path / "finished").read_text() == signal.Signals(signum).name  # the step was let finish
    name = signal.Signals(signum).name
    assert stderr.splitlines() == ["step: stopped (what it kept)",
                                   f"long_runs: paper: stopped by {name}: python {tmp_path / 'step.py'} {tmp_path} "
                                   f"exited with status {128 + signum}"]
    assert driver.returncode == 128 + signum


def test_a_docs_regeneration_that_fails_is_one_error_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_results_doc.py now refuses a README whose markers are broken (exit 1): the driver ran it with check=True,
    so that ended in a CalledProcessError traceback after hours of training; now one line says the results are kept."""
    script = load_script(SCRIPT)
    ran = []
    monkeypatch.setattr(script.subprocess, "run", lambda argv, **kwargs: ran.append(argv) or subprocess.CompletedProcess(argv, 1))
    with pytest.raises(SystemExit, match="long_runs: error: scripts/make_results_doc.py failed .* the results are written"):
        script.regenerate_docs()
    assert ran and ran[0][-1] == "scripts/make_results_doc.py"
    monkeypatch.setattr(script.subprocess, "run", lambda argv, **kwargs: subprocess.CompletedProcess(argv, 0))
    script.regenerate_docs()  # succeeded: nothing said
