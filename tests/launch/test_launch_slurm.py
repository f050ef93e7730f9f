"""launcher=slurm without a cluster: the sbatch script submitit would submit (nodes=2 x 8 GPUs),
the per-task commands, sweep expansion into distinct stable run directories, cluster profiles,
and the dry-run / missing `-m` behaviour of the entrypoint."""

from __future__ import annotations

import re

import pytest
from helpers_launch import cli, run_uses_run_job

from museg.launch.job import LaunchError, run_job
from museg.launch.preview import compose_job, launch_plan, preview, render_sbatch, sweep_jobs

SWEEP = ["launcher=slurm", "stage=1", "model=7b", "reward.weights.format=0.5,1.0",
         "reward.weights.local_matching=0.5,1.0"]


def _sbatch_lines(text: str) -> set[str]:
    return {ln.strip() for ln in text.splitlines() if ln.startswith("#SBATCH")}


def test_sbatch_for_two_nodes_of_eight_gpus(tmp_path):
    text = preview(["launcher=slurm", "launcher.nodes=2", "launcher.gpus_per_node=8",
                    "stage=1", "model=7b", f"paths.output_root={tmp_path}"], multirun=True)
    lines = _sbatch_lines(text)
    for want in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--signal=USR2@900",
                 "--requeue", "--open-mode=append", "--time=1440", "--cpus-per-task=10",
                 "--job-name=museg-default-train"):
        assert f"#SBATCH {want}" in lines, (want, sorted(lines))
    assert not any(ln.startswith("#SBATCH --array") for ln in lines)  # one job: no array
    assert not any("--mem" in ln for ln in lines)  # mem_gb: null -> the cluster's default
    submitit_dir = f"{tmp_path}/default/train/.submitit"
    assert f"#SBATCH --output={submitit_dir}/%j/%j_0_log.out" in lines
    srun = [ln for ln in text.splitlines() if ln.startswith("srun ")]
    assert len(srun) == 1
    assert srun[0].startswith("srun --unbuffered --output ")
    assert srun[0].endswith(f"-u -m submitit.core._submit {submitit_dir}/%j")
    assert "export SLURM_KILL_BAD_EXIT=1" in text  # a failing rank stops the step
    # the per-task command: 16 ranks, torch.distributed variables from SLURM's
    task = [ln for ln in text.splitlines() if ln.startswith("RANK=$SLURM_PROCID")]
    assert len(task) == 1
    assert "LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=16 LOCAL_WORLD_SIZE=8" in task[0]
    assert task[0].endswith("python -m museg.run launcher=local stage=1 model=7b "
                            f"paths.output_root={tmp_path}")
    assert f"run dir:   {tmp_path}/default/train/model=7b" in text


def test_render_sbatch_from_launcher_parameters(tmp_path):
    text = render_sbatch({"submitit_folder": str(tmp_path / "%j"), "nodes": 2,
                          "tasks_per_node": 8, "gpus_per_node": 8, "timeout_min": 60,
                          "signal_delay_s": 120, "partition": "gpu", "mem_gb": 400,
                          "qos": None, "additional_parameters": {"requeue": True}})
    lines = _sbatch_lines(text)
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
            "#SBATCH --time=60", "#SBATCH --signal=USR2@120", "#SBATCH --partition=gpu",
            "#SBATCH --mem=400GB", "#SBATCH --requeue"} <= lines
    assert not any("qos" in ln for ln in lines)
    with pytest.raises(ValueError, match="bogus"):
        render_sbatch({"submitit_folder": str(tmp_path), "bogus": 1})


def test_reward_weight_sweep_is_one_array_job_with_distinct_stable_run_dirs(tmp_path):
    jobs = sweep_jobs(SWEEP + [f"paths.output_root={tmp_path}"])
    assert len(jobs) == 4
    specs = [compose_job(j) for j in jobs]
    dirs = [s.run_dir for s in specs]
    assert len(set(dirs)) == 4
    for spec in specs:
        w = spec.cfg.reward.weights
        name = f"model=7b,reward.weights.format={w.format},reward.weights.local_matching=" \
               f"{w.local_matching}"
        assert spec.run_dir == f"{tmp_path}/default/train/{name}"
        assert spec.cfg.wandb.group == "default" and spec.cfg.wandb.job_type == "train"
    again = [compose_job(j).run_dir for j in sweep_jobs(SWEEP + [f"paths.output_root={tmp_path}"])]
    assert again == dirs  # no timestamps: a requeued job finds its directory
    text = preview(SWEEP + [f"paths.output_root={tmp_path}", "experiment_name=rw_sweep"])
    assert "#SBATCH --array=0-3%4" in _sbatch_lines(text)
    assert "#SBATCH --job-name=museg-rw_sweep-train" in _sbatch_lines(text)
    assert len(re.findall(r"^# job \d \(array task \d\)$", text, flags=re.M)) == 4
    assert text.count(f"{tmp_path}/rw_sweep/train/model=7b,reward.weights.format=0.5,"
                      "reward.weights.local_matching=1.0") == 1


def test_cluster_profile_and_command_line_overrides(tmp_path):
    spec = compose_job(["launcher=slurm_example", "hydra.launcher.partition=debug",
                        "launcher.nodes=4", f"paths.output_root={tmp_path}"])
    p = spec.launcher_params
    assert p["partition"] == "debug" and p["account"] == "my_project"
    assert p["nodes"] == 4 and p["tasks_per_node"] == p["gpus_per_node"] == 8
    assert p["additional_parameters"]["requeue"] is True
    assert spec.cfg.launcher.name == "slurm" and spec.cfg.launcher.nproc_per_node == 8
    lines = _sbatch_lines(render_sbatch(p))
    assert {"#SBATCH --partition=debug", "#SBATCH --nodes=4", "#SBATCH --qos=normal",
            "#SBATCH --mail-type=END,FAIL", "#SBATCH --time=2880"} <= lines


def test_launch_plan():
    assert launch_plan(["launcher=slurm", "launcher.dry_run=true"]).dry_run
    assert launch_plan(["launcher=slurm"]).submits
    assert launch_plan(["launcher=submitit_local"]).submits
    plan = launch_plan(["launcher.nproc_per_node=2"])
    assert not plan.submits and not plan.dry_run
    assert launch_plan(["launcher=nonexistent"]) == type(plan)()  # never raises


def test_slurm_launcher_refuses_to_run_on_the_login_node(capsys):
    cfg = compose_job(["launcher=slurm"]).cfg
    called = []
    with pytest.raises(LaunchError) as exc:
        run_job(cfg, called.append)
    assert exc.value.code == 2 and not called
    assert "add -m" in capsys.readouterr().err


@pytest.mark.skipif(not run_uses_run_job(), reason="needs museg.run -> museg.launch.job.run_job "
                    "(diff in the cluster helper's report)")
def test_cli_dry_run_prints_and_submits_nothing(tmp_path):
    res = cli(SWEEP + [f"paths.output_root={tmp_path}", "launcher.nodes=2", "launcher.dry_run=true",
                       f"paths.data_root={tmp_path}/nodata"], timeout=120)
    assert res.returncode == 0, res.stderr
    assert "#SBATCH --array=0-3%4" in res.stdout and "#SBATCH --nodes=2" in res.stdout
    assert res.stdout.count("RANK=$SLURM_PROCID") == 4
    assert not (tmp_path / "default").exists()  # nothing submitted, no sweep dir created
