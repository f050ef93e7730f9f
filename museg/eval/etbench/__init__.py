"""E.T. Bench metrics (12 tasks + summary), implemented from ``shared/spec/etbench_metrics.md``.

Example::

    from museg.eval.etbench import etbench_metrics
    res = etbench_metrics(entries, subset=None)      # entries: annotation dicts + answer ``a``
    res["ref_acc"], res["gnd_f1"], res["cap_f1"], res["cap_sim"], res["com_rec"], res["rows"]

Modules: :mod:`.parsing` (answer parsing), :mod:`.tasks` (per-task scorers), :mod:`.dense`
(dvc/slc), :mod:`.captions` (Java / MiniLM scorers, lazily imported), :mod:`.summary`.
"""

from museg.eval.etbench.summary import ETBenchError, etbench_metrics, filter_subset, load_subset

__all__ = ["etbench_metrics", "ETBenchError", "filter_subset", "load_subset"]
