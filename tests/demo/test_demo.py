"""The embedded default runs end to end through the real entrypoint (shortened here; full = slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from museg.rl.warmup import target_completion

SHORT = [
    "data.synthetic.n_train_videos=3", "data.synthetic.n_heldout_videos=2",
    "data.synthetic.duration_range=[6,8]", "data.synthetic.gap_range=[2,4]",
    "demo.warmup_steps=4", "demo.warmup_batch_size=2",
    "train.max_steps=2", "train.num_generations=2", "train.per_device_train_batch_size=4",
    "train.max_completion_length=12", "train.save_steps=1", "eval.max_new_tokens=12",
    "eval.batch_size=4",
]


def _run(args: list[str], tmp_path: Path, timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, MUSEG_OUTPUT_ROOT=str(tmp_path / "outputs"),
               MUSEG_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, "-m", "museg.run", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=tmp_path)


def _check_artefacts(tmp_path: Path, run_name: str) -> dict:
    root = tmp_path / "outputs" / "demo"
    demo_dir = root / "demo" / run_name
    summary = json.loads((demo_dir / "summary.json").read_text())
    assert set(summary["stages"]) == {"warmup", "stage1", "stage2"}
    for metrics in summary["stages"].values():
        assert {"miou", "mean_r", "mean_f1"} <= set(metrics)
        assert all(0.0 <= metrics[k] <= 1.0 for k in ("miou", "mean_r", "mean_f1"))
    assert summary["wall_seconds"] > 0
    for phase in ("stage1", "stage2"):
        gain = summary["gain_vs_warmup"][phase]
        assert gain["low"] <= gain["gain"] <= gain["high"]
        assert gain["gain"] == pytest.approx(
            summary["stages"][phase]["miou"] - summary["stages"]["warmup"]["miou"], abs=1e-6)
    base = summary["baseline"]
    assert 0.0 <= base["miou"] <= 1.0
    assert base["n"] == 0 or base["constant_answer"][0] < base["constant_answer"][1]
    for png in ("reward_curves.png", "heldout_miou.png"):
        assert (demo_dir / png).read_bytes()[:4] == b"\x89PNG"
    for stage in ("stage1", "stage2"):
        train_dir = root / "train" / f"{run_name}-{stage}"
        assert (train_dir / "final" / "config.json").is_file()
        assert any((train_dir / "checkpoints").glob("step-*/COMPLETE"))
        # the stage ran through the real entrypoint: Hydra wrote its composed config there
        cfg_text = (train_dir / ".hydra" / "config.yaml").read_text()
        assert f"id: {stage[-1]}" in cfg_text
    for phase in ("warmup", "stage1", "stage2"):
        eval_dir = root / "eval" / f"{run_name}-{phase}"
        assert (eval_dir / "predictions.jsonl").is_file() and (eval_dir / "results.json").is_file()
    return summary


def test_short_demo_runs_every_stage_through_the_entrypoint(tmp_path):
    out = _run(["experiment=demo", *SHORT], tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run_name = [ln for ln in out.stdout.splitlines() if "summary:" in ln][-1]
    run_name = Path(run_name.split("summary:")[1].strip()).parent.name
    _check_artefacts(tmp_path, run_name)
    assert "| stage2 |" in out.stdout


@pytest.mark.slow
def test_full_default_demo_with_no_arguments(tmp_path):
    out = _run([], tmp_path, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = _check_artefacts(tmp_path, "default")
    assert summary["wall_seconds"] < 600


def test_warmup_target_cites_its_timestamps():
    from museg.rewards import format_reward, global_matching_reward

    target = target_completion([[1.0, 3.5], [6, 8]])
    assert format_reward([target], timestamp_aware=True) == [1.0]
    assert global_matching_reward([target], [[[1.0, 3.5], [6, 8]]])[0] == pytest.approx(1.0, 1e-5)


def _predictions(path: Path, answers: list[str]) -> Path:
    gts = [[[0.0, 2.0]], [[2.0, 4.0]], [[4.0, 8.0]]]
    rows = [{"item_id": str(i), "answer": a, "groundtruth": g, "extra": {"task": "tvg"}}
            for i, (a, g) in enumerate(zip(answers, gts, strict=True))]
    rows.append({"item_id": "tal", "answer": "0-2", "groundtruth": [[0, 2]],
                 "extra": {"task": "tal"}})
    path.mkdir()
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gains_vs_warmup_pairs_tvg_items_by_id(tmp_path):
    from museg.demo.report import gains_vs_warmup, tvg_item_ious

    warm = _predictions(tmp_path / "w", ["0-2", "0-2", "4-6"])      # IoU 1, 0, 0.5
    stage = _predictions(tmp_path / "s", ["0-2", "2-4", "4-8"])     # IoU 1, 1, 1
    assert tvg_item_ious(warm / "predictions.jsonl") == {"0": 1.0, "1": 0.0, "2": 0.5}
    gains = gains_vs_warmup({"warmup": warm, "stage1": stage})
    assert set(gains) == {"stage1"}
    assert gains["stage1"]["gain"] == pytest.approx(0.5) and gains["stage1"]["n"] == 3


@pytest.mark.slow
def test_multirun_over_seeds_then_seed_report(tmp_path):
    """README's recipe: ``-m experiment=demo seed=0,1`` then ``python -m museg.demo_seeds``."""
    out = _run(["-m", "experiment=demo", "seed=0,1", *SHORT], tmp_path, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "outputs" / "demo" / "demo").iterdir() if p.is_dir())
    assert len(runs) == 2
    summaries = [_check_artefacts(tmp_path, run.name) for run in runs]
    assert summaries[0]["stages"]["warmup"] == summaries[1]["stages"]["warmup"]
    # one warm-up model for both seeds (demo.warmup_seed): the same weights, byte for byte
    weights = [sorted((run / "warmup_model").glob("*.safetensors")) for run in runs]
    assert weights[0] and [w.read_bytes() for w in weights[0]] == [w.read_bytes() for w in weights[1]]
    report = subprocess.run([sys.executable, "-m", "museg.demo_seeds", *map(str, runs)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0 and report.stdout.startswith("2 runs")
