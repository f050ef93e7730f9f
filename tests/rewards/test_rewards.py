"""Table tests for museg.rewards: every rule of issue 3 with hand-computed values, the strict
option, the registry (weights, totals, errors) and the TRL calling convention."""

from __future__ import annotations

import math
import re

import pytest
from omegaconf import OmegaConf

from museg.config import compose_config
from museg.rewards import (
    REWARD_FUNCTIONS,
    RewardConfigError,
    compute_rewards,
    format_reward,
    global_matching_reward,
    local_matching_reward,
    reward_functions_from_cfg,
    segment_matching_reward,
)
from museg.rewards.matching import merge_segments
from museg.rewards.parsing import count_timestamp_matches, split_think_answer


def reward_cfg(weights: dict[str, float], **options):
    """The composed ``cfg.reward`` with exactly these ``weights`` and ``options`` (``timestamp_aware``,
    ``strict``) set. An untyped copy: a reward registered by a test has no schema field, and the
    schema's other rewards are trimmed; struct mode still rejects a misspelt key."""
    reward = OmegaConf.to_container(compose_config(["task=train"]).reward)
    assert set(options) <= set(reward), options
    node = OmegaConf.create({**reward, **options, "weights": dict(weights)})
    OmegaConf.set_struct(node, True)
    return node


def fmt(text, **kw):
    return format_reward([text], **kw)[0]


def glob(text, gt, **kw):
    return global_matching_reward([text], [gt], **kw)[0]


def loc(text, gt, **kw):
    return local_matching_reward([text], [gt], **kw)[0]


def f1(overlap, sel, gt):
    """The global-matching formula with its 1e-6 epsilons, for hand-entered lengths."""
    p, r = overlap / (sel + 1e-6), overlap / (gt + 1e-6)
    return 2 * p * r / (p + r + 1e-6)


def A(answer, think="t"):
    return f"<think>{think}</think><answer>{answer}</answer>"


# ------------------------------------------------------------------------------------ format
FORMAT_TABLE = [
    # (completion, timestamp_aware, expected, why)
    (A("12.5-15", "door opens at 12.5 and closes at 15.0"), True, 1.0, "both numbers in think"),
    (A("12.5-15", "door opens at 12.5 and closes at 15"), True, 0.6, "str(15.0)='15.0' absent"),
    (A("12.5-15", "door opens at 12.5 and closes at 15"), False, 1.0, "no timestamp check"),
    ("  \n<think>a 1.0 2.0</think>\n\n<answer> 1-2 </answer>\n ", True, 1.0, "whitespace allowed"),
    ("x<think>1.0 2.0</think><answer>1-2</answer>", True, 0.0, "text before <think>"),
    ("<think>1.0 2.0</think>x<answer>1-2</answer>", True, 0.0, "text between blocks"),
    ("<think>1.0 2.0</think><answer>1-2</answer>.", True, 0.0, "text after </answer>"),
    ("<think>1.0 2.0</think><answer>1-2</answer></answer>", True, 0.0, "two </answer>"),
    ("<think><think>1.0 2.0</think><answer>1-2</answer>", True, 0.0, "two <think>"),
    ("<think>1.0 <answer> 2.0</think><answer>1-2</answer>", True, 0.0, "<answer> counted twice"),
    ("<answer>1-2</answer><think>1.0 2.0</think>", True, 0.0, "blocks swapped"),
    ("<think>1.0 2.0</think><answer>1-2", True, 0.0, "missing </answer>"),
    ("<think>1.0 2.0</think>", True, 0.0, "no answer"),
    (A("12.5"), True, 0.2, "token without '-'"),
    (A("a-b"), True, 0.2, "not numbers"),
    (A("-1-2"), True, 0.2, "leading '-' gives an empty part"),
    (A("1-2 3"), True, 0.2, "second token bad"),
    (A("1-"), True, 0.2, "empty end"),
    (A("1e-5-2"), True, 0.2, "'1e-5' is split on '-'"),
    (A("1-2-3", "1.0 2.0"), True, 1.0, "third part ignored"),
    (A("1e1-2E1", "10.0 20.0"), True, 1.0, "float() accepts exponents"),
    (A("1_0-2_0", "10.0 20.0"), True, 1.0, "float() accepts underscores"),
    (A("\u0661\u0662-\u0661\u0665", "12.0 15.0"), True, 1.0, "float() accepts Arabic digits"),
    (A("nan-inf", "nan and inf"), True, 1.0, "nan/inf parse; str() 'nan'/'inf' found"),
    (A("7-3", "7.0 3.0"), True, 1.0, "order is not checked by the format reward"),
    (A(""), True, 1.0, "empty answer: reference quirk"),
    (A("   \n "), True, 1.0, "whitespace-only answer"),
    (A("12.50-13", "at 12x5 until 13.0"), True, 1.0, "'12.5' is a regex: '.' matches 'x'"),
    (A("3-4", "from 3 0 to 4.0"), True, 1.0, "'3.0' regex matches '3 0'"),
    (A("3-4", "from 3\n0 to 4.0"), True, 1.0, "dot matches a newline too (DOTALL)"),
    (A("3-4", "from 3 to 4 seconds"), True, 0.6, "'3.0' not in think"),
    (A("2.5-3.5", "at 12.5 and 13.5"), True, 1.0, "inside a longer number still counts"),
    (A("1-2", "1.0 " * 10 + "2.0"), True, 1.0, "10 matches: ok"),
    (A("1-2", "1.0 " * 11 + "2.0"), True, 0.6, "11 matches: too many"),
    (A("1-2", "1.01.0 2.0"), True, 1.0, "non-overlapping count: 2"),
    (A("0-1", "0.0 1.0, " * 5), True, 1.0, "5 each"),
    (A("1-2", "1.0 " * 6 + "1x0 " * 5 + "2.0"), True, 0.6, "'1x0' also counts: 11 matches"),
]


@pytest.mark.parametrize("text,aware,expected,why", FORMAT_TABLE, ids=[r[3] for r in FORMAT_TABLE])
def test_format_table(text, aware, expected, why):
    assert fmt(text, timestamp_aware=aware) == expected


@pytest.mark.parametrize("bad", [None, 3, 2.5, b"<think>", {}, [], [{}], [{"role": "a"}], object()])
def test_format_non_text_is_zero(bad):
    assert format_reward([bad]) == [0.0]
    assert global_matching_reward([bad], [[[0, 1]]]) == [0.0]
    assert local_matching_reward([bad], [[[0, 1]]]) == [0.0]


def test_tag_rule_equals_reference_regex_on_table():
    pattern = re.compile(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
    for text, *_ in FORMAT_TABLE:
        counts_ok = all(text.count(t) == 1 for t in ("<think>", "</think>", "<answer>", "</answer>"))
        m = pattern.search(text) if counts_ok else None
        assert split_think_answer(text) == (m.groups() if m else None), text


def test_conversational_and_extra_columns():
    text = A("0-2.5", "0.0 then 2.5")
    conv = [{"role": "assistant", "content": text}]
    kw = {"prompts": ["p"], "completion_ids": [[1, 2]], "task": ["tal"], "idx": [7],
          "trainer_state": None}
    assert format_reward([conv], **kw) == format_reward([text]) == [1.0]
    assert global_matching_reward([conv], solution=[[[0, 2.5]]], **kw) == global_matching_reward(
        [text], solution=[[[0, 2.5]]])


# ------------------------------------------------------------------------------------ strict
STRICT_TABLE = [
    (A("12.50-13", "at 12x5 until 13.0"), 1.0, 0.6, "no regex wildcard"),
    (A("3-4", "from 3 to 4 seconds"), 0.6, 1.0, "number as written is accepted"),
    (A("12.50-13", "at 12.50 until 13"), 0.6, 1.0, "written form"),
    (A("12.50-13", "at 12.5 until 13.0"), 1.0, 1.0, "str(float) form"),
    (A("2.5-3.5", "at 12.5 and 13.5"), 1.0, 0.6, "not inside a longer number"),
    (A("2-3", "at 2.5 and 3.5"), 0.6, 0.6, "'2' is not '2.5'"),
    (A("2-3", "from 2-3 s"), 0.6, 1.0, "'-' is a boundary"),
    (A(""), 1.0, 0.2, "empty answer rejected"),
    (A("nan-inf", "nan and inf"), 1.0, 0.2, "non-finite rejected"),
    (A("1-2-3", "1.0 2.0"), 1.0, 0.2, "extra parts rejected"),
    (A("1-2", "1 " * 11 + "2"), 0.6, 0.6, "still at most 10 matches"),
    (A("1-2", "1.0 " * 6 + "1.05 " * 5 + "2.0"), 0.6, 1.0, "no count inside 1.05"),
]


@pytest.mark.parametrize("text,default,strict,why", STRICT_TABLE, ids=[r[3] for r in STRICT_TABLE])
def test_strict_format(text, default, strict, why):
    assert fmt(text) == default
    assert fmt(text, strict=True) == strict


def test_strict_counts():
    assert count_timestamp_matches("12x5 12.5 112.5 12.50", "12.50", 12.5) == 4
    assert count_timestamp_matches("12x5 12.5 112.5 12.50", "12.50", 12.5, strict=True) == 2


def test_strict_matching():
    assert glob("<answer>0-10-20</answer>", [[0, 10]]) > 0.99
    assert glob("<answer>0-10-20</answer>", [[0, 10]], strict=True) == 0.0
    assert loc("<answer>0-10</answer>", [[10, 0]], strict=True) == 0.0  # invalid ground truth
    assert loc("<answer>0-10</answer>", [[0, 10]], strict=True) == 1.0


# ------------------------------------------------------------------------------------ global
GLOBAL_TABLE = [
    # (answer, ground truth, expected, why)
    ("0-10", [[0, 10]], f1(10, 10, 10), "exact"),
    ("0-5", [[0, 10]], f1(5, 5, 10), "half: P~1, R~0.5"),
    ("0-20", [[0, 10]], f1(10, 20, 10), "double: P~0.5, R~1"),
    ("0-6 4-10", [[0, 10]], f1(10, 10, 10), "overlapping merged to [0, 10]"),
    ("0-5 5-10", [[0, 5], [5, 10]], f1(10, 10, 10), "touching merged"),
    ("0-10 0-10", [[0, 10]], f1(10, 10, 10), "duplicates merged (else overlap 20 > gt)"),
    ("20-30 0-10", [[0, 10], [20, 30]], f1(20, 20, 20), "order does not matter"),
    ("0-10 20-30", [[0, 10], [25, 35]], f1(15, 20, 20), "overlap summed over pairs"),
    ("40-50", [[0, 10]], 0.0, "disjoint"),
    ("0-10", [0, 10], f1(10, 10, 10), "bare ground truth wrapped"),
    ("0-10", [0.0, 10.0], f1(10, 10, 10), "bare float ground truth wrapped"),
    ("", [[0, 10]], 0.0, "empty answer"),
    ("5-5", [[0, 10]], 0.0, "s == e"),
    ("6-5", [[0, 10]], 0.0, "s > e"),
    ("nan-5", [[0, 10]], 0.0, "NaN fails >= 0"),
    ("0-nan", [[0, 10]], 0.0, "NaN end"),
    ("inf-inf", [[0, 10]], 0.0, "inf == inf"),
    ("0-inf", [[0, 10]], 0.0, "infinite length: P = 0"),
    ("0-5 x", [[0, 10]], 0.0, "one bad token"),
    ("0-10", [], 0.0, "empty ground truth"),
    ("1e1-2e1", [[10, 20]], f1(10, 10, 10), "exponents"),
]


@pytest.mark.parametrize("answer,gt,expected,why", GLOBAL_TABLE, ids=[r[3] for r in GLOBAL_TABLE])
def test_global_table(answer, gt, expected, why):
    assert glob(f"<answer>{answer}</answer>", gt) == pytest.approx(expected, abs=1e-12)
    assert glob(A(answer), gt) == pytest.approx(expected, abs=1e-12)


def test_global_answer_tags():
    gt = [[0, 10]]
    assert glob("free text <answer>0-10</answer> more", gt) == f1(10, 10, 10)  # no think needed
    assert glob("<answer>0-10</answer><answer>0-10</answer>", gt) == 0.0
    assert glob("<answer>0-10</answer></answer>", gt) == 0.0
    assert glob("</answer>0-10<answer>", gt) == 0.0
    assert glob("0-10", gt) == 0.0
    assert f1(10, 10, 10) == pytest.approx(0.9999994000002601, abs=1e-15)


def test_merge_segments():
    assert merge_segments([[0, 5], [5, 10]]) == [[0, 10]]
    assert merge_segments([[0, 5], [5.001, 10]]) == [[0, 5], [5.001, 10]]
    assert merge_segments([[8, 9], [0, 10], [20, 30], [29, 31]]) == [[0, 10], [20, 31]]
    assert merge_segments([[3, 4], [0, 1], [1, 3]]) == [[0, 4]]  # chain through the restart loop
    assert merge_segments([]) == []


# ------------------------------------------------------------------------------------ local
PAD_SCORE = (1 + 0 / 11 - (1000000001.0 - 11) / 1000000001.0) / 2  # gt [0,10] vs pad [1e9,1e9+1]
LOCAL_TABLE = [
    ("0-10", [[0, 10]], 1.0, "exact"),
    ("0-5", [[5, 10]], 0.5, "touching: IoU 0, enclosure = union"),
    ("20-30", [[0, 10]], (1 + 0 - 10 / 30) / 2, "gap 10 in enclosure 30"),
    ("5-15", [[0, 10]], (1 + 5 / 15) / 2, "IoU 1/3"),
    ("2-4", [[0, 10]], (1 + 2 / 10) / 2, "inside"),
    ("0-10 20-30", [[0, 10], [20, 30]], 1.0, "paired in order"),
    ("20-30 0-10", [[0, 10], [20, 30]], (1 - 10 / 30) / 2, "swapped: both pairs 1/3"),
    ("0-6 4-10", [[0, 10]], ((1 + 6 / 10) / 2 + (1 - (1e9 + 1 - 4 - 7) / (1e9 + 1 - 4)) / 2) / 2,
     "no merging; truth padded"),
    ("", [[0, 10]], PAD_SCORE, "empty answer: prediction padded"),
    ("0-10", [[0, 10], [20, 30]], (1 + (1 + 0 - (1e9 + 1 - 20 - 11) / (1e9 + 1 - 20)) / 2) / 2,
     "ground truth longer: prediction padded"),
    ("", [], 0.0, "nothing to average"),
    ("0-10", [0, 10], 0.0, "bare ground truth is not wrapped"),
    ("5-5", [[0, 10]], 0.0, "s == e"),
    ("0-inf", [[0, 10]], 0.0, "inf - inf = NaN -> 0 (reference: NaN)"),
    ("0-5", [[10, 5]], 0.0, "union 0 -> ZeroDivisionError -> 0"),
    # union = -10 + 5 - 0 = -5, enclosure = 5: (1 + 0 - (5 + 5) / 5) / 2
    ("0-5", [[10, 0]], -0.5, "reversed truth: -0.5 like the reference"),
    ("10-20", [[38, 13]], (1 + 0 / -15 - (10 + 15) / 10) / 2, "real stage-2 truth [38, 13]"),
]


@pytest.mark.parametrize("answer,gt,expected,why", LOCAL_TABLE, ids=[r[3] for r in LOCAL_TABLE])
def test_local_table(answer, gt, expected, why):
    assert loc(f"<answer>{answer}</answer>", gt) == pytest.approx(expected, abs=1e-12)


def test_invalid_truth_kept_like_reference_but_strict_clamps():
    assert loc("<answer>10-20</answer>", [[38, 13]]) == -0.75
    assert loc("<answer>10-20</answer>", [[38, 13]], strict=True) == 0.0
    # overlapping truth counts the overlap per pair: r_G above 1, as in the reference
    over = glob("<answer>0-1574</answer>", [[0, 1622], [0, 57]])
    assert over == pytest.approx(f1(1574 + 57, 1574, 1622 + 57), abs=1e-12) and over > 1
    assert glob("<answer>0-1574</answer>", [[0, 1622], [0, 57]], strict=True) == 1.0
    # zero-length truth (also in the real data) is valid input in the default mode
    assert glob("<answer>0-12.64 23.61-32.6</answer>", [[0.0, 12.64], [23.61, 32.6], [32.6, 32.6]]) \
        == pytest.approx(f1(12.64 + 8.99, 12.64 + 8.99, 12.64 + 8.99), abs=1e-9)


def test_local_hand_values():
    assert PAD_SCORE == pytest.approx(5.5e-9, rel=1e-6)
    assert loc("<answer>5-15</answer>", [[0, 10]]) == pytest.approx(2 / 3, abs=1e-15)
    assert loc("<answer>20-30</answer>", [[0, 10]]) == pytest.approx(1 / 3, abs=1e-15)


def test_segment_matching_is_sum():
    texts = [A(a) for a, *_ in GLOBAL_TABLE[:8]]
    gts = [g for _, g, *_ in GLOBAL_TABLE[:8]]
    s = segment_matching_reward(texts, gts)
    g, l_ = global_matching_reward(texts, gts), local_matching_reward(texts, gts)
    assert s == [a + b for a, b in zip(g, l_, strict=True)]


def test_missing_or_short_solution_scores_zero():
    assert global_matching_reward([A("0-1"), A("0-1")], [[[0, 1]]])[1] == 0.0
    assert local_matching_reward([A("0-1")], None) == [0.0]


# ---------------------------------------------------------------------------------- registry
def test_registry_names():
    assert set(REWARD_FUNCTIONS) == {"format", "global_matching", "local_matching",
                                     "segment_matching"}
    assert REWARD_FUNCTIONS["format"] is format_reward


def test_a_registered_reward_is_scored_weighted_and_bound(monkeypatch):
    from museg.rewards import registry

    monkeypatch.setattr(registry, "REWARDS", dict(registry.REWARDS))
    monkeypatch.setattr(registry, "REWARD_FUNCTIONS", dict(registry.REWARD_FUNCTIONS))

    def length_reward(completions, solution=None, strict=False):
        return [float(len(c)) for c in completions]

    @registry.register_reward("length", length_reward)
    def _length(c):
        return float(len(c.text))

    out = registry.compute_rewards(["ab", A("0-5")], [[[0, 5]]] * 2, {"length": 0.5, "format": 1.0})
    assert out["length"] == [2.0, float(len(A("0-5")))]
    assert out["format"] == [0.0, fmt(A("0-5"))]
    assert out["total"] == [1.0, 0.5 * len(A("0-5")) + fmt(A("0-5"))]
    (name, weight, fn), = registry.reward_functions_from_cfg(reward_cfg({"length": 2.0}))
    assert (name, weight, fn.__name__, fn(["abc"], solution=[[[0, 1]]], task=["tvg"])) == \
        ("length", 2.0, "length", [3.0])
    with pytest.raises(ValueError, match="unknown options"):
        registry.register_reward("other", length_reward, options=("fast",))
    assert set(registry.REWARDS) == set(registry.REWARD_FUNCTIONS)


def test_compute_rewards_raw_and_total():
    texts = [A("0-5", "0.0 5.0"), A("0-5", "nothing"), "junk", A("x")]
    gts = [[[0, 10]]] * 4
    out = compute_rewards(texts, gts, {"format": 1.0, "global_matching": 2.0,
                                       "local_matching": 0.0})
    assert set(out) == {"format", "global_matching", "local_matching", "total"}
    assert out["format"] == [1.0, 0.6, 0.0, 0.2]
    g = f1(5, 5, 10)
    assert out["global_matching"] == pytest.approx([g, g, 0, 0], abs=1e-15)
    assert out["local_matching"] == [0.75, 0.75, 0.0, 0.0]  # reported although weight 0
    assert out["total"] == pytest.approx([1 + 2 * g, 0.6 + 2 * g, 0.0, 0.2], abs=1e-15)


def test_compute_rewards_equals_functions():
    texts = [A(a) for a, *_ in GLOBAL_TABLE] + [t for t, *_ in FORMAT_TABLE]
    gts = [g for _, g, *_ in GLOBAL_TABLE] + [[[0, 10]]] * len(FORMAT_TABLE)
    for aware in (True, False):
        for strict in (False, True):
            out = compute_rewards(texts, gts, {n: 1.0 for n in REWARD_FUNCTIONS}, aware, strict)
            assert out["format"] == format_reward(texts, timestamp_aware=aware, strict=strict)
            for name in ("global_matching", "local_matching", "segment_matching"):
                assert out[name] == REWARD_FUNCTIONS[name](texts, gts, strict=strict), name


def test_compute_rewards_empty_and_timestamp_flag():
    assert compute_rewards([], [], {"format": 1.0}) == {"format": [], "total": []}
    text = [A("0-5", "nothing")]
    assert compute_rewards(text, [[[0, 5]]], {"format": 1.0})["format"] == [0.6]
    assert compute_rewards(text, [[[0, 5]]], {"format": 1.0}, timestamp_aware=False)["total"] == [1.0]


@pytest.mark.parametrize("weights,match", [
    ({"iou": 1.0}, "unknown reward 'iou' \\(valid: format, global_matching, local_matching, "
                   "segment_matching\\)"),
    ({"format": "high"}, "reward.weights.format: weight must be a finite number"),
    ({"format": float("nan")}, "finite number"),
    ({"format": True}, "finite number"),
    ([("format", 1.0)], "expected a mapping"),
])
def test_bad_weights(weights, match):
    with pytest.raises(RewardConfigError, match=match) as e:
        compute_rewards(["x"], [[[0, 1]]], weights)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_reward_functions_from_cfg():
    cfg = reward_cfg({"format": 1.0, "global_matching": 1.0, "local_matching": 0.5},
                     timestamp_aware=False, strict=False)
    fns = reward_functions_from_cfg(cfg)
    assert [(n, w) for n, w, _ in fns] == [("format", 1.0), ("global_matching", 1.0),
                                           ("local_matching", 0.5)]
    assert [f.__name__ for *_, f in fns] == ["format", "global_matching", "local_matching"]
    text = [[{"role": "assistant", "content": A("0-5", "nothing")}]]
    kw = {"prompts": ["p"], "completion_ids": [[1]], "task": ["tvg"], "trainer_state": None}
    assert fns[0][2](text, solution=[[[0, 5]]], **kw) == [1.0]  # timestamp check off (stage 2)
    assert fns[2][2](text, solution=[[[0, 5]]], **kw) == [1.0]
    stage1 = reward_functions_from_cfg(reward_cfg({"format": 1.0}, timestamp_aware=True))
    assert stage1[0][2](text, solution=[[[0, 5]]]) == [0.6]
    strict = reward_functions_from_cfg(reward_cfg({"format": 1.0}, strict=True))
    assert strict[0][2]([A("")]) == [0.2]
    with pytest.raises(RewardConfigError, match="reward.weights: missing"):
        reward_functions_from_cfg(OmegaConf.masked_copy(cfg, ["timestamp_aware"]))


def test_reward_functions_from_the_composed_phases():
    """Both phases compose to every registered reward (weight 0 included) with their options."""
    for stage, aware in (("1", True), ("2", False)):
        reward = compose_config(["task=train", f"stage={stage}"]).reward
        fns = reward_functions_from_cfg(reward)
        assert [n for n, *_ in fns] == list(REWARD_FUNCTIONS)
        assert dict((n, w) for n, w, _ in fns) == dict(reward.weights)
        assert bool(reward.timestamp_aware) is aware and f"timestamp_aware={aware}" in fns[0][2].__doc__


# ------------------------------------------------------------------------- real annotations
@pytest.mark.parametrize("stage", [1, 2])
def test_real_training_solutions_as_answers(stage, shared_data):
    """Every real stage-1/2 ground truth, answered perfectly: format 1, r_L 1 and r_G ~1 where the
    truth is valid and disjoint; the 7 degenerate/reversed truths still score without raising."""
    import json

    rows = [json.loads(line) for line in
            (shared_data / "train" / f"stage_{stage}.jsonl").read_text().splitlines() if line]
    texts, sols = [], []
    for r in rows:
        segs = [(float(s), float(e)) for s, e in r["solution"]]
        think = " ".join(f"{s} to {e}" for s, e in segs)
        texts.append(f"<think>{think}</think><answer>{' '.join(f'{s}-{e}' for s, e in segs)}"
                     "</answer>")
        sols.append(r["solution"])
    out = compute_rewards(texts, sols, {"format": 1.0, "global_matching": 1.0,
                                        "local_matching": 1.0})
    assert len(out["total"]) == len(rows)
    for i, sol in enumerate(sols):
        valid = all(s < e for s, e in sol)
        disjoint = all(a[1] <= b[0] for a, b in zip(sorted(sol), sorted(sol)[1:], strict=False))
        if valid:
            assert out["format"][i] in (1.0, 0.6)  # 0.6: a timestamp mentioned > 10 times
            assert out["local_matching"][i] == pytest.approx(1.0, abs=1e-9)
        else:
            assert out["local_matching"][i] == 0.0 and out["global_matching"][i] == 0.0
        if valid and disjoint:
            assert 0.999 < out["global_matching"][i] < 1.0
        assert math.isfinite(out["total"][i])
    assert sum(v == 1.0 for v in out["format"]) > 0.99 * len(rows)


def test_inputs_not_mutated_and_other_containers():
    import copy

    import numpy as np

    texts = [A("20-30 0-5 3-10"), A("")]
    sols = [[[0, 10], [20, 30]], [[0, 10]]]
    before = copy.deepcopy((texts, sols))
    out = compute_rewards(texts, sols, {n: 1.0 for n in REWARD_FUNCTIONS})
    assert (texts, sols) == before
    as_tuples = compute_rewards(tuple(texts), tuple(tuple(map(tuple, s)) for s in sols),
                                {n: 1.0 for n in REWARD_FUNCTIONS})
    as_numpy = compute_rewards(texts, [np.asarray(s, dtype=float) for s in sols],
                               {n: 1.0 for n in REWARD_FUNCTIONS})
    for name in out:
        assert as_tuples[name] == pytest.approx(out[name], abs=1e-15), name
        assert as_numpy[name] == pytest.approx(out[name], abs=1e-15), name
