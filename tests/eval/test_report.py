"""Reports: paper column order, every number-affecting setting in results.json, plots, and the
benchmark=all suite's combined table."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from museg.config import compose_config
from museg.eval.report import PAPER_COLUMNS, collect_settings, paper_table, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_paper_table_column_order_and_scaling():
    rows = {"MUSEG-7B": {
        "et_bench_subset": {"ref_acc": 0.608, "gnd_f1": 0.388, "cap_f1": 0.251, "com_rec": 0.19},
        "thumos15": {"mean_f1": 0.293},
        "charades_sta": {"miou": 0.597, "r@0.3": 0.8, "r@0.5": 0.6, "r@0.7": 0.3},
        "perception_test": {"mean_f1": 0.317},
        "thumos14": {"mean_f1": 0.297},
        "et_bench": {"ref_acc": 0.619, "gnd_f1": 0.375, "cap_f1": 0.237, "com_rec": 0.24},
    }}
    table = paper_table(rows)
    header, _, row = table.splitlines()
    titles = [c.strip() for c in header.strip("|").split("|")][1:]
    assert titles == [c[0] for c in PAPER_COLUMNS]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:8] == ["MUSEG-7B", "59.7", "80.0", "60.0", "30.0", "29.7", "29.3", "31.7"]
    # E.T. Bench AVG is the mean of REF, GND, CAP, COM (paper: 36.8 and 35.9)
    assert cells[titles.index("E.T. AVG") + 1] == "36.8"
    assert cells[titles.index("Subset AVG") + 1] == "35.9"
    assert paper_table({"m": {"unknown_bench": {"x": 1}}}) == ""


def test_write_report_records_settings_and_plots(tmp_path):
    model_dir = tmp_path / "models--Org--M" / "snapshots" / ("ab" * 20)
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({"_name_or_path": "Org/M-7B",
                                                       "model_type": "qwen2_5_vl"}))
    cfg = OmegaConf.merge(compose_config(["task=eval", "model=7b"]), {
        "seed": 3,
        "model": {"name": "7b", "path": str(model_dir), "dtype": "bfloat16", "attention": "sdpa"},
        "video": {"backend": "torchcodec", "on_failure": "replace"},
        "eval": {"benchmark": "charades_sta", "kind": "tvg", "annotation": None, "subset": None,
                 "template": "stage1", "do_sample": False, "max_new_tokens": 512,
                 "batch_size": 4, "backend": "hf", "limit": None},
    })
    spec = {"fps": 2.0, "min_pixels": 12544, "total_pixels": 2809856, "max_frames": None}
    settings = collect_settings(cfg, video_spec=spec)
    records = [{"item_id": str(i), "answer": a, "groundtruth": [[0.0, 10.0]]}
               for i, a in enumerate(["0-5", "0-10", "", "2-9"])]
    metrics = {"n": 4, "miou": 0.575, "r@0.1": 0.75, "r@0.3": 0.75, "r@0.5": 0.75,
               "r@0.7": 0.5, "mean_r": 0.6875}
    write_report(tmp_path / "out", "charades_sta", "tvg", metrics, settings, records)

    res = json.loads((tmp_path / "out" / "results.json").read_text())
    s = res["settings"]
    assert res["metrics"]["miou"] == 0.575 and res["n_items"] == 4
    assert s["model"]["path"] == str(model_dir) and s["model"]["_name_or_path"] == "Org/M-7B"
    assert s["model"]["snapshot"] == "ab" * 20
    assert s["video"]["min_pixels"] == 12544 and s["video"]["total_pixels"] == 2809856
    assert s["video"]["fps"] == 2.0 and "max_frames" in s["video"]
    assert s["decoding"] == {"do_sample": False, "max_new_tokens": 512, "batch_size": 4,
                             "backend": "hf"}
    assert s["museg_version"] and "commit" in s["museg_git"] and s["template_text"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| " + "ab" * 20 in md  # row label: the model directory's name
    assert "Charades-STA mIoU" in md and "57.5" in md and "min_pixels" in md
    for png in ("iou_hist.png", "recall_vs_threshold.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == PNG

    tal = {"n": 2, "f1@0.1": 0.9, "f1@0.3": 0.8, "f1@0.5": 0.5, "f1@0.7": 0.1, "mean_f1": 0.575}
    write_report(tmp_path / "tal", "thumos14", "tal", tal, settings, records[:2])
    assert (tmp_path / "tal" / "f1_vs_threshold.png").read_bytes()[:8] == PNG
    assert "THUMOS14 F1" in (tmp_path / "tal" / "results.md").read_text()


def test_suite_runs_benchmarks_into_subdirs_with_one_table(tmp_path):
    from helpers_eval import eval_cfg, grounding_bench

    ann, vroot = grounding_bench(tmp_path, n_items=2)
    cfg = eval_cfg(tmp_path / "suite", ann, vroot, kind="suite", benchmark="all",
                   max_new_tokens=8)
    cfg.eval.suite = ["charades_sta", "thumos14", "perception_test"]
    nodes = {"charades_sta": {"benchmark": "charades_sta", "kind": "tvg", "annotation": str(ann)},
             "thumos14": {"benchmark": "thumos14", "kind": "tal", "annotation": str(ann)},
             "perception_test": {"benchmark": "perception_test", "kind": "tal",
                                 "annotation": str(tmp_path / "absent.json")}}
    from museg.eval.runner import run_suite

    results = run_suite(cfg, benchmark_cfgs=nodes)
    assert set(results) == {"charades_sta", "thumos14"}
    assert results["charades_sta"]["n"] == 2 and "mean_f1" in results["thumos14"]
    for name in results:
        assert (tmp_path / "suite" / name / "predictions.jsonl").is_file()
        assert (tmp_path / "suite" / name / "results.json").is_file()
    combined = json.loads((tmp_path / "suite" / "results.json").read_text())
    assert "perception_test" in combined["skipped"]
    md = (tmp_path / "suite" / "results.md").read_text()
    assert md.index("Charades-STA mIoU") < md.index("THUMOS14 F1")
    assert "perception_test" in md
    # a second call resumes everything: nothing is recomputed, same numbers
    before = (tmp_path / "suite" / "charades_sta" / "predictions.jsonl").read_text()
    assert run_suite(cfg, benchmark_cfgs=nodes) == results
    assert (tmp_path / "suite" / "charades_sta" / "predictions.jsonl").read_text() == before


def test_suite_reads_conf_benchmark_group(tmp_path):
    from museg.eval.suite import benchmark_node, suite_configs

    node = benchmark_node("thumos14")
    assert node.kind == "tal" and node.benchmark == "thumos14"
    cfg = compose_config(["task=eval", "benchmark=all", "paths.data_root=/data",
                          "paths.video_root=/data/videos", "eval.batch_size=7",
                          "eval.suite=[thumos14,et_bench_subset]"])
    cfg.run_dir = str(tmp_path)
    try:
        subs = dict(suite_configs(cfg))
    except Exception as e:  # resolvers come from museg.config.naming
        pytest.fail(f"suite_configs failed: {e}")
    assert subs["thumos14"].eval.annotation == "/data/eval/thumos14.json"
    assert subs["thumos14"].eval.batch_size == 7
    assert subs["et_bench_subset"].eval.subset == "/data/eval/et_bench_subset.json"
    assert subs["et_bench_subset"].eval.video_root == "/data/videos/et_bench_processed"
    assert subs["et_bench_subset"].run_dir == str(tmp_path / "et_bench_subset")
