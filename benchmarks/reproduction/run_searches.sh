#!/usr/bin/env bash
# The S4D-ListOps searches of benchmarks/REPRODUCTION.md, with s4op commands only.
# Run from the folder holding data/listops and runs/baseline-listops-s4d (see REPRODUCTION.md).
# Usage: SEEDS=3 PREFIX= run_searches.sh NAME...   (the 5-seed round: SEEDS=5 PREFIX=5seeds-)
set -u
S4OP=${S4OP:-s4op}
SEEDS=${SEEDS:-3}
PREFIX=${PREFIX:-}
COMMON=(--storage runs/searches
  --set task.data_dir=data/listops
  --set baseline.checkpoint=runs/baseline-listops-s4d
  --set search.rates=[0.1,0.3,0.5,0.7,0.9]
  --set search.seeds=$SEEDS
  --set search.finetune.epochs=1)
for name in "$@"; do
  case $name in
    a-incr-depth-random)          extra=() ;;
    b-incr-uniform-random)        extra=(--set search.allocation.policy=uniform) ;;
    c-oneshot-depth-random)       extra=(--set search.mode=one-shot) ;;
    d-incr-depth-importance)      extra=(--set search.selection.policy=importance) ;;
    e-oneshot-uniform-random)     extra=(--set search.mode=one-shot --set search.allocation.policy=uniform) ;;
    f-oneshot-randomalloc-random) extra=(--set search.mode=one-shot --set search.allocation.policy=random) ;;
    *) echo "unknown search $name"; exit 2 ;;
  esac
  echo "== $PREFIX$name start $(date -u +%FT%TZ)"
  start=$(date +%s)
  "$S4OP" search cpu-listops-s4d --name "$PREFIX$name" "${COMMON[@]}" "${extra[@]}"
  echo "== $PREFIX$name rc=$? wall=$(( $(date +%s) - start ))s end $(date -u +%FT%TZ)"
done
