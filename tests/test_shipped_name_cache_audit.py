"""A shipped model's name that is also a local file or folder; the compiled-step cache's owner and permissions, and
its locks; the wording of the int8 PSNR gap in docs/performance.md."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import time
from pathlib import Path

import pytest
from conftest import ROOT, load_script, tiny_config

import mnad.aot
from mnad.aot import _locked, _matches, check_private, private_cache, prune
from mnad.checkpoint import PRETRAINED, load_model, resolve_checkpoint
from mnad.cli import main
from mnad.detect import load_detector
from mnad.errors import ConfigError

SHIPPED = next(iter(PRETRAINED))  # ped2-pred


@pytest.fixture
def local_shipped_folder(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The current folder holds a run folder named as the shipped model, with a tiny model of the user's."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / SHIPPED
    folder.mkdir()
    shutil.copy(model_file, folder / "model.safetensors")
    return folder


@pytest.mark.parametrize("command", [
    ["detect", "a", "--out", "o"],
    ["export", "--out", "o.onnx"],
    ["calibrate", "--out", "c.safetensors", "--data", "a"],
    ["evaluate", "--data-root", "d", "--out", "o"],
    ["figures", "--data-root", "d", "--out", "o"],
])
def test_a_shipped_name_that_is_also_a_local_folder_is_one_ambiguity_error(local_shipped_folder: Path, command: list[str],
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Was: `--checkpoint ped2-pred` beside a folder ped2-pred scored (exported, calibrated) the shipped model, exit 0,
    without a word. Every command taking a checkpoint resolves it through checkpoint.resolve_checkpoint."""
    assert main([*command, "--checkpoint", SHIPPED]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("mnad: error:")]
    assert len(lines) == 1, err
    assert "ambiguous" in lines[0] and f"./{SHIPPED}" in lines[0] and "rename or move it" in lines[0]
    assert not any(Path(name).exists() for name in ("o", "o.onnx", "c.safetensors"))


def test_the_api_refuses_the_ambiguous_name_and_reads_a_path_with_a_separator_as_the_path(
        local_shipped_folder: Path) -> None:
    for name in (SHIPPED, Path(SHIPPED)):
        with pytest.raises(ConfigError, match=f"'{SHIPPED}' is both a shipped model's name and a folder.*ambiguous"):
            load_model(name)
        with pytest.raises(ConfigError, match="ambiguous"):
            load_detector(name)
    for name in (f"./{SHIPPED}", str(local_shipped_folder), local_shipped_folder):
        assert resolve_checkpoint(name) == Path(name) / "model.safetensors"
    _, config = load_model(f"./{SHIPPED}")
    assert config.model == tiny_config().model  # the user's model, not the shipped one


def test_a_file_named_as_a_shipped_model_is_ambiguous_too_and_the_name_alone_still_loads_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint(SHIPPED).name == PRETRAINED[SHIPPED].file  # nothing of that name here: the shipped model
    (tmp_path / SHIPPED).write_bytes(b"")
    with pytest.raises(ConfigError, match=f"a file in the current folder .*write ./{SHIPPED}"):
        resolve_checkpoint(SHIPPED)


# the compiled-step cache (mnad.aot)

def test_a_cache_folder_others_may_write_is_refused_and_a_private_one_used(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: a shared, world-writable MNAD_CACHE_DIR was used: another local user could plant a package (native code)
    beside a matching record."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("MNAD_CACHE_DIR", str(shared))
    with pytest.raises(ConfigError, match=f"{shared}: a compiled-step cache folder that another local user could "
                                          r"change.*group or other users may write it \(mode drwxrwxrwx\)"):
        private_cache()
    assert not (shared / "aoti").exists()
    shared.chmod(0o700)
    assert private_cache() == shared / "aoti"
    assert stat.S_IMODE((shared / "aoti").stat().st_mode) == 0o700
    (shared / "aoti").chmod(0o770)  # the packages' folder itself
    with pytest.raises(ConfigError, match="aoti: a compiled-step cache folder"):
        private_cache()


def test_a_cache_folder_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNAD_CACHE_DIR", str(tmp_path / "cache"))
    private_cache()
    monkeypatch.setattr(mnad.aot.os, "getuid", lambda: os.stat(tmp_path).st_uid + 1)
    with pytest.raises(ConfigError, match=r"cache: a compiled-step cache folder .*owned by user id \d+, not by you"):
        private_cache()
    monkeypatch.delattr(mnad.aot.os, "getuid")  # no user ids (Windows): not checked
    check_private(tmp_path, "a folder", "")


def test_the_default_cache_folder_is_made_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MNAD_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert private_cache() == tmp_path / "xdg" / "mnad" / "aoti"
    for folder in (tmp_path / "xdg" / "mnad", tmp_path / "xdg" / "mnad" / "aoti"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def _cached(folder: Path, key: str = "k") -> tuple[Path, Path]:
    """A package and its matching record, as a build leaves them."""
    import hashlib

    package, record = folder / f"{key}.pt2", folder / f"{key}.json"
    package.write_bytes(b"native code")
    record.write_text(json.dumps({"format": mnad.aot.PACKAGE_FORMAT, "sha256": hashlib.sha256(b"native code").hexdigest()}))
    for path in (package, record):
        path.chmod(0o600)
    return package, record


def test_a_package_or_record_others_may_write_or_own_is_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    package, record = _cached(tmp_path)
    assert _matches(package, record)
    for path in (package, record):
        path.chmod(0o666)
        assert not _matches(package, record)  # built again (which replaces it), never loaded
        path.chmod(0o600)
    assert "group or other users may write it" in caplog.text
    monkeypatch.setattr(mnad.aot.os, "getuid", lambda: os.stat(package).st_uid + 1)
    assert not _matches(package, record)
    assert "not by you" in caplog.text


def test_a_lock_file_pruned_between_open_and_lock_is_not_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """prune removes a stale key's lock file while holding it: a process that opened it just before and locks it just
    after held a lock on a removed file, while a newcomer locked the new one (both built the key). As reliability row
    276 for the run folder's lock: the lock is held only on the file now at the path."""
    lock = tmp_path / ".k.lock"
    real_flock, removed = fcntl.flock, []

    def flock_after_prune(fd: int, operation: int) -> None:
        if not removed:  # prune removes the file between this process's open and its lock
            removed.append(True)
            lock.unlink()
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_prune)
    with _locked(lock):
        assert removed and lock.exists()
        newcomer = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # was: the newcomer got the lock too
                real_flock(newcomer, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(newcomer)


def test_prune_never_deletes_a_key_locked_on_a_new_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A prune that opened a stale key's lock file just before another prune removed it must not delete the key that a
    builder now holds through the new lock file."""
    package, record = _cached(tmp_path)
    os.utime(record, (0, 0))  # unused for decades: stale
    lock = tmp_path / ".k.lock"
    real_flock, builder = fcntl.flock, []

    def flock_after_another_prune(fd: int, operation: int) -> None:
        if not builder:  # another prune removes the lock file, a builder makes a new one and locks it
            lock.unlink(missing_ok=True)
            builder.append(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600))
            real_flock(builder[0], fcntl.LOCK_EX)
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_another_prune)
    try:
        assert prune(tmp_path, now=time.time()) == []  # was: ["k"], the package deleted under its builder
        assert package.exists() and record.exists() and lock.exists()
    finally:
        os.close(builder[0])


# docs/performance.md's int8 section

def test_the_int8_psnr_gap_says_it_was_measured_on_synthetic_frames() -> None:
    """benchmarks/int8.py scores synthetic frames (speed.synthetic_frames): the doc's PSNR gap read as Ped2's."""
    doc = load_script("benchmarks/make_performance_doc.py")
    data = json.loads((ROOT / "benchmarks" / "results" / "int8.json").read_text())
    lines = [line for line in doc.int8_section(data, "benchmarks/results/int8.json") if "PSNR differs" in line]
    assert lines
    scored = data["settings"]["warmup"] + data["settings"]["frames"]
    for line in lines:
        assert f"over the {scored} synthetic frames scored here" in line and "not Ped2 frames" in line
        assert "int8 calibrated on synthetic frames" in line
