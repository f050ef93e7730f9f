"""Where the repository and the real MUSEG annotations are, for tests and their helpers.

    from helpers_repo import REPO, shared_data_dir
    root = shared_data_dir()   # None when the annotation files are absent (tests then skip)
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """The real MUSEG annotation files (never committed): ``$MUSEG_SHARED_DATA`` or
    ``../shared/data/museg`` next to the repository; None when absent."""
    env = os.environ.get("MUSEG_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data" / "museg"]:
        if (cand / "train" / "stage_1.jsonl").is_file():
            return cand
    return None
