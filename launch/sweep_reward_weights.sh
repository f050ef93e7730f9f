#!/usr/bin/env bash
# Reward-weight sweep of MUSEG stage 1 on SLURM: one job (8 GPUs) per combination, each in its own
# run directory under outputs/rw_sweep/train/, one wandb group "rw_sweep".
#   launch/sweep_reward_weights.sh hydra.launcher.partition=gpu hydra.launcher.account=me
#   launch/sweep_reward_weights.sh launcher=<your profile> launcher.dry_run=true   # print only
# Extra arguments are passed on as overrides (a later override wins).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m museg.run -m launcher=slurm stage=1 model=7b \
    experiment_name=rw_sweep wandb.mode=online \
    train.deepspeed=conf/deepspeed/zero3.json \
    reward.weights.format=0.5,1.0 \
    reward.weights.local_matching=0.5,1.0 \
    "$@"
