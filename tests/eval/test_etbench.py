"""E.T. Bench metrics without Java or MiniLM: every parsing rule and every task on hand-computed cases.

Multiple-choice cases here never reach the similarity fallback (asserted); the fallback, SentSim
and the Java caption scorers are tested in ``test_etbench_captions.py``.
"""

from __future__ import annotations

import json

import pytest

from museg.eval.etbench import ETBenchError, etbench_metrics, filter_subset, load_subset
from museg.eval.etbench.dense import build_group, detection
from museg.eval.etbench.parsing import (
    _hms,
    candidate_sentences,
    choice_outcome,
    first_number,
    gvq_letter,
    parse_captions,
    parse_time_part,
    parse_timestamps,
)
from museg.eval.etbench.summary import MERGED, TASK_KEYS, summarize
from museg.eval.etbench.tasks import (
    iou_matrix,
    score_choice,
    score_evs,
    score_grounding,
    score_gvq,
    score_tal,
    score_vhd,
)


def no_fallback(requests):
    assert not requests, f"unexpected similarity fallback for {requests}"
    return []


# ----------------------------------------------------------------------------- timestamp parsing
class TestTimestampParsing:
    def test_step1_sentences_split_on_bang_question_newline_not_dot(self):
        text = "the man starts walking at 5. he stops at 9? it ends at 12!no keyword here"
        assert candidate_sentences(text) == ["the man starts walking at 5. he stops at 9",
                                             " it ends at 12"]
        # first number of each candidate sentence: 5 and 12 (9 is not first in its sentence)
        assert parse_timestamps(text.upper()) == [[5.0, 12.0]]

    def test_step1_keywords_are_plain_substrings(self):
        assert candidate_sentences("weekend at 3\nhappening at 4\nnothing 5") == [
            "weekend at 3", "happening at 4"]

    def test_step2_all_dash_pairs_in_whole_answer(self):
        assert parse_timestamps("First 0.5 - 3.2 s, then 7-9.\nAlso 10 -11") == [
            [0.5, 3.2], [7.0, 9.0], [10.0, 11.0]]

    def test_step2_wins_over_step3(self):
        assert parse_timestamps("1 - 2, and from 5 to 6") == [[1.0, 2.0]]

    def test_step3_to_needs_spaces(self):
        assert parse_timestamps("from 4 to 2.5 seconds") == [[2.5, 4.0]]
        assert parse_timestamps("4to5") == []

    def test_step4_first_number_per_candidate_even_truncation(self):
        text = "It starts at 3 and 4\nIt ends at 7\nIt happens again at 9"
        assert parse_timestamps(text) == [[3.0, 7.0]]

    def test_step4_word_boundary_quirks(self):
        # "4.2s": the decimal alternative needs a boundary after "2", so only "4" matches;
        # "9s" has no boundary after 9, so that sentence yields nothing
        assert parse_timestamps("It starts at 4.2s.\nIt ends at 9s.\nIt ends at 11") == [
            [4.0, 11.0]]

    def test_step5_hms(self):
        assert _hms("01:02:03") == 3723.0
        # literal order: step 4 already matches the hour digits, so step 5 is only reached when
        # step 4 found no pair
        assert parse_timestamps("starts at 00:01:05\nends at 00:01:10") == [[0.0, 0.0]]

    def test_step6_swap_and_failures(self):
        assert parse_timestamps("9.5 - 2") == [[2.0, 9.5]]
        assert parse_timestamps("") == [] and parse_timestamps(None) == []
        assert parse_timestamps("no time at all") == []

    def test_number_python_rejects_drops_pair(self):
        assert parse_timestamps("1..5 - 3 and 4 - 6") == [[4.0, 6.0]]
        assert parse_timestamps("12. - 14.") == [[12.0, 14.0]]


# ----------------------------------------------------------------------------- caption parsing
class TestCaptionParsing:
    def test_step_a_pairs_by_position(self):
        text = "0 - 10 seconds, A man walks.\n10.5 - 20 seconds, he sits down."
        assert parse_captions(text) == ([[0.0, 10.0], [10.5, 20.0]],
                                        ["a man walks.", "he sits down."])

    def test_step_a_short_pieces_dropped_and_preface_shifts(self):
        # "ok" (<= 5 chars) is dropped; a preface line becomes the first caption (position pairing)
        text = "Here are the events:\n0 - 5 ok\n5 - 9 a long caption"
        assert parse_captions(text) == ([[0.0, 5.0], [5.0, 9.0]],
                                        ["here are the events:", "a long caption"])

    def test_step_a_cut_to_shorter(self):
        assert parse_captions("0 - 5, 6 - 9, 10 - 12 the only caption") == (
            [[0.0, 5.0]], ["the only caption"])

    def test_step_a_sorted_pairs(self):
        assert parse_captions("20 - 10 seconds: a dog barks")[0] == [[10.0, 20.0]]

    def test_step_a_fallback_start_end_description(self):
        text = ("Starting time: 1.5s Ending time: 4 seconds\nDescription: A dog runs\n"
                "Start time: 6 End time: 8\nDescription: it sleeps")
        assert parse_captions(text) == ([[1.5, 4.0], [6.0, 8.0]], ["a dog runs", "it sleeps"])

    def test_step_a_fallback_bullets(self):
        text = "* a dog runs start time: 1 end time: 3\n*it sleeps start time: 5 end time: 7"
        segs, caps = parse_captions(text)
        assert segs == [[1.0, 3.0], [5.0, 7.0]]
        assert caps == ["a dog runs start time: 1 end time: 3", "it sleeps start time: 5 end time: 7"]

    def test_step_b_one_event_from_first_parsing_line(self):
        text = "intro line\nat 01:30 seconds the chef adds salt\nat 50 seconds he stirs"
        # corrected spec (issue 18): the caption is stripped (was " the chef adds salt")
        assert parse_captions(text) == ([[70.0, 110.0]], ["the chef adds salt"])

    def test_step_b_no_dot_split_when_answer_has_newline(self):
        # corrected spec (issue 18): an answer with a newline is split on newlines only, even
        # when no line is longer than 7 chars (was: '.' pieces spanning lines, [[5, 45]])
        assert parse_captions("at 5\nsec. x") == ([], [])

    def test_step_b_time_parts(self):
        assert parse_time_part("at 30 ") == [10.0, 50.0]           # t > 20 -> [t-20, t+20]
        assert parse_time_part("at 20 ") == [20.0, 60.0]           # else [t, t+40]
        assert parse_time_part("from 3 until 8 ") == [3.0, 8.0]    # two numbers
        assert parse_time_part("1, 2 and 3") is None               # three numbers: not parsed
        assert parse_time_part("01:00 until 01:10") == [60.0, 70.0]  # two mm:ss
        assert parse_time_part("at 00:10 ") == [10.0, 50.0]         # one mm:ss -> window
        assert parse_time_part("time: 25 ") == [5.0, 45.0]          # ':' without mm:ss
        assert parse_time_part("2 - 4 ") == [2.0, 4.0]
        assert parse_time_part("nothing") is None

    def test_step_b_caption_is_last_seconds_part_and_failure(self):
        # only the first "seconds" part is the time part: one number -> window
        # corrected spec (issue 18): no newline -> '.' split, '.' re-appended, caption stripped
        # (was " a cat jumps")
        assert parse_captions("from 3 seconds to 8 seconds a cat jumps") == (
            [[3.0, 43.0]], ["a cat jumps."])
        assert parse_captions("") == ([], []) and parse_captions("short") == ([], [])


# ----------------------------------------------------------------------------- choices, numbers
class TestChoiceParsing:
    def test_step1_paren_letter_anywhere(self):
        assert choice_outcome("I pick (c) because", 2) == ("hit", True)
        assert choice_outcome("(a) then (c)", 2) == ("fallback", True)   # first one counts

    def test_step2_strip_best_option_and_paren(self):
        assert choice_outcome("Best option: (B", 1) == ("hit", True)
        assert choice_outcome("best option:", 0) == ("empty", False)
        assert choice_outcome("", 0) == ("empty", False)

    def test_step3_lone_first_character(self):
        for ans in ("B", "b.", "B, the cat", "b the cat", "B) cat"):
            assert choice_outcome(ans, 1) == ("hit", True), ans
        assert choice_outcome("Bx", 1) == ("fallback", False)
        assert choice_outcome("C. cat", 1) == ("fallback", True)          # wrong letter

    def test_failed_only_without_letter(self):
        entries = [{"a": "(B)", "p": 1, "o": ["x", "y"]}, {"a": "", "p": 0, "o": ["x", "y"]},
                   {"a": "A", "p": 0, "o": ["x", "y"]}]
        row = score_choice(entries, no_fallback)
        assert row == {"n": 3, "failed": 1, "fallback": 0, "acc": 2 / 3}

    def test_gvq_letter(self):
        assert gvq_letter("Best option: (c) x", 4) == 2
        assert gvq_letter("a, b", 4) == 0
        assert gvq_letter("E.", 4) == "fallback" and gvq_letter("E.", 5) == 4
        assert gvq_letter("(b", 4) == 1 and gvq_letter("   ", 4) == "empty"

    def test_first_number(self):
        assert first_number("At +3 s") == 3.0 and first_number("x .25 y 4") == 0.25
        assert first_number("-2") == -2.0 and first_number("") is None


# ----------------------------------------------------------------------------- task scorers
class TestTasks:
    def test_float32_iou_parity(self):
        assert float(iou_matrix([[0, 7]], [[0, 10]])[0, 0]) < 0.7   # 0.69999999 in float32
        assert float(iou_matrix([[0, 5]], [[0, 10]])[0, 0]) == 0.5
        assert float(iou_matrix([[3, 3]], [[3, 3]])[0, 0]) == 0.0   # 0/0 -> 0

    @pytest.mark.parametrize("task", ["tvg", "epm"])
    def test_tvg_epm(self, task):
        entries = [{"a": "0 - 5 and 0 - 10", "tgt": [0, 10]}, {"a": "none", "tgt": [0, 10]},
                   {"a": "0 - 7", "tgt": [0, 10]}, {"a": "2 - 8", "tgt": [0, 10]}]
        row = score_grounding(entries, task)
        assert row["n"] == 4 and row["failed"] == 1
        assert row["miou"] == pytest.approx((0.5 + 0 + 0.7 + 0.6) / 4, abs=1e-6)
        assert [row[f"r@{t}"] for t in (0.1, 0.3, 0.5, 0.7)] == [0.75, 0.75, 0.75, 0.0]
        assert row["f1"] == pytest.approx(0.5625)

    def test_tem_max_over_gt(self):
        entries = [{"a": "20 - 30", "tgt": [[0, 10], [20, 30]]}, {"a": "0 - 8", "tgt": [[0, 10]]}]
        row = score_grounding(entries, "tem")
        assert [row[f"r@{t}"] for t in (0.1, 0.3, 0.5, 0.7)] == [1.0, 1.0, 1.0, 1.0]
        assert row["mrec"] == 1.0 and "f1" not in row

    def test_tal(self):
        entries = [{"a": "0 - 10, 50 - 60", "tgt": [[0, 10], [20, 30]]},   # F1 0.5 at every t
                   {"a": "0 - 6", "tgt": [[0, 10]]},                        # 1,1,1,0 (IoU 0.6)
                   {"a": "nothing", "tgt": [[0, 10]]}]                      # failed: 0
        row = score_tal(entries)
        assert row["failed"] == 1
        assert [row[f"f1@{t}"] for t in (0.1, 0.3, 0.5, 0.7)] == pytest.approx(
            [1.5 / 3, 1.5 / 3, 1.5 / 3, 0.5 / 3])
        assert row["f1"] == pytest.approx((1.5 * 3 + 0.5) / 12)

    def test_evs(self):
        entries = [{"a": "5 - 15", "tgt": [[0, 10]]},        # tp 5, fp 5, fn 5 -> 0.5
                   {"a": "0.5 - 2.5", "tgt": [[0, 2]]},      # half-even: [0, 2) == GT -> 1.0
                   {"a": "50 - 60", "tgt": [[0, 10]]},       # tp 0 -> 0
                   {"a": "no answer", "tgt": [[0, 10]]}]     # not parsed: not averaged
        row = score_evs(entries)
        assert row == {"n": 4, "failed": 1, "parsed": 3, "f1": pytest.approx(1.5 / 3)}
        assert score_evs([{"a": "", "tgt": [[0, 1]]}])["f1"] == 0.0
        # GT beyond the 1000-bin timeline is cut there: only [990, 1000) counts
        assert score_evs([{"a": "990 - 1000", "tgt": [[990, 1500]]}])["f1"] == 1.0

    def test_vhd_annotator_formats(self):
        flat = [[0, 2], [10, 12]]
        per_annotator = [[[0, 2]], [[10, 12], [20, 22]]]
        entries = [{"a": "The highlight is 12", "tgt": flat},     # inclusive bound: hit
                   {"a": "21.5 seconds", "tgt": per_annotator},   # 2nd annotator's window: hit
                   {"a": "at 5 or 1", "tgt": flat},               # first number only: miss
                   {"a": "no idea", "tgt": flat}]                 # failed
        assert score_vhd(entries) == {"n": 4, "failed": 1, "f1": 0.5}

    def test_gvq(self):
        o = ["a", "b", "c", "d"]
        entries = [{"a": "B. at 0 - 10", "o": o, "p": 1, "tgt": [0, 10]},   # correct, IoU 1
                   {"a": "(b) 0 - 5", "o": o, "p": 1, "tgt": [0, 10]},      # correct, IoU .5
                   {"a": "C. 0 - 10", "o": o, "p": 1, "tgt": [0, 10]},      # wrong choice
                   {"a": "B", "o": o, "p": 1, "tgt": [0, 10]},              # correct, unparsed
                   {"a": "", "o": o, "p": 1, "tgt": [0, 10]}]               # empty
        row = score_gvq(entries, no_fallback)
        assert row["acc"] == 3 / 5 and row["failed"] == 2
        assert row["miou"] == pytest.approx(1.5 / 5)
        assert [row[f"r@{t}"] for t in (0.1, 0.3, 0.5, 0.7)] == [0.4, 0.4, 0.4, 0.2]
        assert row["mrec"] == pytest.approx(0.35)

    def test_dense_detection_scale_and_overwrite(self):
        e1 = {"a": "0 - 10 seconds, a man walks\n50 - 60 seconds, he sits", "video": "v",
              "tgt": [[0, 10], [20, 30]], "g": ["a man walks", "he stands"]}
        group = build_group("dvc", "x", [e1, {**e1, "a": "nothing"}])
        assert (group.parsed, group.n) == (1, 2)
        assert detection(group.videos, 0.7) == (0.5, 0.5)
        res = etbench_metrics([{**e1, "task": "dvc", "source": "x", "idx": 0},
                               {**e1, "task": "dvc", "source": "x", "idx": 1, "a": ""}],
                              caption_metrics=False)
        assert res["dvc_f1"] == pytest.approx(0.25)        # P = R = 0.5 * scale 0.5
        assert res["dvc_sim"] is None and res["errors"] == []
        # a later entry of the same video replaces the earlier one; both count as parsed
        e2 = {**e1, "a": "0 - 10 seconds, a man walks", "idx": 1}
        group = build_group("dvc", "x", [e1, e2])
        assert group.parsed == 2 and detection(group.videos, 0.5) == (1.0, 0.5)

    def test_dense_nothing_parsed_is_zero(self):
        e = {"task": "slc", "source": "s", "idx": 0, "video": "v", "a": "??",
             "tgt": [[0, 1]], "g": ["x"]}
        res = etbench_metrics([e])
        assert res["slc_f1"] == 0.0 and res["slc_sim"] == 0.0 and res["errors"] == []


# ----------------------------------------------------------------------------- summary, subset
def _entry(task, source, idx, **kw):
    return {"task": task, "source": source, "idx": idx, "video": f"{source}/{idx}.mp4", **kw}


def test_summary_task_means_over_sources_and_merged():
    rows = [{"task": "tvg", "source": "a", "n": 2, "failed": 0, "f1": 0.2},
            {"task": "tvg", "source": "b", "n": 4, "failed": 1, "f1": 0.6},
            {"task": "rar", "source": "a", "n": 1, "failed": 0, "acc": 1.0}]
    s = summarize(rows)
    assert s["tvg_f1"] == pytest.approx(0.4) and s["tasks"]["tvg"]["n"] == 6
    assert s["rar_acc"] == 1.0 and s["eca_acc"] is None
    assert s["ref_acc"] is None and s["gnd_f1"] is None and s["avg"] is None
    full: dict[str, dict] = {}
    for i, (t, m) in enumerate(TASK_KEYS.values()):
        full.setdefault(t, {"task": t, "source": "s", "n": 1, "failed": 0})[m] = 0.1 * (i + 1)
    s = summarize(list(full.values()))
    for key, parts in MERGED.items():
        assert s[key] == pytest.approx(sum(s[p] for p in parts) / len(parts)), key
    assert s["ref_acc"] == pytest.approx(0.2) and s["cap_sim"] == pytest.approx(1.1)


def test_etbench_metrics_end_to_end_without_models():
    o = ["x", "y", "z", "w"]
    entries = [
        _entry("rar", "pt", 0, o=o, p=0, a="(A)"), _entry("eca", "cs", 0, o=o, p=1, a="B."),
        _entry("rvq", "star", 0, o=o, p=2, a=""), _entry("rvq", "star", 1, o=o, p=2, a="C"),
        _entry("tvg", "cs", 0, tgt=[0, 10], a="0 - 10"), _entry("tvg", "qv", 0, tgt=[0, 10], a=""),
        _entry("epm", "e", 0, tgt=[0, 10], a="0 - 5"), _entry("tal", "t", 0, tgt=[[0, 10]], a="0-10"),
        _entry("evs", "tv", 0, tgt=[[0, 10]], a="5 - 15"), _entry("vhd", "yh", 0, tgt=[[1, 2]], a="1"),
        _entry("tem", "qv", 0, tgt=[[0, 10]], a="0 - 10"),
        _entry("gvq", "qa", 0, o=o, p=0, tgt=[0, 10], a="A 0 - 10"),
    ]
    res = etbench_metrics(entries, caption_metrics=False)
    assert res["rar_acc"] == 1.0 and res["eca_acc"] == 1.0 and res["rvq_acc"] == 0.5
    assert res["ref_acc"] == pytest.approx(2.5 / 3)
    assert res["tvg_f1"] == 0.5                       # mean over sources 1.0 and 0.0
    assert res["epm_f1"] == 0.75 and res["tal_f1"] == 1.0 and res["evs_f1"] == 0.5
    assert res["vhd_f1"] == 1.0
    assert res["gnd_f1"] == pytest.approx((0.5 + 0.75 + 1 + 0.5 + 1) / 5)
    assert res["tem_rec"] == 1.0 and res["gvq_rec"] == 1.0 and res["com_rec"] == 1.0
    assert res["dvc_f1"] is None and res["cap_f1"] is None and res["avg"] is None
    assert res["n"] == 12 and res["errors"] == []
    assert sum(r.get("fallback", 0) for r in res["rows"]) == 0     # MiniLM never needed
    assert {(r["task"], r["source"]) for r in res["rows"]} >= {("tvg", "cs"), ("tvg", "qv")}
    json.dumps(res)                                    # serialisable as is


def test_subset_filtering(tmp_path):
    entries = [_entry("tvg", "cs", i, tgt=[0, 10], a="0 - 10" if i < 2 else "") for i in range(4)]
    entries.append(_entry("vhd", "qv", 0, tgt=[[0, 1]], a="5"))
    subset = {"tvg": {"cs": [0, 3]}, "vhd": {"other": [0]}}
    assert [(e["task"], e["idx"]) for e in filter_subset(entries, subset)] == [("tvg", 0), ("tvg", 3)]
    path = tmp_path / "subset.json"
    path.write_text(json.dumps(subset))
    res = etbench_metrics(entries, subset=path)
    assert res["n"] == 2 and res["tvg_f1"] == 0.5 and res["vhd_f1"] is None
    assert etbench_metrics(entries, subset=None)["n"] == 5
    with pytest.raises(ETBenchError, match="subset file not found"):
        load_subset(tmp_path / "missing.json")


def test_real_subset_file_shape(shared_data):
    subset = load_subset(shared_data / "eval" / "et_bench_subset.json")
    assert set(subset) == {"rar", "eca", "rvq", "tvg", "epm", "tal", "evs", "vhd", "dvc", "slc",
                           "tem", "gvq"}
    assert sum(len(v) for s in subset.values() for v in s.values()) == 470


def test_bad_input_names_field():
    with pytest.raises(ETBenchError, match=r"field `tgt` missing"):
        etbench_metrics([_entry("tvg", "cs", 0, a="1 - 2")])
    with pytest.raises(ETBenchError, match=r"field `task` must be one of"):
        etbench_metrics([_entry("xyz", "cs", 0, a="1 - 2")])
    with pytest.raises(ETBenchError, match=r"field `a` must be the answer text"):
        etbench_metrics([_entry("tvg", "cs", 0, a=["1 - 2"], tgt=[0, 1])])
    with pytest.raises(ETBenchError, match=r"`tgt` has 2 segments but `g` 1"):
        etbench_metrics([_entry("dvc", "y", 0, a="", tgt=[[0, 1], [1, 2]], g=["x"])])


def test_parsers_never_raise_on_arbitrary_text():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    alphabet = st.sampled_from(list("0123456789.:-+() \n!?abcdestimnoprt*,") + ["seconds",
                               " to ", "start time: ", "end time: ", "description: "])

    @settings(max_examples=300, deadline=None)
    @given(st.lists(alphabet, max_size=40).map("".join))
    def check(text):
        for segs in (parse_timestamps(text), parse_captions(text)[0]):
            assert all(len(s) == 2 and s[0] <= s[1] for s in segs)
        segs, caps = parse_captions(text)
        assert len(segs) == len(caps)
        choice_outcome(text, 1)
        gvq_letter(text, 4)
        first_number(text)

    check()
