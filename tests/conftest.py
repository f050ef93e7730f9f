"""Shared pytest set-up: offline, no wandb, a repo-local cache, and the real MUSEG annotations.

The tiny model and synthetic data are cached under ``.cache/museg-test`` (git-ignored) so repeated
local runs reuse them; CI starts from a clean clone and builds them once per run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers_repo import REPO, shared_data_dir
from helpers_rl import tiny_train_cfg

os.environ.setdefault("MUSEG_CACHE", str(REPO / ".cache" / "museg-test"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real MUSEG annotations not found (set MUSEG_SHARED_DATA=<dir with train/ eval/>)")
    return path


@pytest.fixture
def cfg_train(tmp_path: Path):
    """The real composed ``task=train model=tiny data=synthetic`` config, trimmed to seconds on the
    CPU (:func:`helpers_rl.tiny_train_cfg`; change keys with ``open_dict`` or ``OmegaConf.update``)."""
    return tiny_train_cfg(tmp_path)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (gpu marker)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
