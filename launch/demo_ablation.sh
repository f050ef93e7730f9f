#!/usr/bin/env bash
# MUSEG's ablation rows on the embedded demo as a SLURM sweep: 5 variants x 3 RL seeds = 15 jobs
# (one per variant x seed, one GPU each), one shared warm-up; outputs/demo_ablation/demo/<run>.
# The submitting command waits for the jobs and then prints the comparison table; if it was
# interrupted (the jobs keep running), run launch/compare_sweep.sh when they have finished.
#   launch/demo_ablation.sh hydra.launcher.partition=gpu hydra.launcher.account=me
#   launch/demo_ablation.sh launcher.dry_run=true        # print the sbatch script and the 15 jobs
#   launch/demo_ablation.sh launcher.gpus_per_node=0     # CPU partition
# On one machine, without SLURM: python -m museg.run -m experiment=demo_ablation
# Extra arguments are passed on as overrides (a later override wins).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m museg.run -m experiment=demo_ablation launcher=slurm launcher.gpus_per_node=1 \
    hydra.launcher.timeout_min=120 "$@"
