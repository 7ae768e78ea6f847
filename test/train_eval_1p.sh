#!/usr/bin/env bash
# evaluation of a fine-tuned model (--model_path=) on one device: the dev set's metrics, as train_eval_8p.sh on one.
# Usage: bash test/train_eval_1p.sh --data_path=<dataset root> [--model_path=] [--task_name=SST-2] [--device=auto] [--output_dir=] [--log_dir=] [--flag=value ...]
set -uo pipefail
source "$(dirname "$0")/launcher_common.sh"
DEFAULTS=(--eval_batch_size 440 --fp16 --fp16_opt_level O2 --do_eval)
parse_args "$@"
launch eval_1p 1
