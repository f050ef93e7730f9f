#!/usr/bin/env bash
# Compare the finished runs of a sweep (any multirun directory of train, eval or demo runs):
# writes compare.md, compare.csv and plots into that directory and prints the table. Unfinished
# runs are skipped and counted, so it can be run while a sweep is still going.
#   launch/compare_sweep.sh                                   # the demo ablation, vs the full recipe
#   launch/compare_sweep.sh outputs/rw_sweep/train compare.baseline=reward.weights.format=1.0
#   launch/compare_sweep.sh outputs/default/eval compare.wandb=true wandb.mode=online
# Extra arguments are passed on as overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-outputs/demo_ablation/demo}"
[[ $# -gt 0 ]] && shift
extra=()
if [[ "$runs" == *demo_ablation* && "$*" != *compare.baseline=* ]]; then
    extra=(compare.baseline=demo.variant=full)
fi
exec python -m museg.run task=compare "compare.runs=$runs" "${extra[@]}" "$@"
