"""Data layouts: museg's own and the MUSEG release's, both accepted as they are.

``conf/`` names each annotation file by its candidates in order,
``${museg.first_existing:<museg layout path>,<release layout path>}``: the first that exists wins,
and when none does the first is reported as missing (with the config's one-line fix). Under one
``paths.data_root``:

=========================  ===================================  ==================================
file                       museg layout                         MUSEG release (``data/`` as cloned)
=========================  ===================================  ==================================
stage-1 / stage-2 train    ``train/stage_{1,2}.jsonl``          ``train/stage_{1,2}.jsonl``
Charades-STA, THUMOS14/15,  ``eval/<benchmark>.json``           ``eval/grounding/<benchmark>.json``
Perception Test
E.T. Bench                 ``eval/etbench_txt_v1.0.json``       ``eval/et_bench/et_bench.json``
E.T. Bench subset list     ``eval/et_bench_subset.json``        ``eval/et_bench/subset.json``
videos                     ``videos/`` inside data_root         ``videos/`` next to ``data/`` (when
                                                                data_root has no ``videos/``)
E.T. Bench videos          ``videos/<source>/...``              ``videos/et_bench_processed/...``
=========================  ===================================  ==================================

>>> first_existing("/nonexistent/a.json", "/nonexistent/b.json")
'/nonexistent/a.json'
"""

from __future__ import annotations

import os


def first_existing(*candidates: str) -> str:
    """The first of ``candidates`` that exists (file or directory), else the first; normalized."""
    paths = [os.path.normpath(os.path.expanduser(str(c).strip())) for c in candidates
             if str(c).strip()]
    if not paths:
        raise ValueError("museg.first_existing: no candidate path given")
    return next((p for p in paths if os.path.exists(p)), paths[0])


def default_video_root(data_root: str) -> str:
    """``<data_root>/videos``; the release's ``videos/`` next to ``data/`` only when ``data_root``
    exists, has no ``videos/`` of its own, and that sibling exists.

    >>> default_video_root("/nonexistent/data")
    '/nonexistent/data/videos'
    """
    root = os.path.normpath(os.path.expanduser(str(data_root)))
    own, sibling = os.path.join(root, "videos"), os.path.join(os.path.dirname(root), "videos")
    if os.path.isdir(root) and not os.path.exists(own) and os.path.isdir(sibling):
        return sibling
    return own
