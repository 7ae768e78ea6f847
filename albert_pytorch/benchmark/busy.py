"""Speed on a busy machine: the README's main job (training on the embedded sample) and ONNX Runtime inference
(`predict --onnx` over a table), each as a process of its own, with 2 CPU-bound competitor processes that the
benchmark starts and stops (each bounded in time), under three thread settings interleaved round by round:
the old default (the library's: every usable core), the new default (the cores idle at start, `threads.py`)
and one thread; and idle, the new default against the old."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..threads import usable_cores
from .harness import logger, processes_running, spread
from .serving import dev_sentences

BURNER = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"
SETTINGS = {"old_default": "all cores", "new_default": None, "one_thread": "1"}


def _threads_flag(setting: str) -> list[str]:
    value = SETTINGS[setting]
    return [] if value is None else ["--threads", str(usable_cores()) if value == "all cores" else value]


def _environment() -> dict[str, str]:
    # the new default probes only where the user set no thread count
    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def train_rate(work_dir: Path, setting: str, steps: int) -> float:
    out = work_dir / f"train_{setting}"
    subprocess.run([sys.executable, "-m", "albert_pytorch", "train", "--output_dir", str(out), "--overwrite_output_dir",
                    "--device", "cpu", "--max_steps", str(steps), "--save_strategy", "no", "--report_to", "none",
                    "--do_eval", "--no-do_eval", *_threads_flag(setting)],
                   env=_environment(), capture_output=True, text=True, check=True, timeout=900)
    return json.loads((out / "all_results.json").read_text())["train_samples_per_second"]


def infer_rate(model_dir: Path, onnx_file: Path, table: Path, work_dir: Path, setting: str) -> float:
    done = subprocess.run([sys.executable, "-m", "albert_pytorch", "predict", "--model_dir", str(model_dir), "--onnx",
                           str(onnx_file), "--input", str(table), "--output", str(work_dir / f"{setting}.jsonl"),
                           "--overwrite", "--quiet", "--chunk_rows", "500", *_threads_flag(setting)],
                          env=_environment(), capture_output=True, text=True, check=True, timeout=900)
    return float(re.findall(r"([\d,.]+) rows/s", done.stderr)[-1].replace(",", ""))


def benchmark_busy(work_dir: Path, shared_dir: Path, rounds: int, train_steps: int, infer_rows: int) -> dict:
    """Samples/s (training) and rows/s (inference) per setting, idle and busy, per round."""
    from ..serving.engine import exported_model

    work_dir.mkdir(parents=True, exist_ok=True)
    model_dir = work_dir / "model"
    subprocess.run([sys.executable, "-m", "albert_pytorch", "train", "--output_dir", str(model_dir), "--device", "cpu",
                    "--max_steps", "20", "--report_to", "none"], capture_output=True, text=True, check=True,
                   timeout=900)
    onnx_file = exported_model(model_dir, None)
    sentences = dev_sentences(shared_dir)
    table = work_dir / "sentences.txt"
    table.write_text("\n".join((sentences * (infer_rows // len(sentences) + 1))[:infer_rows]) + "\n")
    runs: dict[str, list[float]] = {}

    def measure(name: str, rate: float) -> None:
        runs.setdefault(name, []).append(rate)
        logger.info("busy round %d/%d: %-30s %8.1f", len(runs[name]), rounds, name, rate)

    for _ in range(rounds):
        for setting in ("old_default", "new_default"):
            measure(f"idle_train_{setting}", train_rate(work_dir, setting, train_steps))
        # 2 processes spinning on the CPU (each ending by itself after 600 s), given a second to take the cores, so
        # that a start-time probe sees them
        with processes_running(BURNER, ["600"], 2):
            for setting in SETTINGS:
                measure(f"busy_train_{setting}", train_rate(work_dir, setting, train_steps))
                measure(f"busy_infer_{setting}", infer_rate(model_dir, onnx_file, table, work_dir, setting))
    return {name: {"rate": float(np.mean(rates)), "per_round": rates} for name, rates in runs.items()}


def busy_summary(sections: dict[str, dict]) -> dict:
    """The new default against the best fixed setting under load, and against the old default idle."""
    rows = sections.get("busy")
    if not rows:
        return {}
    report: dict = {"busy_cores": usable_cores()}
    for key, new, bases in (
            ("busy_train_ratio_vs_best", "busy_train_new_default", ("busy_train_old_default", "busy_train_one_thread")),
            ("busy_infer_ratio_vs_best", "busy_infer_new_default", ("busy_infer_old_default", "busy_infer_one_thread")),
            ("idle_train_ratio_vs_old_default", "idle_train_new_default", ("idle_train_old_default",))):
        per_round = [rate / max(rows[b]["per_round"][i] for b in bases)
                     for i, rate in enumerate(rows[new]["per_round"])]
        report[f"{key}_spread"] = rounds = spread(per_round)
        report[key] = rounds["median"]
        logger.info("%-34s %6.2f  (rounds: min %.2f, max %.2f; %d cores)", key, report[key], min(per_round),
                    max(per_round), report["busy_cores"])
    return report
