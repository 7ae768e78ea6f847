#!/usr/bin/env bash
# distributed evaluation of a fine-tuned model (--model_path=) on N devices: every dev example scored once.
# Usage: bash test/train_eval_8p.sh --data_path=<dataset root> [--model_path=] [--task_name=SST-2] [--device=auto] [--nproc=8] [--output_dir=] [--log_dir=] [--flag=value ...]
set -uo pipefail
source "$(dirname "$0")/launcher_common.sh"
DEFAULTS=(--eval_batch_size 440 --fp16 --fp16_opt_level O2 --do_eval)
parse_args "$@"
launch eval_8p "${nproc:-8}"
