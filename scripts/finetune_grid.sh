#!/bin/bash
# The fine-tuning side of docs/results.md's pretraining budget table, for one initialization:
#   scripts/finetune_grid.sh NAME MODEL_DIR [--from_scratch --config_overrides ...] 
# STS-B (4 epochs) and SST-2's first 6,000 training rows (3 epochs) at each learning rate of LRS, then the
# full SST-2 training set (1 epoch) at FULL_LR, the existing from-scratch recipe's 5e-4 (picking it from the
# 6,000-row runs instead chose 1e-3 once, and that run stayed at chance). Each run's eval_results.json lands
# in $OUT/NAME/<run>/; one line per run is appended to $OUT/results.jsonl. SKIP_STSB=1 / SKIP_SST2=1 /
# SKIP_FULL=1 leave out the STS-B runs / every SST-2 run / the full SST-2 run (for an init pretrained on one
# task's text alone, say).
set -euo pipefail
NAME=$1; MODEL=$2; shift 2
GLUE=${GLUE:-../shared/data/glue}
OUT=${OUT:-outputs/budget}
LRS=${LRS:-"3e-4 1e-3"}
FULL_LR=${FULL_LR:-5e-4}
run() {  # run TAG TASK LR EPOCHS [extra flags]
  local tag=$1 task=$2 lr=$3 epochs=$4; shift 4
  local dir="$OUT/$NAME/$tag"
  python3 -m albert_pytorch train --task_name "$task" --data_dir "$GLUE/$task" --model_name_or_path "$MODEL" \
    --output_dir "$dir" --overwrite_output_dir --num_train_epochs "$epochs" --batch_size 32 --learning_rate "$lr" \
    --max_seq_length 128 --device cpu --seed 42 --save_strategy no --report_to none --no-progress "$@" > "$dir.log" 2>&1 \
    || { echo "failed: $dir (see $dir.log)" >&2; return 1; }
  python3 - "$dir" "$NAME" "$tag" "$lr" >> "$OUT/results.jsonl" <<'PY'
import json, sys
from pathlib import Path
directory, name, tag, lr = sys.argv[1:]
results = json.loads((Path(directory) / "eval_results.json").read_text())
train = json.loads((Path(directory) / "all_results.json").read_text())
print(json.dumps({"init": name, "run": tag, "learning_rate": float(lr), "train_runtime": train.get("train_runtime"),
                  **{k: v for k, v in results.items() if k.startswith("eval_") and isinstance(v, float)}}))
PY
}
mkdir -p "$OUT/$NAME"
for lr in $LRS; do
  [ "${SKIP_STSB:-0}" = 1 ] || run "STS-B_lr$lr" STS-B "$lr" 4 "$@"
  [ "${SKIP_SST2:-0}" = 1 ] || run "SST-2-6k_lr$lr" SST-2 "$lr" 3 --max_train_samples 6000 "$@"
done
[ "${SKIP_SST2:-0}" = 1 ] || [ "${SKIP_FULL:-0}" = 1 ] || run "SST-2-full_lr$FULL_LR" SST-2 "$FULL_LR" 1 "$@"
