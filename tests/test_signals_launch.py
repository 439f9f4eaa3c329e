"""A closed terminal (SIGHUP) stops a run as SIGTERM does; one definition of a multi-process launch; a hand-made launch
whose peer never starts waits a bounded time; the parser's defaults are the API's; calibrate and export keep an
earlier output unless --overwrite."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from conftest import frames_folder

from mnad import cli, distributed, launch
from mnad.errors import Terminated
from mnad.interrupts import held_interrupts, raise_terminated_on_signals, restore_handlers

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC}

# ------------------------------------------------------------------------------------------------ 1. SIGHUP


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # the pty becomes the session's terminal: closing it hangs the run up


def _wait_for_rows(process: subprocess.Popen, scores: Path, rows: int = 21) -> None:
    deadline = time.monotonic() + 120
    while (not scores.exists() or scores.read_text().count("\n") < rows) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it was hung up"
        time.sleep(0.05)


def test_a_closed_terminal_completes_detects_outputs_and_exits_143(model_file: Path, tmp_path: Path) -> None:
    """The terminal (or ssh connection) of `mnad detect` closes: was killed by SIGHUP's default action, leaving no
    summary.json; then, with a handler, its last line to the gone terminal failed (EIO)."""
    folder = frames_folder(tmp_path / "long", 3000)
    out = tmp_path / "o"
    master, slave = os.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mnad", "detect", str(folder), "--checkpoint", str(model_file),
                                "--out", str(out), "--quiet", "--threads", "1"], env=ENV, stdin=slave, stdout=slave,
                               stderr=slave, start_new_session=True, preexec_fn=_controlling_terminal)
    os.close(slave)
    try:
        _wait_for_rows(process, out / "scores.csv")
    finally:
        os.close(master)  # the terminal closes: the kernel hangs up its session
    assert process.wait(timeout=60) == 143
    summary = json.loads((out / "summary.json").read_text())
    rows = (out / "scores.csv").read_text().strip().splitlines()
    assert summary["frames_scored"] == len(rows) - 1 >= 20 and summary["ended_by"].startswith("stopped")


def _stoppable_train(tmp_path: Path, *, nohup: bool) -> subprocess.Popen:
    """`mnad train` whose work is a wait: the CLI's handling of a signal, in a real process, in a second or so."""
    started = tmp_path / "started"
    code = (f"import signal, sys, time\nfrom mnad import cli\n{'signal.signal(signal.SIGHUP, signal.SIG_IGN)' if nohup else ''}\n"
            "def work(args):\n"
            f"    open({str(started)!r}, 'w').close()\n"
            "    for _ in range(40):\n        time.sleep(0.05)\n"
            "    print('finished')\n"
            f"cli.cmd_train = work\nsys.exit(cli.main(['train', '--data-root', {str(tmp_path)!r}, '--out', {str(tmp_path / 'run')!r}]))\n")
    process = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.02)
    return process


def test_sighup_is_said_like_sigterm(tmp_path: Path) -> None:
    process = _stoppable_train(tmp_path, nohup=False)
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 143, err.decode()
    assert err.decode().splitlines()[-1] == ("mnad: terminated (SIGHUP: the last finished epoch is kept: continue with "
                                             "--resume)")
    assert b"finished" not in out


def test_an_ignored_sighup_stays_ignored(tmp_path: Path) -> None:
    """`nohup mnad train ...`: the run goes on when the terminal closes."""
    process = _stoppable_train(tmp_path, nohup=True)
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    assert b"finished" in out


def test_sighup_inside_a_held_block_waits_for_it() -> None:
    previous = raise_terminated_on_signals()
    try:
        done = []
        with pytest.raises(Terminated) as stopped:
            with held_interrupts():
                os.kill(os.getpid(), signal.SIGHUP)
                done.append("whole")
        assert done == ["whole"] and stopped.value.signal == "SIGHUP"
    finally:
        restore_handlers(previous)
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL


# ------------------------------------------------------------------------------------------------ 3. one launch test


@pytest.mark.parametrize(("world_size", "launched"), [("2", True), (" 2", True), ("+2", True), ("1", False), ("two", False), ("", False)])
def test_the_cli_and_the_api_agree_on_a_launch(monkeypatch: pytest.MonkeyPatch, world_size: str, launched: bool) -> None:
    """The CLI had its own copy, which read WORLD_SIZE=' 2' as no launch where mnad.distributed saw one."""
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert cli.multi_process_launch is distributed.multi_process_launch is launch.multi_process_launch
    assert launch.multi_process_launch() is launched
