"""Files mnad reads back and did not just write (model files, training checkpoints, shipped models, ONNX exports and
their sidecars), each checked on the bytes it loads: digests checked on the same reading as the tensors loaded (a file
replaced between two openings), a shipped model's pin checked on what is loaded, tensors of a type mnad never stores
refused rather than cast, metadata read only as mnad writes it, and no export of (or from) non-finite weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import ROOT, tiny_config
from safetensors import safe_open
from safetensors.torch import save

import mnad.checkpoint
from mnad.checkpoint import (
    PRETRAINED,
    ShippedModel,
    load_model,
    metadata_digest,
    read_checkpoint,
    save_model,
    shipped_model_path,
    tensor_digest,
)
from mnad.errors import CheckpointError
from mnad.export import _sidecar_digest, export_onnx, load_onnx
from mnad.model import MNAD


def tiny_model(seed: int) -> MNAD:
    torch.manual_seed(seed)
    return MNAD(tiny_config().model).eval()


def saved(path: Path, seed: int) -> Path:
    save_model(path, tiny_model(seed), tiny_config())
    return path


def contents(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata(), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118


def rehashed(path: Path, metadata: dict[str, str], tensors: dict[str, torch.Tensor]) -> Path:
    """A model file holding ``tensors`` and ``metadata`` with both digests made again (hand-made or by another tool:
    its hashes agree with its contents)."""
    metadata = {**metadata, "sha256": tensor_digest(tensors)}
    metadata["meta_sha256"] = metadata_digest(metadata)
    path.write_bytes(save(tensors, metadata=metadata))
    return path


def test_a_model_file_replaced_while_it_is_read_loads_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file replaced (atomically, as every mnad write does) between the reading of its digests and of its tensors:
    a training run rewrites its last.safetensors at each checkpoint while another command reads the run. The reader
    gets one file or the other, whole (was: the header of the first, the tensors of the second: 'altered or damaged')."""
    first, second = saved(tmp_path / "model.safetensors", 0), saved(tmp_path / "next.safetensors", 1)
    opened = []

    def replacing(name: str) -> object:
        real = getattr(mnad.checkpoint, name)

        def call(path: object, *args: object, **kwargs: object) -> object:
            if Path(str(path)) == first:
                if opened:  # every opening after the first meets the next version of the file
                    os.replace(second, first) if second.exists() else None
                opened.append(name)
            return real(path, *args, **kwargs)
        return call

    for name in ("read_header", "load_file", "safe_open"):  # whichever the reader opens the file with
        if hasattr(mnad.checkpoint, name):
            monkeypatch.setattr(mnad.checkpoint, name, replacing(name))
    model, _ = load_model(first)
    assert opened
    expected = tiny_model(0).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


def test_a_shipped_model_is_checked_against_its_pin_on_what_is_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pin of a shipped model is checked on the file as loaded, not only on a reading before it: another valid
    checkpoint put in its place after the name was resolved is refused, not loaded as the shipped model."""
    folder = tmp_path / "pretrained"
    folder.mkdir()
    shipped = saved(folder / "tiny-shipped.safetensors", 0)
    pin = contents(shipped)[0]["meta_sha256"]
    monkeypatch.setitem(PRETRAINED, "tiny-shipped", ShippedModel("tiny-shipped.safetensors", pin, "tiny", "by a test", "-"))
    monkeypatch.setattr(mnad.checkpoint, "resources", types.SimpleNamespace(files=lambda package: tmp_path))
    monkeypatch.chdir(tmp_path)
    assert load_model("tiny-shipped")[0] is not None  # the pinned file loads
    real = shipped_model_path

    def then_replaced(name: str) -> Path:
        path = real(name)  # checked here, then another model's file takes its place
        os.replace(saved(tmp_path / "other.safetensors", 1), path)
        return path

    monkeypatch.setattr(mnad.checkpoint, "shipped_model_path", then_replaced)
    with pytest.raises(CheckpointError, match="not the file mnad shipped as 'tiny-shipped'"):
        load_model("tiny-shipped")
    with pytest.raises(CheckpointError, match="not the file mnad shipped"):  # by its path too
        read_checkpoint(shipped)


def wrong_kind(tensors: dict[str, torch.Tensor], case: str) -> dict[str, torch.Tensor]:
    tensors = dict(tensors)
    if case == "uint8 items":
        tensors["memory.items"] = (tensors["memory.items"] * 100).to(torch.uint8)
    elif case == "int32 weight":
        name = next(k for k in sorted(tensors) if k.endswith(".weight"))
        tensors[name] = tensors[name].to(torch.int32)
    elif case == "float count":
        name = next(k for k in sorted(tensors) if k.endswith("num_batches_tracked"))
        tensors[name] = torch.tensor(2.5)
    elif case == "float8 weight":
        name = next(k for k in sorted(tensors) if k.endswith(".weight"))
        tensors[name] = tensors[name].to(torch.float8_e4m3fn)
    return tensors


@pytest.mark.parametrize("case", ["uint8 items", "int32 weight", "float count", "float8 weight"])
def test_a_tensor_of_another_type_is_refused_not_cast(tmp_path: Path, case: str) -> None:
    """A model file whose hashes agree with it but whose tensor is of a type mnad never writes there: refused with one
    CheckpointError naming the file (was: cast silently by load_state_dict, memory items of 0..255 scored; float8 a
    NotImplementedError traceback)."""
    metadata, tensors = contents(saved(tmp_path / "m.safetensors", 0))
    path = rehashed(tmp_path / "bad.safetensors", metadata, wrong_kind(tensors, case))
    with pytest.raises(CheckpointError, match=f"{path}: tensor .* (where the model holds|never stores)"):
        load_model(path)


def test_a_tensor_of_another_type_is_one_error_line_in_the_command(tmp_path: Path) -> None:
    metadata, tensors = contents(saved(tmp_path / "m.safetensors", 0))
    path = rehashed(tmp_path / "bad.safetensors", metadata, wrong_kind(tensors, "float8 weight"))
    done = subprocess.run([sys.executable, "-m", "mnad", "export", "--checkpoint", str(path), "--out", str(tmp_path / "x.onnx")],
                          capture_output=True, text=True, encoding="utf-8", cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"mnad: error: {path}: tensor"), done.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_a_training_checkpoint_of_another_type_is_refused_on_resume(tmp_path: Path) -> None:
    """The resume's load of a training checkpoint's model tensors is checked as load_model's is."""
    from mnad.train import restore_train_state, training_state

    model = tiny_model(0).train()
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    tensors, extra = training_state(model, optimizer, scheduler, 1, [])
    tensors["model.memory.items"] = (tensors["model.memory.items"] * 100).to(torch.uint8)
    with pytest.raises(CheckpointError, match="tensor 'memory.items' is uint8, where the model holds floating point"):
        restore_train_state(tmp_path / "last.safetensors", tensors, extra, tiny_model(1).train(), optimizer, scheduler)


@pytest.mark.parametrize("footage", ['[["a", Infinity, 10]]', '[["a", 1e400, 10]]', '[["a", 10, 5]]', '[["a", -5, 2]]',
                                     '[[1, 2, 3]]', '[["a", 1.5, 3]]', '[["a", true, 3]]', '[["a", 1, 3, 4]]'])
def test_recorded_footage_is_taken_only_as_training_writes_it(tmp_path: Path, footage: str) -> None:
    """The training footage a model file records (``extra``'s footage), not as training writes it: not taken (the model
    records none) rather than a traceback (was: OverflowError for Infinity) or a span taken as it came."""
    metadata, tensors = contents(saved(tmp_path / "m.safetensors", 0))
    path = rehashed(tmp_path / "odd.safetensors", {**metadata, "extra": f'{{"footage": {footage}}}'}, tensors)
    model, _ = load_model(path)
    assert model.trained_footage is None
    good = rehashed(tmp_path / "good.safetensors", {**metadata, "extra": '{"footage": [["/v/a", 0, 24], ["/v/b", 3, 9]]}'}, tensors)
    assert load_model(good)[0].trained_footage == [("/v/a", 0, 24), ("/v/b", 3, 9)]


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, dict]:
    model_path = saved(tmp_path / "m.safetensors", 0)
    model, config = load_model(model_path)
    path = export_onnx(model, config, tmp_path / "m.onnx")
    return path, json.loads(Path(f"{path}.json").read_text(encoding="utf-8"))


def with_sidecar(path: Path, side: dict, name: str) -> Path:
    """A copy of the export ``path`` whose sidecar is ``side``, its digest made again."""
    side = {**side, "sha256": _sidecar_digest(side)}
    copy = path.with_name(name)
    copy.write_bytes(path.read_bytes())
    Path(f"{copy}.json").write_text(json.dumps(side), encoding="utf-8")
    return copy


def test_a_model_with_non_finite_weights_is_not_exported(tmp_path: Path) -> None:
    """As save_model refuses them (was: exported, loaded, and every frame scored NaN)."""
    model, config = load_model(saved(tmp_path / "m.safetensors", 0))
    with torch.no_grad():
        model.memory.items[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="refusing to export a model whose tensor 'memory.items' holds NaN or Inf"):
        export_onnx(model, config, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.json").exists()


def test_an_export_with_non_finite_memory_items_is_refused(exported: tuple[Path, dict]) -> None:
    path, side = exported
    side["memory_items"][0][0] = float("nan")  # JSON reads NaN
    with pytest.raises(CheckpointError, match="the memory items hold NaN or Inf"):
        load_onnx(with_sidecar(path, side, "nan.onnx"))


def test_a_sidecar_whose_config_is_not_the_graphs_is_refused(exported: tuple[Path, dict], tmp_path: Path) -> None:
    """A sidecar whose config gives the graph other input sizes (hashes made again): refused when loaded, one error line
    in the command (was: ONNX Runtime's INVALID_ARGUMENT traceback at the first frame scored)."""
    path, side = exported
    side["config"]["model"]["image_size"] = 64
    other = with_sidecar(path, side, "other.onnx")
    with pytest.raises(CheckpointError, match="the graph takes .* its config gives .* not this graph's"):
        load_onnx(other)
    frames = tmp_path / "frames"
    frames.mkdir()
    done = subprocess.run([sys.executable, "-m", "mnad", "detect", "--checkpoint", str(other), str(frames), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, encoding="utf-8", cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(errors) == 1 and errors[0].startswith(f"mnad: error: {other}.json: the graph takes"), done.stderr


def test_a_sidecar_weights_digest_that_is_no_sha256_is_refused(exported: tuple[Path, dict]) -> None:
    path, side = exported
    with pytest.raises(CheckpointError, match="the weights' SHA-256 is unusable"):
        load_onnx(with_sidecar(path, {**side, "weights_sha256": "zz"}, "zz.onnx"))


@pytest.mark.parametrize("change", [{"clips": 5}, {"clips": [["a", [1]]]}, {"clips": [["a", 3], [1, 2]]}, {"record": [1]}])
def test_a_training_checkpoints_footage_record_is_taken_only_as_training_writes_it(tmp_path: Path, change: dict) -> None:
    """A training checkpoint whose clips (the footage a resume compares) or last epoch record are not as training writes
    them: one CheckpointError naming it (was: TypeError tracebacks while comparing the footage; a record not an object
    passed on to the log's repair)."""
    from mnad.checkpoint import save_checkpoint
    from mnad.train import read_train_state, training_state

    config = tiny_config()
    model = tiny_model(0).train()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 12, 32, 32)).frame.sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    tensors, extra = training_state(model, optimizer, scheduler, 1, [["a", 24]])
    path = tmp_path / "last.safetensors"
    save_checkpoint(path, tensors, config, {**extra, **change})
    with pytest.raises(CheckpointError, match=f"{path}: not a training checkpoint of mnad's .*not as training writes it"):
        read_train_state(path, config, clips=[["b", 24]])
    save_checkpoint(path, tensors, config, extra)
    assert read_train_state(path, config, clips=[["a", 24]])[2]["clips"] == [["a", 24]]


NESTED = "[" * 100_000 + "]" * 100_000  # JSON nested beyond Python's stack: json.loads raises RecursionError


def test_json_nested_too_deeply_is_a_damaged_file_not_a_traceback(tmp_path: Path) -> None:
    """Every JSON file mnad reads back and did not just write, nested deeper than Python's stack (json.loads raises
    RecursionError, no ValueError): taken as the damaged file it is (was: a RecursionError traceback)."""
    from mnad.aot import _matches
    from mnad.errors import DataError
    from mnad.outputs.detect_folder import is_detect_summary
    from mnad.outputs.reading import read_json
    from mnad.report.build import _run_config
    from mnad.run_folder import check_run_folder, models_beside
    from mnad.train import holdout_videos

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "x.onnx").write_bytes(b"graph")
    (folder / "x.onnx.json").write_text(NESTED, encoding="utf-8")  # beside a run: not taken for an mnad export
    assert models_beside(folder) == []
    check_run_folder(folder, resume=False, overwrite=False)
    (folder / "holdout.json").write_text(NESTED, encoding="utf-8")
    with pytest.raises(DataError, match="not a readable held-out footage record"):
        holdout_videos(folder)
    (folder / "config.json").write_text(NESTED, encoding="utf-8")
    assert _run_config(folder) is None
    (folder / "summary.json").write_text(NESTED, encoding="utf-8")
    assert not is_detect_summary(folder / "summary.json")
    with pytest.raises(DataError, match="nested too deeply"):
        read_json(folder / "summary.json", "summary", lambda data: None)
    package, record = tmp_path / "k.pt2", tmp_path / "k.json"
    package.write_bytes(b"package")
    record.write_text(NESTED, encoding="utf-8")
    os.chmod(package, 0o600)
    os.chmod(record, 0o600)
    assert not _matches(package, record)  # built again, as a damaged record is


@pytest.mark.parametrize("extra", [NESTED, "[1, 2]", None])
def test_a_reports_provenance_reads_any_checkpoint_metadata(tmp_path: Path, extra: str | None) -> None:
    """The report's provenance reads a checkpoint's metadata again, without loading it: metadata not as mnad writes it
    (extra nested too deeply, not an object; the metadata itself a list) is no metadata, not a traceback."""
    from mnad.report.provenance import collect_provenance

    metadata, tensors = contents(saved(tmp_path / "m.safetensors", 0))
    if extra is None:
        header = json.dumps({"__metadata__": ["a"]}).encode()
        path = tmp_path / "odd.safetensors"
        path.write_bytes(len(header).to_bytes(8, "little") + header)
    else:
        path = rehashed(tmp_path / "odd.safetensors", {**metadata, "extra": extra}, tensors)
    record = collect_provenance(tiny_config(), tmp_path / "report", tmp_path, checkpoint=path)
    assert record["checkpoint"]["epochs"] is None


def test_a_report_names_as_evaluated_only_the_checkpoint_that_was(tmp_path: Path, synthetic_root: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The report's provenance reads the checkpoint again after the evaluation (minutes later): a file that changed
    since (a run's last.safetensors rewritten by its training still going, or its final model written meanwhile) is
    not recorded as the evaluated checkpoint, with a warning (was: its digests and epochs recorded as those of the
    model evaluated). The file's digest is taken of the bytes whose weights were compared."""
    from mnad.evaluate import evaluate
    from mnad.report.provenance import collect_provenance, file_sha256

    path = saved(tmp_path / "m.safetensors", 0)
    model, config = load_model(path)
    out = tmp_path / "eval"
    evaluate(model, config, synthetic_root, out_dir=out, progress=False, checkpoint=path)
    record = collect_provenance(config, out / "report", out, checkpoint=path)
    assert record["checkpoint"]["file_sha256"] == file_sha256(path)
    saved(path, 1)  # another model's weights in its place
    record = collect_provenance(config, out / "report", out, checkpoint=path)
    assert record["checkpoint"] is None and record["run_dir"] is None
    assert "its weights are not those the evaluation" in caplog.text


def test_calibrate_carries_on_the_training_record_of_the_weights_it_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """calibrate_checkpoint reads the checkpoint's training record (footage, epochs) again after loading its model: a
    file replaced in between (a run's last.safetensors rewritten by its training, or its final model written) is one
    CheckpointError (was: the other file's record saved with these weights)."""
    from conftest import frames_folder

    import mnad.calibrate
    from mnad.calibrate import calibrate_checkpoint
    from mnad.train import training_record

    config = tiny_config()
    path = tmp_path / "m.safetensors"
    save_model(path, tiny_model(0), config, extra={"epochs": 3})
    save_model(tmp_path / "later.safetensors", tiny_model(1), config, extra={"epochs": 9})
    real = mnad.calibrate.load_model

    def then_replaced(*args: object, **kwargs: object) -> object:
        loaded = real(*args, **kwargs)
        os.replace(tmp_path / "later.safetensors", path)  # the next epoch's checkpoint lands
        return loaded

    monkeypatch.setattr(mnad.calibrate, "load_model", then_replaced)
    with pytest.raises(CheckpointError, match=f"{path}: changed since its model was loaded"):
        calibrate_checkpoint(path, tmp_path / "c.safetensors", data=[frames_folder(tmp_path / "cam", 6)], progress=False)
    assert training_record(path, mnad.checkpoint.weights_digest(real(path)[0])) == {"epochs": 9}  # the file as it is now
