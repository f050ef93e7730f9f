"""Grounding metrics (museg.eval.metrics): hand-computed tvg/tal tables, answer parsing quirks, the
float32 threshold behaviour, and hypothesis properties against a per-item transcription of the spec."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from museg.eval.metrics import (
    MetricsError,
    best_constant_answer,
    grounding_metrics,
    paired_gain,
    parse_answer_segments,
    per_item_iou,
)

F32_07 = 0.699999988079071  # float32(7) / float32(10) as a double
TVG_KEYS = ["n", "miou", "r@0.1", "r@0.3", "r@0.5", "r@0.7", "mean_r"]
TAL_KEYS = ["n", "f1@0.1", "f1@0.3", "f1@0.5", "f1@0.7", "mean_f1"]


def ans(text):
    return f"<think>looking</think><answer>{text}</answer>"


PARSE_TABLE = [
    (ans("1.5-3"), [[1.5, 3.0]], "plain"),
    (ans(" 1 - 2 "), [[1.0, 2.0]], "spaces around '-'"),
    (ans("from 1.5 to 3.0 seconds"), [[1.5, 3.0]], "words ignored"),
    (ans("-5-10"), [[5.0, 10.0]], "minus sign ignored by \\d+"),
    (ans("1..5-3"), [], "'1..5' matches \\d+\\.*\\d* but float() fails"),
    (ans("12.-15."), [[12.0, 15.0]], "trailing dot"),
    (ans("segment 1: 2-5"), [], "odd count"),
    (ans("5-3"), [], "start >= end"),
    (ans("2-2"), [], "start == end"),
    (ans("1-2 4-3"), [], "any bad pair empties the prediction"),
    (ans("1e5-2e5"), [[1.0, 5.0], [2.0, 5.0]], "exponents are not numbers here"),
    (ans("\n1-2\n"), [[1.0, 2.0]], "newlines inside the answer"),
    (ans("\u0661-\u0662"), [[1.0, 2.0]], "Unicode digits"),
    (ans(""), [], "empty answer"),
    ("<answer>1-2</answer><answer>3-4</answer>", [], "two answers"),
    ("<answer>1-2", [], "no closing tag"),
    ("1-2", [], "no tags"),
    ("</answer>1-2<answer>", [], "tags reversed"),
    (None, [], "not a string"),
]


@pytest.mark.parametrize("text,expected,why", PARSE_TABLE, ids=[r[2] for r in PARSE_TABLE])
def test_parse_answer_segments(text, expected, why):
    assert parse_answer_segments(text) == expected


def test_float32_boundary_at_07():
    gt, out = [[[0, 10]]], [ans("0-7")]
    assert per_item_iou(gt[0], out[0]) == F32_07 < 0.7
    tvg = grounding_metrics(gt, out, "tvg")
    assert tvg["miou"] == F32_07
    assert (tvg["r@0.5"], tvg["r@0.7"]) == (1.0, 0.0)  # compared as a double: 0.69999999 < 0.7
    tal = grounding_metrics(gt, out, "tal")
    assert tal["f1@0.7"] == 1.0  # compared as float32 tensors: float32(0.7) >= float32(0.7)


def test_tvg_table():
    gts = [[[0, 10]], [[0, 10]], [[0, 10]], [[0, 10], [20, 30]]]
    outs = [ans("0-10"), ans("5-15"), "garbage", ans("0-2 20-30")]
    # IoUs (float32): 1, 5/15, 0 (no prediction), 2/10 (first vs first only)
    ious = [1.0, 0.3333333432674408, 0.0, 0.20000000298023224]
    assert [per_item_iou(g, o) for g, o in zip(gts, outs, strict=True)] == ious
    m = grounding_metrics(gts, outs, "tvg")
    assert list(m) == TVG_KEYS
    assert m["n"] == 4
    assert m["miou"] == sum(ious) / 4
    assert (m["r@0.1"], m["r@0.3"], m["r@0.5"], m["r@0.7"]) == (0.75, 0.5, 0.25, 0.25)
    assert m["mean_r"] == (3 + 2 + 1 + 1) / 4 / 4


def test_tal_table():
    gts = [[[0, 10], [20, 30], [40, 50]], [[0, 10]], [[0, 10]], [[0, 10]]]
    outs = [ans("0-10 100-110"), ans("0-2"), ans("5-3"), ans("0-10 0-10")]
    m = grounding_metrics(gts, outs, "tal")
    assert list(m) == TAL_KEYS
    # item 1: rec 1/3, prc 1/2 at every t -> F1 0.4 (float32 means); item 2: IoU 0.2 -> F1 1 at
    # t=0.1 only; item 3: no prediction; item 4: duplicates both match -> rec 1, prc 1.
    item1 = 2 * 0.5 * 0.3333333432674408 / (0.5 + 0.3333333432674408)
    assert item1 == pytest.approx(0.4, abs=1e-7)
    assert m["f1@0.1"] == (item1 + 1.0 + 0 + 1.0) / 4
    for t in ("0.3", "0.5", "0.7"):
        assert m[f"f1@{t}"] == (item1 + 0 + 0 + 1.0) / 4
    assert m["mean_f1"] == pytest.approx((item1 * 4 + 1 + 4) / 4 / 4, abs=1e-15)


def test_tal_max_below_threshold_adds_zero():
    m = grounding_metrics([[[0, 10], [20, 30]]], [ans("0-4 22-30")], "tal")  # IoUs 0.4, 0.8
    assert m["f1@0.3"] == 1.0
    assert m["f1@0.5"] == pytest.approx(2 * 0.5 * 0.5 / 1.0)
    assert m["f1@0.7"] == pytest.approx(0.5)


def test_empty_input_and_errors():
    assert grounding_metrics([], [], "tvg") == dict.fromkeys(TVG_KEYS, 0.0) | {"n": 0}
    assert grounding_metrics([], [], "tal") == dict.fromkeys(TAL_KEYS, 0.0) | {"n": 0}
    with pytest.raises(MetricsError, match="kind must be one of"):
        grounding_metrics([], [], "etbench")
    with pytest.raises(MetricsError, match="1 ground truths but 2 outputs"):
        grounding_metrics([[[0, 1]]], ["a", "b"], "tvg")


def test_bare_and_bad_ground_truth_and_nan():
    assert grounding_metrics([[0, 10]], [ans("0-5")], "tvg")["miou"] == 0.5  # bare wrapped
    assert grounding_metrics([[0, 10]], [ans("0-5")], "tal")["f1@0.5"] == 1.0
    for bad in ([], [["a", "b"]], None, [[0]]):
        for kind in ("tvg", "tal"):
            m = grounding_metrics([bad], [ans("0-5")], kind)
            assert m["n"] == 1 and all(v == 0 for k, v in m.items() if k != "n")
    # float32 collapses the prediction to [1, 1]; truth [0, 0] -> 0 / 0 = NaN -> counted as 0
    nan_case = ([[0, 0]], ans("1.00000001-1.00000002"))
    assert per_item_iou(*nan_case) == 0.0
    assert grounding_metrics([nan_case[0]], [nan_case[1]], "tvg")["miou"] == 0.0
    huge = ans("1" + "0" * 40 + "-2" + "0" * 40)  # float32 inf - inf
    assert grounding_metrics([[[0, 10]]], [huge], "tvg")["miou"] == 0.0


# ------------------------------------------------------------------------------- properties
def spec_tvg_iou(gt, pred):
    """Per item, as the issue says: 1x1 float32 tensors, first vs first."""
    g, p = torch.Tensor([gt[0]]), torch.Tensor([pred[0]])
    inter = (torch.min(g[:, None, 1], p[:, 1]) - torch.max(g[:, None, 0], p[:, 0])).clamp(0)
    return (inter / ((g[:, 1] - g[:, 0])[:, None] + (p[:, 1] - p[:, 0]) - inter)).item()


def spec_parse(text):
    if not isinstance(text, str) or text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return []
    m = re.search(r"<answer>(.*)</answer>", text, re.DOTALL)
    nums = re.findall(r"\d+\.*\d*", m.group(1).strip()) if m else []
    try:
        vals = [float(x) for x in nums]
    except ValueError:
        return []
    if len(vals) % 2:
        return []
    pairs = [vals[i : i + 2] for i in range(0, len(vals), 2)]
    return pairs if all(s < e for s, e in pairs) else []


cut = st.integers(0, 10**6).map(lambda i: i / 100)
segment = st.tuples(cut, cut).filter(lambda p: p[0] < p[1]).map(list)
truth = st.lists(segment, min_size=1, max_size=4)
piece = st.one_of(
    st.tuples(cut, cut).map(lambda p: f"{p[0]}-{p[1]}"),
    st.sampled_from(["", " ", "1..5", "-", "nan", "1e5", "\u0663", "to", "12.", "99" * 25]),
    st.text(max_size=6),
)
output = st.one_of(
    st.lists(piece, max_size=4).map(lambda ps: ans(" ".join(ps))),
    st.text(max_size=40),
    st.lists(st.sampled_from(["<answer>", "</answer>", "1-2", "3", " ", "x"]), max_size=6).map(
        "".join),
)


@settings(deadline=None, max_examples=200)
@given(items=st.lists(st.tuples(truth, output), max_size=6))
def test_metrics_properties(items):
    gts = [g for g, _ in items]
    outs = [o for _, o in items]
    for o in outs:
        assert parse_answer_segments(o) == spec_parse(o)
    tvg = grounding_metrics(gts, outs, "tvg")
    tal = grounding_metrics(gts, outs, "tal")
    assert tvg["n"] == tal["n"] == len(items)
    for m in (tvg, tal):
        assert all(0.0 <= v <= 1.0 for k, v in m.items() if k != "n"), m
    ious = []
    for g, o in items:
        pred = spec_parse(o)
        v = spec_tvg_iou(g, pred) if pred else 0.0
        ious.append(v if math.isfinite(v) else 0.0)
        assert per_item_iou(g, o) == ious[-1]
    if items:
        assert tvg["miou"] == pytest.approx(sum(ious) / len(items), abs=1e-12)
        for t in (0.1, 0.3, 0.5, 0.7):
            assert tvg[f"r@{t}"] == sum(v >= t for v in ious) / len(items)


@settings(deadline=None, max_examples=100)
@given(gt=st.lists(st.lists(st.one_of(st.floats(), st.integers()), min_size=2, max_size=2),
                   max_size=3), out=output)
def test_metrics_never_raise_on_odd_truth(gt, out):
    for kind in ("tvg", "tal"):
        m = grounding_metrics([gt], [out], kind)
        assert all(0.0 <= v <= 1.0 for k, v in m.items() if k != "n"), m


@pytest.mark.parametrize("name,kind", [("charades_sta", "tvg"), ("thumos14", "tal"),
                                       ("thumos15", "tal")])
def test_real_benchmarks_perfect_answers(name, kind, shared_data):
    """The real evaluation ground truths given back as answers score 1 (0 when shifted away)."""
    import json

    path = shared_data / "eval" / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (set MUSEG_SHARED_DATA)")
    gts = [e["groundtruth"] for e in json.loads(path.read_text())]
    perfect = [ans(" ".join(f"{s}-{e}" for s, e in g)) for g in gts]
    m = grounding_metrics(gts, perfect, kind)
    assert m["n"] == len(gts)
    assert all(v == 1.0 for k, v in m.items() if k != "n"), m
    shifted = [ans(" ".join(f"{s + 1e4}-{e + 1e4}" for s, e in g)) for g in gts]
    assert all(v == 0.0 for k, v in grounding_metrics(gts, shifted, kind).items() if k != "n")


def test_best_constant_answer_beats_every_grid_answer():
    gts = [[[2, 6]], [[4, 8]], [[10, 12]], [[2, 8], [10, 12]]]
    seg, miou = best_constant_answer(gts, step=2.0)
    assert seg == [2.0, 8.0]  # IoUs 2/3, 2/3, 0, 1
    for s in range(0, 13, 2):
        for e in range(s + 2, 13, 2):
            other = grounding_metrics(gts, [f"<answer>{s}-{e}</answer>"] * 4, "tvg")["miou"]
            assert other <= miou + 1e-9
    assert miou == pytest.approx(grounding_metrics(gts, ["<answer>2-8</answer>"] * 4, "tvg")["miou"])


def test_best_constant_answer_horizon_empty_and_bad_step():
    assert best_constant_answer([[[0, 2]]], step=1.0, horizon=1.0) == ([0.0, 1.0], 0.5)
    assert best_constant_answer([], step=2.0) == ([0.0, 0.0], 0.0)
    with pytest.raises(MetricsError):
        best_constant_answer([[[0, 2]]], step=0)


def test_paired_gain_interval_covers_the_gain_and_excludes_zero_for_a_clear_gain():
    before = [0.0, 0.5, 1.0, 0.5] * 25
    after = [1.0, 0.5, 1.0, 1.0] * 25  # better on half the items, never worse
    g = paired_gain(before, after)
    assert g["n"] == 100 and g["gain"] == pytest.approx(0.375)
    assert 0.0 < g["low"] < g["gain"] < g["high"] <= 0.75


def test_paired_gain_pairs_items_instead_of_comparing_means():
    # same multiset of scores, so equal means; pairing sees a gain on one item, a loss on another
    g = paired_gain([0.0, 1.0] * 20, [1.0, 0.0] * 20)
    assert g["gain"] == pytest.approx(0.0)
    assert g["low"] < 0.0 < g["high"]


def test_paired_gain_degenerate_and_bad_input():
    assert paired_gain([0.5, 0.5], [0.5, 0.5]) == {"gain": 0.0, "low": 0.0, "high": 0.0, "n": 2}
    assert paired_gain([], [])["n"] == 0
    with pytest.raises(MetricsError):
        paired_gain([0.1], [0.1, 0.2])
