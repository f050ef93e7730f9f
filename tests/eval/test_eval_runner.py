"""End-to-end evaluation of the tiny model on synthetic videos (CPU): grounding and E.T. Bench-format
benchmarks, predictions.jsonl contents, report files, undecodable videos, resume bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_eval import etbench_bench, eval_cfg, grounding_bench, read_jsonl

from museg.eval.items import EvalError, eval_question, load_eval_items
from museg.eval.predictions import read_predictions
from museg.eval.runner import evaluate


class _NoModel:
    """Stands in for a backend where nothing may be generated (everything already finished)."""

    name = "none"
    model_path = "unused"

    def generate(self, questions, videos):
        raise AssertionError(f"generate called for {len(questions)} finished item(s)")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalbench")
    ann, vroot = grounding_bench(root, n_items=5)
    et_ann, et_subset = etbench_bench(root, vroot)
    return root, ann, vroot, et_ann, et_subset


@pytest.fixture(scope="module")
def grounding_run(bench):
    """One real evaluate() that loads the tiny model itself."""
    root, ann, vroot, _, _ = bench
    cfg = eval_cfg(root / "run_tvg", ann, vroot, kind="tvg", benchmark="charades_sta",
                   batch_size=2, max_new_tokens=16)
    return cfg, evaluate(cfg)


@pytest.fixture(scope="module")
def backend(bench):
    """A loaded tiny-model HF backend shared by the other tests (max_new_tokens 16)."""
    from museg.generation.backends import HFBackend

    root, ann, vroot, _, _ = bench
    return HFBackend(eval_cfg(root / "unused", ann, vroot, max_new_tokens=16))


def test_grounding_end_to_end(bench, grounding_run):
    root, ann, *_ = bench
    cfg, metrics = grounding_run
    run = root / "run_tvg"
    assert metrics["n"] == 5
    assert set(metrics) >= {"miou", "r@0.1", "r@0.3", "r@0.5", "r@0.7", "mean_r"}
    assert all(0.0 <= metrics[k] <= 1.0 for k in metrics if k != "n")
    lines = read_jsonl(run / "predictions.jsonl")
    assert [r["item_id"] for r in lines] == [str(i) for i in range(5)]
    gts = [it["groundtruth"] for it in json.loads(ann.read_text())]
    for r, gt in zip(lines, gts, strict=True):
        assert set(r) >= {"item_id", "video", "output", "answer", "groundtruth", "segments"}
        assert isinstance(r["output"], str) and r["groundtruth"] == gt and "error" not in r
    res = json.loads((run / "results.json").read_text())
    assert res["metrics"] == pytest.approx(metrics)
    assert res["settings"]["video"]["min_pixels"] == 12544
    assert res["settings"]["decoding"]["max_new_tokens"] == 16
    # consecutive queries on one video reuse its frames: one decode per distinct video
    n_videos = len({it["video"] for it in json.loads(ann.read_text())})
    cache = res["settings"]["this_run"]["frame_cache"]
    assert cache["misses"] == n_videos < 5 and cache["hits"] + cache["misses"] == 5
    assert Path(res["settings"]["model"]["path"], "config.json").is_file()  # the tiny model dir
    assert (run / "iou_hist.png").is_file() and (run / "recall_vs_threshold.png").is_file()
    assert "Charades-STA mIoU" in (run / "results.md").read_text()


def test_finished_run_is_not_recomputed_and_scores_the_same(bench, grounding_run):
    from museg.eval.score import score

    root, *_ = bench
    cfg, metrics = grounding_run
    before = (root / "run_tvg" / "predictions.jsonl").read_text()
    assert evaluate(cfg, backend=_NoModel()) == pytest.approx(metrics)
    assert (root / "run_tvg" / "predictions.jsonl").read_text() == before
    scfg = cfg.copy()
    scfg.run_dir = str(root / "scored")
    scfg.eval.predictions = str(root / "run_tvg" / "predictions.jsonl")
    assert score(scfg) == pytest.approx(metrics)


def test_changed_settings_refuse_to_resume(bench, grounding_run):
    cfg, _ = grounding_run
    changed = cfg.copy()
    changed.eval.max_new_tokens = 99
    with pytest.raises(EvalError, match="different settings.*max_new_tokens"):
        evaluate(changed, backend=_NoModel())


def test_etbench_end_to_end_with_subset(bench, backend):
    root, _, vroot, et_ann, et_subset = bench
    cfg = eval_cfg(root / "run_et", et_ann, vroot, kind="etbench", benchmark="et_bench_subset",
                   subset=et_subset, template="etbench", batch_size=2, max_new_tokens=16)
    items = load_eval_items(cfg)
    assert [it.item_id for it in items] == ["tvg/syn/0", "rar/syn/0", "vhd/syn/0"]
    metrics = evaluate(cfg, backend=backend)
    assert "rar_acc" in metrics and "tvg_f1" in metrics
    lines = read_jsonl(root / "run_et" / "predictions.jsonl")
    assert sorted(r["item_id"] for r in lines) == sorted(it.item_id for it in items)
    for r in lines:
        assert r["kind"] == "etbench" and r["extra"]["task"] in ("tvg", "rar", "vhd")
        # the answer is the text inside exactly one <answer></answer> pair, else empty
        assert r["answer"] == "" or r["output"].count("<answer>") == 1
    assert (root / "run_et" / "etbench_summary.png").is_file()


def test_undecodable_video_is_recorded_as_wrong(bench, backend, tmp_path):
    from museg.data.video import VideoError

    root, ann, vroot, _, _ = bench
    items = json.loads(ann.read_text())[:2]
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    for it in items:
        src = vroot / it["video"]
        (tmp_path / "videos" / it["video"]).write_bytes(src.read_bytes())
    items.insert(1, {"video": "broken.mp4", "question": "When?", "groundtruth": [[0.0, 1.0]]})
    bad_ann = tmp_path / "bad.json"
    bad_ann.write_text(json.dumps(items))
    cfg = eval_cfg(tmp_path / "run", bad_ann, tmp_path / "videos", kind="tvg")
    metrics = evaluate(cfg, backend=backend)
    assert metrics["n"] == 3
    lines = {r["item_id"]: r for r in read_jsonl(tmp_path / "run" / "predictions.jsonl")}
    assert set(lines) == {"0", "1", "2"}
    assert "error" in lines["1"] and lines["1"]["answer"] == "" and lines["1"]["output"] == ""
    assert "broken.mp4" in lines["1"]["error"] or "Video" in lines["1"]["error"]
    assert "error" not in lines["0"] and "error" not in lines["2"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["settings"]["n_errors"] == 1

    cfg_fail = eval_cfg(tmp_path / "run_fail", bad_ann, tmp_path / "videos", kind="tvg")
    cfg_fail.video.on_failure = "fail"
    with pytest.raises(VideoError):
        evaluate(cfg_fail, backend=backend)

    # the video gets fixed: a resumed run retries only the failed item and its new line wins
    (tmp_path / "videos" / "broken.mp4").write_bytes((vroot / items[0]["video"]).read_bytes())
    evaluate(cfg, backend=backend)
    raw = read_jsonl(tmp_path / "run" / "predictions.jsonl")
    assert sorted(r["item_id"] for r in raw) == ["0", "1", "1", "2"]
    final = {r["item_id"]: r for r in read_predictions(tmp_path / "run" / "predictions.jsonl")}
    assert "error" not in final["1"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["settings"]["n_errors"] == 0


def test_limit_and_bad_config(bench, tmp_path):
    root, ann, vroot, _, _ = bench
    cfg = eval_cfg(tmp_path / "r", ann, vroot, kind="tvg", limit=2)
    assert [it.item_id for it in load_eval_items(cfg)] == ["0", "1"]
    cfg.eval.kind = "nope"
    with pytest.raises(EvalError, match="eval.kind='nope'"):
        load_eval_items(cfg)
    cfg.eval.kind = "tvg"
    cfg.eval.annotation = str(tmp_path / "missing.json")
    with pytest.raises(EvalError, match="missing.json: annotation file not found"):
        load_eval_items(cfg)


def test_question_templates():
    from museg.data.prompts import TEMPLATES

    q = eval_question("stage1", "When is the red square visible?")
    assert q == TEMPLATES["stage1"].replace("{problem}", "When is the red square visible?")
    assert eval_question("Q: {problem}!", "x") == "Q: x!"


def test_vllm_backend_missing_gives_one_clear_error(bench, tmp_path):
    from museg.generation.backends import make_backend
    from museg.generation.vllm import VLLMNotInstalledError

    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed; the gpu test covers it")
    except ImportError:
        pass
    root, ann, vroot, _, _ = bench
    cfg = eval_cfg(tmp_path / "r", ann, vroot, backend="vllm")
    with pytest.raises(VLLMNotInstalledError, match="eval.backend=vllm needs vllm") as e:
        make_backend(cfg)
    assert "\n" not in str(e.value) and "eval.backend=hf" in str(e.value)


@pytest.mark.gpu
def test_vllm_backend_greedy_on_gpu(bench, tmp_path):
    pytest.importorskip("vllm")
    root, ann, vroot, _, _ = bench
    cfg = eval_cfg(tmp_path / "vllm", ann, vroot, kind="tvg", backend="vllm", limit=3,
                   max_new_tokens=16)
    cfg.model.dtype = "bfloat16"
    metrics = evaluate(cfg)
    assert metrics["n"] == 3
    lines = read_jsonl(tmp_path / "vllm" / "predictions.jsonl")
    assert [r["item_id"] for r in lines] == ["0", "1", "2"]
    assert all(isinstance(r["output"], str) for r in lines)
