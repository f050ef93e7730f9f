"""Shared pytest set-up: offline, no wandb, a repo-local cache, and the real MUSEG annotations.

The tiny model and synthetic data are cached under ``.cache/museg-test`` (git-ignored) so repeated
local runs reuse them; CI starts from a clean clone and builds them once per run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("MUSEG_CACHE", str(REPO / ".cache" / "museg-test"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data_dir() -> Path | None:
    """The real MUSEG annotation files (never committed), or None when absent."""
    env = os.environ.get("MUSEG_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "museg"]:
        if (cand / "train" / "stage_1.jsonl").is_file():
            return cand
    return None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real MUSEG annotations not found (set MUSEG_SHARED_DATA=<dir with train/ eval/>)")
    return path


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (gpu marker)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
