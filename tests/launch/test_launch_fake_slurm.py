"""launcher=slurm end to end on a fake single-machine SLURM (tests/helpers/helpers_launch_slurm.py): Hydra's
submitit plugin submits a 2-job reward-weight sweep as one job array through `sbatch`; each job runs
2 tasks under `srun` (SLURM_PROCID -> RANK, world size 2, gloo); job 0 gets the pre-timeout
signal mid-training, checkpoints, is requeued with `scontrol requeue` and resumes to the final
step; job 1 runs through."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_launch import REPO, TINY_TRAIN, run_uses_run_job
from helpers_launch_slurm import install, jobs, kill_all

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not run_uses_run_job(), reason="needs museg.run -> "
                                 "museg.launch.job.run_job (diff in the cluster helper's report)")]


def _steps(path: Path) -> list[int]:
    if not path.is_file():
        return []
    return [json.loads(ln)["step"] for ln in path.read_text().splitlines() if ln.strip()]


def test_slurm_array_sweep_with_requeue_on_a_fake_cluster(tmp_path):
    env = {**os.environ, **install(tmp_path / "slurm"), "HF_HUB_OFFLINE": "1",
           "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    total = 4
    out = tmp_path / "out"
    args = ["-m", "launcher=slurm", "launcher.gpus_per_node=2", "hydra.launcher.cpus_per_task=1",
            *TINY_TRAIN, f"train.max_steps={total}", "train.save_steps=100",
            f"paths.output_root={out}", "experiment_name=fake", "reward.weights.format=0.5,1.0"]
    proc = subprocess.Popen([sys.executable, "-m", "museg.run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "slurm" / "state"
    try:
        runs = out / "fake" / "train"
        first = None
        t0 = time.time()
        while time.time() - t0 < 600 and proc.poll() is None:
            cand = [p for p in runs.glob("*format=0.5*")] if runs.is_dir() else []
            if cand and (cand[0] / "submitit_job.json").is_file() and \
                    _steps(cand[0] / "metrics.jsonl"):
                first = json.loads((cand[0] / "submitit_job.json").read_text())["starts"][0]
                break
            time.sleep(0.5)
        assert first is not None, proc.communicate()[1][-3000:] if proc.poll() is not None else \
            "job 0 did not start training"
        os.kill(first["pid"], signal.SIGUSR2)  # SLURM's --signal=USR2@... on rank 0's node
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        t0 = time.time()  # results are written just before the job's processes exit
        while time.time() - t0 < 60 and any(r["state"] != "COMPLETED"
                                            for r in jobs(state).values()):
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.kill()
        kill_all(state)

    records = jobs(state)
    assert sorted(records) == ["1000_0", "1000_1"]  # one array job, two tasks
    assert records["1000_0"]["opts"]["array"] == "0-1%2"
    assert records["1000_0"]["opts"]["ntasks-per-node"] == "2"
    assert records["1000_0"]["requeued"] == 1 and records["1000_0"]["starts"] == 2
    assert "requeued" not in records["1000_1"] and records["1000_1"]["starts"] == 1
    assert {r["state"] for r in records.values()} == {"COMPLETED"}
    for fmt, n_starts in (("0.5", 2), ("1.0", 1)):
        (run,) = runs.glob(f"*reward.weights.format={fmt}*")
        starts = json.loads((run / "submitit_job.json").read_text())["starts"]
        assert len(starts) == n_starts
        assert {s["job_id"] for s in starts} == {f"1000_{0 if fmt == '0.5' else 1}"}
        assert all(s["world_size"] == 2 and s["master_addr"] == "localhost" for s in starts)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["step"] == total and summary["world_size"] == 2
        assert _steps(run / "metrics.jsonl") == list(range(1, total + 1))
        assert (summary["resumed_from"] is not None) == (n_starts == 2)
