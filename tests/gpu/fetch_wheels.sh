#!/usr/bin/env bash
# Fetch the wheels of tests/gpu/wheels.txt (+ wheels-deepspeed.txt unless NO_DEEPSPEED=1) into
# wheels/ (git-ignored; the device tool carries it with carry=["wheels"]) for Python 3.12
# manylinux x86_64. Pins under a "# sdist only" comment are built here into pure-Python wheels
# (deepspeed with DS_BUILD_OPS=0: no CUDA needed here; its ops, if any, JIT-compile there).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=${WHEELS:-wheels}
mkdir -p "$DEST"
LISTS="tests/gpu/wheels.txt"
[ "${NO_DEEPSPEED:-0}" = 1 ] || LISTS="$LISTS tests/gpu/wheels-deepspeed.txt"
TARGET="--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
for list in $LISTS; do
  # binary pins: one pip download; sdist-only pins: pip wheel
  bin=$(awk '/^#/{if(/sdist only/)s=1; next} NF{if(!s)print; s=0}' "$list")
  src=$(awk '/^#/{if(/sdist only/)s=1; next} NF{if(s)print; s=0}' "$list")
  [ -z "$bin" ] || python3 -m pip download -q --no-deps --only-binary=:all: $TARGET -d "$DEST" $bin
  for pin in $src; do
    DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps --no-build-isolation --no-binary=:all: \
      -w "$DEST" "$pin"
  done
done
ls -l "$DEST"
du -cb "$DEST"/*.whl | tail -1
