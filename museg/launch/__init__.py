"""Cluster launching: submitit/SLURM jobs, local multi-process runs, dry runs, preemption, wandb.

- :mod:`museg.launch.job` -- ``run_job(cfg, task_fn)``: what every launched process runs;
- :mod:`museg.launch.environment` -- submitit job detection, torch.distributed variables;
- :mod:`museg.launch.preemption` -- pre-timeout signal -> checkpoint request -> submitit requeue;
- :mod:`museg.launch.local` -- ``launcher=local``: N processes on this machine (gloo / nccl);
- :mod:`museg.launch.preview` -- ``launcher.dry_run=true``: sbatch script + per-task commands;
- :mod:`museg.launch.tracking` -- ``wandb_init_kwargs(cfg, run_id)``: group / job_type / tags.

Launcher choices live in ``conf/launcher/`` (``local``, ``slurm``, ``submitit_local`` and the
``slurm_example`` profile); examples and the "Running on a cluster" guide in ``launch/``::

    python -m museg.run -m launcher=slurm stage=1 model=7b \\
        reward.weights.format=0.5,1.0 reward.weights.local_matching=0.5,1.0
"""
