"""Shared fixtures: tiny generated datasets and configs, and the real Ped2 data beside the repo (read-only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnad.config import Config
from mnad.data.synthetic import make_synthetic_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PED2 = SHARED / "data" / "ped2"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, do not fight a busy machine for cores, and stay bit-reproducible;
    restored after each test because some code under test sets the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root holding ``synthetic/`` (2 training, 2 test videos of 24 frames, 32x32)."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, n_train=2, n_test=2, n_frames=24, size=32, seed=0)
    return root


def tiny_config(**model: object) -> Config:
    """A model small enough to train in seconds: 32x32 frames, width 8 (64-d queries)."""
    config = Config(name="tiny", dataset="synthetic")
    config.model.image_size = 32
    config.model.width = 8
    config.train.epochs = 1
    for key, value in model.items():
        setattr(config.model, key, value)
    config.validate()
    return config


@pytest.fixture
def ped2_root() -> Path:
    if not (PED2 / "testing" / "frames").is_dir():
        pytest.skip(f"real Ped2 data not found at {PED2}")
    return PED2
