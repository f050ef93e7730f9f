"""Pure functions of ``task=compare``: variants, varying keys, means, differences, mismatches.

Runs (:class:`museg.compare_runs.Run`) that differ only in ``seed`` form one :class:`Variant`;
the keys whose values differ between variants name them (``eval.max_new_tokens=16``)::

    variants, varying, constant = group_variants(runs)
    base = variants[select_baseline(variants, "eval.max_new_tokens=8")]
    mean_sd([r.metrics["miou"] for r in base.runs])            # (mean, sample sd, n)
    paired_difference(base, variants[1], "miou")               # per item, bootstrap 95% CI
    seed_difference([0.5, 0.6], [0.7, 0.8])                    # mean difference, Welch 95% CI
    mismatches(runs)                                           # keys that must not differ

Nothing here reads files or prints.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from museg.compare_runs import Run
from museg.eval.metrics import paired_gain

__all__ = ["Variant", "IDENTITY_EXCLUDED", "HEADLINE", "canonical", "identity", "group_variants",
           "select_baseline", "mean_sd", "paired_difference", "seed_difference", "mismatches",
           "headline_metrics", "CompareProblem"]

#: config keys that do not make a variant (``seed`` groups runs; the rest says where/how it ran)
IDENTITY_EXCLUDED = ("seed", "task", "launcher", "resume", "wandb", "paths", "hydra", "run_name",
                     "run_dir", "demo.show", "compare", "predictions", "eval.predictions")
#: headline metrics, in the order tables show them (a suite prefixes them: ``thumos14/mean_f1``)
HEADLINE = ("miou", "mean_r", "r@0.5", "mean_f1", "f1@0.5", "avg", "ref_acc", "gnd_f1",
            "cap_f1", "com_rec")
_FRAME_KEYS = ("fps", "max_frames", "min_frames", "min_pixels", "max_pixels", "total_pixels",
               "resize")
_EVAL_SET_KEYS = ("eval.benchmark", "eval.kind", "eval.annotation", "eval.subset", "eval.limit",
                  "eval.suite", "data.synthetic")
UNSET = "<unset>"


class CompareProblem(ValueError):
    """Runs that cannot be compared as asked (one line with the fix)."""


@dataclass
class Variant:
    """Runs with the same configuration apart from ``seed``."""

    values: dict[str, Any]
    """Value of each varying key for this variant."""
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ",".join(f"{k}={_show(v)}" for k, v in self.values.items()) or "all runs"

    @property
    def seeds(self) -> list[Any]:
        return [r.seed for r in self.runs]


def _show(v: Any) -> str:
    return json.dumps(v) if isinstance(v, list | dict) else str(v)


def canonical(value: Any) -> str:
    """A comparable text form of a config value (lists and dicts as sorted json).

    >>> canonical([1, 2]), canonical(0.5), canonical(None)
    ('[1, 2]', '0.5', 'null')
    """
    return json.dumps(value, sort_keys=True, default=str)


def _excluded(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IDENTITY_EXCLUDED)


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config keys that define a variant (see :data:`IDENTITY_EXCLUDED`).

    >>> identity({"seed": 3, "eval.limit": 4, "paths.output_root": "/x", "task": "eval"})
    {'eval.limit': 4}
    """
    return {k: v for k, v in config.items() if not _excluded(k)}


def group_variants(runs: Sequence[Run]) -> tuple[list[Variant], list[str], dict[str, Any]]:
    """(variants in order of first appearance, varying keys, constant key -> value)."""
    ids = [identity(r.config) for r in runs]
    keys = list(dict.fromkeys(k for i in ids for k in i))
    varying = [k for k in keys if len({canonical(i.get(k, UNSET)) for i in ids}) > 1]
    constant = {k: ids[0][k] for k in keys if k not in varying} if ids else {}
    groups: dict[tuple, Variant] = {}
    for run, ident in zip(runs, ids, strict=True):
        key = tuple(canonical(ident.get(k, UNSET)) for k in varying)
        if key not in groups:
            groups[key] = Variant({k: ident.get(k, UNSET) for k in varying})
        groups[key].runs.append(run)
    return list(groups.values()), varying, constant


def _matches(value: Any, wanted: str) -> bool:
    import yaml

    if _show(value) == wanted or canonical(value) == wanted:
        return True
    try:
        parsed = yaml.safe_load(wanted)
    except yaml.YAMLError:
        return False
    return canonical(parsed) == canonical(value) or (
        isinstance(parsed, int | float) and isinstance(value, int | float)
        and not isinstance(value, bool) and float(parsed) == float(value))


def select_baseline(variants: Sequence[Variant], spec: str | None) -> int:
    """Index of the variant an override string (``a.b=1,c=x``) selects; 0 when ``spec`` is empty.

    A key may be any config key; every run of the chosen variant must match every ``key=value``.
    """
    if not spec:
        return 0
    parts = re.split(r",(?=[\w.@/+~-]+=)", spec.strip())
    wanted = []
    for part in parts:
        if "=" not in part:
            raise CompareProblem(f"compare.baseline={spec!r}: {part!r} is not key=value "
                                 "(fix: e.g. compare.baseline=eval.max_new_tokens=16)")
        k, v = part.split("=", 1)
        wanted.append((k.lstrip("+~"), v.strip().strip("'\"")))
    hits = [i for i, var in enumerate(variants)
            if all(all(_matches(r.config.get(k, UNSET), v) for r in var.runs) for k, v in wanted)]
    if len(hits) != 1:
        labels = "; ".join(v.label for v in variants)
        what = "no variant" if not hits else f"{len(hits)} variants"
        raise CompareProblem(f"compare.baseline={spec}: {what} match (fix: one of: {labels})")
    return hits[0]


def mean_sd(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count.

    >>> mean_sd([0.5, 0.7])
    (0.6, 0.14142135623730948, 2)
    """
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, math.nan, 0
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return statistics.fmean(vals), sd, len(vals)


def _mean_items(runs: Sequence[Run], metric: str) -> dict[str, float] | None:
    """Per-item score averaged over a variant's runs, on the items every run has."""
    tables = [r.items.get(metric) for r in runs]
    if not tables or any(not t for t in tables):
        return None
    common = set(tables[0]).intersection(*tables[1:])
    return {i: statistics.fmean(t[i] for t in tables) for i in common}


def paired_difference(base: Variant, other: Variant, metric: str, n_resamples: int = 2000,
                      seed: int = 0) -> dict[str, float] | None:
    """``other - base`` of ``metric`` per item (each variant's runs averaged per item) on the items
    both evaluated, with a paired bootstrap 95% interval over items (``museg.eval.metrics.
    paired_gain``); None without per-item scores or shared items."""
    b, o = _mean_items(base.runs, metric), _mean_items(other.runs, metric)
    if b is None or o is None:
        return None
    ids = sorted(set(b) & set(o))
    if not ids:
        return None
    return paired_gain([b[i] for i in ids], [o[i] for i in ids], n_resamples=n_resamples,
                       seed=seed)


def seed_difference(base: Sequence[float], other: Sequence[float],
                    confidence: float = 0.95) -> dict[str, float]:
    """Difference of means ``other - base`` over runs with a Welch t interval (NaN bounds when a
    side has fewer than two runs).

    >>> d = seed_difference([0.5, 0.7], [0.8, 1.0])
    >>> round(d["gain"], 3), round(d["low"], 3), round(d["high"], 3), d["n"]
    (0.3, -0.308, 0.908, 4)
    """
    from scipy import stats

    mb, sb, nb = mean_sd(base)
    mo, so, no = mean_sd(other)
    out = {"gain": mo - mb, "low": math.nan, "high": math.nan, "n": nb + no}
    if nb >= 2 and no >= 2:
        vb, vo = sb * sb / nb, so * so / no
        se = math.sqrt(vb + vo)
        if se == 0:
            out["low"] = out["high"] = out["gain"]
        else:
            dof = (vb + vo) ** 2 / ((vb * vb / (nb - 1) if vb else 0) + (vo * vo / (no - 1) if vo
                                                                          else 0))
            half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * se
            out["low"], out["high"] = out["gain"] - half, out["gain"] + half
    return out


def headline_metrics(names: Sequence[str]) -> list[str]:
    """The headline metrics among ``names``, in table order (a suite's grouped by benchmark).

    >>> headline_metrics(["r@0.1", "mean_f1", "miou", "thumos14/mean_f1"])
    ['miou', 'mean_f1', 'thumos14/mean_f1']
    """
    out = [m for m in HEADLINE if m in names]
    prefixes = list(dict.fromkeys(n.split("/", 1)[0] for n in names if "/" in n))
    out += [f"{p}/{m}" for p in prefixes for m in HEADLINE if f"{p}/{m}" in names]
    return out


def mismatches(runs: Sequence[Run]) -> list[str]:
    """What differs between runs that must not: the evaluated items, the frame spec, the model
    size. One entry per difference (``eval set: eval.limit``); empty when the runs are comparable.
    """
    ids = [r.config for r in runs]
    keys = list(dict.fromkeys(k for c in ids for k in c))

    def varies(k: str) -> bool:
        return len({canonical(c.get(k, UNSET)) for c in ids}) > 1

    out = []
    sets = {r.eval_set for r in runs if r.eval_set}
    if len(sets) > 1:
        why = [k for k in keys if varies(k) and any(
            k == p or k.startswith(p + ".") for p in _EVAL_SET_KEYS)]
        out.append("eval set: " + (", ".join(why) or "the evaluated items differ"))
    frame = [k for k in keys if varies(k) and (
        k.startswith("eval.video.") or (k.startswith("video.") and k.split(".", 1)[1] in
                                        _FRAME_KEYS and any(r.task != "eval" for r in runs)))]
    spec_keys = sorted({k for r in runs for k in r.frame_spec})
    frame += [f"results.settings.video.{k}" for k in spec_keys
              if len({canonical(r.frame_spec.get(k, UNSET)) for r in runs}) > 1
              and f"eval.video.{k}" not in frame]
    if frame:
        out.append("frame spec: " + ", ".join(frame))
    if varies("model.name"):
        out.append("model size: model.name")
    return out
