"""Tests for museg.data.prompts: placeholders, the stage-1 timestamp demand, answer formats."""

from __future__ import annotations

import re

import pytest

from museg.data.prompts import (
    ETBENCH_TEMPLATE,
    STAGE1_TEMPLATE,
    STAGE2_TEMPLATE,
    TEMPLATES,
    build_question,
)


def test_registry_and_single_placeholder():
    assert TEMPLATES == {"stage1": STAGE1_TEMPLATE, "stage2": STAGE2_TEMPLATE,
                         "etbench": ETBENCH_TEMPLATE}
    for name, t in TEMPLATES.items():
        assert t.count("{problem}") == 1, name
        # no other format fields, so str.format(problem=...) also works for callers that use it
        assert t.format(problem="P") == build_question(t, "P")


@pytest.mark.parametrize("name", ["stage1", "stage2", "etbench"])
def test_think_answer_tags(name):
    q = build_question(TEMPLATES[name], "When does the red square appear?")
    assert q.startswith("When does the red square appear?")
    assert "<think></think>" in q and "<answer></answer>" in q
    assert "{problem}" not in q


def test_stage1_demands_timestamps_stage2_does_not():
    assert "timestamp" in STAGE1_TEMPLATE and re.search(r"\b12\.50\b", STAGE1_TEMPLATE)
    assert "timestamp" not in STAGE2_TEMPLATE
    # both name the same answer format: 'start-end' segments in seconds, two decimals, spaces
    for t in (STAGE1_TEMPLATE, STAGE2_TEMPLATE):
        assert "<answer>X.XX-X.XX X.XX-X.XX</answer>" in t
        assert "two decimals" in t and "separated by spaces" in t
    assert STAGE1_TEMPLATE != STAGE2_TEMPLATE


def test_etbench_defers_to_question_format():
    assert "timestamp" in ETBENCH_TEMPLATE and "format" in ETBENCH_TEMPLATE
    assert "X.XX" not in ETBENCH_TEMPLATE


def test_build_question_braces_and_errors():
    problem = "What happens in {scene} at 3-5 s?"
    assert build_question(STAGE2_TEMPLATE, problem).startswith(problem)
    with pytest.raises(ValueError, match="exactly one '\\{problem\\}'"):
        build_question("no placeholder here", "x")
    with pytest.raises(ValueError, match="found 2"):
        build_question("{problem} and {problem}", "x")
