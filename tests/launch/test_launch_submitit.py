"""Real submitit jobs on this machine (launcher=submitit_local = the SLURM code path): a 2-job
sweep lands in two stable run directories with the right overrides; a 2-job sweep of the tiny
trainer completes; a job signalled mid-training checkpoints, is requeued by submitit and resumes
to the same final step with every data position used exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers_launch import REPO, TINY_TRAIN, cli, run_uses_run_job

pytestmark = pytest.mark.skipif(not run_uses_run_job(), reason="needs museg.run -> "
                                "museg.launch.job.run_job (diff in the cluster helper's report)")


def _reference_predictions(path: Path) -> None:
    cases = [([[0.0, 10.0]], "0-5"), ([[2.0, 4.0]], "2-4")]
    data = [{"video": f"v{i}.mp4", "question": f"q{i}", "groundtruth": gt,
             "result": {"output": a, "conversation": ["user: <video>q",
                                                      f"assistant: <answer>{a}</answer>"]}}
            for i, (gt, a) in enumerate(cases)]
    path.write_text(json.dumps(data))


def _overrides(run_dir: Path) -> list[str]:
    return yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())


def test_submitit_sweep_writes_distinct_run_dirs(tmp_path):
    pred = tmp_path / "pred.json"
    _reference_predictions(pred)
    res = cli(["launcher=submitit_local", "task=score", "benchmark=charades_sta",  # no -m: implied
               f"eval.predictions={pred}", f"paths.output_root={tmp_path}/out",
               "experiment_name=sweep", "seed=1,2"], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    sweep = tmp_path / "out" / "sweep" / "score"
    runs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    base = f"benchmark=charades_sta,eval.predictions={str(pred).replace('/', '_')}"
    assert [p.name for p in runs] == [f"{base},seed=1", f"{base},seed=2"]
    for seed, run in zip((1, 2), runs, strict=True):
        assert f"seed={seed}" in _overrides(run)
        assert json.loads((run / "results.json").read_text())["metrics"]["n"] == 2
        starts = json.loads((run / "submitit_job.json").read_text())["starts"]
        assert len(starts) == 1 and starts[0]["world_size"] == 1
        assert Path(starts[0]["stdout"]).is_file()  # submitit's log of this job
    assert len(list((sweep / ".submitit").glob("*/*_submitted.pkl"))) == 2


@pytest.mark.slow
def test_submitit_sweep_of_the_tiny_trainer(tmp_path):
    res = cli(["-m", "launcher=submitit_local", *TINY_TRAIN, "train.max_steps=2",
               f"paths.output_root={tmp_path}", "experiment_name=rw",
               "reward.weights.format=0.5,1.0"], timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p for p in (tmp_path / "rw" / "train").iterdir() if p.is_dir()
                  and not p.name.startswith("."))
    assert len(runs) == 2
    for fmt, run in zip(("0.5", "1.0"), runs, strict=True):
        assert f"reward.weights.format={fmt}" in run.name
        assert f"reward.weights.format={fmt}" in _overrides(run)
        summary = json.loads((run / "summary.json").read_text())
        assert summary["step"] == 2 and not summary["preempted"]
        assert (run / "final" / "config.json").is_file()
        cfg = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
        assert cfg["reward"]["weights"]["format"] == float(fmt)


def _wait_for(pred, timeout: float, proc: subprocess.Popen, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        value = pred()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"submitter exited ({proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def _steps(path: Path) -> list[int]:
    if not path.is_file():
        return []
    return [json.loads(ln)["step"] for ln in path.read_text().splitlines() if ln.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("ntasks", [1, 2])
def test_preempted_job_checkpoints_requeues_and_resumes(tmp_path, ntasks):
    total = 5
    args = ["-m", "launcher=submitit_local", f"launcher.nproc_per_node={ntasks}", *TINY_TRAIN,
            f"train.max_steps={total}", "train.save_steps=100", f"paths.output_root={tmp_path}",
            "experiment_name=preempt"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "PYTHONPATH": str(REPO)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, "-m", "museg.run", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    train_dir = tmp_path / "preempt" / "train"

    def run_dir():
        runs = [p for p in train_dir.glob("*") if p.is_dir() and not p.name.startswith(".")] \
            if train_dir.is_dir() else []
        return runs[0] if runs and (runs[0] / "submitit_job.json").is_file() else None

    run = _wait_for(run_dir, 300, proc, "the job to start")
    _wait_for(lambda: _steps(run / "metrics.jsonl"), 600, proc, "the first training step")
    first = json.loads((run / "submitit_job.json").read_text())["starts"][0]
    sig = signal.SIGUSR2 if os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2") == "USR2" else \
        getattr(signal, "SIG" + os.environ["SUBMITIT_PREEMPT_SIGNAL"])
    os.kill(first["pid"], sig)  # as SLURM does before the time limit (rank 0 only here)
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the requeued job did not finish")
    assert proc.returncode == 0, err[-3000:]

    starts = json.loads((run / "submitit_job.json").read_text())["starts"]
    assert len(starts) == 2 and starts[0]["job_id"] == starts[1]["job_id"]  # requeued job
    assert starts[1]["pid"] != starts[0]["pid"] and starts[1]["world_size"] == ntasks
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == total and not summary["preempted"]
    resumed = Path(summary["resumed_from"])
    k = int(resumed.name.split("-")[1])
    assert 1 <= k < total and (resumed / "COMPLETE").is_file()
    assert _steps(run / "metrics.jsonl") == list(range(1, total + 1))  # each step once
    # data: every completion is logged with its global prompt position; a step takes
    # P = 2 completions x ntasks / G=2 prompts, so step s uses positions [(s-1)P, sP) exactly once
    rows = [json.loads(ln) for ln in (run / "completions.jsonl").read_text().splitlines()]
    by_step: dict[int, list[tuple[int, int]]] = {}
    for r in rows:
        by_step.setdefault(r["step"], []).append((r["position"], r["generation"]))
    assert by_step == {s: [(p, g) for p in range((s - 1) * ntasks, s * ntasks) for g in (0, 1)]
                       for s in range(1, total + 1)}
    logs = Path(first["stdout"]).read_text() + Path(first["stderr"]).read_text()
    assert "Requeued job" in logs  # submitit's own requeue, after our checkpoint
