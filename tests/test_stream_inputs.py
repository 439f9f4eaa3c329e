"""What the streaming scorer takes: a frame that cannot be one, a smoothing or calibration that does not fit, and a
saved state of another model are refused with one clear error; what is harmless (a strided view) is scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import edited_state_metadata, tiny_config
from safetensors import safe_open
from safetensors.torch import save_file

from mnad.calibration import Calibration
from mnad.errors import CheckpointError, ConfigError, DataError
from mnad.model import MNAD
from mnad.stream import StreamScorer, score_streams

CALIBRATION = Calibration(psnr_low=5.0, psnr_high=40.0, distance_low=0.0, distance_high=2.0, threshold=0.5,
                          false_alarm_rate=0.05, smoothing=9, frames=100)


def scorer_of(seed: int = 0, **options: object) -> StreamScorer:
    torch.manual_seed(seed)
    config = tiny_config(**{k: options.pop(k) for k in ("task", "t_length", "channels") if k in options})
    return StreamScorer.for_model(MNAD(config.model).eval(), config, **options)


def frames(n: int, channels: int = 3, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, channels), dtype=np.uint8) for _ in range(n)]


good = frames(1)[0]


@pytest.mark.parametrize("frame", [
    good.astype(np.float32) / 255,  # float in [0, 1]
    np.full((32, 32, 3), np.nan, np.float32),
    good.astype(np.uint16) * 257,
    frames(1, size=64)[0],  # not the model's size: the scorer does not resize
    torch.from_numpy(good),
    good.tolist(),
    good[:, :, 0],  # gray (H, W) into a 3-channel model
    np.ascontiguousarray(good.transpose(2, 0, 1)),  # CHW
    frames(1, channels=4)[0],  # RGBA
], ids=["float01", "nan", "uint16", "64px", "tensor", "list", "gray2d", "chw", "rgba"])
def test_push_refuses_what_is_not_a_frame(frame: object) -> None:
    scorer = scorer_of(normalization="causal")
    with pytest.raises(DataError, match=r"frame: expected a numpy uint8 array of shape \(32, 32, 3\)"):
        scorer.push(frame)
    with pytest.raises(DataError, match=r"\(32, 32, 3\)"):  # the several-stream path takes the same check
        score_streams([scorer], [frame])


def test_a_frame_of_another_size_mid_stream_is_refused_and_leaves_the_window() -> None:
    scorer = scorer_of(normalization="causal")
    for f in frames(3):
        scorer.push(f)
    with pytest.raises(DataError, match="frame"):
        scorer.push(frames(1, size=64)[0])
    assert scorer.state().frames_seen == 3


def test_strided_views_and_gray_frames_score_as_their_plain_copies() -> None:
    video = frames(6)
    plain, strided = scorer_of(normalization="causal"), scorer_of(normalization="causal")
    want = [plain.push(np.ascontiguousarray(f[:, ::-1])) for f in video]
    got = [strided.push(f[:, ::-1]) for f in video]  # negative strides: torch.from_numpy refuses those
    assert [r.psnr for r in got if r] == [r.psnr for r in want if r] and sum(r is not None for r in got) == 2
    gray = [f[:, :, 0] for f in frames(6)]
    a, b = scorer_of(channels=1, normalization="causal"), scorer_of(channels=1, normalization="causal")
    assert [r.psnr for f in gray if (r := a.push(f))] == [r.psnr for f in gray if (r := b.push(f[:, :, None]))]


def test_a_frame_buffer_the_caller_reuses_is_copied_into_the_window(tmp_path: Path) -> None:
    """A caller reading every frame into one buffer (cv2's ``cap.read(buf)``): the window holds each frame as it was
    pushed, so the state saves (was: safetensors' "Some tensors share memory", the window being t_length references to
    the buffer), and a stream saved or restored mid-way continues as the uninterrupted one (was: other scores)."""
    video = frames(14)
    whole = scorer_of(normalization="causal")
    want = [whole.push(f) for f in video]
    first, together = scorer_of(normalization="causal"), scorer_of(normalization="causal")
    buf, other = np.empty_like(video[0]), np.empty_like(video[0])
    for f in video[:7]:
        buf[...] = f
        first.push(buf)
        other[...] = f
        score_streams([together], [other])  # the several-stream path takes its frame into the window alike
    for scorer in (first, together):
        assert all(np.array_equal(a, b) for a, b in zip(scorer.state().window, video[2:7], strict=True))
    path = tmp_path / "state.safetensors"
    first.save_state(path)
    loaded, restored = scorer_of(normalization="causal"), scorer_of(normalization="causal")
    loaded.load_state(path)
    state = first.state()
    restored.restore(state)
    for f in state.window:  # the state is the caller's: written to, it changes neither scorer
        f[...] = 0
    for f in first.state().window:
        f[...] = 0
    got: dict[str, list] = {"loaded": [], "restored": [], "first": []}
    for f in video[7:]:
        for name, scorer in (("loaded", loaded), ("restored", restored), ("first", first)):
            buf[...] = f
            got[name].append(scorer.push(buf))
    for name in got:
        assert got[name] == want[7:], name


@pytest.mark.parametrize("smoothing", [-3, 0, 2.5, True, "3"])
def test_smoothing_must_be_a_whole_number_of_frames(smoothing: object) -> None:
    with pytest.raises(ConfigError, match=r"smoothing must be a whole number >= 1"):
        scorer_of(normalization="causal", smoothing=smoothing)


def test_a_calibrated_scorer_keeps_the_calibrations_window_and_takes_its_dict() -> None:
    with pytest.raises(ConfigError, match="9-frame mean of the score, not 3"):
        scorer_of(normalization="calibrated", calibration=CALIBRATION, smoothing=3)
    assert scorer_of(normalization="calibrated", calibration=CALIBRATION, smoothing=9).smoothing == 9
    as_dict = scorer_of(normalization="calibrated", calibration=CALIBRATION.to_dict())
    as_object = scorer_of(normalization="calibrated", calibration=CALIBRATION)
    assert as_dict.calibration == CALIBRATION and as_dict.smoothing == 9
    video = frames(8)
    assert [r.smoothed for f in video if (r := as_dict.push(f))] == [r.smoothed for f in video if (r := as_object.push(f))]
    with pytest.raises(ConfigError, match="calibration lacks"):
        scorer_of(normalization="calibrated", calibration={"smoothing": 9})


def saved_state(tmp_path: Path, **options: object) -> Path:
    scorer = scorer_of(**options)
    for f in frames(18):
        scorer.push(f)
    path = tmp_path / "state.safetensors"
    scorer.save_state(path)
    return path


def test_a_state_of_another_model_is_refused_naming_the_file_and_fields(tmp_path: Path) -> None:
    path = saved_state(tmp_path, task="recon", t_length=16, normalization="causal", smoothing=3)
    with pytest.raises(CheckpointError, match=r"state\.safetensors: .*another model.*task 'recon'.*t_length 16"):
        scorer_of(normalization="causal", smoothing=3).load_state(path)
    with pytest.raises(CheckpointError, match=r"smoothing 3 \(this scorer: 5\)"):
        scorer_of(task="recon", t_length=16, normalization="causal", smoothing=5).load_state(path)
    with pytest.raises(CheckpointError, match=r"channels 3 \(this scorer: 1\)"):
        scorer_of(task="recon", t_length=16, channels=1, normalization="causal", smoothing=3).load_state(path)
    scorer_of(task="recon", t_length=16, normalization="causal", smoothing=3).load_state(path)  # its own kind: taken


def test_a_state_of_the_same_kind_of_model_with_other_weights_is_refused(tmp_path: Path) -> None:
    """Its memory items were updated through another encoder: restored, they would score wrongly without a sign."""
    path = saved_state(tmp_path, normalization="causal")
    with pytest.raises(CheckpointError, match=r"another model or scorer: model '[0-9a-f]{64}' \(this scorer: '[0-9a-f]{64}'\)"):
        scorer_of(seed=1, normalization="causal").load_state(path)
    scorer_of(normalization="causal").load_state(path)  # the same weights: taken


def test_a_state_without_its_record_is_refused(tmp_path: Path) -> None:
    path = saved_state(tmp_path, normalization="causal")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    info = json.loads(meta["mnad_stream_state"])
    del info["belongs_to"]
    save_file(tensors, str(path), metadata=edited_state_metadata(meta, info))
    with pytest.raises(CheckpointError, match=r"state\.safetensors: .*does not record the model"):
        scorer_of(normalization="causal").load_state(path)
