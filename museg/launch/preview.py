"""``launcher.dry_run=true``: print the sbatch script and the per-task commands, submit nothing.

For ``launcher=slurm`` the sbatch text is the one submitit would submit (rendered by submitit's
own ``SlurmExecutor`` from the ``hydra.launcher`` parameters, a job array for a sweep), followed by
one block per job: its overrides, its run directory and the command each task runs with its
torch.distributed variables. For ``launcher=local`` it prints the per-rank commands and the
equivalent ``torchrun`` line; for ``launcher=submitit_local`` the per-task commands.

Wired into ``museg.run.main`` before Hydra starts (so nothing is submitted)::

    plan = launch_plan(overrides)          # LaunchPlan(dry_run=..., submits=...)
    if plan.dry_run:
        print(preview(overrides, multirun=True))
        return

Also usable directly::

    print(preview(["launcher=slurm", "launcher.nodes=2", "model=7b"], multirun=True))
    print(render_sbatch({"nodes": 2, "tasks_per_node": 8, "gpus_per_node": 8,
                         "submitit_folder": "/runs/.submitit/%j"}))
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from museg.config import compose_config, normalize_overrides
from museg.plan import plan_line

#: Launchers that submit jobs (through Hydra's multirun) instead of running in this process.
SUBMITTING_LAUNCHERS = ("slurm", "submitit_local")

__all__ = ["SUBMITTING_LAUNCHERS", "JobSpec", "LaunchPlan", "sweep_jobs", "compose_job", "render_sbatch", "preview",
           "launch_plan", "maybe_preview", "preview_from_cfg"]


@dataclass
class JobSpec:
    """One job of a (possibly one-job) sweep, resolved when composed (run names are lazy)."""

    overrides: list[str]
    cfg: DictConfig  # the job config without the `hydra` node, resolved
    launcher_params: dict[str, Any]  # hydra.launcher, resolved
    sweep_dir: str

    @property
    def run_dir(self) -> str:
        return str(self.cfg.run_dir)


def sweep_jobs(overrides: Sequence[str]) -> list[list[str]]:
    """Expand sweep overrides into one override list per job, in Hydra's (BasicSweeper) order.

    >>> sweep_jobs(["model=7b", "reward.weights.format=0.5,1.0", "seed=1,2"])[1]
    ['model=7b', 'reward.weights.format=0.5', 'seed=2']
    >>> len(sweep_jobs(["a=1,2", "b=3,4,5"]))
    6
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_job(overrides: Sequence[str]) -> JobSpec:
    """Compose one job's config the way Hydra will (with the ``hydra`` node, paths absolute)."""
    overrides = normalize_overrides(list(overrides))
    cfg = compose_config(overrides, return_hydra_config=True)
    # resolve now: ${museg.run_name:} reads the overrides of the job composed last
    data = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in ((k, cfg[k]) for k in cfg if k != "hydra")}
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    return JobSpec(overrides=overrides, cfg=OmegaConf.create(data),
                   launcher_params=params,  # type: ignore[arg-type]
                   sweep_dir=str(cfg.hydra.sweep.dir))


def _executor(launcher_params: Mapping[str, Any]) -> Any:
    """submitit's SlurmExecutor (minus its `srun` availability check) with these parameters."""
    from submitit.slurm.slurm import SlurmExecutor

    class PreviewSlurmExecutor(SlurmExecutor):
        @classmethod
        def affinity(cls) -> int:
            return 1

    # like submitit's AutoExecutor (what the Hydra plugin uses): None means "not set"
    params = {k: v for k, v in dict(launcher_params).items() if k != "_target_" and v is not None}
    folder = str(params.pop("submitit_folder", "submitit/%j"))
    max_num_timeout = int(params.pop("max_num_timeout", 0) or 0)
    ex = PreviewSlurmExecutor(folder=folder, max_num_timeout=max_num_timeout)
    ex.update_parameters(**ex._convert_parameters(params))
    return ex


def render_sbatch(launcher_params: Mapping[str, Any], n_jobs: int = 1) -> str:
    """The sbatch script submitit writes for these ``hydra.launcher`` parameters.

    ``n_jobs > 1`` renders the job array a sweep is submitted as (``--array=0-N%parallelism``).
    """
    from submitit.slurm.slurm import _make_sbatch_string

    ex = _executor(launcher_params)
    params = dict(ex.parameters)
    if n_jobs > 1:
        params["map_count"] = n_jobs
    return _make_sbatch_string(command=ex._submitit_command_str, folder=ex.folder, **params)


def _as_typed(override: str) -> str:
    """Undo museg.run's quoting of group choices for display (``stage='1'`` -> ``stage=1``).

    >>> _as_typed("stage='1'"), _as_typed("model=7b"), _as_typed("x='1'")
    ('stage=1', 'model=7b', "x='1'")
    """
    m = re.fullmatch(r"([+~]*stage)=(['\"])([A-Za-z0-9_.\-]+)\2", override)
    return f"{m.group(1)}={m.group(3)}" if m else override


def _override_list(spec: JobSpec, per_task: bool = False) -> list[str]:
    """The job's overrides without the dry-run flag; ``per_task``: as one rank run by hand."""
    out = []
    for o in map(_as_typed, spec.overrides):
        key = o.split("=", 1)[0].lstrip("+~")
        if key == "launcher.dry_run" or (per_task and (key == "launcher" or key.startswith(
                ("launcher.", "hydra.launcher", "hydra/launcher")))):
            continue
        out.append(o)
    if per_task:
        out.insert(0, "launcher=local")
    return out


def _user_overrides(spec: JobSpec, per_task: bool = False) -> str:
    return " ".join(shlex.quote(o) for o in _override_list(spec, per_task))


def _slurm_text(jobs: list[JobSpec], multirun: bool) -> str:
    params = jobs[0].launcher_params
    nodes = int(params["nodes"])
    per_node = int(params["tasks_per_node"])
    world = nodes * per_node
    lines = [f"# launcher=slurm dry run: {len(jobs)} job(s), {nodes} node(s) x {per_node} "
             f"task(s) = world size {world}; nothing submitted.",
             f"# sweep dir: {jobs[0].sweep_dir}"]
    if not multirun:
        lines.append("# (submitting needs Hydra's multirun: add -m)")
    lines += ["", "# ---- sbatch script " + "-" * 60, render_sbatch(params, len(jobs)).rstrip(),
              "# " + "-" * 78, ""]
    master = "$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)"
    for i, job in enumerate(jobs):
        lines += [f"# job {i}" + (f" (array task {i})" if len(jobs) > 1 else ""),
                  f"#   run dir:   {job.run_dir}",
                  f"#   overrides: {_user_overrides(job)}"]
        if str(job.cfg.task) == "train":  # the same figures as task=plan on this world size
            lines.append(f"#   plan:      {plan_line(job.cfg, world)}")
        lines += [
                  f"#   each of the {world} tasks (srun, one per GPU) runs the submitit pickle, "
                  "i.e. the equivalent of:",
                  f"RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE={world} "
                  f"LOCAL_WORLD_SIZE={per_node} MASTER_ADDR={master} MASTER_PORT=<20000-60000, "
                  f"from the job id> python -m museg.run {_user_overrides(job, per_task=True)}",
                  ""]
    return "\n".join(lines)


def _local_text(jobs: list[JobSpec]) -> str:
    # imported here: museg.launch.local imports torch, which a SLURM dry run never needs
    from museg.launch.local import local_commands, resolve_backend

    out = []
    for i, job in enumerate(jobs):
        n = int(job.cfg.launcher.nproc_per_node)
        backend = str(job.cfg.launcher.dist_backend)
        try:
            import torch

            cuda = torch.cuda.is_available()
        except ImportError:  # pragma: no cover
            cuda = False
        out += [f"# launcher=local dry run, job {i}: {n} process(es) on this machine "
                f"({resolve_backend(backend, cuda)}); run dir {job.run_dir}"]
        if n > 1:
            out += local_commands(_override_list(job), n)
            out.append(f"# equivalent: torchrun --standalone --nproc-per-node {n} -m museg.run "
                       f"{_user_overrides(job)}")
        else:
            out.append(f"python -m museg.run {_user_overrides(job)}")
        out.append("")
    return "\n".join(out)


def _submitit_local_text(jobs: list[JobSpec]) -> str:
    out = []
    for i, job in enumerate(jobs):
        params = job.launcher_params
        n = int(params["tasks_per_node"])
        out += [f"# launcher=submitit_local dry run, job {i}: {n} task(s) started by a local "
                f"submitit controller; logs in {params['submitit_folder']}",
                f"#   run dir: {job.run_dir}",
                f"{shlex.quote(sys.executable)} -u -m submitit.core._submit "
                f"{shlex.quote(str(params['submitit_folder']))}   # = python -m museg.run "
                f"{_user_overrides(job)}", ""]
    return "\n".join(out)


def with_config_sweep(overrides: Sequence[str]) -> list[str]:
    """``overrides`` preceded by the config's ``hydra.sweeper.params`` (``experiment=demo_ablation``
    sweeps its variants x seeds), as Hydra's BasicSweeper combines them: the command line wins."""
    try:
        first = normalize_overrides(sweep_jobs(overrides)[0])
        # BasicSweeper's params is Optional: null when the config sweeps nothing
        params = compose_config(first, return_hydra_config=True).hydra.sweeper.params
    except Exception:  # noqa: BLE001 - a config that does not compose is reported elsewhere
        return list(overrides)
    return [f"{k}={v}" for k, v in (params or {}).items()] + list(overrides)


def preview(overrides: Sequence[str], multirun: bool = True) -> str:
    """The dry-run text for these command-line overrides (sweeps expanded when ``multirun``)."""
    jobs = [compose_job(o) for o in (sweep_jobs(with_config_sweep(overrides)) if multirun
                                     else [list(overrides)])]
    name = str(jobs[0].cfg.launcher.name)
    if name == "slurm" or "SlurmLauncher" in str(jobs[0].launcher_params["_target_"]):
        return _slurm_text(jobs, multirun)
    if name == "submitit_local":
        return _submitit_local_text(jobs)
    return _local_text(jobs)


@dataclass(frozen=True)
class LaunchPlan:
    """What ``museg.run.main`` must do before handing over to Hydra."""

    dry_run: bool = False  # print preview(...) and exit
    submits: bool = False  # the launcher submits jobs: run Hydra in multirun mode (-m)


def launch_plan(overrides: Sequence[str]) -> LaunchPlan:
    """Dry run? Submitting launcher? From the first job's composed config; never raises.

    A config that does not compose gives the default plan: the caller's own checks report it.
    """
    try:
        first = sweep_jobs(overrides)[0]
        job_cfg = compose_job(first).cfg
        launcher = job_cfg.launcher
    except Exception:  # noqa: BLE001 - reported by museg.run's config check
        return LaunchPlan()
    if job_cfg.task == "plan":  # a plan of the launcher's world, computed here: never submitted
        return LaunchPlan()
    return LaunchPlan(dry_run=bool(launcher.dry_run),
                      submits=str(launcher.name) in SUBMITTING_LAUNCHERS)


def maybe_preview(overrides: Sequence[str], multirun: bool) -> bool:
    """Print the dry run and return True when the composed config has ``launcher.dry_run``."""
    plan = launch_plan(overrides)
    if not plan.dry_run:
        return False
    print(preview(overrides, multirun or plan.submits))
    return True


def preview_from_cfg(cfg: Any) -> str:
    """Dry-run text from inside a Hydra task function (fallback when main() did not intercept)."""
    try:
        hc = HydraConfig.get()
    except ValueError:
        hc = None
    overrides = list(hc.overrides.task) if hc is not None else []
    params = OmegaConf.to_container(hc.launcher, resolve=True) if hc is not None else {}
    job = JobSpec(overrides=overrides, cfg=OmegaConf.create(OmegaConf.to_container(cfg, resolve=True)),
                  launcher_params=params,  # type: ignore[arg-type]
                  sweep_dir=str(hc.sweep.dir) if hc is not None else "")
    name = str(cfg.launcher.name)
    if name == "slurm" and hc is not None:
        return _slurm_text([job], multirun=False)
    if name == "submitit_local" and hc is not None:
        return _submitit_local_text([job])
    return _local_text([job])


def _main(argv: list[str] | None = None) -> None:  # pragma: no cover - thin CLI
    """``python -m museg.launch.preview [overrides]``: print the dry run of a sweep."""
    print(preview(list(sys.argv[1:] if argv is None else argv), multirun=True))


if __name__ == "__main__":  # pragma: no cover
    _main()

