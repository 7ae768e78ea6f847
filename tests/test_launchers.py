"""The ModelZoo launchers on CPU with the real shared SST-2 data, at a tiny model size."""

import re
import subprocess
from pathlib import Path

import pytest
from helpers import TINY_OVERRIDES, child_env

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--max_eval_samples=100", "--max_seq_length=64", "--device=cpu", "--no-fp16"]
TINY_FROM_SCRATCH = ["--from_scratch", f"--config_overrides={TINY_OVERRIDES}", "--max_train_samples=300",
                     "--batch_size=16"]


def launch(script, shared_data, tmp_path, *args, succeeds=True):
    """Run a launcher with its logs under the test's own folder (`tmp_path / "logs"`), never the checkout's."""
    command = ["bash", str(ROOT / "test" / script), f"--data_path={shared_data / 'glue'}", *COMMON,
               f"--log_dir={tmp_path / 'logs'}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=child_env(tmp_path))
    assert (done.returncode == 0) == succeeds, done.stdout[-3000:]
    return done.stdout


@pytest.mark.slow
def test_performance_then_distributed_eval_launchers(shared_data, tmp_path):
    out = launch("train_performance_1p.sh", shared_data, tmp_path, f"--model_path={shared_data / 'albert_base_v2'}",
                 *TINY_FROM_SCRATCH, "--max_steps=6", "--logging_steps=2", f"--output_dir={tmp_path / 'perf'}")
    fps = float(re.search(r"Final Performance samples/sec : ([\d.]+)", out).group(1))
    assert fps > 0
    # the ModelZoo case log and the loss file beside it
    case_log = tmp_path / "logs" / "ALBERT_SST-2_bs16_1p_perf.log"
    fields = dict(line.split(" = ", 1) for line in case_log.read_text().splitlines())
    assert fields["BatchSize"] == "16" and fields["DeviceType"] == "cpu" and float(fields["ActualFPS"]) == fps
    assert float(fields["TrainingTime"]) == pytest.approx(16 * 1000 / fps, rel=1e-3)
    losses = [float(v) for v in case_log.with_name("ALBERT_SST-2_bs16_1p_perf_loss.txt").read_text().split()]
    assert len(losses) == 3 and float(fields["ActualLoss"]) == pytest.approx(losses[-1], rel=1e-3)
    out = launch("train_eval_8p.sh", shared_data, tmp_path, "--nproc=2", f"--model_path={tmp_path / 'perf'}",
                 f"--output_dir={tmp_path / 'eval'}", "--eval_batch_size=25")
    assert re.search(r"^Final Accuracy : 0\.\d+$", out, re.MULTILINE)
    assert '"eval_samples": 100' in (tmp_path / "eval" / "eval_results.json").read_text()
    assert (tmp_path / "logs" / "ALBERT_SST-2_bs50_2p_eval.log").is_file()  # named by the evaluation's batch
    out = launch("train_eval_1p.sh", shared_data, tmp_path, f"--model_path={tmp_path / 'perf'}",
                 f"--output_dir={tmp_path / 'eval1'}", "--eval_batch_size=25")
    assert re.search(r"^Final Accuracy : 0\.\d+$", out, re.MULTILINE)
    assert (tmp_path / "logs" / "ALBERT_SST-2_bs25_1p_eval.log").is_file()
    kept = sorted((tmp_path / "logs").glob("train_0_*.log"))  # each run's console log is kept
    assert [p.name.split("_")[2] for p in kept] == ["eval", "eval", "performance"] or len(kept) == 3
    latest = tmp_path / "logs" / "train_0.log"
    assert latest.is_symlink() and "eval_1p" in latest.resolve().name


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "test").glob("train_*.sh")))
def test_every_launcher_answers_help(script):
    done = subprocess.run(["bash", str(ROOT / "test" / script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and f"Usage: bash test/{script} --data_path=" in done.stdout
    assert "--log_dir=" in done.stdout


def test_a_failed_launch_says_failed_exits_non_zero_and_writes_no_case_log(shared_data, tmp_path):
    out = launch("train_performance_1p.sh", shared_data, tmp_path, f"--model_path={tmp_path / 'no-such-model'}",
                 f"--output_dir={tmp_path / 'perf'}", succeeds=False)
    assert "FAILED: the run exited with status 2" in out and "Final Performance" not in out
    assert not list((tmp_path / "logs").glob("ALBERT_*.log"))
