"""launcher=local with launcher.nproc_per_node=2 runs the real trainer on 2 gloo ranks from the
command line: one group of G=4 completions is split over the ranks (2 each), gathered back into
one completions table and one summary with world size 2.

The numerical equivalence of a 2-rank step and a 1-process step on the same batch (positions,
rewards, advantages, loss, KL, weights) is tested by the trainer's own
tests/rl/test_trainer.py::test_two_process_group_split_matches_single_process; the local launcher's
rank environment by tests/launch/test_launch_job.py::test_local_launcher_two_gloo_processes.
"""

from __future__ import annotations

import json

import pytest
from helpers_launch import TINY_TRAIN, cli, run_uses_run_job


@pytest.mark.slow
@pytest.mark.skipif(not run_uses_run_job(), reason="needs museg.run -> museg.launch.job.run_job "
                    "(diff in the cluster helper's report)")
def test_cli_local_two_processes(tmp_path):
    res = cli([*TINY_TRAIN, "train.max_steps=2", "train.num_generations=4",
               "train.per_device_train_batch_size=2", "launcher.nproc_per_node=2",
               "launcher.dist_backend=gloo", f"paths.output_root={tmp_path}",
               "experiment_name=ddp"], timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = [p for p in (tmp_path / "ddp" / "train").iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 2 and not summary["preempted"]
    rows = [json.loads(ln) for ln in (run / "completions.jsonl").read_text().splitlines()]
    # step s: prompt s-1, its 4 completions (2 sampled on each rank) in one table
    assert [(r["step"], r["position"], r["generation"]) for r in rows] == \
        [(s, s - 1, g) for s in (1, 2) for g in range(4)]
    metrics = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["completion_length"] > 0 for m in metrics)
    log = (run / "run.log").read_text()
    assert "launcher=local: 2 processes" in log and "[rank 0]" in log  # ranks log into the run
