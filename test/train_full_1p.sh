#!/usr/bin/env bash
# accuracy run on one device: the ModelZoo 1p recipe (batch 440, LAMB, lr 2.8e-4, 2 epochs, fp16 O2).
# Usage: bash test/train_full_1p.sh --data_path=<dataset root> [--model_path=] [--task_name=SST-2] [--device=auto] [--output_dir=] [--log_dir=] [--flag=value ...]
set -uo pipefail
source "$(dirname "$0")/launcher_common.sh"
DEFAULTS=(--batch_size 440 --learning_rate 2.8e-4 --optimizer lamb --num_train_epochs 2 --fp16 --fp16_opt_level O2 --logging_steps 80 --save_steps 80 --do_train --do_eval --overwrite_output_dir)
parse_args "$@"
launch full_1p 1
