"""Tests for museg.data.annotations (with annotation_records, annotation_files): loaders,
validation messages, skip policy, path resolution."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from helpers_repo import shared_data_dir

from museg.data.annotation_files import resolve_video_path
from museg.data.annotation_records import AnnotationFileNotFoundError
from museg.data.annotations import (
    AnnotationError,
    EvalItem,
    Sample,
    load_etbench,
    load_grounding_eval,
    load_train_jsonl,
)

SHARED = shared_data_dir()
needs_shared = pytest.mark.skipif(
    SHARED is None, reason="real MUSEG annotations not found (../shared/data/museg or $MUSEG_SHARED_DATA)"
)

GOOD = {"idx": 0, "problem": "Find 'x'.", "solution": [[1.0, 2.5], [3, 4]],
        "video": "videos/charades/A.mp4", "duration": 30.0, "task": "tal"}


def write_jsonl(path: Path, records: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------ training jsonl
def test_train_good_records(tmp_path):
    rec2 = {k: v for k, v in GOOD.items() if k != "duration"} | {"idx": 1, "task": "tvg"}
    f = write_jsonl(tmp_path / "t.jsonl", [GOOD, "", rec2])
    out = load_train_jsonl(f, tmp_path / "root")
    assert [type(s) for s in out] == [Sample, Sample]
    s0, s1 = out
    assert s0.solution == [[1.0, 2.5], [3.0, 4.0]] and all(isinstance(x, float) for x in s0.solution[1])
    assert s0.duration == 30.0 and s1.duration is None
    assert s0.source == f"{f}:1" and s1.source == f"{f}:3"  # blank line 2 skipped, numbering kept
    assert s0.video == "videos/charades/A.mp4"
    assert s0.video_path == str(tmp_path / "root" / "videos" / "charades" / "A.mp4")
    assert s1.task == "tvg"


@pytest.mark.parametrize(
    "patch, expect",
    [
        ({"solution": [[5.0, 3.0]]}, "field `solution`: start 5.0 >= end 3.0"),
        ({"solution": [[2.0, 2.0]]}, "field `solution`: start 2.0 >= end 2.0"),
        ({"solution": [[-1.0, 3.0]]}, "field `solution`: negative start -1.0"),
        ({"solution": []}, "field `solution`: empty list"),
        ({"solution": [[1.0]]}, "field `solution`: segment 0"),
        ({"solution": [["1", 2]]}, "field `solution`: start '1' is not a number"),
        ({"solution": [[True, 2]]}, "is not a number"),
        ({"solution": "1-2"}, "field `solution`: expected a list"),
        ({"task": "vhd"}, "field `task`: unknown task 'vhd'"),
        ({"problem": 3}, "field `problem`: expected a string"),
        ({"problem": "  "}, "field `problem`: empty string"),
        ({"duration": -2}, "field `duration`: expected a positive number"),
        ({"idx": 1.5}, "field `idx`"),
        ({"video": None}, "field `video`"),
    ],
)
def test_train_bad_record_message(tmp_path, patch, expect):
    f = write_jsonl(tmp_path / "t.jsonl", [GOOD, GOOD | patch])
    with pytest.raises(AnnotationError) as ei:
        load_train_jsonl(f, tmp_path)
    msg = str(ei.value)
    assert msg.startswith(f"{f}:2: ") and expect in msg, msg
    assert msg.endswith("(fix the record or set data.on_bad_record=skip)")
    assert "\n" not in msg


@pytest.mark.parametrize("key", ["idx", "problem", "solution", "video", "task"])
def test_train_missing_key(tmp_path, key):
    rec = {k: v for k, v in GOOD.items() if k != key}
    f = write_jsonl(tmp_path / "t.jsonl", [rec])
    with pytest.raises(AnnotationError, match=rf"t.jsonl:1: field `{key}`: missing key"):
        load_train_jsonl(f, tmp_path)


def test_train_malformed_json_and_non_object(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [GOOD, '{"idx": 1, "problem": '])
    with pytest.raises(AnnotationError, match=r"t.jsonl:2: malformed JSON line"):
        load_train_jsonl(f, tmp_path)
    f = write_jsonl(tmp_path / "u.jsonl", [GOOD, "[1, 2]"])
    with pytest.raises(AnnotationError, match=r"u.jsonl:2: record: expected a JSON object"):
        load_train_jsonl(f, tmp_path)


def test_train_skip_policy_logs_count(tmp_path, caplog):
    recs = [GOOD, GOOD | {"solution": [[5.0, 3.0]]}, "not json", GOOD | {"idx": 3, "task": "xx"}]
    f = write_jsonl(tmp_path / "t.jsonl", recs)
    with caplog.at_level(logging.WARNING, logger="museg.data.annotations"):
        out = load_train_jsonl(f, tmp_path, on_bad_record="skip")
    assert [s.idx for s in out] == [0]
    text = caplog.text
    assert "skipped 3 bad record(s) of 4" in text
    assert "t.jsonl:2: field `solution`: start 5.0 >= end 3.0" in text and "t.jsonl:3:" in text


def test_train_all_bad_or_empty_or_missing(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [GOOD | {"task": "xx"}])
    with pytest.raises(AnnotationError, match="no usable records"):
        load_train_jsonl(f, tmp_path, on_bad_record="skip")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(AnnotationError, match="no usable records"):
        load_train_jsonl(tmp_path / "e.jsonl", tmp_path)
    with pytest.raises(AnnotationFileNotFoundError, match="annotation file not found"):
        load_train_jsonl(tmp_path / "nope.jsonl", tmp_path)
    with pytest.raises(ValueError, match="on_bad_record must be one of"):
        load_train_jsonl(tmp_path / "e.jsonl", tmp_path, on_bad_record="ignore")


# ------------------------------------------------------------------ path resolution
def test_resolve_video_path_rules(tmp_path):
    data = tmp_path / "data"
    (data / "videos" / "charades").mkdir(parents=True)
    (data / "videos" / "charades" / "A.mp4").write_bytes(b"x")
    vids = data / "videos"
    # training path ('videos/' prefix) with the root above or at the videos folder
    assert resolve_video_path("videos/charades/A.mp4", data) == str(vids / "charades" / "A.mp4")
    assert resolve_video_path("videos/charades/A.mp4", vids) == str(vids / "charades" / "A.mp4")
    # evaluation path (no prefix) with either root
    assert resolve_video_path("charades/A.mp4", vids) == str(vids / "charades" / "A.mp4")
    assert resolve_video_path("charades/A.mp4", data) == str(vids / "charades" / "A.mp4")
    # missing files: deterministic guess, nothing raised
    assert resolve_video_path("videos/x/B.mp4", vids) == str(vids / "x" / "B.mp4")
    assert resolve_video_path("videos/x/B.mp4", data) == str(data / "videos" / "x" / "B.mp4")
    assert resolve_video_path("x/B.mp4", data) == str(data / "x" / "B.mp4")
    assert resolve_video_path("/abs/B.mp4", data) == "/abs/B.mp4"
    # relative root -> absolute path
    rel = os.path.relpath(vids)
    assert resolve_video_path("charades/A.mp4", rel) == str(vids / "charades" / "A.mp4")


# ------------------------------------------------------------------ grounding eval json
def test_grounding_eval_ids_lines_and_errors(tmp_path):
    items = [{"video": "c/A.mp4", "question": "q0", "groundtruth": [[1, 2]]},
             {"video": "c/B.mp4", "question": "q1", "groundtruth": [[3.0, 4.0], [5, 6]], "task": "tal"}]
    f = tmp_path / "g.json"
    f.write_text(json.dumps(items, indent=2))
    out = load_grounding_eval(f, tmp_path)
    assert [type(x) for x in out] == [EvalItem, EvalItem]
    assert [x.item_id for x in out] == ["0", "1"]
    assert out[1].groundtruth == [[3.0, 4.0], [5.0, 6.0]] and out[1].extra == {"task": "tal"}
    assert out[0].origin == f"{f}:2: item 0"
    bad = items + [{"video": "c/C.mp4", "question": "q2", "groundtruth": [[9, 4]]}]
    f.write_text(json.dumps(bad, indent=2))
    with pytest.raises(AnnotationError) as ei:
        load_grounding_eval(f, tmp_path)
    msg = str(ei.value)
    assert "item 2: field `groundtruth`: start 9.0 >= end 4.0" in msg
    text_lines = f.read_text().split("\n")
    lineno = int(msg.split(":")[1])
    assert text_lines[lineno - 1].strip() == "{" and '"c/C.mp4"' in text_lines[lineno]
    kept = load_grounding_eval(f, tmp_path, on_bad_record="skip")
    assert [x.item_id for x in kept] == ["0", "1"]
    f.write_text('[{"video": "a", "question": "q", "groundtruth": [[1, 2]]},\n {"video": ]')
    with pytest.raises(AnnotationError, match=r"g.json:2: malformed JSON"):
        load_grounding_eval(f, tmp_path, on_bad_record="skip")
    f.write_text('{"video": "a"}')
    with pytest.raises(AnnotationError, match="expected a JSON list"):
        load_grounding_eval(f, tmp_path)


# ------------------------------------------------------------------ E.T. Bench
def etbench_entries() -> list[dict]:
    return [
        {"idx": 0, "task": "tvg", "source": "charades_sta", "video": "a.mp4", "duration": 30.0,
         "q": "When?", "tgt": [1.5, 4]},
        {"idx": 1, "task": "tal", "source": "thumos14", "video": "b.mp4", "duration": 60,
         "q": "All?", "tgt": [[1, 2], [3, 4]]},
        {"idx": 0, "task": "vhd", "source": "qvhighlights", "video": "c.mp4", "duration": 20,
         "q": "Best?", "tgt": [[[0, 2], [4, 6]], [[1, 1]]]},
        {"idx": 2, "task": "rar", "source": "perception_test", "video": "d.mp4", "duration": 9,
         "q": "Which?", "src": [1, 2], "o": ["a", "b", "c", "d"], "p": 2},
        {"idx": 3, "task": "dvc", "source": "youcook2", "video": "e.mp4", "duration": 99,
         "q": "Describe", "tgt": [[0, 5], [6, 9]], "g": ["cut", "fry"]},
    ]


def test_etbench_fields_and_ids(tmp_path):
    f = tmp_path / "et.json"
    f.write_text(json.dumps(etbench_entries()))
    out = load_etbench(f, tmp_path)
    assert [x.item_id for x in out] == ["tvg/charades_sta/0", "tal/thumos14/1", "vhd/qvhighlights/0",
                                        "rar/perception_test/2", "dvc/youcook2/3"]
    assert out[0].question == "When?" and out[0].groundtruth == [[1.5, 4.0]]
    assert out[1].groundtruth == [[1.0, 2.0], [3.0, 4.0]]
    assert out[2].groundtruth == [[0.0, 2.0], [4.0, 6.0], [1.0, 1.0]]  # zero-length window allowed
    assert out[3].groundtruth == [] and out[3].extra["o"] == ["a", "b", "c", "d"]
    assert out[4].extra["g"] == ["cut", "fry"] and out[4].extra == etbench_entries()[4]


def test_etbench_subset_and_errors(tmp_path):
    f = tmp_path / "et.json"
    f.write_text(json.dumps(etbench_entries()))
    sub = tmp_path / "sub.json"
    sub.write_text(json.dumps({"tvg": {"charades_sta": [0]}, "dvc": {"youcook2": [3, 7]}}))
    out = load_etbench(f, tmp_path, subset=sub)
    assert [x.item_id for x in out] == ["tvg/charades_sta/0", "dvc/youcook2/3"]
    assert len(load_etbench(f, tmp_path, subset={"tal": {"thumos14": [1]}})) == 1
    with pytest.raises(AnnotationError, match="subset kept 0"):
        load_etbench(f, tmp_path, subset={"tal": {"other": [1]}})
    bad = etbench_entries()
    bad[1] = bad[1] | {"task": "foo"}
    f.write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match=r"item 1: field `task`: unknown task 'foo'"):
        load_etbench(f, tmp_path)
    bad[1] = etbench_entries()[1] | {"tgt": [[5, 3]]}
    f.write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match=r"item 1: field `tgt`: start 5.0 > end 3.0"):
        load_etbench(f, tmp_path)
    bad[1] = etbench_entries()[0]
    f.write_text(json.dumps(bad))
    with pytest.raises(AnnotationError, match=r"duplicate id tvg/charades_sta/0"):
        load_etbench(f, tmp_path)
    bad[1] = {k: v for k, v in etbench_entries()[1].items() if k != "q"}
    f.write_text(json.dumps(bad))
    assert len(load_etbench(f, tmp_path, on_bad_record="skip")) == 4


# ------------------------------------------------------------------ real annotation files
@needs_shared
@pytest.mark.parametrize("name, n, bad", [("stage_1", 5600, 2), ("stage_2", 7000, 5)])
def test_real_training_files(name, n, bad, tmp_path, caplog):
    f = SHARED / "train" / f"{name}.jsonl"
    # the real files hold a few degenerate segments (start >= end): default policy fails loudly
    with pytest.raises(AnnotationError, match=rf"{name}.jsonl:\d+: field `solution`: start"):
        load_train_jsonl(f, tmp_path)
    with caplog.at_level(logging.WARNING):
        out = load_train_jsonl(f, tmp_path / "videos", on_bad_record="skip")
    assert len(out) == n - bad and f"skipped {bad} bad record(s) of {n}" in caplog.text
    assert {s.task for s in out} == {"tvg", "tal"}
    assert all(s.video.startswith("videos/") for s in out)
    assert all(s.video_path.startswith(str(tmp_path / "videos") + "/") for s in out)
    assert not any("videos/videos" in s.video_path for s in out)
    assert any(s.duration is None for s in out) and any(s.duration for s in out)


@needs_shared
@pytest.mark.parametrize("name, n", [("charades_sta", 3720), ("thumos14", 227), ("thumos15", 474)])
def test_real_grounding_eval_files(name, n, tmp_path):
    out = load_grounding_eval(SHARED / "eval" / f"{name}.json", tmp_path)
    assert len(out) == n and out[-1].item_id == str(n - 1)
    assert all(x.groundtruth and x.question for x in out)
    # origin lines point at the item's opening brace in the file
    lines = (SHARED / "eval" / f"{name}.json").read_text().split("\n")
    ln = int(out[-1].origin.split(":")[1])
    assert lines[ln - 1].strip() == "{" and out[-1].video in lines[ln]


@needs_shared
def test_real_etbench_subset_filters(tmp_path):
    subset = json.loads((SHARED / "eval" / "et_bench_subset.json").read_text())
    task, by_source = next(iter(subset.items()))
    source, idxs = next(iter(by_source.items()))
    entries = [{"idx": i, "task": task, "source": source, "video": f"v{i}.mp4", "duration": 10.0,
                "q": "q"} for i in range(max(idxs) + 1)]
    f = tmp_path / "et.json"
    f.write_text(json.dumps(entries))
    out = load_etbench(f, tmp_path, subset=SHARED / "eval" / "et_bench_subset.json")
    assert sorted(int(x.item_id.split("/")[-1]) for x in out) == sorted(set(idxs))
