#!/usr/bin/env bash
# The budget-conditioned warm-start model, end to end:
#   1. a solver-labelled data set over the budget range (training/budget-data.yaml; labels by the
#      default solver), resumable, stopped (resumably) after GEN_TIMEOUT seconds if set;
#   2. training to a wall-clock budget of MINUTES (training/budget.yaml; the CRB loss on UNLABELLED
#      extra geometries of the same distribution, the labels for validation and the test split);
#   3. test-split metrics of the final model (network alone) -> $RUNS/test-metrics.json.
#
#   bash scripts/train_budget.sh
#
# Environment (defaults in brackets): WORKERS label processes [all cores], NUM labelled instances
# [1024], CONFIG data set config [training/budget-data.yaml], SHARD_SIZE [32], MINUTES training budget [2], GEN_TIMEOUT seconds [0: none], UNLABELLED [65536], DATA
# [data/budget], RUNS [runs/budget], PYTHON [python], ACCEL accelerator [auto]. Rerunning continues
# a killed data set and starts a new training version (resume a killed training with
# `python -m irs_torch.learn.train fit --config $RUNS/config.yaml --ckpt_path .../last.ckpt`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORKERS=${WORKERS:-$(nproc)}
NUM=${NUM:-1024}
CONFIG=${CONFIG:-training/budget-data.yaml}
SHARD_SIZE=${SHARD_SIZE:-32}
MINUTES=${MINUTES:-2}
GEN_TIMEOUT=${GEN_TIMEOUT:-0}
UNLABELLED=${UNLABELLED:-65536}
DATA=${DATA:-data/budget}
RUNS=${RUNS:-runs/budget}
ACCEL=${ACCEL:-auto}
export PYTHONUNBUFFERED=1

echo "== 1. labels: $NUM instances, $WORKERS workers ($(date -u +%T))"
gen=("$PY" -m irs_torch dataset generate --config "$CONFIG" --num "$NUM" --out "$DATA"
     --shard-size "$SHARD_SIZE" --workers "$WORKERS" --no-progress)
if [[ "$GEN_TIMEOUT" != 0 ]]; then
  timeout --signal=TERM "$GEN_TIMEOUT" "${gen[@]}" || echo "label generation stopped after ${GEN_TIMEOUT} s (resumable)"
else
  "${gen[@]}"
fi
"$PY" -m irs_torch dataset info "$DATA" || true

echo "== 2. training: $MINUTES min on $ACCEL ($(date -u +%T))"
mkdir -p "$RUNS"
"$PY" - "$RUNS/config.yaml" "$MINUTES" "$DATA" "$RUNS" "$UNLABELLED" "$WORKERS" "$ACCEL" <<'PYEOF'
import sys, yaml
out, minutes, data, runs, unl, workers, accel = sys.argv[1:]
cfg = yaml.safe_load(open("training/budget.yaml"))
for cb in cfg["trainer"]["callbacks"]:
    if cb["class_path"].endswith("WallClockCosine"):
        cb["init_args"]["minutes"] = float(minutes)
cfg["trainer"]["default_root_dir"] = runs
cfg["trainer"]["logger"]["init_args"]["save_dir"] = runs
cfg["trainer"]["accelerator"] = accel
cfg["trainer"]["enable_progress_bar"] = False
cfg["data"]["root"] = data
cfg["data"]["unlabelled"] = int(unl)
cfg["data"]["unlabelled_workers"] = max(1, min(8, int(workers)))
open(out, "w").write("# written by scripts/train_budget.sh from training/budget.yaml\n" + yaml.safe_dump(cfg, sort_keys=False))
PYEOF
if [[ "$ACCEL" != cpu ]]; then  # a failing accelerator falls back to the CPU, said in the log
  if ! "$PY" -m irs_torch.learn.train fit --config "$RUNS/config.yaml" --trainer.fast_dev_run 2 \
        --trainer.logger false --trainer.callbacks null > "$RUNS/smoke.log" 2>&1; then
    tail -20 "$RUNS/smoke.log"; echo "accelerator $ACCEL failed the smoke run: training on the CPU"
    sed -i 's/^  accelerator: .*/  accelerator: cpu/' "$RUNS/config.yaml"
  fi
fi
"$PY" -m irs_torch.learn.train fit --config "$RUNS/config.yaml" 2>&1 | tee "$RUNS/train.log"
last=$(ls -td "$RUNS"/warm-start/version_*/checkpoints | head -1)/last.ckpt
echo "last checkpoint: $last"

echo "== 3. test split, network alone ($(date -u +%T))"
"$PY" -m irs_torch.learn.evaluate --checkpoint "$last" --data "$DATA" --json "$RUNS/test-metrics.json" --no-progress
echo "== done ($(date -u +%T))"
