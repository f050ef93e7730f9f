"""Seed aggregation of demo runs (museg.demo.seeds): mean ± sd per phase and per-run RL gains."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from museg.demo.seeds import load_summaries, seeds_report


def _summary(warmup: float, stage1: float, stage2: float) -> dict:
    return {"stages": {p: {"miou": v, "mean_r": v + 0.05, "mean_f1": v - 0.05}
                       for p, v in (("warmup", warmup), ("stage1", stage1), ("stage2", stage2))}}


def test_report_gives_mean_and_sample_sd_per_phase_and_paired_gains():
    report = seeds_report([_summary(0.6, 0.7, 0.8), _summary(0.8, 0.8, 0.7)])
    lines = report.splitlines()
    assert lines[0].startswith("2 runs")
    # warm-up mIoU 60 and 80 -> mean 70, sample sd 14.1
    assert "| warmup | 70.0 ± 14.1 | 75.0 ± 14.1 | 65.0 ± 14.1 |" in lines
    assert "| stage1 | +10.0, +0.0 | 5.0 ± 7.1 | 1/2 |" in lines
    assert "| stage2 | +20.0, -10.0 | 5.0 ± 21.2 | 1/2 |" in lines


def test_report_skips_phases_a_run_lacks():
    report = seeds_report([{"stages": {"warmup": {"miou": 0.5}}}])
    assert "| warmup | 50.0 ± 0.0 |" in report
    assert "| stage1 |" not in report


def test_load_summaries_takes_run_dirs_and_files(tmp_path):
    run = tmp_path / "seed=0"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(_summary(0.5, 0.6, 0.7)))
    assert load_summaries([run, run / "summary.json"])[0] == load_summaries([run])[0]
    with pytest.raises(FileNotFoundError, match="no demo summary"):
        load_summaries([tmp_path / "missing"])


def test_cli_prints_the_report_and_fails_in_one_line_on_a_missing_run(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(_summary(0.5, 0.6, 0.7)))
    ok = subprocess.run([sys.executable, "-m", "museg.demo_seeds", str(run)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "| stage2 | +20.0 |" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "museg.demo_seeds", str(tmp_path / "nope")],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "no demo summary" in bad.stderr
