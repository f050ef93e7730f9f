"""task=score: metrics from an existing predictions file (ours or the reference implementation's json),
without a model; hand-computed values; format detection and one-line errors."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from museg.config import compose_config
from museg.eval.predictions import PredictionWriter, load_prediction_file
from museg.eval.score import ScoreError, score

# (ground truth, answer text) -> hand-computed per-item IoU for tvg (first vs first):
TVG_CASES = [([[0.0, 10.0]], "0-5"), ([[2.0, 4.0]], ""), ([[0.0, 10.0]], "0.00-10.00")]
TVG_EXPECTED = {"n": 3, "miou": 0.5, "r@0.1": 2 / 3, "r@0.3": 2 / 3, "r@0.5": 2 / 3,
                "r@0.7": 1 / 3, "mean_r": 7 / 12}
# tal: perfect match (F1 1 everywhere); [0,10] vs {0-5, 20-30}: IoU row [0.5, 0] -> rec 1, prc 1/2,
# F1 2/3 for t <= 0.5 and 0 at 0.7.
TAL_CASES = [([[0.0, 2.0], [4.0, 6.0]], "0-2 4-6"), ([[0.0, 10.0]], "0-5 20-30")]
TAL_EXPECTED = {"n": 2, "f1@0.1": 5 / 6, "f1@0.3": 5 / 6, "f1@0.5": 5 / 6, "f1@0.7": 0.5,
                "mean_f1": 0.75}


def _cfg(tmp_path, pred, kind, benchmark="bench", subset=None):
    """The composed task=score config with this predictions file (no annotation)."""
    return OmegaConf.merge(compose_config(["task=score"]), {
        "run_dir": str(tmp_path / "scored"),
        "eval": {"benchmark": benchmark, "kind": kind, "annotation": None, "subset": subset,
                 "predictions": str(pred)},
    })


def _reference_grounding(path, cases, stats):
    data = [{"video": f"v{i}.mp4", "question": f"q{i}", "groundtruth": gt,
             "result": {"output": ans,
                        "conversation": ["user: <video>q", f"assistant: <think>t</think>"
                                                           f"<answer>{ans}</answer>"]}}
            for i, (gt, ans) in enumerate(cases)]
    data.append(stats)  # the reference script appends its own metrics dict
    path.write_text(json.dumps(data, indent=4))


def _ours(path, cases, kind):
    with PredictionWriter(path) as w:
        for i, (gt, ans) in enumerate(cases):
            out = f"<think>look at 1.0</think><answer>{ans}</answer>" if ans else "no tags"
            w.append({"item_id": str(i), "kind": kind, "video": f"v{i}.mp4", "output": out,
                      "answer": ans, "groundtruth": gt})


@pytest.mark.parametrize("kind,cases,expected", [("tvg", TVG_CASES, TVG_EXPECTED),
                                                 ("tal", TAL_CASES, TAL_EXPECTED)])
def test_reference_grounding_output(tmp_path, kind, cases, expected):
    pred = tmp_path / "eval_ref.json"
    _reference_grounding(pred, cases, {"tot": len(cases), "m_iou": 0.123})
    assert load_prediction_file(pred)[0] == "reference_grounding"
    metrics = score(_cfg(tmp_path, pred, kind))
    for key, val in expected.items():
        assert metrics[key] == pytest.approx(val, abs=1e-6), key
    res = json.loads((tmp_path / "scored" / "results.json").read_text())
    assert res["settings"]["predictions"]["format"] == "reference_grounding"
    assert res["settings"]["predictions"]["n"] == len(cases)
    assert (tmp_path / "scored" / "results.md").is_file()


@pytest.mark.parametrize("kind,cases,expected", [("tvg", TVG_CASES, TVG_EXPECTED),
                                                 ("tal", TAL_CASES, TAL_EXPECTED)])
def test_our_predictions_jsonl(tmp_path, kind, cases, expected):
    pred = tmp_path / "predictions.jsonl"
    _ours(pred, cases, kind)
    metrics = score(_cfg(tmp_path, pred, kind))
    for key, val in expected.items():
        assert metrics[key] == pytest.approx(val, abs=1e-6), key


def _et_entries():
    base = {"source": "src", "duration": 20.0, "video": "v.mp4"}
    return [
        {**base, "idx": 0, "task": "rar", "q": "Which? (A) x (B) y (C) z (D) w",
         "o": ["x", "y", "z", "w"], "p": 1, "a": "(B) y"},
        {**base, "idx": 1, "task": "rar", "q": "Which? (A) x (B) y (C) z (D) w",
         "o": ["x", "y", "z", "w"], "p": 0, "a": "A."},
        {**base, "idx": 0, "task": "tvg", "q": "When?", "tgt": [0.0, 10.0],
         "a": "The event happens in 0 - 5 seconds."},
    ]


def test_reference_etbench_output(tmp_path):
    from museg.eval.etbench import etbench_metrics

    entries = _et_entries()
    pred = tmp_path / "eval_et_bench.json"
    pred.write_text(json.dumps([{**e, "c": ["user: q", "assistant: x"]} for e in entries]))
    assert load_prediction_file(pred)[0] == "reference_etbench"
    metrics = score(_cfg(tmp_path, pred, "etbench", benchmark="et_bench"))
    assert metrics["rar_acc"] == pytest.approx(1.0)
    assert metrics["tvg_f1"] == pytest.approx(0.75)  # IoU 0.5: hits at 0.1, 0.3, 0.5 of 4
    direct = etbench_metrics([dict(e) for e in entries])
    assert metrics["rar_acc"] == direct["rar_acc"] and metrics["tvg_f1"] == direct["tvg_f1"]


def test_our_etbench_predictions_and_subset(tmp_path):
    entries = _et_entries()
    pred = tmp_path / "predictions.jsonl"
    with PredictionWriter(pred) as w:
        for e in entries:
            extra = {k: v for k, v in e.items() if k != "a"}
            w.append({"item_id": f"{e['task']}/{e['source']}/{e['idx']}", "kind": "etbench",
                      "video": e["video"], "output": f"<answer>{e['a']}</answer>",
                      "answer": e["a"], "groundtruth": [], "extra": extra})
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps({"rar": {"src": [0]}, "tvg": {"src": [0]}}))
    metrics = score(_cfg(tmp_path, pred, "etbench", benchmark="et_bench_subset",
                         subset=str(subset)))
    assert metrics["rar_acc"] == pytest.approx(1.0)
    assert metrics["tvg_f1"] == pytest.approx(0.75)


def test_unknown_format_and_kind_mismatch_give_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ScoreError, match="unknown predictions format") as e:
        score(_cfg(tmp_path, bad, "tvg"))
    assert str(bad) in str(e.value) and "\n" not in str(e.value)

    lines = tmp_path / "x.jsonl"
    lines.write_text('{"id": 3}\n')
    with pytest.raises(ScoreError, match="item_id"):
        score(_cfg(tmp_path, lines, "tvg"))

    ref = tmp_path / "ref.json"
    _reference_grounding(ref, TVG_CASES, {"tot": 3})
    with pytest.raises(ScoreError, match="holds grounding predictions but eval.kind=etbench"):
        score(_cfg(tmp_path, ref, "etbench"))

    with pytest.raises(ScoreError, match="scores one benchmark"):
        score(_cfg(tmp_path, ref, "suite"))
    with pytest.raises(ScoreError, match="eval.predictions"):
        score(_cfg(tmp_path, "", "tvg"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        score(_cfg(tmp_path, tmp_path / "missing.json", "tvg"))
