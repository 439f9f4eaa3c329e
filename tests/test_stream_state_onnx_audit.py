"""A saved stream state's metadata is covered by a hash (an edited range or score is refused; a state of an older mnad,
with no format, restores as before); a hand-made state whose hashes were made again is refused as one error whatever
its tensors hold; a scorer of an ONNX export refuses a device other than the CPU and the bf16 and
channels_last scoring options its graph cannot honour (API and CLI), as it refused eval.compile."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import edited_state_metadata, tiny_config, tiny_onnx_export
from safetensors import safe_open
from safetensors.torch import save

from mnad.checkpoint import tensor_digest
from mnad.cli import main
from mnad.errors import CheckpointError, ConfigError
from mnad.evaluate import evaluate
from mnad.export import export_onnx, load_onnx
from mnad.model import MNAD
from mnad.stream import STATE_FORMAT, StreamScorer


def scorer() -> StreamScorer:
    torch.manual_seed(0)
    config = tiny_config()
    return StreamScorer.for_model(MNAD(config.model).eval(), config, normalization="causal", smoothing=3)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def read_state(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata()), {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118


@pytest.fixture
def saved(tmp_path: Path) -> tuple[StreamScorer, Path]:
    """A scorer after a few frames and its saved state."""
    first = scorer()
    for frame in frames(6):
        first.push(frame)
    path = tmp_path / "s.safetensors"
    first.save_state(path)
    return first, path


def test_edited_metadata_under_the_old_tensor_hash_is_refused(saved) -> None:
    """The review's repro: psnr_range lowered by 5, recent replaced, the tensors' sha256 kept (was: restored, and
    every later score computed from the edited range and trailing mean)."""
    _, path = saved
    meta, tensors = read_state(path)
    info = json.loads(meta["mnad_stream_state"])
    info["psnr_range"][0] -= 5
    info["recent"] = [0.99]
    path.write_bytes(save(tensors, metadata={**meta, "mnad_stream_state": json.dumps(info)}))
    with pytest.raises(CheckpointError, match=r"s\.safetensors: the stream state's hash does not match its metadata"):
        scorer().load_state(path)


@pytest.mark.parametrize("key", ["format", "meta_sha256"])
def test_a_state_missing_one_of_format_and_its_metadata_hash_is_refused(saved, key: str) -> None:
    """Only a state with neither is an older mnad's: one without the other is damaged or edited."""
    _, path = saved
    meta, tensors = read_state(path)
    del meta[key]
    path.write_bytes(save(tensors, metadata=meta))
    with pytest.raises(CheckpointError, match=r"s\.safetensors: (not a stream state this mnad reads|the stream state's hash)"):
        scorer().load_state(path)


def test_a_state_of_an_unknown_format_says_to_start_afresh(saved) -> None:
    _, path = saved
    meta, tensors = read_state(path)
    path.write_bytes(save(tensors, metadata=edited_state_metadata({**meta, "format": "mnad-stream-9"},
                                                                  json.loads(meta["mnad_stream_state"]))))
    with pytest.raises(CheckpointError, match=rf"format 'mnad-stream-9', expected '{STATE_FORMAT}'\): start the stream afresh"):
        scorer().load_state(path)


def test_a_state_of_an_older_mnad_restores_as_before(saved, caplog: pytest.LogCaptureFixture) -> None:
    """Written before the metadata hash (no format, no meta_sha256): a camera restarted after the upgrade continues
    exactly, with a warning; its tensors are still checked by their hash and its fields by _restore."""
    first, path = saved
    meta, tensors = read_state(path)
    assert meta["format"] == STATE_FORMAT and len(meta["meta_sha256"]) == 64
    older = edited_state_metadata(meta, json.loads(meta["mnad_stream_state"]), older=True)
    path.write_bytes(save(tensors, metadata=older))
    restored = scorer()
    with caplog.at_level(logging.WARNING, logger="mnad.stream"):
        restored.load_state(path)
    assert "saved by an older mnad, whose hash covers its tensors only" in caplog.text
    frame = frames(1, seed=1)[0]
    assert restored.push(frame) == first.push(frame)
    tensors["window.0"][0, 0, 0] += 1  # its tensors: still their hash
    path.write_bytes(save(tensors, metadata=older))
    with pytest.raises(CheckpointError, match="hash does not match its contents"):
        scorer().load_state(path)


def test_a_saved_state_restores_exactly(saved) -> None:
    first, path = saved
    restored = scorer()
    restored.load_state(path)
    for frame in frames(3, seed=2):
        assert restored.push(frame) == first.push(frame)


def _renamed(tensors: dict, old: str, new: str) -> dict:
    return {new if k == old else k: v for k, v in tensors.items()}


@pytest.mark.parametrize(("edit", "said"), [
    (lambda t: _renamed(t, "window.2", "window.9"), r"tensors must be its 5 window frames, window\.0 to window\.4, and its "
     r"memory items \(items\), got window\.0, window\.1, window\.3, window\.4, window\.9$"),
    (lambda t: _renamed(t, "window.1", "window.01"), r"tensors must be its 5 window frames, .*got window\.0, window\.2, "),
    (lambda t: {**t, "notes": torch.zeros(3)}, r"tensors must be its 5 window frames, .*got window\.0, .*window\.4, notes$"),
    (lambda t: {**t, "window.0": t["window.0"].to(torch.bfloat16)},
     r"window frame 0 must be uint8, got bfloat16$"),
    (lambda t: {**t, "window.3": t["window.3"].float()}, r"window frame 3 must be uint8, got float32$"),
    (lambda t: {**t, "window.1": t["window.1"][:16, :16].contiguous()}, r"window frame 1: expected a numpy uint8 array of shape \(32, 32, 3\) "
     r".*got a uint8 array of shape \(16, 16, 3\)$"),
    (lambda t: {**t, "window.4": torch.tensor(7, dtype=torch.uint8)}, r"window frame 4: expected .*got a uint8 array of shape \(\)$"),
    (lambda t: {**t, "items": t["items"].to(torch.bfloat16)}, r"memory items must be torch\.float32 \(10, 64\), got torch\.bfloat16"),
    (lambda t: {k: v for k, v in t.items() if k != "items"}, r"memory items must be torch\.float32 \(10, 64\), got None"),
], ids=["window-gap", "window-name", "other-tensor", "window-bf16", "window-float", "window-shape", "window-scalar",
        "items-bf16", "items-missing"])
@pytest.mark.parametrize("older", [False, True], ids=["hashed", "older"])
def test_a_hand_made_state_with_its_hashes_made_again_is_refused_with_one_error(saved, edit, said: str, older: bool) -> None:
    """Every tensor is checked before any is read as a frame (was: a KeyError for a gap in the window's names, a
    TypeError from .numpy() for a bf16 frame, another tensor taken without a word); a state of an older mnad alike."""
    _, path = saved
    meta, tensors = read_state(path)
    tensors = edit(tensors)
    meta = {**meta, "sha256": tensor_digest(tensors)}
    path.write_bytes(save(tensors, metadata=edited_state_metadata(meta, json.loads(meta["mnad_stream_state"]), older=older)))
    target = scorer()
    with pytest.raises(CheckpointError, match=r"^.*s\.safetensors: the stream state('s)? .*" + said):
        target.load_state(path)
    assert target.state().frames_seen == 0 and target.state().window == []  # nothing changed


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model's ONNX export and a frame folder."""
    _, onnx, frames = tiny_onnx_export(tmp_path_factory.mktemp("onnx_audit"))
    return onnx, frames


CPU_ONLY = "an ONNX model scores on the CPU .ONNX Runtime's CPU provider., not on cuda"


def test_a_scorer_of_an_export_refuses_cuda_as_evaluate_does(exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with a GPU stood in for (was: for_model built, the first frame failed in torch.equal, its CPU
    outputs against items on the GPU; evaluate refused it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    onnx = load_onnx(exported[0])
    with pytest.raises(ConfigError, match=CPU_ONLY):
        StreamScorer.for_model(onnx, onnx.config, normalization="causal", device="cuda")
    with pytest.raises(ConfigError, match=CPU_ONLY):  # detect's path, one source
        StreamScorer.for_streams(onnx, onnx.config, 1, normalization="causal", device="cuda")
    with pytest.raises(ConfigError, match=CPU_ONLY):  # the same message evaluate gives (OnnxModel.to)
        onnx.to("cuda")
    StreamScorer.for_model(onnx, onnx.config, normalization="causal", device="cpu")  # the CPU: built


@pytest.mark.parametrize("setting", ["eval.bf16", "eval.channels_last", "eval.compile"])
def test_a_scorer_of_an_export_refuses_the_options_its_graph_cannot_honour(exported, setting: str) -> None:
    """bf16 and channels_last ran fp32, unsaid (was: accepted), as compile is refused."""
    onnx = load_onnx(exported[0])
    with pytest.raises(ConfigError, match=rf"^{setting} applies to PyTorch models, not to an ONNX model"):
        StreamScorer.for_model(onnx, onnx.config.override([f"{setting}=true"]), normalization="causal")
    with pytest.raises(ConfigError, match="eval.bf16 and eval.channels_last apply to PyTorch models"):
        StreamScorer.for_model(onnx, onnx.config.override(["eval.bf16=true", "eval.channels_last=true"]), normalization="causal")


def test_evaluate_refuses_bf16_on_an_export(exported, synthetic_root: Path, tmp_path: Path) -> None:
    """Its scorer is built in StreamScorer.for_model too (the stream protocol's as well)."""
    onnx = load_onnx(exported[0])
    with pytest.raises(ConfigError, match="eval.bf16 applies to PyTorch models"):
        evaluate(onnx, onnx.config.override(["eval.bf16=true"]), synthetic_root, out_dir=tmp_path / "out", progress=False)


@pytest.mark.parametrize("option", [["--bf16"], ["--set", "eval.channels_last=true"]])
def test_detect_cli_refuses_bf16_and_channels_last_on_an_export(exported, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                option: list[str]) -> None:
    """One `mnad: error:` line, exit 2 (was: exit 0, scored in fp32)."""
    out = tmp_path / "out"
    assert main(["detect", str(exported[1]), "--checkpoint", str(exported[0]), *option, "--out", str(out), "--quiet"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mnad: error:")]
    assert len(errors) == 1 and "applies to PyTorch models, not to an ONNX model" in errors[0], errors
    assert not (out / "scores.csv").exists()
    assert main(["detect", str(exported[1]), "--checkpoint", str(exported[0]), "--out", str(tmp_path / "ok"), "--quiet"]) == 0


def test_an_export_of_a_gpu_trained_model_scores_on_the_cpu_by_default(tmp_path: Path) -> None:
    """The scoring commands take their device from the model's train.device: the export of a model trained with
    --device cuda asked for the GPU its graph cannot run on (refused; on a GPU machine, the plain command failed)."""
    torch.manual_seed(0)
    config = tiny_config().override(["train.device=cuda"])
    export_onnx(MNAD(config.model).eval(), config, tmp_path / "m.onnx")
    assert load_onnx(tmp_path / "m.onnx").config.train.device == "cpu"
