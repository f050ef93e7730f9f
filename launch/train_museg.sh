#!/usr/bin/env bash
# MUSEG recipe on SLURM: stage 1, then stage 2 from stage 1's final model (init_from defaults to
# the matching stage-1 run directory). Each command waits for its job, requeues included.
#   launch/train_museg.sh model=7b hydra.launcher.partition=gpu
#   launch/train_museg.sh model=3b launcher=<your profile>
# Extra arguments are passed to both stages (a later override wins).
set -euo pipefail
cd "$(dirname "$0")/.."
common=(launcher=slurm train.deepspeed=conf/deepspeed/zero3.json wandb.mode=online)
python -m museg.run -m "${common[@]}" stage=1 "$@"
python -m museg.run -m "${common[@]}" stage=2 "$@"
