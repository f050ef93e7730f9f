#!/usr/bin/env bash
# The one command on a lent GPU machine (repo root, $OUT set, no network): install the wheels that
# travelled in wheels/ (tests/gpu/wheels.txt) into a side directory, check that museg imports, run
# tests/gpu/check.py. Figures: $OUT/gpu_check.json; log: $OUT/gpu_check.log. Extra arguments go to
# check.py (e.g. --no-deepspeed, --budget-s 300, --override train.beta=0.0).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-$PWD/gpu_check_out}
WHEELS=${WHEELS:-wheels}
SITE=${SITE:-/tmp/museg-site}
mkdir -p "$OUT"
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" --find-links "$WHEELS" -r tests/gpu/wheels.txt || exit 3
  if ls "$WHEELS"/deepspeed-*.whl >/dev/null 2>&1; then  # optional: phase 2 (ZeRO-3)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" --find-links "$WHEELS" -r tests/gpu/wheels-deepspeed.txt || exit 3
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "run.sh: no wheels in $WHEELS/ (see tests/gpu/README.md); using what is installed" >&2
fi
export PYTHONPATH=".:tests/gpu:$PYTHONPATH" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 \
  WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
python3 -c "import museg.rl.trainer, museg.eval.runner, museg.run" || exit 4
timeout "${CHECK_TIMEOUT:-560}" python3 tests/gpu/check.py --out "$OUT" "$@" 2>&1 \
  | tee "$OUT/gpu_check.log"
