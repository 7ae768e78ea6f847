#!/usr/bin/env bash
# accuracy run on N devices (--nproc=, default 8): batch 440 per device, LAMB, lr 1.8e-3, 7 epochs, fp16 O2.
# Usage: bash test/train_full_8p.sh --data_path=<dataset root> [--model_path=] [--task_name=SST-2] [--device=auto] [--nproc=8] [--output_dir=] [--log_dir=] [--flag=value ...]
set -uo pipefail
source "$(dirname "$0")/launcher_common.sh"
DEFAULTS=(--batch_size 440 --learning_rate 1.8e-3 --optimizer lamb --num_train_epochs 7 --fp16 --fp16_opt_level O2 --logging_steps 10 --save_steps 100 --do_train --do_eval --overwrite_output_dir)
parse_args "$@"
launch full_8p "${nproc:-8}"
