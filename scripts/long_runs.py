"""The long training runs of issue #19, as data: train (resuming where a run stopped), evaluate into results/, score
the kept epochs for the AUC-against-epochs curve, regenerate docs/results.md; and say where each run stands.

    python scripts/long_runs.py run fp32_seed0 fp32_seed1 fp32_seed2 --runs /work/runs --data-root ../shared/data
    python scripts/long_runs.py status --runs /work/runs
    python scripts/long_runs.py pause --runs /work/runs      # before measuring speed; `continue` after
    python scripts/long_runs.py curve paper --runs /work/runs --data-root ../shared/data  # the curve so far

`run` is idempotent: a job whose result exists (results/<result>/metrics.json) is skipped, with or without its run
folder: nothing trains or evaluates it again (only a curve it left unfinished is scored, where the run folder keeps
those epochs); a stopped training run resumes from its last checkpoint
(one at each epoch's end and every train.checkpoint_minutes, 10, within one: a stop loses at most those minutes; a run
stopped before its first checkpoint has none and starts again, with --overwrite), a curve skips the epochs it has.
Run folders live outside the repo (--runs); each command is appended to <run>/commands.log before it runs (a restart
keeps it), and the result's commands.txt lists every command that made it. --runs and --data-root are relative to the
folder the script is started in. `status` reads the run folders only (epochs done, seconds an epoch, which process is
training now and whether it is paused) and writes nothing. `pause` stops the processes training the jobs (SIGSTOP) so that a benchmark has the cores;
`continue` lets them go on (SIGCONT).

Ctrl-C or SIGTERM while a step runs reaches the step itself (it is in this process's group: `mnad train` finishes the
epoch's files it is writing and says on its last line what is kept); this process waits for it, then ends with one
line and status 130 (SIGINT) or 143 (SIGTERM), starting nothing more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from mnad.atomic import atomic_write
from mnad.checkpoint import CONFIG_FILE, MODEL_FILE, TRAIN_STATE_FILE
from mnad.outputs import TRAIN_LOG, read_train_log
from mnad.report.provenance import checkpoint_metadata
from mnad.run_folder import LOCK_FILE, run_files

ROOT = Path(__file__).resolve().parents[1]
FP32 = ("train.bf16=false", "train.channels_last=false")  # fp32, NCHW: the faster fp32 layout on an AVX2 CPU
# bf16 autocast + channels_last, as the CPU recipes train: item 3 found no accuracy cost (docs/results.md, 'bf16 against
# fp32 training'), and fp32 would make the paper's 60 epochs about 4x longer on an AMX Xeon
BF16 = ("train.bf16=true", "train.channels_last=true")
# the paper's runs also compile the step's forward and backward (train.compile): 2.44 s a step against 3.26 eager, side
# by side (benchmarks/results/profile_train.json). A resume may change it: the paper run's first 6 epochs and 534 batches
# of the 7th ran eagerly, the rest compiled (its commands.txt says which command ran what)
PAPER = (*BF16, "train.compile=true")
STOPS = (signal.SIGINT, signal.SIGTERM)  # a step handles these itself (execute)


@dataclass(frozen=True)
class Job:
    """A training run and what is made of it: ``results/<result>`` (metrics, scores, train log, commands)."""

    recipe: str
    result: str
    why: str
    seed: int = 0
    overrides: tuple[str, ...] = ()  # --set SECTION.FIELD=VALUE over the recipe
    curve: tuple[int, ...] = ()  # kept epochs scored for the AUC-against-epochs curve (results/<result>/epoch_curve.json)


JOBS = {
    **{f"fp32_seed{seed}": Job("ped2_pred_fast", f"ped2_pred_fast_fp32_seed{seed}", seed=seed, overrides=FP32,
                               why="issue #19, item 3: the bf16 recipe's seed trained in fp32 (bf16 run: "
                                   f"results/ped2_pred_fast{f'_seed{seed}' if seed else ''})")
       for seed in (0, 1, 2)},
    "paper": Job("ped2_pred", "ped2_pred", overrides=PAPER, curve=(10, 20, 30, 40, 50, 60),
                 why="issue #19, item 2: the paper's recipe (256x256, 60 epochs), Table 1's first row"),
    "paper_nomem": Job("ped2_pred", "ped2_pred_nomem", overrides=(*PAPER, "model.memory=false"),
                       why="issue #19, item 2: Table 1's 'without memory' row at the paper's recipe"),
}


def run_folder(runs: Path, job: Job) -> Path:
    return runs / job.result


def result_folder(job: Job, results: str | Path = "results") -> Path:
    """Where a job's result goes: ``<results>/<result>``, ``results`` relative to the repo root (or absolute)."""
    return ROOT / results / job.result


def resume_flags(run: Path) -> list[str]:
    """How ``mnad train`` goes on with the run in ``run``: --resume from its last checkpoint; --overwrite when a stop
    before its first checkpoint left only its config.json (nothing trained is lost; commands.log, not a run file, stays);
    nothing for a new run, or when the folder holds more than that (mnad train then names what is there)."""
    if (run / TRAIN_STATE_FILE).exists():
        return ["--resume"]
    return ["--overwrite"] if run_files(run) == [CONFIG_FILE] else []


def train_command(job: Job, runs: Path, data_root: str, threads: int) -> list[str]:
    sets = [arg for o in (*job.overrides, "train.keep_epochs=true") for arg in ("--set", o)]
    return ["mnad", "train", "--recipe", job.recipe, "--seed", str(job.seed), *sets, "--data-root", data_root,
            "--out", str(run_folder(runs, job)), "--threads", str(threads), "--quiet"]


class StepFailed(Exception):
    """A step of a job exited with an error (its own message is above it on stderr)."""


class StepStopped(Exception):
    """Ctrl-C or SIGTERM arrived while a step ran: the step (in this process's group, so signalled too) has ended as it
    ends on that signal; ``signum`` is the first signal that arrived."""

    def __init__(self, command: list[str], signum: int, returncode: int | None) -> None:
        ended = "before it started" if returncode is None else f"exited with status {returncode}"
        super().__init__(f"stopped by {signal.Signals(signum).name}: {shlex.join(command)} {ended}")
        self.signum = signum


def machine() -> str:
    """The CPU in words, as /proc/cpuinfo names it, and its logical cores."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text(encoding="utf-8").splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} logical cores"


def execute(command: list[str], run: Path) -> None:
    """Run one step of a job (``mnad ...`` from this venv, or a script with this Python) from the repo root, logging
    it first in ``<run>/commands.log``, after a line saying when and on what machine. Paths in ``command`` are
    absolute or relative to the repo root."""
    run.mkdir(parents=True, exist_ok=True)
    with (run / "commands.log").open("a", encoding="utf-8") as log:
        log.write(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}\n{shlex.join(command)}\n")
    exe = [str(Path(sys.executable).with_name("mnad")), *command[1:]] if command[0] == "mnad" else [sys.executable, *command[1:]]
    # Ctrl-C and SIGTERM reach the step (same process group), which stops as it stops on them (mnad train completes
    # the epoch's files): noted here, not acted on (subprocess.run's KeyboardInterrupt kills the step after 0.25 s)
    arrived: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum)) for s in STOPS}
    try:
        returncode = None if arrived else subprocess.Popen(exe, cwd=ROOT).wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if arrived:
        raise StepStopped(command, arrived[0], returncode)
    if returncode:
        raise StepFailed(f"{shlex.join(command)} exited with status {returncode}")


class AnotherRunsResult(Exception):
    """The result folder holds what another run of the job recorded (a run folder lost and trained again)."""


def check_same_run(run: Path, result: Path) -> None:
    """Refuse to record ``run`` into ``result`` (its train log, commands, curve) when ``result`` holds another run's:
    its train_log.jsonl, copied from the run when its curve was scored, is not the start of the run's own (a run's log
    only grows), as when the run folder was lost with its machine and the job started again from epoch 0. The two
    curves must not mix: the earlier one is moved aside first (results/ped2_pred_run1, with its lost.json)."""
    recorded = result / TRAIN_LOG
    if (result / "metrics.json").exists() or not recorded.exists():
        return
    own = (run / TRAIN_LOG).read_bytes() if (run / TRAIN_LOG).exists() else b""
    if not own.startswith(recorded.read_bytes()):
        where = result.relative_to(ROOT) if result.is_relative_to(ROOT) else result
        raise AnotherRunsResult(f"{result} holds another run's curve and train log ({recorded} is not the start of "
                                f"{run / TRAIN_LOG}: that run was lost or trained again); move it aside first "
                                f"(git mv {where} {where}_runN, with a lost.json saying why)")


def run_job(name: str, job: Job, runs: Path, data_root: str, threads: int, *, results: str = "results") -> Path:
    """Train, evaluate and record one job (each step only if its output is missing); returns its result folder.
    ``runs`` and ``data_root`` are relative to the current folder (the steps get them absolute, as they run from the
    repo root); ``results`` is relative to the repo root."""
    run, result = run_folder(Path(os.path.abspath(runs)), job), result_folder(job, results)
    data_root = os.path.abspath(data_root)
    if (result / "metrics.json").exists():  # done: never trained again, nor its train_log.jsonl and commands.txt replaced
        skip_done_job(name, job, run, result, data_root, threads, results)
        return result
    check_same_run(run, result)  # before training: said when started, not hours later at the first curve
    if not (run / MODEL_FILE).exists():
        execute(train_command(job, run.parent, data_root, threads) + resume_flags(run), run)
    if not (result / "metrics.json").exists():  # a scores.csv without it is this job's unfinished evaluation: replaced
        execute(["mnad", "evaluate", "--checkpoint", str(run), "--data-root", data_root,
                 "--out", f"{results}/{job.result}", "--threads", str(threads), "--quiet", "--overwrite"], run)
    if job.curve:
        execute(curve_command(job, run, data_root, threads, job.curve, results), run)
    record_run(name, job, run, result)
    return result


def scored_curve_epochs(result: Path) -> set[int]:
    """The epochs ``<result>/epoch_curve.json`` has scored (none without one)."""
    curve = result / "epoch_curve.json"
    return {r["epoch"] for r in json.loads(curve.read_text(encoding="utf-8"))["epochs"]} if curve.exists() else set()


def skip_done_job(name: str, job: Job, run: Path, result: Path, data_root: str, threads: int, results: str) -> None:
    """A job whose result exists (its metrics.json): nothing is trained or evaluated again, whether or not its run
    folder is here (a new machine has none), and one line says so. Only a curve the job left unfinished (a stop
    after the evaluation) is scored, if the run folder keeps its epochs (the result is then recorded again)."""
    unscored = [e for e in job.curve if e not in scored_curve_epochs(result)]
    kept = [e for e in kept_curve_epochs(job, run) if e in unscored]
    if kept:
        execute(curve_command(job, run, data_root, threads, kept, results), run)
        record_run(name, job, run, result)
    left = [e for e in unscored if e not in kept]
    print(f"{name}: skipped: its result {result} exists" + (f"; scored its curve epochs {kept}" if kept else "")
          + (f"; curve epochs {left} not scored: {run} keeps no model of them" if left else ""), flush=True)


def record_run(name: str, job: Job, run: Path, result: Path) -> None:
    """Copy into ``result`` how far the run in ``run`` has trained (its train_log.jsonl) and the commands that made it
    (commands.txt): after the job, and beside a curve scored while the run goes on, so that a committed curve says
    what trained it and how many epochs it had."""
    check_same_run(run, result)
    result.mkdir(parents=True, exist_ok=True)
    atomic_write(result / TRAIN_LOG, (run / TRAIN_LOG).read_bytes())
    header = (f"# {job.why}\n# by scripts/long_runs.py run {name}: the commands it ran, in order, each after when and "
              "where it started (a train command with --resume continued after a stop; one with --overwrite started "
              "again a run stopped in its first epoch)\n")
    atomic_write(result / "commands.txt", (header + (run / "commands.log").read_text(encoding="utf-8")).encode())


def curve_command(job: Job, run: Path, data_root: str, threads: int, epochs: tuple[int, ...] | list[int],
                  results: str = "results") -> list[str]:
    """``scripts/epoch_curve.py`` scoring ``epochs`` of ``run`` into ``<results>/<result>/epoch_curve.json`` (it skips
    the epochs that file has, unless a record names another epoch file than the run's: a run trained again)."""
    return ["python", "scripts/epoch_curve.py", str(run), "--data-root", data_root,
            "--out", f"{results}/{job.result}/epoch_curve.json", "--epochs", ",".join(map(str, epochs)),
            "--threads", str(threads)]


def kept_curve_epochs(job: Job, run: Path) -> list[int]:
    """The epochs of ``job.curve`` whose model the run has kept so far (``epoch_NNN.safetensors``)."""
    from mnad.train import epoch_model

    return [e for e in job.curve if epoch_model(run, e).exists()]


def curve_so_far(name: str, job: Job, runs: Path, data_root: str, threads: int, *, results: str = "results") -> list[int]:
    """Score the curve epochs ``job``'s run has kept so far, while its training goes on (item 2: the curve is committed
    as it grows, not only after the last epoch); returns the epochs it asked for (none kept: nothing runs)."""
    run = run_folder(Path(os.path.abspath(runs)), job)
    epochs = kept_curve_epochs(job, run)
    if epochs:
        check_same_run(run, result_folder(job, results))
        execute(curve_command(job, run, os.path.abspath(data_root), threads, epochs, results), run)
        record_run(name, job, run, result_folder(job, results))
    return epochs


def training_pids(run: Path) -> list[int]:
    """The processes writing ``run`` now: the holders of the flock on its lock file, as /proc/locks lists them
    (Linux; elsewhere none are found)."""
    lock, locks = run / LOCK_FILE, Path("/proc/locks")
    if not lock.exists() or not locks.exists():
        return []
    stat = lock.stat()
    file_id = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    # a line: "1: FLOCK  ADVISORY  WRITE 2445 fe:00:5447740 0 EOF" (a waiter's lines are marked "->" and hold nothing)
    return sorted({int(f[f.index(file_id) - 1]) for f in map(str.split, locks.read_text(encoding="utf-8").splitlines())
                   if "FLOCK" in f and file_id in f and "->" not in f})


def paused(pid: int) -> bool:
    """Whether ``pid`` is stopped (SIGSTOP): state T in /proc/<pid>/stat."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def checkpoint_progress(run: Path) -> dict | None:
    """What ``run``'s training checkpoint holds, read from its header alone (no tensor is loaded or verified: a
    progress report, not a resume): the epochs done and the batches done in the next (0 after an epoch's end)."""
    try:
        extra = json.loads(checkpoint_metadata(run / TRAIN_STATE_FILE)["extra"])
        return {"epochs": int(extra["epoch"]), "batches_into_next": int(extra.get("step", 0))}
    except (ValueError, KeyError, TypeError):  # none yet, being replaced, or not a training checkpoint
        return None


def job_status(name: str, job: Job, runs: Path, results: str | Path = "results") -> dict:
    """Where one job stands, from its run folder and result folder (``run_job``'s ``results``)."""
    run = run_folder(Path(os.path.abspath(runs)), job)
    config = json.loads((run / "config.json").read_text(encoding="utf-8")) if (run / "config.json").exists() else None
    log = read_train_log(run / TRAIN_LOG) if (run / TRAIN_LOG).exists() else []
    seconds = [r["seconds"] for r in log if isinstance(r.get("seconds"), (int, float))]
    epochs = config["train"]["epochs"] if config else None
    pids = training_pids(run)
    done = len(log)
    return {
        "job": name, "run": str(run), "epochs_done": done, "epochs": epochs, "training_pids": pids,
        "paused": bool(pids) and all(map(paused, pids)),
        "median_epoch_s": round(statistics.median(seconds)) if seconds else None,
        "left_h": round((epochs - done) * statistics.median(seconds) / 3600, 1) if seconds and epochs else None,
        "last_loss": log[-1].get("loss_total") if log else None,
        "checkpoint": checkpoint_progress(run),  # a mid-epoch one says how far into the next epoch a resume starts
        "model": (run / MODEL_FILE).exists(),
        "evaluated": (result_folder(job, results) / "metrics.json").exists(),
    }


def stopped(name: str, exc: StepStopped) -> NoReturn:
    """End after a step stopped by Ctrl-C or SIGTERM: one line (the step's own last line, above it, says what it kept),
    and the status a shell gives a process that signal ended (130, 143)."""
    print(f"long_runs: {name}: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(128 + exc.signum)


def regenerate_docs() -> None:
    """README.md and docs/results.md from the results just written (scripts/make_results_doc.py). Its own error line
    says what stopped it (e.g. a README marker missing); this adds that the results themselves are kept."""
    done = subprocess.run([sys.executable, "scripts/make_results_doc.py"], cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit("long_runs: error: scripts/make_results_doc.py failed (its error above): the results are "
                         "written, the docs are not; run it again once mended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="train, evaluate and record the named jobs, in order")
    run_p.add_argument("jobs", nargs="+", choices=sorted(JOBS))
    run_p.add_argument("--data-root", required=True)
    run_p.add_argument("--threads", type=int, default=2)
    curve_p = sub.add_parser("curve", help="score the curve epochs the named jobs have kept so far (training may go on)")
    curve_p.add_argument("jobs", nargs="+", choices=sorted(n for n, j in JOBS.items() if j.curve))
    curve_p.add_argument("--data-root", required=True)
    curve_p.add_argument("--threads", type=int, default=2)
    status_p = sub.add_parser("status", help="where each job stands (reads the run folders, writes nothing)")
    pause_p = sub.add_parser("pause", help="stop the processes training the jobs (SIGSTOP), e.g. while a benchmark runs")
    continue_p = sub.add_parser("continue", help="let paused training go on (SIGCONT)")
    for p in (status_p, pause_p, continue_p):
        p.add_argument("jobs", nargs="*", help=f"from {', '.join(JOBS)} (default: all)")
    for p in (run_p, curve_p, status_p, pause_p, continue_p):
        p.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder holding the run folders")
    args = parser.parse_args()
    args.runs = Path(os.path.abspath(args.runs))  # the steps run from the repo root

    if args.command == "run":
        for name in args.jobs:
            try:
                run_job(name, JOBS[name], args.runs, args.data_root, args.threads)
            except StepStopped as exc:
                stopped(name, exc)
            except (StepFailed, AnotherRunsResult) as exc:
                raise SystemExit(f"long_runs: error: {name}: {exc}") from None
            regenerate_docs()
    elif args.command == "curve":
        for name in args.jobs:
            try:
                epochs = curve_so_far(name, JOBS[name], args.runs, args.data_root, args.threads)
            except StepStopped as exc:
                stopped(name, exc)
            except (StepFailed, AnotherRunsResult) as exc:
                raise SystemExit(f"long_runs: error: {name}: {exc}") from None
            print(f"{name}: scored epochs {epochs}" if epochs else f"{name}: no epoch of {list(JOBS[name].curve)} kept yet")
        regenerate_docs()
    else:
        # a reader that stops early (`status | head -1`) ends this process quietly, as it ends `cat`: no traceback
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        unknown = sorted(set(args.jobs) - set(JOBS))
        if unknown:
            parser.error(f"unknown job(s) {', '.join(unknown)}: choose from {', '.join(JOBS)}")
        for name in args.jobs or JOBS:
            if args.command == "status":
                print(json.dumps(job_status(name, JOBS[name], args.runs)))
                continue
            for pid in training_pids(run_folder(args.runs, JOBS[name])):
                os.kill(pid, signal.SIGSTOP if args.command == "pause" else signal.SIGCONT)
                print(f"{name}: process {pid} {'paused' if args.command == 'pause' else 'continues'}")


if __name__ == "__main__":
    main()
