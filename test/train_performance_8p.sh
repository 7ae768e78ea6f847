#!/usr/bin/env bash
# throughput run on N devices (--nproc=, default 8): the 8p recipe for 200 steps.
# Usage: bash test/train_performance_8p.sh --data_path=<dataset root> [--model_path=] [--task_name=SST-2] [--device=auto] [--nproc=8] [--output_dir=] [--log_dir=] [--flag=value ...]
set -uo pipefail
source "$(dirname "$0")/launcher_common.sh"
DEFAULTS=(--batch_size 440 --learning_rate 1.8e-3 --optimizer lamb --max_steps 200 --fp16 --fp16_opt_level O2 --logging_steps 50 --do_train --overwrite_output_dir)
parse_args "$@"
launch performance_8p "${nproc:-8}"
