"""The command line, the tables and the headline ratios, each with its spread over rounds."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import torch

from ..device import Precision, resolve_device, size_kernel_cache
from ..errors import UsageError
from ..io import atomic_write_json
from . import __doc__ as DESCRIPTION
from .batch import BATCH_PLANS, batch_summary, benchmark_batch
from .busy import benchmark_busy, busy_summary
from .corpus import benchmark_corpus_preparation, corpus_summary
from .gemm_threads import benchmark_gemm_threads
from .harness import (
    DEMO_SHAPE,
    Ceilings,
    Plan,
    PretrainPlan,
    Workload,
    default_shared_dir,
    forward_flops,
    load_workload,
    logger,
    spread,
)
from .inference import benchmark_inference
from .kernel_cache import benchmark_kernel_cache
from .pretraining import benchmark_pretraining
from .serving import (
    LONG_TEXT_ROUNDS,
    SERVING_PLANS,
    benchmark_long_texts,
    benchmark_serving,
    long_texts_table,
    serving_summary,
    serving_table,
)
from .training import benchmark_training, training_memory

# --quick: more, shorter training rounds than the full run, so that even it yields a spread per ratio
QUICK, FULL = Plan(4, 1, 2, 1024, 64), Plan(3, 4, 2, 8192, 872)
# headline figure -> (section, variant, baseline variant): samples/s of the first over the second
RATIOS = {
    "train_ratio_vs_padded": ("training", "ours", "transformers_padded"),
    "train_ratio_vs_per_batch": ("training", "ours", "transformers_per_batch"),
    "train_ratio_shared_linear": ("training", "ours", "ours_modules"),
    "train_ratio_compiled_kernels": ("training", "ours", "ours_eager_kernels"),
    "train_ratio_gemm_row_split": ("training", "ours", "ours_whole_gemms"),
    "infer_ratio_fp32": ("inference", "ours_ort_fp32", "transformers_padded"),
    "infer_ratio_int8": ("inference", "ours_ort_int8", "transformers_padded"),
    "pretrain_ratio_demo": ("pretraining_demo", "ours", "transformers_full_logits"),
    "pretrain_ratio_albert_base": ("pretraining_albert_base", "ours", "transformers_full_logits"),
}
SECTIONS = ("training", "inference", "pretraining", "serving", "batch", "busy")
# oneDNN's kernel cache, with --bf16 on a CPU: rounds of two processes (default cache, ours)
KERNEL_CACHE_ROUNDS = {"quick": 1, "full": 2}
# oneDNN's threads on the hidden-wide GEMMs, with --bf16 on a CPU: interleaved rounds per row count
GEMM_THREAD_ROUNDS = {"quick": 1, "full": 3}
# the busy section: (rounds, training steps per run, rows per inference run)
BUSY_PLANS = {"quick": (3, 100, 4000), "full": (5, 300, 10000)}


# corpus preparation: (copies of WikiText-2's 2.3 MB in the text, --corpus_part_mb, rounds); ten parts or more,
# so that two workers share the work evenly
CORPUS_PLANS = {"quick": (1, 0.25, 2), "full": (8, 1.0, 3)}
PRETRAIN_PLANS = {"quick": (PretrainPlan("demo", DEMO_SHAPE, 64, 3, 2),),
                  "full": (PretrainPlan("demo", DEMO_SHAPE, 64, 3, 6), PretrainPlan("albert_base", "", 16, 3, 1))}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m albert_pytorch.benchmark", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rows and shorter rounds, indicative figures only "
                                                             "(docs/benchmarks.md says how long it takes)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "npu"), help="cpu, cuda or npu")
    parser.add_argument("--bf16", action="store_true", help="autocast bf16 on every variant (GPU)")
    parser.add_argument("--shared_dir", type=Path, default=default_shared_dir(),
                        help="the project's shared data: albert-base-v2's config and tokenizer, GLUE's SST-2, "
                             "WikiText-2 (default: $ALBERT_PYTORCH_SHARED_DATA, else ../shared/data); without it, "
                             "the embedded sample")
    parser.add_argument("--model_dir", default=None, help="config + tokenizer (default: the shared albert-base-v2)")
    parser.add_argument("--data_dir", default=None, help="an SST-2 folder (default: the shared SST-2)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which benchmarks to run (default: all)")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    size_kernel_cache()  # as every command does: ours measured as a run gets it, the reference alike
    # Our figures at INFO; the libraries' own chatter (ORT's fusion and quantization logs) at ERROR, and no
    # weight-loading bars of transformers' between the tables.
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    logger.setLevel(logging.INFO)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    try:
        device = resolve_device(args.device)
    except UsageError as err:
        parser.error(str(err))
    precision = Precision(torch.bfloat16 if args.bf16 else None)
    plan = QUICK if args.quick else FULL
    sections: dict[str, dict] = {}
    checks: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = load_workload(args.model_dir, args.data_dir, plan.train_rows, plan.dev_rows, Path(tmp), args.shared_dir)
        ceilings = Ceilings.measure(device)
        logger.info("workload: %s; %d threads; CPU features %s; matmul ceilings (GFLOP/s): fp32 %.0f (torch %.0f, "
                    "ONNX Runtime %s), bf16 %s, int8 %s", work.source, torch.get_num_threads(),
                    " ".join(ceilings.cpu_flags) or "unknown", ceilings.fp32, ceilings.fp32_torch,
                    _figure(ceilings.fp32_ort), _figure(ceilings.bf16, "none: no bf16 units"),
                    _figure(ceilings.int8))
        if "training" in args.sections:
            sections["training"], variants = benchmark_training(work, device, precision, plan.train_rounds,
                                                                plan.train_steps)
            logger.info("peak training memory: one step each")
            checks.update(training_memory(variants))
            del variants  # three models and their optimizer states: free them before inference
            if precision.dtype == torch.bfloat16 and device.type == "cpu":  # oneDNN's bf16 kernels, built per shape
                sections["kernel_cache"] = benchmark_kernel_cache(
                    Path(tmp), args.shared_dir, KERNEL_CACHE_ROUNDS["quick" if args.quick else "full"])
                sections["gemm_threads"] = benchmark_gemm_threads(work.config.hidden_size,
                                                                  work.config.intermediate_size,
                                                                  GEMM_THREAD_ROUNDS["quick" if args.quick else "full"])
        if "inference" in args.sections:
            sections["inference"], inference_checks = benchmark_inference(
                work, device, precision, plan.infer_rounds, Path(tmp), bf16_units=ceilings.bf16 is not None)
            checks.update(inference_checks)
        if "pretraining" in args.sections:
            sections["corpus_preparation"] = benchmark_corpus_preparation(
                Path(tmp) / "corpus", args.shared_dir, *CORPUS_PLANS["quick" if args.quick else "full"])
            for pretrain_plan in PRETRAIN_PLANS["quick" if args.quick else "full"]:
                sections[f"pretraining_{pretrain_plan.name}"] = benchmark_pretraining(
                    pretrain_plan, Path(tmp) / pretrain_plan.name, device, precision, args.shared_dir)
        if "serving" in args.sections:
            for serving_plan in SERVING_PLANS["quick" if args.quick else "full"]:
                sections[f"serving_{serving_plan.name}"] = benchmark_serving(serving_plan, Path(tmp),
                                                                              args.shared_dir, torch.get_num_threads())
            sections["long_text_serving"] = benchmark_long_texts(Path(tmp),
                                                                  LONG_TEXT_ROUNDS["quick" if args.quick else "full"])
        if "batch" in args.sections:
            for batch_plan in BATCH_PLANS["quick" if args.quick else "full"]:
                sections[f"batch_{batch_plan.name}"] = benchmark_batch(batch_plan, Path(tmp), args.shared_dir,
                                                                        torch.get_num_threads(),
                                                                        bf16_units=ceilings.bf16 is not None)
        if "busy" in args.sections:
            sections["busy"] = benchmark_busy(Path(tmp) / "busy", args.shared_dir,
                                              *BUSY_PLANS["quick" if args.quick else "full"])
    report = summarize(sections, checks, ceilings, work, device, precision)
    report["quick"] = args.quick
    if args.quick:
        logger.info("--quick: %d training and %d dev rows, short rounds: the figures are indicative only (see the "
                    "spreads); the full run is the one to judge by", plan.train_rows, plan.dev_rows)
    if args.json:
        atomic_write_json(args.json, report)
        logger.info("every figure, spreads included: %s", args.json)


def _figure(value: float | None, missing: str = "n/a") -> str:
    return f"{value:.0f}" if value is not None else missing


def summarize(sections: dict[str, dict], checks: dict, ceilings: Ceilings, work: Workload, device: torch.device,
              precision: Precision) -> dict:
    """Print the tables and ratios; each variant's GFLOP/s is judged against the ceiling of its own number
    format. Returns the JSON report."""
    def table(title: str, rows: dict, base: str, unit: str) -> None:
        logger.info("\n%s\n%-50s %12s %8s %10s %15s", title, "variant", unit.replace("_per_s", "/s"), "ratio",
                    "GFLOP/s", "of its ceiling")
        for r in rows.values():
            flops = ""
            if "gflops" in r:
                fraction = _fraction(r, ceilings)
                flops = f"{r['gflops']:10.1f} {'n/a' if fraction is None else f'{100 * fraction:.0f}%':>9} " \
                        f"{r['format']}"
            logger.info("%-50s %12.1f %7.2fx %s", r["label"], r[unit], r[unit] / rows[base][unit], flops)

    if "training" in sections:
        table("training (batch 32)", sections["training"], "transformers_padded", "samples_per_s")
    if "inference" in sections:
        table("inference (dev set, batch 32)", sections["inference"], "transformers_padded", "samples_per_s")
    for name, rows in sections.items():
        if name.startswith("pretraining_"):
            table(f"pretraining, {name.removeprefix('pretraining_')} config (batch "
                  f"{next(iter(rows.values()))['batch_size']}, <= 64 tokens)", rows, "transformers_full_logits",
                  "tokens_per_s")
    for name, rows in sections.items():
        if name == "long_text_serving":
            long_texts_table(rows)
        elif name.startswith("serving_"):
            serving_table(name.removeprefix("serving_"), rows)
    report = {"device": str(device), **ceilings.report(), **sections, **checks, **serving_summary(sections),
              **batch_summary(sections), **corpus_summary(sections),
              **busy_summary(sections)}
    for section in ("training", "inference"):
        for row in sections.get(section, {}).values():
            row["fraction_of_ceiling"] = _fraction(row, ceilings)
    for name, (section, variant, base) in RATIOS.items():
        if section not in sections or base not in sections[section]:
            continue
        rows = sections[section]
        unit = "tokens_per_s" if section.startswith("pretraining") else "samples_per_s"
        report[name] = rows[variant][unit] / rows[base][unit]
        per_round = [a / b for a, b in zip(rows[variant][f"per_round_{unit}"], rows[base][f"per_round_{unit}"],
                                           strict=True)]
        report[f"{name}_spread"] = spread(per_round)
    if "training" in sections:
        ours = sections["training"]["ours"]
        train_flops_per_sample = 3 * forward_flops(work.config, work.train.lengths) / len(work.train)
        ceiling = ceilings.of(ours["format"])
        report.update({"train_physical_limit_samples_per_s": ceiling * 1e9 / train_flops_per_sample,
                       "train_fraction_of_limit": ours["gflops"] / ceiling, "gemm_row_split": ours["gemm_row_split"],
                       "train_fraction_of_round_ceiling": spread(ours["per_round_fraction_of_round_ceiling"])})
        logger.info("train_fraction_of_limit %.3f (against the ceiling measured at the start, %.0f GFLOP/s); per "
                    "round, against a ceiling measured beside it (%s GFLOP/s): %s", report["train_fraction_of_limit"],
                    ceiling, ", ".join(f"{c:.0f}" for c in ours["round_ceilings_gflops"]),
                    ", ".join(f"{f:.3f}" for f in ours["per_round_fraction_of_round_ceiling"]))
        logger.info("\npeak training memory, batch 32 padded to 128 (%s): %s", report["memory_measure"],
                    ", ".join(f"{name} {mb:.0f} MB" for name, mb in report["peak_train_memory_mb"].items()))
    if "kernel_cache" in sections:
        cache = sections["kernel_cache"]
        report.update({k: cache[k] for k in ("kernel_cache_train_ratio", "kernel_cache_train_ratio_spread")})
        logger.info("kernel_cache_train_ratio %.2fx  (steady bf16 steps over lengths %d-%d, oneDNN's default cache "
                    "against ours; rounds: min %.2f, max %.2f)", cache["kernel_cache_train_ratio"], *cache["lengths"],
                    cache["kernel_cache_train_ratio_spread"]["min"], cache["kernel_cache_train_ratio_spread"]["max"])
    if "gemm_threads" in sections:
        report.update({k: sections["gemm_threads"][k]
                       for k in ("hidden_gemm_halves_ratio_max", "hidden_gemm_idle_thread_rows")})
    for name in RATIOS:
        if name in report:
            rounds = report[f"{name}_spread"]
            logger.info("%-32s %6.2fx  (rounds: min %.2f, median %.2f, max %.2f)", name, report[name], rounds["min"],
                        rounds["median"], rounds["max"])
    if work.weights is None and "inference" in sections:
        logger.info("note: int8 argmax agreement on random weights is a weak signal; pass --model_dir with a "
                    "fine-tuned model for a meaningful one")
    return report


def _fraction(row: dict, ceilings: Ceilings) -> float | None:
    """A variant's GFLOP/s over the ceiling of the number format it computes in."""
    ceiling = ceilings.of(row["format"])
    return row["gflops"] / ceiling if ceiling else None
