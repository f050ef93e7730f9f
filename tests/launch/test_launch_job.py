"""run_job inside a submitit task (environment as submitit's local executor sets it): the
torch.distributed export, the job record, the preemption signal -> trainer flag -> requeue through
submitit's handler; launcher=local with 2 gloo processes; wandb settings."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers_launch import fail_on_rank_one, gather_ranks, group_of_the_launcher

from museg.config import compose_config
from museg.launch.environment import DIST_VARS, in_submitit_job
from museg.launch.job import run_job
from museg.launch.local import LocalLaunchError, launch_local, local_commands
from museg.launch.preemption import PreemptionHandler, preemption_signal
from museg.launch.preview import preview
from museg.launch.tracking import CHOICES_ENV, wandb_init_kwargs
from museg.rl.checkpoint_request import checkpoint_requested, clear_checkpoint_request


@pytest.fixture
def submitit_task(tmp_path, monkeypatch):
    """This process looks like task 1 of 2 of a submitit local job (what _submit sees)."""
    env = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_FOLDER": str(tmp_path / "submitit"),
           "SUBMITIT_LOCAL_JOB_ID": "4242", "SUBMITIT_LOCAL_NTASKS": "2",
           "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0",
           "SUBMITIT_LOCAL_GLOBALID": "0", "SUBMITIT_LOCAL_LOCALID": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for var in DIST_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RANK", "7")  # inherited from a submitting shell: must be replaced
    sig = preemption_signal()
    calls: list[int] = []

    def submitit_handler(signum, frame):  # stands for submitit's checkpoint_and_try_requeue
        calls.append(signum)

    previous = signal.signal(sig, submitit_handler)
    yield calls
    assert signal.getsignal(sig) is submitit_handler  # restored after the task
    signal.signal(sig, previous)
    for var in DIST_VARS:
        os.environ.pop(var, None)


def _cfg(tmp_path, task="train", **launcher):
    """The composed config of a 2-task ``launcher=submitit_local`` job."""
    return compose_config([f"task={task}", f"run_dir={tmp_path / 'run'}", "launcher=submitit_local",
                           "launcher.nproc_per_node=2", "launcher.dist_backend=auto",
                           "launcher.dry_run=false",
                           *(f"launcher.{k}={v}" for k, v in launcher.items())])


def test_submitit_task_exports_torch_distributed_and_records_the_job(tmp_path, submitit_task):
    assert in_submitit_job()
    seen = {}

    def task(cfg):
        seen.update({k: os.environ.get(k) for k in DIST_VARS})
        return {"ok": True}

    assert run_job(_cfg(tmp_path), task) == {"ok": True}
    assert seen["RANK"] == "0" and seen["WORLD_SIZE"] == "2" and seen["LOCAL_RANK"] == "0"
    assert seen["LOCAL_WORLD_SIZE"] == "2" and seen["MASTER_ADDR"]
    assert 20000 <= int(seen["MASTER_PORT"]) <= 60000  # from the job id: same on every task
    rec = json.loads((tmp_path / "run" / "submitit_job.json").read_text())
    assert [s["job_id"] for s in rec["starts"]] == ["4242"]
    assert rec["starts"][0]["stdout"].endswith("4242_0_log.out")
    assert submitit_task == []  # no signal, no requeue


def test_preemption_signal_checkpoints_then_requeues_through_submitit(tmp_path, submitit_task):
    sig = preemption_signal()
    steps = []

    def task(cfg):  # a training loop: the signal arrives mid-run, checked at a step boundary
        for step in range(1, 10):
            if checkpoint_requested():
                clear_checkpoint_request()
                return {"preempted": True, "step": step - 1}
            steps.append(step)
            if step == 3:
                os.kill(os.getpid(), sig)
                assert submitit_task == []  # submitit's handler did not run mid-step
        return {"preempted": False, "step": 9}

    out = run_job(_cfg(tmp_path), task)
    assert out == {"preempted": True, "step": 3} and steps == [1, 2, 3]
    assert submitit_task == [int(sig)]  # then handed over to submitit: checkpoint() + requeue


def test_finished_training_is_not_requeued(tmp_path, submitit_task):
    out = run_job(_cfg(tmp_path), lambda cfg: {"preempted": False, "step": 5})
    assert out["step"] == 5 and submitit_task == []


def test_failure_on_one_rank_of_a_multi_rank_job_exits_nonzero(tmp_path, submitit_task):
    def task(cfg):
        raise RuntimeError("boom")

    with pytest.raises(SystemExit) as exc:  # Hydra would swallow an exception: srun must see it
        run_job(_cfg(tmp_path), task)
    assert exc.value.code == 1


def test_single_process_tasks_run_on_rank_zero_only(tmp_path, submitit_task, monkeypatch):
    seen = []

    def task(cfg):
        seen.append((os.environ["RANK"], os.environ["WORLD_SIZE"]))
        return "evaluated"

    assert run_job(_cfg(tmp_path, task="eval"), task) == "evaluated"
    assert seen == [("0", "1")]  # rank 0 alone, as a 1-process run
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_LOCALID", "1")
    assert run_job(_cfg(tmp_path, task="eval"), task) is None and len(seen) == 1


def test_handler_outside_a_job_only_flags():
    before = signal.getsignal(signal.SIGUSR1)
    hits = []
    h = PreemptionHandler(lambda: hits.append(1), signum=signal.SIGUSR1).install()
    os.kill(os.getpid(), signal.SIGUSR1)
    assert h.received and hits == [1]
    h.requeue()  # no submitit handler before us: nothing to requeue, no exit
    assert signal.getsignal(signal.SIGUSR1) == before


def test_local_launcher_two_gloo_processes(tmp_path):
    cfg = compose_config(["task=train", "seed=5"])  # gather_ranks all-gathers cfg.seed
    out = launch_local(gather_ranks, cfg, nproc=2, log_file=tmp_path / "run.log")
    assert out["rank"] == 0 and out["world_size"] == 2 and out["backend"] == "gloo"
    assert out["gathered"] == [[0.0, 5.0], [1.0, 5.0]]
    if "OMP_NUM_THREADS" not in os.environ:  # torchrun's rule, set for the ranks only
        assert out["omp"] == str(max(1, (os.cpu_count() or 1) // 2))
    assert "RANK" not in os.environ


def test_local_launcher_with_a_backend_owns_the_process_group():
    out = launch_local(group_of_the_launcher, compose_config(["task=train"]), nproc=2,
                       backend="gloo")
    assert out == {"existed": True, "owned": False, "backend": "gloo", "world_size": 2}


@pytest.mark.slow
def test_local_launcher_reports_the_failing_rank():
    with pytest.raises(LocalLaunchError, match="rank 1 failed: ValueError: rank one is broken"):
        launch_local(fail_on_rank_one, compose_config(["task=train"]), nproc=2)


def test_local_dry_run_prints_per_rank_commands(tmp_path, capsys):
    cfg = compose_config(["task=train", f"run_dir={tmp_path}", "launcher=local",
                          "launcher.nproc_per_node=2", "launcher.dist_backend=gloo",
                          "launcher.dry_run=true"])
    assert run_job(cfg, lambda c: pytest.fail("dry run must not run the task")) is None
    out = capsys.readouterr().out
    assert "2 process(es) on this machine (gloo)" in out
    assert out.count("WORLD_SIZE=2 MASTER_ADDR=127.0.0.1") == 2
    assert local_commands(["model=tiny"], 3)[2].startswith("RANK=2 LOCAL_RANK=2 WORLD_SIZE=3 ")
    text = preview(["launcher.nproc_per_node=2", "launcher.dry_run=true", "stage=2"],
                   multirun=False)
    ranks = [ln for ln in text.splitlines() if ln.startswith("RANK=")]
    assert len(ranks) == 2 and all(ln.endswith("python -m museg.run launcher.nproc_per_node=2 "
                                               "stage=2") for ln in ranks)  # runnable as printed


def test_wandb_settings_group_job_type_tags(monkeypatch):
    cfg = compose_config(["launcher=slurm", "model=7b", "stage=2", "experiment_name=rw_sweep",
                          "reward.weights.format=0.5", "wandb.tags=[paper]"])
    monkeypatch.setenv(CHOICES_ENV, json.dumps({"model": "7b", "stage": "2", "reward": "phase2",
                                                "hydra/launcher": "submitit_slurm"}))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    kw = wandb_init_kwargs(cfg, run_id="r1d")
    assert kw["group"] == "rw_sweep" and kw["job_type"] == "train"
    assert kw["name"] == "model=7b,reward.weights.format=0.5,stage=2"
    assert kw["tags"] == ["paper", "model=7b", "stage=2", "reward=phase2", "data=museg_stage2",
                          "launcher=slurm"]
    assert kw["id"] == "r1d" and kw["resume"] == "allow" and kw["mode"] == "disabled"
    assert kw["config"]["reward"]["weights"]["format"] == 0.5
    assert kw["config"]["hydra_choices"]["reward"] == "phase2"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_init_kwargs(cfg)["mode"] == "offline"
