"""Faults: training killed with SIGKILL and resumed, checkpoints interrupted mid-write, a full disk, damaged checkpoints.

The kill test drives the real CLI (``python -m mnad train``) in subprocesses, single-threaded (``train.threads = 1``)
and in fp32, and compares the final weights, memory items and optimiser state bit for bit with an uninterrupted run.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

import mnad.checkpoint as checkpoint
from mnad.atomic import TEMP_SUFFIX
from mnad.checkpoint import MODEL_FILE, TRAIN_STATE_FILE, load_model, read_checkpoint, save_checkpoint, save_model
from mnad.cli import main
from mnad.config import Config
from mnad.errors import CheckpointError, DataError
from mnad.evaluate import evaluate
from mnad.model import MNAD
from mnad.train import LOG_FILE, train

KILL_EPOCHS = 16  # enough that five kills, each at most ~3 epochs after a checkpoint, still leave some for the last run
KILLS = 5
RECIPE = """name = "tiny-faults"
dataset = "synthetic"
[model]
image_size = 32
width = 8
[train]
epochs = {epochs}
threads = 1
bf16 = false
seed = 3
"""


def cli_train(recipe: Path, data_root: Path, out: Path, *, resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "mnad", "train", "--recipe", str(recipe), "--data-root", str(data_root),
               "--out", str(out), "--quiet"] + (["--resume"] if resume else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def log_records(out: Path) -> list[dict]:
    """Complete records of the training log (a line being written, or cut by a kill, is skipped)."""
    records = []
    for line in (out / LOG_FILE).read_text().splitlines() if (out / LOG_FILE).exists() else []:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".*{TEMP_SUFFIX}"))


def assert_same_tensors(a: Path, b: Path) -> int:
    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        assert ta[key].dtype == tb[key].dtype and torch.equal(ta[key], tb[key]), f"{key} differs between {a} and {b}"
    return len(ta)


def test_sigkill_at_random_points_then_resume_is_bit_identical(synthetic_root: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE.format(epochs=KILL_EPOCHS))
    reference, killed = tmp_path / "reference", tmp_path / "killed run"
    ref_process = cli_train(recipe, synthetic_root, reference, resume=False)  # runs alongside the killed ones

    rng = random.Random(20240611)
    kills: list[dict] = []
    started = time.monotonic()
    while len(kills) < KILLS:
        done_before = kills[-1]["checkpoint_epoch"] if kills else 0
        process = cli_train(recipe, synthetic_root, killed, resume=bool(kills))  # nothing to resume before the first kill
        # wait for one more finished epoch (a resume may first restore the checkpoint's own log line), then kill at a
        # random point of the next ~2 epochs (anywhere: forward, backward, memory update, checkpoint write, log write)
        while max((r["epoch"] for r in log_records(killed)), default=0) <= done_before and process.poll() is None:
            assert time.monotonic() - started < 300, "training made no progress"
            time.sleep(0.005)
        records = log_records(killed)
        delay = rng.uniform(0.0, 2.0) * max(records[-1]["seconds"], 0.05) if records else 0.0
        time.sleep(delay)
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"run finished before kill {len(kills) + 1} (rc {process.returncode}): raise KILL_EPOCHS\n{err.decode()}")
        process.send_signal(signal.SIGKILL)
        process.communicate()
        assert process.returncode == -signal.SIGKILL
        # never half a checkpoint: the last one is complete and verified, and there is no final model yet
        tensors, _, extra = read_checkpoint(killed / TRAIN_STATE_FILE)
        assert not (killed / MODEL_FILE).exists()
        assert extra["epoch"] >= (kills[-1]["checkpoint_epoch"] if kills else 1)
        kills.append({"log_lines_at_kill": len(records), "delay_s": round(delay, 3), "checkpoint_epoch": extra["epoch"],
                      "stale_temp_files": len(temp_files(killed))})

    final = cli_train(recipe, synthetic_root, killed, resume=True)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err.decode()
    _, err = ref_process.communicate(timeout=300)
    assert ref_process.returncode == 0, err.decode()

    n = assert_same_tensors(reference / MODEL_FILE, killed / MODEL_FILE)  # weights, BN statistics, memory items
    assert "memory.items" in load_file(killed / MODEL_FILE)
    assert_same_tensors(reference / TRAIN_STATE_FILE, killed / TRAIN_STATE_FILE)  # + Adam moments, step counts
    assert read_checkpoint(killed / TRAIN_STATE_FILE)[2]["epoch"] == KILL_EPOCHS
    assert temp_files(killed) == []  # what a kill mid-write left was cleaned up on resume
    # the log says what was trained: one record per epoch, however the kills fell between checkpoint and log line
    assert [r["epoch"] for r in log_records(killed)] == list(range(1, KILL_EPOCHS + 1))
    n_state = len(load_file(killed / TRAIN_STATE_FILE))
    print(f"\n{len(kills)} SIGKILLs then resume; {n} model and {n_state} training-state tensors bit-identical to an uninterrupted run: {kills}")
    epochs = [k["checkpoint_epoch"] for k in kills]
    assert epochs == sorted(set(epochs)) and epochs[-1] < KILL_EPOCHS  # each resumed run progressed, and was cut short


# ------------------------------------------------------------------------------------------- killed mid-write

MID_WRITE_CHILD = """
import os, signal, stat, sys
from mnad.config import Config
from mnad.train import train

mode, root, out = sys.argv[1], sys.argv[2], sys.argv[3]
config = Config(name="tiny", dataset="synthetic")
config.model.image_size, config.model.width, config.train.epochs, config.train.threads = 32, 8, 2, 1
calls = 0
real_fsync, real_fdopen = os.fsync, os.fdopen

def fsync(fd):  # write 1: config.json, 2: checkpoint of epoch 1, 3: checkpoint of epoch 2
    global calls
    if stat.S_ISDIR(os.fstat(fd).st_mode):  # a folder synced after a rename: not a write
        return real_fsync(fd)
    calls += 1
    if mode == "before-rename" and calls == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is complete, the rename has not happened
    real_fsync(fd)

class HalfWriter:
    def __init__(self, handle):
        self.handle = handle
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)
    def write(self, data):
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # half the bytes are on disk

opened = 0
def fdopen(fd, *args, **kwargs):
    global opened
    opened += 1
    handle = real_fdopen(fd, *args, **kwargs)
    return HalfWriter(handle) if mode == "half-written" and opened == 3 else handle

os.fsync, os.fdopen = fsync, fdopen
train(config, root, out, progress=False)
"""


@pytest.mark.parametrize("mode", ["before-rename", "half-written"])
def test_kill_while_writing_a_checkpoint_keeps_the_previous_one(synthetic_root: Path, tmp_path: Path, mode: str) -> None:
    out = tmp_path / "run"
    child = subprocess.run([sys.executable, "-c", MID_WRITE_CHILD, mode, str(synthetic_root), str(out)], capture_output=True)
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()
    stale = temp_files(out)
    assert len(stale) == 1 and stale[0].name.startswith(f".{TRAIN_STATE_FILE}.")  # the interrupted write
    assert read_checkpoint(out / TRAIN_STATE_FILE)[2]["epoch"] == 1  # the previous checkpoint, intact and verified
    assert not (out / MODEL_FILE).exists()
    if mode == "half-written":
        assert stale[0].stat().st_size < (out / TRAIN_STATE_FILE).stat().st_size

    config = tiny_config()
    config.train.epochs, config.train.threads = 2, 1
    threads = torch.get_num_threads()
    try:
        train(config, synthetic_root, out, resume=True, progress=False)
        train(config, synthetic_root, tmp_path / "reference", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert temp_files(out) == []
    assert_same_tensors(tmp_path / "reference" / MODEL_FILE, out / MODEL_FILE)


# ------------------------------------------------------------------------------------------------ disk full

def enospc(*_: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def tiny_model(config: Config) -> MNAD:
    torch.manual_seed(0)
    return MNAD(config.model)


def test_disk_full_while_writing_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    path = tmp_path / "last.safetensors"
    save_model(path, tiny_model(config), config)
    before = path.read_bytes()
    monkeypatch.setattr(checkpoint.os, "fsync", enospc)
    changed = tiny_model(config)
    changed.memory.items.mul_(-1)
    with pytest.raises(CheckpointError, match="disk full") as info:
        save_model(path, changed, config)
    assert str(path) in str(info.value) and "previous file" in str(info.value)
    assert path.read_bytes() == before and temp_files(tmp_path) == []


def test_disk_full_mid_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fdopen = os.fdopen

    class FillsUp:
        def __init__(self, handle: object) -> None:
            self.handle = handle

        def __enter__(self) -> FillsUp:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.__exit__(*exc)

        def write(self, data: bytes) -> None:
            self.handle.write(data[:100])
            self.handle.flush()
            enospc()

    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, *a, **k: FillsUp(real_fdopen(fd, *a, **k)))
    config = tiny_config()
    path = tmp_path / "model.safetensors"
    with pytest.raises(CheckpointError, match="disk full"):
        save_model(path, tiny_model(config), config)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one


def fail_fsync_at(monkeypatch: pytest.MonkeyPatch, call: int):
    """Make the ``call``-th fsync of a checkpoint/output write fail with ENOSPC (a file's: the folders synced after
    the renames are not counted); returns the real fsync."""
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            return real_fsync(fd)
        calls["n"] += 1
        if calls["n"] == call:
            enospc()
        real_fsync(fd)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    return real_fsync


def test_disk_full_during_training_keeps_last_checkpoint_then_resumes(synthetic_root: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    config.train.epochs = 2
    real_fsync = fail_fsync_at(monkeypatch, 3)  # 1: config.json, 2: epoch 1 checkpoint, 3: epoch 2 checkpoint -> disk full
    out = tmp_path / "run"
    with pytest.raises(CheckpointError, match="disk full") as info:
        train(config, synthetic_root, out, progress=False)
    assert str(out / TRAIN_STATE_FILE) in str(info.value)
    assert read_checkpoint(out / TRAIN_STATE_FILE)[2]["epoch"] == 1 and not (out / MODEL_FILE).exists()
    assert temp_files(out) == []
    monkeypatch.setattr(checkpoint.os, "fsync", real_fsync)  # space freed: resume finishes the run
    train(config, synthetic_root, out, resume=True, progress=False)
    assert read_checkpoint(out / MODEL_FILE)[2]["epochs"] == 2


def test_disk_full_while_writing_evaluation_outputs(synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    config.eval.test_update = False
    fail_fsync_at(monkeypatch, 2)  # scores.csv is written, metrics.json hits a full disk
    out = tmp_path / "eval"
    with pytest.raises(DataError, match="disk full") as info:
        evaluate(tiny_model(config), config, synthetic_root, out_dir=out, progress=False)
    assert "metrics.json" in str(info.value)
    assert list(out.iterdir()) == []  # no scores.csv without its metrics.json, no temporary files


# --------------------------------------------------------------------------------------------- safe checkpoints

@pytest.fixture
def own_model_file(tmp_path: Path) -> tuple[Path, Config]:
    """A model file of this test's own (the tests alter it; conftest's ``model_file`` is shared)."""
    config = tiny_config()
    path = tmp_path / "model.safetensors"
    save_model(path, tiny_model(config), config, extra={"epochs": 1})
    return path, config


def header_of(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def write_header(path: Path, header: dict, body: bytes) -> None:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + body)


def test_checkpoint_is_safetensors_with_json_config_and_hashes(own_model_file: tuple[Path, Config]) -> None:
    path, config = own_model_file
    header, _ = header_of(path)  # 8-byte length + JSON: no pickle anywhere
    meta = header["__metadata__"]
    assert meta["format"] == checkpoint.FORMAT
    assert Config.from_dict(json.loads(meta["config"])) == config
    assert len(meta["sha256"]) == 64 and len(meta["meta_sha256"]) == 64
    assert meta["sha256"] == checkpoint.tensor_digest(load_file(path))
    source = "".join(p.read_text() for p in Path(checkpoint.__file__).parent.rglob("*.py"))
    assert "torch.load" not in source and "import pickle" not in source


def test_altered_config_is_refused(own_model_file: tuple[Path, Config]) -> None:
    path, _ = own_model_file
    header, body = header_of(path)
    header["__metadata__"]["config"] = header["__metadata__"]["config"].replace('"alpha": 0.6', '"alpha": 0.7')
    write_header(path, header, body)
    with pytest.raises(CheckpointError, match="stored config does not match its stored SHA-256"):
        read_checkpoint(path)


def test_removed_config_hash_is_refused(own_model_file: tuple[Path, Config]) -> None:
    path, _ = own_model_file
    header, body = header_of(path)
    del header["__metadata__"]["meta_sha256"]
    write_header(path, header, body)
    with pytest.raises(CheckpointError, match="SHA-256 of the stored config is missing"):
        read_checkpoint(path)


def test_first_format_without_config_hash_still_loads(own_model_file: tuple[Path, Config]) -> None:
    path, config = own_model_file  # files written before the config hash (format mnad-1) stay readable
    header, body = header_of(path)
    del header["__metadata__"]["meta_sha256"]
    header["__metadata__"]["format"] = "mnad-1"
    write_header(path, header, body)
    assert load_model(path)[1] == config


@pytest.mark.parametrize("cut", [0, 7, 8, 100, -1000, -1])
def test_truncated_checkpoint_is_refused(own_model_file: tuple[Path, Config], cut: int) -> None:
    path, _ = own_model_file
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        load_model(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(("field", "value"), [("task", "recon"), ("memory", False), ("image_size", 64), ("channels", 1)])
def test_checkpoint_of_another_model_is_refused(own_model_file: tuple[Path, Config], field: str, value: object) -> None:
    path, config = own_model_file
    expected = Config.from_dict(config.to_dict())
    setattr(expected.model, field, value)
    with pytest.raises(CheckpointError, match=f"another model: {field}="):
        load_model(path, expect=expected)


def test_resume_with_other_model_settings_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny_config()
    train(config, synthetic_root, tmp_path, progress=False)
    other = tiny_config(channels=1)
    other.train.epochs = 2
    with pytest.raises(CheckpointError, match="other model settings"):
        train(other, synthetic_root, tmp_path, resume=True, progress=False)


def test_weights_that_do_not_fit_their_config_are_refused(tmp_path: Path) -> None:
    config = tiny_config()
    state = tiny_model(config).state_dict()
    wider = tiny_config(width=16)  # a consistent file whose config does not describe its weights
    save_checkpoint(tmp_path / "m.safetensors", state, wider)
    with pytest.raises(CheckpointError, match="weights do not fit the stored config"):
        load_model(tmp_path / "m.safetensors")


def test_nan_in_checkpoint_is_refused_on_save_and_on_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    model = tiny_model(config)
    model.memory.items[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="'memory.items' holds NaN or Inf"):
        save_model(tmp_path / "a.safetensors", model, config)
    assert not (tmp_path / "a.safetensors").exists()
    # a file written by other means (the tensor hash matches: it is not damage, the values themselves are bad)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["decoder.head.6.bias"] = torch.full_like(state["decoder.head.6.bias"], float("inf"))
    with monkeypatch.context() as patch:
        patch.setattr(checkpoint, "non_finite", lambda tensors: None)  # bypass the guard when writing
        save_checkpoint(tmp_path / "b.safetensors", state, config)
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_model(tmp_path / "b.safetensors")


def test_cli_reports_a_damaged_checkpoint_as_one_line(own_model_file: tuple[Path, Config], synthetic_root: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = own_model_file
    path.write_bytes(path.read_bytes()[:-10])
    assert main(["evaluate", "--checkpoint", str(path), "--data-root", str(synthetic_root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mnad: error: {path}: not a readable safetensors file") and err.count("\n") == 1


# ---------------------------------------------------------------------------------------------------- long run

def test_long_stream_benchmark_runs_and_reports_rss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """benchmarks/long_stream.py (an hour of frames, run by hand) works; here on 20 s of footage."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "long_stream.py"
    spec = importlib.util.spec_from_file_location("long_stream", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "long_stream.json"
    monkeypatch.setattr(sys, "argv", ["long_stream.py", "--seconds", "20", "--sample-every", "100", "--out", str(out)])
    threads = torch.get_num_threads()
    try:
        module.main()
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["frames"] == 500 and result["frames_scored"] == 496 and len(result["rss_samples"]) == 7
    assert result["memory_updates"] > 0 and result["rss_first_quartile_mib"] > 0 and "rss_growth_mib" in result
