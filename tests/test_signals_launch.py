"""A closed terminal (SIGHUP) stops a run as SIGTERM does; one definition of a multi-process launch; a hand-made launch
whose peer never starts waits a bounded time; the parser's defaults are the API's; calibrate and export keep an
earlier output unless --overwrite."""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import signal
import socket
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
    # SIGHUP at its default action, as in a terminal: the suite itself may run under nohup, whose ignored SIGHUP every
    # child inherits (and mnad keeps an ignored SIGHUP ignored)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def _wait_for_rows(process: subprocess.Popen, scores: Path, rows: int = 21) -> None:
    deadline = time.monotonic() + 120
    while (not scores.exists() or scores.read_text(encoding="utf-8").count("\n") < rows) and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it was hung up"
        time.sleep(0.05)


def test_a_closed_terminal_completes_detects_outputs_and_exits_143(model_file: Path, tmp_path: Path) -> None:
    """The terminal (or ssh connection) of `mnad detect` closes: was killed by SIGHUP's default action, leaving no
    summary.json; then, with a handler, its last line to the gone terminal failed (EIO)."""
    folder = frames_folder(tmp_path / "long", 1200)
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
    assert summary["frames_scored"] == len(rows) - 1 >= 20 and summary["ended_by"] == "stopped (SIGHUP)"


def _stoppable_train(tmp_path: Path, *, nohup: bool) -> subprocess.Popen:
    """`mnad train` whose work is a wait: the CLI's handling of a signal, in a real process, in a second or so."""
    started = tmp_path / "started"
    hangup = "SIG_IGN" if nohup else "SIG_DFL"  # nohup's, or a terminal's default (the suite may itself run under nohup)
    code = (f"import signal, sys, time\nfrom mnad import cli\nsignal.signal(signal.SIGHUP, signal.{hangup})\n"
            "def work(args):\n"
            f"    open({str(started)!r}, 'w').close()\n"
            "    try:\n"
            "        for _ in range(40):\n            time.sleep(0.05)\n"
            "    except BaseException as stop:\n"  # as train() records it: an epoch was finished
            "        stop.epochs_kept = 1\n        raise\n"
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
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal (the suite may run under nohup)
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
    signal.signal(signal.SIGHUP, inherited)


# ------------------------------------------------------------------------------------------------ 3. one launch test


@pytest.mark.parametrize(("world_size", "launched"), [("2", True), (" 2", True), ("+2", True), ("1", False), ("two", False), ("", False)])
def test_the_cli_and_the_api_agree_on_a_launch(monkeypatch: pytest.MonkeyPatch, world_size: str, launched: bool) -> None:
    """The CLI had its own copy, which read WORLD_SIZE=' 2' as no launch where mnad.distributed saw one."""
    monkeypatch.setenv("WORLD_SIZE", world_size)
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    assert cli.multi_process_launch is distributed.multi_process_launch is launch.multi_process_launch
    assert launch.multi_process_launch() is launched


# ------------------------------------------------------------------------------------------------ 2. a peer that never starts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(("rank", "awaited"), [
    (0, "RANK=0 waited 1 s for the job's other processes to reach its store at MASTER_ADDR='127.0.0.1', MASTER_PORT={port}: "
        "0 of the 1 others came"),
    (1, "RANK=1 waited 1 s for rank 0 to open the job's store at MASTER_ADDR='127.0.0.1', MASTER_PORT={port}"),
])
def test_a_hand_made_launch_whose_peer_never_starts_waits_a_bounded_time(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, rank: int, awaited: str) -> None:
    """WORLD_SIZE/RANK/MASTER_ADDR/MASTER_PORT set by hand and the other rank never started: gloo's init waited its
    30 minutes, deaf to Ctrl-C and SIGTERM, then failed with a traceback."""
    port = _free_port()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)
    monkeypatch.setattr(distributed, "JOIN_TIMEOUT", datetime.timedelta(seconds=1))
    monkeypatch.setattr(cli, "cmd_train", lambda args: distributed.setup("cpu"))
    started = time.monotonic()
    assert cli.main(["train", "--data-root", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert time.monotonic() - started < 10
    assert capsys.readouterr().err.splitlines() == [
        f"mnad: error: {awaited.format(port=port)}: start every rank, 0 to 1, with the same MASTER_ADDR and MASTER_PORT "
        "within 1 s of each other, or use torchrun (docs/distributed.md)"]


# ------------------------------------------------------------------------------------------------ 4. the API's defaults


def _option(command: str, option: str) -> argparse.Action:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return next(a for a in sub._actions if option in a.option_strings)


def test_the_parsers_defaults_are_the_apis() -> None:
    """The parser repeated the API's values (--open-timeout 5.0 beside SourceOptions.open_timeout, ...): a change to
    one left the CLI and the API disagreeing. Now each default is read from the API."""
    import inspect

    from mnad.calibrate import calibrate
    from mnad.data.streams import SourceOptions
    from mnad.detect import DetectOptions
    from mnad.evaluate import evaluate
    from mnad.figures import memory_figures
    from mnad.quantize import CALIBRATION_CLIPS
    from mnad.report.build import create_report

    def keyword(function: object, name: str) -> object:
        return inspect.signature(function).parameters[name].default

    expected = {
        ("detect", "--region-sigma"): DetectOptions().region_sigma, ("detect", "--hysteresis"): DetectOptions().hysteresis,
        ("detect", "--min-event-frames"): DetectOptions().min_event_frames, ("detect", "--fps"): SourceOptions().fps,
        ("detect", "--reconnects"): SourceOptions().reconnects, ("detect", "--open-timeout"): SourceOptions().open_timeout,
        ("detect", "--read-timeout"): SourceOptions().read_timeout,
        ("calibrate", "--false-alarm-rate"): keyword(calibrate, "false_alarm_rate"), ("calibrate", "--scoring"): keyword(calibrate, "scoring"),
        ("figures", "--frames"): keyword(memory_figures, "frames"), ("figures", "--clips"): keyword(memory_figures, "clips"),
        ("figures", "--queries"): keyword(memory_figures, "max_queries"), ("figures", "--seed"): keyword(memory_figures, "seed"),
        ("evaluate", "--protocol"): keyword(evaluate, "protocol"), ("evaluate", "--top-k"): keyword(create_report, "top_k"),
        ("export", "--calibration-clips"): CALIBRATION_CLIPS,
    }
    for (command, option), value in expected.items():
        action = _option(command, option)
        assert isinstance(action.default, cli.APIDefault) and action.default.value == value, (command, option)
        assert f"default {value}" in action.help % {"default": action.default}, (command, option)


def test_parsing_imports_no_torch() -> None:
    code = ("import sys\nfrom mnad.cli import build_parser\n"
            "args = build_parser().parse_args(['detect', 'x', '--checkpoint', 'm', '--out', 'o', '--fps', '10'])\n"
            "print(args.fps, 'torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True).stdout.split() == ["10.0", "False"]


# ------------------------------------------------------------------------------------------------ 5. an earlier output


def test_an_export_keeps_an_earlier_one_unless_overwrite(model_file: Path, tmp_path: Path) -> None:
    """`mnad export --out m.onnx` replaced an earlier export without a word, where train and detect refuse."""
    from mnad.checkpoint import load_model
    from mnad.errors import DataError
    from mnad.export import export_onnx

    model, config = load_model(model_file)
    for earlier in ("m.onnx", "m.onnx.json"):  # either file of a pair is an earlier export
        (tmp_path / earlier).write_bytes(b"earlier")
        with pytest.raises(DataError, match=f"{earlier}: holds the output of an earlier run; choose another --out or pass --overwrite"):
            export_onnx(model, config, tmp_path / "m.onnx")
        assert (tmp_path / earlier).read_bytes() == b"earlier"
        (tmp_path / earlier).unlink()
    export_onnx(model, config, tmp_path / "m.onnx")
    graph = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "m.onnx").write_bytes(b"earlier")
    assert export_onnx(model, config, tmp_path / "m.onnx", overwrite=True).read_bytes() == graph


def test_calibrate_keeps_an_earlier_model_unless_overwrite(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import mnad.calibrate

    out = tmp_path / "c.safetensors"
    out.write_bytes(b"an earlier calibrated model")
    video = frames_folder(tmp_path / "v", 30)
    argv = ["calibrate", "--checkpoint", str(model_file), "--data", str(video), "--false-alarm-rate", "0.1", "--scoring", "config",
            "--quiet", "--out", str(out)]

    def not_reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("the footage was scored before the output was checked")

    with monkeypatch.context() as patch:
        patch.setattr(mnad.calibrate, "calibrate", not_reached)
        assert cli.main(argv) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"mnad: error: {out}: holds the output of an earlier run; choose another "
                                                        "--out or pass --overwrite to replace it")
    assert out.read_bytes() == b"an earlier calibrated model"
    assert cli.main([*argv, "--overwrite"]) == 0
    assert not out.read_bytes().startswith(b"an earlier")
