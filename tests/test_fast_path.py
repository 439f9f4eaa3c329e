"""The fast scoring path (bf16 autocast + channels_last) scores like fp32, and the exact order is kept."""

from __future__ import annotations

import numpy as np
import torch
from conftest import tiny_config

from mnad.data import split_videos
from mnad.evaluate import score_videos
from mnad.model import MNAD


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
