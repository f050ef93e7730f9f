"""``python -m museg.demo_seeds RUN_DIR...``: the seed-to-seed report of demo runs (README's command).

The code is :mod:`museg.demo.seeds` (``python -m museg.demo.seeds`` is the same command); this
module keeps the short name working::

    python -m museg.demo_seeds outputs/demo/demo/seed=*
"""

from __future__ import annotations

from museg.demo.seeds import load_summaries, main, seeds_report

__all__ = ["load_summaries", "main", "seeds_report"]

if __name__ == "__main__":
    raise SystemExit(main())
