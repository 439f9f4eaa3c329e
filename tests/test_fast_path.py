"""The fast scoring path (bf16 autocast + channels_last) scores like fp32, and the exact order is kept."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from conftest import tiny_config

from mnad.aot import AotStep
from mnad.data import split_videos
from mnad.errors import ConfigError
from mnad.evaluate import score_videos
from mnad.model import MNAD, inference_copy
from mnad.model.mnad import FrozenCompiled
from mnad.stream import ScoringStep, scoring_step


def test_bf16_channels_last_scores_match_fp32(synthetic_root) -> None:
    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    videos = split_videos(synthetic_root, "synthetic", "testing")
    exact = score_videos(model, config, videos, progress=False)
    fast_config = config.override(["eval.bf16=true", "eval.channels_last=true"])
    fast = score_videos(model, fast_config, videos, progress=False)
    for a, b in zip(exact, fast, strict=True):
        # bf16 keeps ~3 significant digits: PSNR agrees to a few hundredths of a dB, and the frame ranking is kept
        np.testing.assert_allclose(a.psnr, b.psnr, atol=0.1)
        assert np.corrcoef(a.psnr, b.psnr)[0, 1] > 0.99
        np.testing.assert_allclose(a.distance, b.distance, rtol=0.05)


def trained_statistics_model(config) -> MNAD:
    """A model whose BatchNorm layers hold non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    model = MNAD(config.model).train()
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(layer.weight, 0.5, 1.5)
            torch.nn.init.uniform_(layer.bias, -0.2, 0.2)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(2, config.model.input_frames * config.model.channels, 32, 32) * 2)
    return model.eval()


def test_inference_copy_folds_batchnorm_into_the_same_function() -> None:
    config = tiny_config()
    model = trained_statistics_model(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = inference_copy(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 18  # the caller's model is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # no tensor is shared with the caller's: casting or freezing the copy can never reach the caller's model
    theirs = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    assert not any(t.untyped_storage().data_ptr() in theirs for t in (*frozen.parameters(), *frozen.buffers()))
    assert all(p.requires_grad for p in model.parameters()) and not any(p.requires_grad for p in frozen.parameters())
    inference_copy(model, bf16=True, channels_last=True)
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    x = torch.randn(1, config.model.input_frames * config.model.channels, 32, 32)
    with torch.inference_mode():
        a, b = model(x), frozen(x)
    torch.testing.assert_close(b.frame, a.frame, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.queries, a.queries, atol=1e-5, rtol=1e-5)


def test_inference_copy_for_bf16_casts_the_unet_once_and_keeps_the_memory_fp32() -> None:
    config = tiny_config()
    model = trained_statistics_model(config)
    frozen = inference_copy(model, bf16=True, channels_last=True)
    assert {p.dtype for p in frozen.encoder.parameters()} | {p.dtype for p in frozen.decoder.parameters()} == {torch.bfloat16}
    assert frozen.memory.items.dtype == torch.float32 and model.encoder.stage1[0].weight.dtype == torch.float32
    assert frozen.encoder.stage1[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, config.model.input_frames * config.model.channels, 32, 32)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = frozen(x)
    with torch.inference_mode():
        exact = model(x)
    assert fast.queries.dtype == torch.float32
    torch.testing.assert_close(fast.frame.float(), exact.frame, atol=0.05, rtol=0)


NEEDS_CXX = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                               reason="compiling on the CPU needs a C++ compiler")


@NEEDS_CXX
def test_compiled_scoring_scores_as_eager_and_keeps_updating_the_memory(synthetic_root, tmp_path, monkeypatch, caplog) -> None:
    """eval.compile: the scoring step compiled ahead of time with frozen weights (``mnad.aot``) computes the same
    scores; the memory items stay an input, so test-time updates still reach the next frames (a frozen constant would
    silently stop them). The package is built once and then loaded from the cache, and one that no longer matches its
    record is built again rather than loaded."""
    monkeypatch.setenv("MNAD_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    config = tiny_config().override(["eval.gamma=1.0"])  # update after every frame: any frozen memory would show
    model = MNAD(config.model)
    videos = split_videos(synthetic_root, "synthetic", "testing")[:2]  # one compiled step scores both, memory carried over
    eager = score_videos(model, config, videos, progress=False)
    compiled = score_videos(model, config.override(["eval.compile=true"]), videos, progress=False)
    for e, c in zip(eager, compiled, strict=True):
        assert e.updated.all() and c.updated.all()
        np.testing.assert_allclose(c.psnr, e.psnr, atol=1e-3)
        np.testing.assert_allclose(c.distance, e.distance, rtol=1e-3, atol=1e-7)
    packages = sorted((tmp_path / "aoti").glob("*.pt2"))
    assert len(packages) == 1  # one model, one frame size: one package

    size = config.model.image_size
    frames = (torch.rand(1, 12, size, size) * 2 - 1, torch.rand(1, 3, size, size) * 2 - 1, model.memory.items.detach().clone())
    expected = scoring_step(model, config)(*frames)
    again = scoring_step(model, config.override(["eval.compile=true"]))
    assert isinstance(again, AotStep)
    torch.testing.assert_close(again(*frames).psnr, expected.psnr, atol=1e-3, rtol=0)
    assert again.builds == 0  # loaded from the cache
    packages[0].write_bytes(packages[0].read_bytes()[:-1] + b"x")  # altered after it was built
    rebuilt = scoring_step(model, config.override(["eval.compile=true"]))
    torch.testing.assert_close(rebuilt(*frames).psnr, expected.psnr, atol=1e-3, rtol=0)
    assert rebuilt.builds == 1 and "does not match its record" in caplog.text


def test_compiled_step_cache_key_names_everything_the_package_was_built_from(monkeypatch) -> None:
    """A package is reused only for the same weights, config, shapes and mnad code: an edit of the scoring code (a
    fix in PSNR, say) must not leave an old package scoring in its place."""
    import mnad.aot

    torch.manual_seed(0)
    config = tiny_config()
    model = MNAD(config.model)
    shapes = ((1, 12, 32, 32), (1, 3, 32, 32), (10, 64))
    key = AotStep(model, config).key(shapes)
    assert AotStep(model, config).key(shapes) == key
    assert AotStep(model, config.override(["eval.gamma=0.5"])).key(shapes) != key
    assert AotStep(model, config).key(((1, 12, 64, 64), (1, 3, 64, 64), (10, 64))) != key
    with torch.no_grad():
        model.decoder.head[-2].bias.add_(1e-3)
    assert AotStep(model, config).key(shapes) != key
    with torch.no_grad():
        model.decoder.head[-2].bias.sub_(1e-3)
    assert AotStep(model, config).key(shapes) == key
    monkeypatch.setattr(mnad.aot, "code_digest", lambda: "other mnad code")
    assert AotStep(model, config).key(shapes) != key


@NEEDS_CXX
def test_frozen_compiled_scores_as_eager(synthetic_root) -> None:
    """torch.compile at the first frame (eval.compile off the CPU): the same scores, one copy of the weights."""
    torch.manual_seed(0)
    config = tiny_config().override(["eval.gamma=1.0"])
    model = MNAD(config.model)
    size = config.model.image_size
    frames = (torch.rand(1, 12, size, size) * 2 - 1, torch.rand(1, 3, size, size) * 2 - 1, model.memory.items.detach().clone())
    expected = ScoringStep(model, config)(*frames)
    step = FrozenCompiled(ScoringStep(model, config))
    result = step(*frames)
    for name in ("psnr", "distance", "regular", "items"):
        torch.testing.assert_close(getattr(result, name), getattr(expected, name), atol=1e-3, rtol=1e-3)
    assert not any(".compiled." in key or "_orig_mod" in key for key in step.state_dict())  # one copy of the weights


def test_compiled_scoring_names_an_unusable_cache_folder(tmp_path, monkeypatch) -> None:
    """The compiled step's cache folder cannot be made (here a file stands in its way): one error naming the folder and
    MNAD_CACHE_DIR, before anything is compiled."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("MNAD_CACHE_DIR", str(blocker))
    config = tiny_config().override(["eval.compile=true"])
    model = MNAD(config.model)
    size = config.model.image_size
    step = scoring_step(model, config)
    with pytest.raises(ConfigError, match="not-a-folder.*MNAD_CACHE_DIR"):
        step(torch.zeros(1, 12, size, size), torch.zeros(1, 3, size, size), model.memory.items.detach())


@NEEDS_CXX
def test_compiled_bf16_channels_last_scores_as_eager(tmp_path, monkeypatch) -> None:
    """The path --compile takes where bf16 is native (an AMX CPU): bf16 autocast and channels_last inside the exported
    graph. Built directly (scoring_step would choose fp32 on a CPU without native bf16); it must match the eager bf16
    step to bf16 rounding."""
    monkeypatch.setenv("MNAD_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    config = tiny_config().override(["eval.gamma=1.0", "eval.bf16=true", "eval.channels_last=true", "eval.compile=true"])
    model = MNAD(config.model)
    size = config.model.image_size
    frames = (torch.rand(1, 12, size, size) * 2 - 1, torch.rand(1, 3, size, size) * 2 - 1, model.memory.items.detach().clone())
    with torch.inference_mode():
        eager, compiled = ScoringStep(model, config)(*frames), AotStep(model, config)(*frames)
    torch.testing.assert_close(compiled.psnr, eager.psnr, atol=0.05, rtol=0)
    torch.testing.assert_close(compiled.distance, eager.distance, atol=1e-3, rtol=1e-2)
    torch.testing.assert_close(compiled.items, eager.items, atol=1e-2, rtol=0)  # the gated update ran (gamma 1.0) in both
    assert not torch.equal(eager.items, frames[2])
