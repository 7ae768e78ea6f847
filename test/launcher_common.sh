# Shared by the ModelZoo-style launchers in this folder; not run on its own.
# Each launcher sets its recipe in DEFAULTS and calls `launch <case name> <process count>`.
# Flags: --data_path=<root holding SST-2/ ...> (required), --model_path=, --task_name=, --device=,
# --nproc= (multi-device launchers), --output_dir= (the run's folder; default test/output/<device id>/<task>_<case>),
# --log_dir= (the console log and ModelZoo case log; default test/output/<device id>); any other --name=value
# goes to the trainer and overrides the recipe (e.g. --batch_size=64 --max_steps=50).

cur_path=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data_path=""
model_path="prev_trained_model/albert_base_v2"
task_name="SST-2"
device="auto"
nproc=""
output_dir=""
log_dir=""
extra=()

usage() {
    # the launcher's own header (what it runs and its usage line), then the flags every launcher takes
    sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'
    sed -n '3,6p' "$cur_path/test/launcher_common.sh" | sed 's/^# \{0,1\}//'
}

parse_args() {
    for arg in "$@"; do
        case "$arg" in
            -h|--help) usage; exit 0 ;;
            --data_path=*) data_path="${arg#*=}" ;;
            --model_path=*) model_path="${arg#*=}" ;;
            --task_name=*) task_name="${arg#*=}" ;;
            --device=*) device="${arg#*=}" ;;
            --nproc=*) nproc="${arg#*=}" ;;
            --output_dir=*) output_dir="${arg#*=}" ;;
            --log_dir=*) log_dir="${arg#*=}" ;;
            --*=*) extra+=("${arg%%=*}" "${arg#*=}") ;;
            --*) extra+=("$arg") ;;
            *) echo "unknown argument: $arg" >&2; exit 2 ;;
        esac
    done
    if [ -z "$data_path" ]; then
        echo "please give --data_path=<folder holding ${task_name}/> (python3 -m albert_pytorch download fetches GLUE)" >&2
        exit 2
    fi
}

launch() {
    local case_name=$1 procs=$2
    local device_id=${ASCEND_DEVICE_ID:-0}
    [ -n "$log_dir" ] || log_dir="$cur_path/test/output/$device_id"
    mkdir -p "$log_dir"
    # each run keeps its console log; train_<device id>.log links to the latest, where ModelZoo tools look
    local log="$log_dir/train_${device_id}_${case_name}_$(date +%Y%m%d-%H%M%S).log"
    ln -sfn "$(basename "$log")" "$log_dir/train_${device_id}.log"
    [ -n "$output_dir" ] || output_dir="$cur_path/test/output/$device_id/${task_name}_${case_name}"
    local runner=(python3 -m albert_pytorch train)
    if [ "$procs" -gt 1 ]; then
        runner=(python3 -m torch.distributed.run --standalone --nproc_per_node="$procs" -m albert_pytorch train)
        if [ -z "${OMP_NUM_THREADS:-}" ]; then
            # torchrun pins every rank to 1 thread; give each its share of the cores idle now instead
            # (albert_pytorch/threads.py, as a one-process run chooses); a value you set is kept
            runner=(env OMP_NUM_THREADS="$(python3 -c "from albert_pytorch.threads import default_threads
print(default_threads($procs))")" "${runner[@]}")
        fi
    fi
    local start
    start=$(date +%s)
    # Recipe first, user flags last: argparse keeps the last value, so every recipe value can be overridden.
    (cd "$cur_path" && "${runner[@]}" --task_name "$task_name" --data_dir "$data_path/$task_name" \
        --model_name_or_path "$model_path" --output_dir "$output_dir" --device "$device" \
        "${DEFAULTS[@]}" "${extra[@]}") 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    local e2e=$(( $(date +%s) - start ))
    if [ "$status" -ne 0 ]; then
        # no case log: a failed run has no figures to report, and a log of n/a would read as a result
        echo "------------------ Final result ------------------"
        echo "FAILED: the run exited with status $status (see $log)"
        return "$status"
    fi
    local summary
    summary=$(grep -o 'summary: .*' "$log" | tail -1)
    value() { echo "$summary" | tr ' ' '\n' | grep "^$1=" | head -1 | cut -d= -f2; }
    local fps metric loss device batch kind
    fps=$(value train_samples_per_second)
    metric=$(echo "$summary" | tr ' ' '\n' | grep -E '^(acc|corr|mcc|acc_and_f1)=' | head -1 | cut -d= -f2)
    loss=$(value train_loss)
    device=$(value device)
    batch=$(value global_batch_size)
    case "$case_name" in full_*) kind=acc ;; performance_*) kind=perf ;; *) kind=eval ;; esac
    local case_id="ALBERT_${task_name}_bs${batch:-0}_${procs}p_${kind}"
    echo "------------------ Final result ------------------"
    [ -n "$fps" ] && echo "Final Performance samples/sec : $fps"
    [ -n "$metric" ] && echo "Final Accuracy : $metric"
    echo "E2E Training Duration sec : $e2e"
    # the ModelZoo case log: TrainingTime is milliseconds per step of the global batch
    local step_ms=""
    [ -n "$fps" ] && [ -n "$batch" ] && step_ms=$(awk -v b="$batch" -v f="$fps" 'BEGIN { if (f > 0) printf "%.2f", b * 1000 / f }')
    {
        echo "Network = ALBERT_${task_name}"
        echo "RankSize = $procs"
        echo "BatchSize = ${batch:-n/a}"
        echo "DeviceType = ${device:-n/a}"
        echo "CaseName = $case_id"
        echo "ActualFPS = ${fps:-n/a}"
        echo "TrainingTime = ${step_ms:-n/a}"
        echo "TrainAccuracy = ${metric:-n/a}"
        echo "ActualLoss = ${loss:-n/a}"
        echo "E2ETrainingTime = $e2e"
    } > "$log_dir/${case_id}.log"
    # every logged training loss, one per line, as the ModelZoo scripts leave beside the log
    if [ -f "$output_dir/train_log.jsonl" ]; then
        grep '"type": "train"' "$output_dir/train_log.jsonl" | grep -o '"loss": [^,]*' | cut -d' ' -f2 > "$log_dir/${case_id}_loss.txt"
    fi
    return "$status"
}
