"""Scoring a table: `predict --input T --output F` (a process of its own, as a user runs it) against the offline
runtime on the same rows pre-tokenized and length-sorted, and against transformers' text-classification
pipeline; and the job's peak memory at ten times the rows. The same PyTorch model and threads throughout, so the
ratios measure the pipeline around the model: reading, tokenizing, batching, writing."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import get_task, read_split
from ..serving.engine import Encoded
from .harness import DEMO_SHAPE, logger, sst2_dir
from .serving import serving_model


@dataclass(frozen=True)
class BatchPlan:
    name: str
    config_overrides: str  # on albert-base-v2's config
    rows: int  # the table predict and the offline runtime score
    pipeline_rows: int  # the rows transformers' pipeline scores (its rate is per row)
    memory_rows: int  # the smaller table of the peak-memory pair; the larger has ten times as many
    ray_replicas: tuple[int, ...]  # predict --ray with these many replicas, against the local job
    with_bf16: bool  # predict --bf16 too, where the CPU has bf16 units


BATCH_PLANS = {"quick": (BatchPlan("demo", DEMO_SHAPE, 12_000, 600, 1000, (2, 1), False),
                         BatchPlan("albert_base", "", 640, 64, 0, (), True)),
               "full": (BatchPlan("demo", DEMO_SHAPE, 100_000, 5000, 100_000, (2, 1), False),
                        BatchPlan("albert_base", "", 100_000, 2000, 0, (), True))}


def benchmark_batch(plan: BatchPlan, work_dir: Path, shared_dir: Path, threads: int,
                    bf16_units: bool) -> dict[str, dict]:
    """Rows/s of each variant over the same table; `predict --bf16` too where the plan asks and the CPU has
    bf16 units."""
    model_dir = serving_model(plan, work_dir, shared_dir)
    table = _table(work_dir / f"rows_{plan.name}.csv", plan.rows, shared_dir)
    results = {}
    job_rate, _ = _predict_job(model_dir, table, work_dir / f"scored_{plan.name}.jsonl", threads)
    results["predict_table"] = {"label": "predict --input CSV --output JSONL", "rows_per_s": job_rate}
    if plan.with_bf16 and bf16_units:
        bf16_rate, _ = _predict_job(model_dir, table, work_dir / f"scored_{plan.name}_bf16.jsonl", threads, "--bf16")
        results["predict_table_bf16"] = {"label": "predict --bf16 (bf16 units)", "rows_per_s": bf16_rate}
    results["offline_runtime"] = {"label": "offline runtime (pre-tokenized, length-sorted)",
                                  "rows_per_s": _offline_rate(model_dir, table, threads)}
    results["transformers_pipeline"] = {"label": "transformers pipeline (batch 32)",
                                        "rows_per_s": _pipeline_rate(model_dir, table, plan.pipeline_rows, threads)}
    per_replica = max(1, threads // 2)  # two replicas have the threads of the local job between them
    for replicas in plan.ray_replicas:
        rate, _ = _predict_job(model_dir, table, work_dir / f"ray_{plan.name}.jsonl", threads, "--ray",
                               "--num_replicas", str(replicas), "--threads", str(per_replica), after_first_chunk=True)
        results[f"predict_ray_{replicas}"] = {"label": f"predict --ray, {replicas} replica(s) x {per_replica} "
                                                       "thread(s)", "rows_per_s": rate}
    for row in results.values():
        logger.info("batch, %s config: %-50s %10.1f rows/s", plan.name, row["label"], row["rows_per_s"])
    if plan.memory_rows:
        small = _table(work_dir / "memory_small.csv", plan.memory_rows, shared_dir)
        large = _table(work_dir / "memory_large.csv", 10 * plan.memory_rows, shared_dir)
        _, small_rss = _predict_job(model_dir, small, work_dir / "memory_small.jsonl", threads)
        _, large_rss = _predict_job(model_dir, large, work_dir / "memory_large.jsonl", threads)
        results["memory"] = {"label": f"peak RSS, {plan.memory_rows:,} and {10 * plan.memory_rows:,} rows",
                             "rss_mb": [small_rss, large_rss], "ratio": large_rss / small_rss}
        logger.info("batch, %s config: peak RSS %.0f MB at %d rows, %.0f MB at %d rows", plan.name, small_rss,
                    plan.memory_rows, large_rss, 10 * plan.memory_rows)
    return results


def batch_summary(sections: dict[str, dict]) -> dict:
    """The headline ratios, from the albert-base section where it ran (else the demo's), the RSS ratio from the
    demo's."""
    report = {}
    for name in ("batch_demo", "batch_albert_base"):
        rows = sections.get(name)
        if rows is None:
            continue
        report[f"{name}_ratio_vs_offline"] = rows["predict_table"]["rows_per_s"] / rows["offline_runtime"]["rows_per_s"]
        report[f"{name}_ratio_vs_transformers_pipeline"] = (rows["predict_table"]["rows_per_s"]
                                                           / rows["transformers_pipeline"]["rows_per_s"])
        if "predict_table_bf16" in rows:
            report[f"{name}_ratio_vs_transformers_pipeline_bf16"] = (rows["predict_table_bf16"]["rows_per_s"]
                                                                    / rows["transformers_pipeline"]["rows_per_s"])
        if "memory" in rows:
            report["batch_rss_ratio_10x_rows"] = rows["memory"]["ratio"]
        if "predict_ray_2" in rows:
            report["batch_ray_ratio_vs_local"] = (rows["predict_ray_2"]["rows_per_s"]
                                                  / rows["predict_table"]["rows_per_s"])
        if "predict_ray_1" in rows:
            report["batch_ray_scaling_1_to_2_replicas"] = (rows["predict_ray_2"]["rows_per_s"]
                                                           / rows["predict_ray_1"]["rows_per_s"])
    main = "batch_albert_base" if "batch_albert_base" in sections else "batch_demo"
    for key in ("ratio_vs_offline", "ratio_vs_transformers_pipeline", "ratio_vs_transformers_pipeline_bf16"):
        if f"{main}_{key}" in report:
            report[f"batch_{key}"] = report[f"{main}_{key}"]
    for key, value in report.items():
        logger.info("%-42s %6.2f", key, value)
    return report


def _table(path: Path, rows: int, shared_dir: Path) -> Path:
    """SST-2 training sentences (cycled) with an id column, as a CSV."""
    examples, _ = read_split(get_task("SST-2"), sst2_dir(shared_dir), "train")
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "sentence"])
        writer.writerows((f"row-{i}", examples[i % len(examples)].text_a) for i in range(rows))
    return path


def _predict_job(model_dir: Path, table: Path, output: Path, threads: int, *extra: str,
                 after_first_chunk: bool = False) -> tuple[float, float]:
    """(rows/s as the job reports it, from its first row read to its last written, process start and model load
    apart; or, `after_first_chunk`, after its first chunk of 500, which leaves Ray's start out too; peak RSS in
    MB). Chunks of 500: a chunk is what the job sorts by length, and chunks of 64 rows padded albert-base's
    batches enough to halve its rate."""
    command = [sys.executable, "-m", "albert_pytorch", "predict", "--model_dir", str(model_dir), "--input",
               str(table), "--output", str(output), "--overwrite", "--quiet", "--threads", str(threads),
               "--chunk_rows", "500", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"predict failed ({process.returncode}): {stderr[-2000:]}")
    pattern = r"([\d,]+) rows/s after the first chunk" if after_first_chunk else r"\(([\d,]+) rows/s"
    return float(re.search(pattern, stderr).group(1).replace(",", "")), usage.ru_maxrss / 1024


def _texts(table: Path, rows: int | None = None) -> list[str]:
    with open(table, newline="", encoding="utf-8") as handle:
        texts = [row["sentence"] for row in csv.DictReader(handle)]
    return texts[:rows] if rows else texts


def _offline_rate(model_dir: Path, table: Path, threads: int) -> float:
    """The model alone over the rows tokenized beforehand and sorted by length, batches of 32: what the offline
    runtime does, with nothing to read or write."""
    from ..deploy.predict import scoring_engine

    engine = scoring_engine(model_dir, threads=threads)
    texts = _texts(table)
    encoded = engine.encoder.encode([(t, None) for t in texts], truncate=True)
    order = sorted(range(len(texts)), key=lambda i: len(encoded.ids[i]))
    groups = [order[i:i + 32] for i in range(0, len(order), 32)]
    engine.logits(Encoded([encoded.ids[i] for i in groups[-1]], [encoded.types[i] for i in groups[-1]]),
                  [list(range(len(groups[-1])))])  # warm-up
    start = time.perf_counter()
    engine.logits(encoded, groups)
    return len(texts) / (time.perf_counter() - start)


def _pipeline_rate(model_dir: Path, table: Path, rows: int, threads: int) -> float:
    """transformers' text-classification pipeline over a generator of the rows, batch 32: what a user writes
    without us (KeyDataset over a `datasets` table is the same loop)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    torch.set_num_threads(threads)
    classify = pipeline("text-classification", model=AutoModelForSequenceClassification.from_pretrained(model_dir),
                        tokenizer=AutoTokenizer.from_pretrained(model_dir), device="cpu")
    texts = _texts(table, rows)
    list(classify(texts[:32], batch_size=32))  # warm-up
    start = time.perf_counter()
    scored = list(classify((t for t in texts), batch_size=32, truncation=True, max_length=128))
    seconds = time.perf_counter() - start
    assert len(scored) == len(texts) and np.isfinite(scored[0]["score"])
    return len(texts) / seconds
