"""E.T. Bench parts that need Java (PTB tokenizer, METEOR) or all-MiniLM-L6-v2 (SentSim, fallback).

Skipped with a reason when the ``etbench`` extra or a JRE is missing; the "missing" tests run
everywhere (they point the scorers at paths that do not exist).
"""

from __future__ import annotations

import logging
import subprocess

import pytest

from museg.eval.etbench import etbench_metrics
from museg.eval.etbench.captions import (
    CaptionMetricsUnavailable,
    MeteorScorer,
    PTBTokenizer,
    SentenceEmbedder,
    _cocoeval_dir,
    find_java,
    minilm_path,
)
from museg.eval.etbench.tasks import make_chooser, option_texts, score_choice, score_gvq


def _java_reason() -> str | None:
    try:
        find_java()
        _cocoeval_dir()
    except CaptionMetricsUnavailable as e:
        return str(e)
    return None


def _model_reason() -> str | None:
    try:
        minilm_path()
        import sentence_transformers  # noqa: F401
    except (CaptionMetricsUnavailable, ImportError) as e:
        return str(e)
    return None


needs_java = pytest.mark.skipif(_java_reason() is not None, reason=f"{_java_reason()}")
needs_model = pytest.mark.skipif(_model_reason() is not None, reason=f"{_model_reason()}")


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder()


@pytest.fixture(scope="module")
def meteor():
    scorer = MeteorScorer()   # one METEOR JVM (~5 s to start) shared by this module's tests
    yield scorer
    scorer.close()


def _dense(task, source, idx, video, tgt, g, a):
    return {"task": task, "source": source, "idx": idx, "video": video, "tgt": tgt, "g": g, "a": a}


DENSE = [
    # perfect answer: every prediction matches its GT at every threshold
    _dense("dvc", "youcook2", 0, "v0", [[0, 10], [10, 20]], ["Add the onions.", "Stir well!"],
           "0 - 10 seconds, add the onions.\n10 - 20 seconds, stir well."),
    # one prediction matches nothing: it is paired with a random string
    _dense("dvc", "youcook2", 1, "v1", [[0, 10]], ["a man cuts bread"],
           "0 - 10 seconds, a man slices bread\n50 - 60 seconds, a woman sings loudly"),
    _dense("slc", "cross_task", 0, "v2", [[0, 10], [30, 40]], ["add flour", "pour milk"],
           "0 - 9 seconds, add flour.\n31 - 40 seconds, pour the milk."),
    _dense("slc", "cross_task", 1, "v3", [[0, 10]], ["jack up the car"], "no events"),
]


@needs_java
def test_tokenizer_matches_pycocoevalcap_one_java_call():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer as Reference

    sents = ["A man's dog (runs) fast.", "Hello, World!  It's 5:30 -- ok...", "x", "",
             "Quotes \"here\" and 'there'; done?", "tab\tand\rreturn"]
    tok = PTBTokenizer()
    ours = tok.tokenize(sents)
    assert tok.java_calls == 1
    ref = Reference().tokenize({i: [{"caption": s}] for i, s in enumerate(sents[:5])})
    assert ours[:5] == [ref[i][0] for i in range(5)]
    assert ours[0] == "a man 's dog -lrb- runs -rrb- fast"      # lowercased -LRB- is kept
    assert ours[5] == "tab and return" and ours[3] == ""
    assert tok.tokenize(["Café au lait.", "x"]) == ["caf au lait", "x"]   # non-ASCII removed
    assert tok.tokenize(sents) == ours and tok.java_calls == 2            # cached


@needs_java
def test_tokenize_documents_keeps_cross_line_context_like_separate_runs():
    """PTB looks past line ends ("etc." + capitalised next line -> extra "."): one Java call
    must still equal one pycocoevalcap run per document."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer as Reference

    docs = [["Add salt a.", "He waits till 5 p.m.", "Stir it etc.", "Next step"],
            ["Add salt a.", "next line", "", "Wait till 5 p.m."], ["Mix it jan."]]
    tok = PTBTokenizer()
    ours = tok.tokenize_documents(docs)
    assert tok.java_calls == 1
    for doc, got in zip(docs, ours, strict=True):
        ref = Reference().tokenize({i: [{"caption": s}] for i, s in enumerate(doc)})
        assert got == [ref[i][0] for i in range(len(doc))]
    # same caption, different next line: "a ." (sentence end before "He") vs "a."
    assert (ours[0][0], ours[1][0]) == ("add salt a", "add salt a.")


@needs_java
def test_meteor_scores_per_video(meteor):
    videos = [[("a man walks", "a man walks")],
              [("the dog runs", "a cat sleeps"), ("a man walks", "a man walks")],
              [("a man walks", "a man walks")]]
    scores = meteor.video_scores(videos)
    assert scores[0] == 1.0 and scores[2] == 1.0
    # METEOR's EVAL aggregates the statistics of the video (not a mean of pair scores)
    assert scores[1] == pytest.approx(0.3794459069184142, abs=1e-12)
    assert {("a man walks", "a man walks"), ("the dog runs", "a cat sleeps")} <= set(
        meteor.stats_cache)


@needs_model
def test_sentsim_and_choice_fallback(embedder):
    sims = embedder.pair_similarity([("a man cuts bread", "a man cuts bread"),
                                     ("a man cuts bread", "the stock market fell")])
    assert sims[0] == pytest.approx(1.0, abs=1e-5) and sims[1] < 0.3
    choose = make_chooser(embedder)
    opts = ["a red cup", "a blue ball", "a green box", "a small dog"]
    assert option_texts(opts)[1] == "(B) a blue ball"
    assert choose([("I think it is the blue ball", option_texts(opts)),
                   ("The dog.", option_texts(opts))]) == [1, 3]
    entries = [{"a": "It is the blue ball", "o": opts, "p": 1},      # no letter: fallback hit
               {"a": "(A) the blue ball", "o": opts, "p": 1},        # wrong letter, fallback hit
               {"a": "(C)", "o": opts, "p": 1}]                      # wrong letter, fallback miss
    row = score_choice(entries, choose)
    assert row["fallback"] == 3 and row["failed"] == 1 and row["acc"] == pytest.approx(2 / 3)
    gvq = [{"a": "the blue ball, 0 - 10", "o": opts, "p": 1, "tgt": [0, 10]},
           {"a": "blue ball 0 - 5", "o": opts, "p": 0, "tgt": [0, 10]}]
    row = score_gvq(gvq, choose)
    assert row["fallback"] == 2 and row["acc"] == 0.5 and row["mrec"] == 0.5


@needs_java
@needs_model
def test_dense_captions_end_to_end_java_once_and_repeatable(monkeypatch, embedder, meteor):
    started = {"Popen": 0, "run": 0}
    real_popen, real_run = subprocess.Popen, subprocess.run

    def popen(*a, **k):
        started["Popen"] += 1
        return real_popen(*a, **k)

    def run(*a, **k):
        started["run"] += 1
        return real_run(*a, **k)

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(subprocess, "run", run)
    res = etbench_metrics(DENSE, embedder=embedder)
    # one METEOR process and one PTB tokenizer run for 2 tasks x 2 sources x 4 thresholds
    assert started == {"Popen": 2, "run": 1}         # subprocess.run itself opens a Popen
    assert res["errors"] == []
    rows = {(r["task"], r["source"]): r for r in res["rows"]}
    dvc = rows[("dvc", "youcook2")]
    assert dvc["f1"] == pytest.approx(2 * 0.75 * 1 / 1.75)     # P = (1 + 1/2) / 2, R = 1
    # video v0 is perfect (sim 1, METEOR 1); v1 pairs "a man slices bread" with its GT and the
    # second prediction with a random string
    assert 0.5 < dvc["sim"] < 1.0 and 0.3 < dvc["meteor"] < 1.0
    slc = rows[("slc", "cross_task")]
    assert slc["f1"] == pytest.approx(0.5) and slc["videos"] == 1   # scale 1/2, P = R = 1
    assert slc["sim"] > 0.9
    assert res["cap_f1"] == pytest.approx((res["dvc_f1"] + res["slc_f1"]) / 2)
    assert res["cap_sim"] == pytest.approx((res["dvc_sim"] + res["slc_sim"]) / 2)

    monkeypatch.setattr(subprocess, "Popen", real_popen)
    again = etbench_metrics(DENSE, embedder=embedder, meteor=meteor)
    assert again["rows"] == res["rows"]                         # seeded random strings
    assert meteor.proc.poll() is None                           # a caller's METEOR stays open


def test_missing_java_other_metrics_still_computed(monkeypatch, caplog):
    monkeypatch.setenv("MUSEG_JAVA", "/nonexistent/java")
    entries = [*DENSE, {"task": "tvg", "source": "cs", "idx": 0, "tgt": [0, 10], "a": "0 - 10"}]
    with caplog.at_level(logging.ERROR):
        res = etbench_metrics(entries, embedder=SentenceEmbedder(path="/nonexistent"))
    assert len(res["errors"]) == 1 and "Java not found" in res["errors"][0]
    assert "default-jre-headless" in res["errors"][0]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == res["errors"]
    assert res["dvc_sim"] is None and res["slc_sim"] is None and res["cap_sim"] is None
    assert res["dvc_f1"] == pytest.approx(2 * 0.75 / 1.75) and res["tvg_f1"] == 1.0
    assert all(r.get("meteor") is None for r in res["rows"] if r["task"] == "dvc")


def test_missing_model_other_metrics_still_computed(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSEG_MINILM_PATH", str(tmp_path))
    opts = ["a red cup", "a blue ball", "a green box", "a small dog"]
    entries = [{"task": "rar", "source": "pt", "idx": 0, "o": opts, "p": 1, "a": "blue ball"},
               {"task": "eca", "source": "cs", "idx": 0, "o": opts, "p": 1, "a": "(B)"},
               {"task": "tvg", "source": "cs", "idx": 0, "tgt": [0, 10], "a": "0 - 10"}]
    res = etbench_metrics(entries)
    assert len(res["errors"]) == 1 and "MUSEG_MINILM_PATH" in res["errors"][0]
    assert res["rar_acc"] is None and res["ref_acc"] is None
    assert res["eca_acc"] == 1.0 and res["tvg_f1"] == 1.0   # no fallback needed there


@pytest.mark.slow
@needs_java
def test_meteor_matches_pycocoevalcap_per_video():
    """Our batched METEOR equals pycocoevalcap's Meteor.compute_score video by video."""
    from pycocoevalcap.meteor.meteor import Meteor

    videos = [[("a man cuts the bread", "a man is slicing bread"), ("he eats", "qwertyuiopa")],
              [("add flour to the bowl", "add flour"), ("pour milk", "pour the milk in")],
              [("", "something"), ("stir", "")]]
    ref = Meteor()
    expected = [ref.compute_score({i: [r] for i, (_, r) in enumerate(v)},
                                  {i: [h] for i, (h, _) in enumerate(v)})[0] for v in videos]
    ours = MeteorScorer()
    try:
        assert ours.video_scores(videos) == expected
    finally:
        ours.close()
