"""Property tests (hypothesis) for museg.rewards over arbitrary text and segments: the rewards never
raise, stay in their ranges, and equal a literal transcription of the issue-3 specification
(written here with plain regular expressions, independently of the optimised code paths)."""

from __future__ import annotations

import math
import os
import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from museg.rewards import (
    REWARD_FUNCTIONS,
    compute_rewards,
    format_reward,
    global_matching_reward,
    local_matching_reward,
    segment_matching_reward,
)
from museg.rewards.parsing import FORMAT_PATTERN, count_timestamp_matches, split_think_answer

# MUSEG_HYPOTHESIS_EXAMPLES=5000 for a longer search
SETTINGS = settings(deadline=None, max_examples=int(os.environ.get("MUSEG_HYPOTHESIS_EXAMPLES", 200)))
TAGS = ("<think>", "</think>", "<answer>", "</answer>")

# ---------------------------------------------------------------------------------- strategies
odd_numbers = st.sampled_from([
    "", "nan", "NaN", "inf", "-inf", "infinity", "1e-5", "1e+300", "1e400", "12.", ".5", "+3",
    "\u2212" "2", "\u0661\u0662", "\u0663.\u0665", "1_0", "..", "1..5", "0x10", "1,5", " ", "-",
    "9" * 30, "1e1", "12.50", "0.0", "3", "\u00e9", "\U0001f600", "\n",
])
number = st.one_of(
    odd_numbers,
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.floats(0, 1e4).map(lambda x: f"{x:.2f}"),
    st.integers(-5, 10**6).map(str),
    st.text(max_size=4),
)
token = st.one_of(
    st.tuples(number, number).map("-".join),
    st.tuples(number, number, number).map("-".join),
    number,
)
space = st.sampled_from(["", " ", "  ", "\n", "\t", " \n ", "\u3000", "\xa0"])
answer = st.one_of(
    st.lists(st.tuples(token, space), max_size=5).map(lambda ts: " ".join(t + s for t, s in ts)),
    st.text(max_size=20),
)
think = st.lists(
    st.one_of(number, st.text(max_size=12), st.sampled_from(TAGS + ("12x5", "3 0", "."))),
    max_size=12,
).map(" ".join)


@st.composite
def completions(draw):
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.text(max_size=80))
    parts = [draw(space), "<think>", draw(think), "</think>", draw(space), "<answer>",
             draw(answer), "</answer>", draw(space)]
    if kind == 2:  # mutate: drop, duplicate or move a piece
        i = draw(st.integers(0, len(parts) - 1))
        op = draw(st.integers(0, 2))
        if op == 0:
            parts.pop(i)
        elif op == 1:
            parts.insert(i, parts[i])
        else:
            parts.insert(draw(st.integers(0, len(parts))), parts.pop(i))
    if kind == 3:  # junk around
        parts.insert(0, draw(st.text(max_size=5)))
        parts.append(draw(st.text(max_size=5)))
    return "".join(parts)


coord = st.floats(0, 1e5, allow_nan=False, allow_infinity=False)
valid_segment = st.tuples(coord, coord).filter(lambda p: p[0] < p[1]).map(list)
valid_gt = st.lists(valid_segment, min_size=1, max_size=5)  # may overlap each other
cut = st.integers(0, 10**7).map(lambda i: i / 100)  # repr without an exponent


@st.composite
def disjoint_gt(draw):
    points = sorted(set(draw(st.lists(cut, min_size=2, max_size=10))))
    pairs = [[points[i], points[i + 1]] for i in range(0, len(points) - 1, 2)]
    return pairs or [[0.0, 1.0]]


wellformed_segment = st.tuples(cut, cut).filter(lambda p: p[0] < p[1]).map(list)
any_float = st.one_of(st.floats(), st.integers(-10**6, 10**6), st.sampled_from([1e308, -0.0]))
any_gt = st.one_of(
    valid_gt,
    st.lists(st.lists(any_float, min_size=2, max_size=3), max_size=4),  # reversed, NaN, huge
    st.tuples(any_float, any_float).map(list),  # bare [s, e]
    st.lists(st.one_of(st.text(max_size=3), st.none(), any_float), max_size=3),
    st.none(),
)


# ------------------------------------------------------------------------ spec transcription
def spec_format(text, aware):
    try:
        if any(len(re.findall(re.escape(t), text)) != 1 for t in TAGS):
            return 0.0
        m = re.search(r"^\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*$", text, re.DOTALL)
        if m is None:
            return 0.0
        numbers = []
        for tok in m.group(2).split():
            try:
                parts = tok.split("-")
                numbers += [float(parts[0]), float(parts[1])]
            except Exception:
                return 0.2
        if aware:
            for x in numbers:
                if not 1 <= len(re.findall(str(x), m.group(1), re.DOTALL)) <= 10:
                    return 0.6
        return 1.0
    except Exception:
        return 0.0


def spec_segments(text):
    if text.count("<answer>") != 1 or text.count("</answer>") != 1:
        return None
    m = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
    if m is None:
        return None
    segs = []
    for tok in m.group(1).split():
        try:
            parts = tok.split("-")
            s, e = float(parts[0]), float(parts[1])
        except Exception:
            return None
        if not (s >= 0 and e >= 0 and s < e):
            return None
        segs.append([s, e])
    return segs


def finish(x):
    return x if math.isfinite(x) else 0.0


def spec_global(text, gts):
    try:
        segs = spec_segments(text)
        if segs is None:
            return 0.0
        segs = sorted(segs, key=lambda s: s[0])
        changed = True
        while changed:  # merge the first touching pair, then start again
            changed = False
            for i in range(len(segs) - 1):
                if segs[i][1] >= segs[i + 1][0]:
                    segs[i] = [min(segs[i][0], segs[i + 1][0]), max(segs[i][1], segs[i + 1][1])]
                    del segs[i + 1]
                    changed = True
                    break
        if isinstance(gts[0], (int, float)):
            gts = [gts]
        overlap = 0
        for g in gts:
            for s in segs:
                overlap += max(0, min(s[1], g[1]) - max(s[0], g[0]))
        p = overlap / (sum([s[1] - s[0] for s in segs]) + 1e-6)
        r = overlap / (sum([g[1] - g[0] for g in gts]) + 1e-6)
        return finish(2 * p * r / (p + r + 1e-6))
    except Exception:
        return 0.0


def spec_local(text, gts):
    try:
        segs = spec_segments(text)
        if segs is None:
            return 0.0
        gts = list(gts)
        n = max(len(gts), len(segs))
        gts = gts + [[1e9, 1e9 + 1]] * (n - len(gts))
        segs = segs + [[1e9, 1e9 + 1]] * (n - len(segs))
        scores = []
        for g, s in zip(gts, segs, strict=True):
            inter = max(0, min(g[1], s[1]) - max(g[0], s[0]))
            union = g[1] - g[0] + s[1] - s[0] - inter
            enclosure = max(g[1], s[1]) - min(g[0], s[0])
            scores.append((1 + inter / union - (enclosure - union) / enclosure) / 2)
        return finish(sum(scores) / len(scores))
    except Exception:
        return 0.0


# ---------------------------------------------------------------------------------- properties
@SETTINGS
@given(text=st.one_of(completions(), st.text()), aware=st.booleans(), strict=st.booleans())
def test_format_range_and_spec(text, aware, strict):
    score = format_reward([text], timestamp_aware=aware, strict=strict)[0]
    assert score in (0.0, 0.2, 0.6, 1.0)
    if not strict:
        assert score == spec_format(text, aware)
    conv = [{"role": "assistant", "content": text}]
    assert format_reward([conv], timestamp_aware=aware, strict=strict) == [score]


@SETTINGS
@given(text=st.one_of(completions(), st.text()))
def test_tag_fast_path_equals_regex(text):
    counts_ok = all(text.count(t) == 1 for t in TAGS)
    m = FORMAT_PATTERN.search(text) if counts_ok else None
    assert split_think_answer(text) == (m.groups() if m else None)


@SETTINGS
@given(text=completions(), gt=st.one_of(valid_gt, disjoint_gt()))
def test_matching_equals_spec_on_valid_truth(text, gt):
    g = global_matching_reward([text], [gt])[0]
    loc = local_matching_reward([text], [gt])[0]
    assert g == spec_global(text, gt)
    assert loc == spec_local(text, gt)
    assert g >= 0.0 and 0.0 <= loc <= 1.0  # r_G may exceed 1 only for overlapping truth
    assert segment_matching_reward([text], [gt]) == [g + loc]


def _answer_text(segs):
    return "<answer>" + " ".join(f"{s!r}-{e!r}" for s, e in segs) + "</answer>"


@SETTINGS
@given(pred=st.lists(wellformed_segment, max_size=6), gt=disjoint_gt())
def test_matching_on_wellformed_answers(pred, gt):
    text = _answer_text(pred)
    g = global_matching_reward([text], [gt])[0]
    loc = local_matching_reward([text], [gt])[0]
    assert g == spec_global(text, gt) and loc == spec_local(text, gt)
    assert 0.0 <= g < 1.0 and 0.0 <= loc <= 1.0
    assert (g > 0) == (spec_segments(text) != [] and any(
        min(p[1], t[1]) > max(p[0], t[0]) for p in pred for t in gt))
    # global matching ignores order; local matching of the truth itself is perfect
    assert global_matching_reward([_answer_text(pred[::-1])], [gt])[0] == g
    assert local_matching_reward([_answer_text(gt)], [gt])[0] == pytest.approx(1.0, abs=1e-12)


@SETTINGS
@given(text=st.one_of(completions(), st.text()), gt=any_gt, strict=st.booleans(),
       aware=st.booleans())
def test_never_raises_and_in_range(text, gt, strict, aware):
    weights = {name: 1.0 for name in REWARD_FUNCTIONS}
    out = compute_rewards([text, [{"content": text}]], [gt, gt], weights, aware, strict)
    for name in ("global_matching", "local_matching", "segment_matching"):
        assert all(math.isfinite(v) for v in out[name]), (name, out[name])
    if strict:  # arbitrary truth: strict mode clamps to [0, 1]
        for name in ("global_matching", "local_matching"):
            assert all(0.0 <= v <= 1.0 for v in out[name]), (name, out[name])
    assert all(v in (0.0, 0.2, 0.6, 1.0) for v in out["format"])
    assert all(math.isfinite(v) for v in out["total"])
    assert out["format"] == format_reward([text], timestamp_aware=aware, strict=strict) * 2
    for name in ("global_matching", "local_matching", "segment_matching"):
        assert out[name] == REWARD_FUNCTIONS[name]([text, text], [gt, gt], strict=strict)
    if not strict:
        assert out["global_matching"][0] == spec_global(text, gt)
        assert out["local_matching"][0] == spec_local(text, gt)


@SETTINGS
@given(weights=st.dictionaries(st.sampled_from(sorted(REWARD_FUNCTIONS)),
                               st.floats(-10, 10), min_size=1),
       texts=st.lists(completions(), max_size=4), gt=valid_gt)
def test_total_is_weighted_sum(weights, texts, gt):
    out = compute_rewards(texts, [gt] * len(texts), weights)
    for i in range(len(texts)):
        expected = sum(w * out[n][i] for n, w in weights.items())
        assert math.isclose(out["total"][i], expected, rel_tol=1e-12, abs_tol=1e-12)


def test_whitespace_classes_agree():
    """The tag fast path relies on ``str.isspace`` being ``re``'s ``\\s`` (sampled code points)."""
    pattern = re.compile(r"\s")
    for cp in list(range(0, 0x3100)) + list(range(sys.maxunicode - 5, sys.maxunicode + 1)):
        c = chr(cp)
        assert bool(pattern.fullmatch(c)) == c.isspace(), hex(cp)


@settings(deadline=None, max_examples=int(os.environ.get("MUSEG_HYPOTHESIS_EXAMPLES", 200)) * 3)
@given(value=st.one_of(st.floats(), st.integers(0, 10**4).map(lambda i: i / 100)),
       think=st.text(alphabet="0123456789.e+-nafi x\n", max_size=60), data=st.data())
def test_wildcard_count_equals_regex(value, think, data):
    """The regex-free counter equals ``re.findall(str(x), think, re.DOTALL)`` (capped at 11)."""
    needle = str(value)
    if data.draw(st.booleans()):  # plant the number (and wildcard variants) in the text
        pos = data.draw(st.integers(0, len(think)))
        think = think[:pos] + needle.replace(".", data.draw(st.sampled_from(".x\n"))) + think[pos:]
    expected = min(len(re.findall(needle, think, re.DOTALL)), 11)
    assert count_timestamp_matches(think, needle, value) == expected
