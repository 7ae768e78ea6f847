"""Side-by-side speed benchmark: transformers' ALBERT against ours, same data, threads and run.

    python3 -m albert_pytorch.benchmark [--quick] [--device cpu|cuda] [--json PATH]

Training (batch 32, AdamW, one optimizer step per batch), interleaved in rounds so that machine
noise hits every variant alike:
  (a) transformers AlbertForSequenceClassification, every batch padded to 128 (run_glue's default)
  (b) the same, padded per batch
  (c) ours, with our defaults: length-grouped batches, per-batch padding, SDPA attention
Inference on the dev sentences: (a) transformers eager padded to 128, (b) our PyTorch path
(length-sorted, per-batch padding), (c) our ONNX export through ONNX Runtime fp32 and (d) int8.
Pretraining (batch 64 of WikiText-2 sentence pairs of at most 64 tokens, AdamW): tokens/s of a whole
step, batch masking included, for (a) transformers AlbertForPreTraining with run_mlm's
DataCollatorForLanguageModeling (vocabulary logits at every position) and (b) ours, n-gram masking with
logits at the masked positions only; at the demo config (hidden 128, 4 layers, 30k vocabulary) and,
in the full run, albert-base (batch 16).

Figures: samples/s, the ratio to (a), achieved GFLOP/s from an analytic count of the real
(unpadded) tokens' work, and that as a fraction of a measured fp32 matmul ceiling; the peak memory
of a training step, transformers against ours on the same batch; int8's argmax agreement with fp32.
Each ratio is also taken round by round, and its spread (min/median/max over rounds) reported:
`--quick` runs few rows and rounds, so its figures are indicative only; judge by the full run.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import AlbertConfig
from .data import Collator, EvalShardSampler, GlueFeatures, LengthGroupedBatchSampler, get_task, read_split
from .data.features import build_features
from .device import Precision, default_pad_multiple, resolve_device, synchronize
from .evaluate import batch_logits
from .io import atomic_write_json
from .loop import optimizer_step, train_step
from .modeling import AlbertForSequenceClassification
from .optim import build_optimizer, linear_schedule
from .reference import TransformersAlbert
from .sample import prepare_sample_model, sample_data_dir
from .tokenization import load_tokenizer

logger = logging.getLogger("albert_pytorch.benchmark")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PADDED = 128


@dataclass(frozen=True)
class Plan:
    train_rounds: int  # every training variant, in turn, per round
    train_steps: int  # timed steps per variant and round
    infer_rounds: int  # passes over the dev rows per inference variant
    train_rows: int
    dev_rows: int


# --quick: more, shorter training rounds than the full run, so that even it yields a spread per ratio
QUICK, FULL = Plan(4, 1, 2, 1024, 64), Plan(3, 4, 2, 8192, 872)
# headline figure -> (section, variant, baseline variant): samples/s of the first over the second
RATIOS = {
    "train_ratio_vs_padded": ("training", "ours", "transformers_padded"),
    "train_ratio_vs_per_batch": ("training", "ours", "transformers_per_batch"),
    "infer_ratio_fp32": ("inference", "ours_ort_fp32", "transformers_padded"),
    "infer_ratio_int8": ("inference", "ours_ort_int8", "transformers_padded"),
    "pretrain_ratio_demo": ("pretraining_demo", "ours", "transformers_full_logits"),
    "pretrain_ratio_albert_base": ("pretraining_albert_base", "ours", "transformers_full_logits"),
}
SECTIONS = ("training", "inference", "pretraining")
DEMO_SHAPE = "hidden_size=128,num_attention_heads=2,intermediate_size=512,embedding_size=64,num_hidden_layers=4"


@dataclass(frozen=True)
class PretrainPlan:
    name: str
    config_overrides: str  # on albert-base-v2's config
    batch_size: int
    rounds: int
    steps: int  # timed steps per variant and round


PRETRAIN_PLANS = {"quick": (PretrainPlan("demo", DEMO_SHAPE, 64, 3, 2),),
                  "full": (PretrainPlan("demo", DEMO_SHAPE, 64, 3, 6), PretrainPlan("albert_base", "", 16, 3, 1))}


@dataclass
class Workload:
    config: AlbertConfig
    tokenizer: object
    train: GlueFeatures
    dev: GlueFeatures
    source: str
    weights: dict | None  # a fine-tuned model's, when --model_dir has them; else random init


def load_workload(model_dir: str | None, data_dir: str | None, train_rows: int, dev_rows: int,
                  work: Path) -> Workload:
    """albert-base-v2's config and tokenizer with real SST-2 (../shared) when present, else the embedded sample."""
    if model_dir is None and (SHARED / "albert_base_v2" / "config.json").is_file():
        model_dir = str(SHARED / "albert_base_v2")
    if data_dir is None and (SHARED / "glue" / "SST-2").is_dir():
        data_dir = str(SHARED / "glue" / "SST-2")
    model_dir = model_dir or str(prepare_sample_model(work / "sample_model"))
    data_dir = data_dir or str(sample_data_dir())
    config = AlbertConfig.from_pretrained(model_dir)
    config.set_labels(["0", "1"])
    tokenizer = load_tokenizer(model_dir)
    task = get_task("SST-2")
    train_examples, _ = read_split(task, data_dir, "train")
    dev_examples, _ = read_split(task, data_dir, "dev")
    rng = np.random.default_rng(0)
    picked = rng.choice(len(train_examples), min(train_rows, len(train_examples)), replace=False)
    train = build_features(task, [train_examples[i] for i in picked], tokenizer, PADDED)
    dev = build_features(task, dev_examples[:dev_rows], tokenizer, PADDED)
    weights = None
    if any((Path(model_dir) / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")):
        weights = AlbertForSequenceClassification.from_pretrained(model_dir, labels=["0", "1"]).state_dict()
    return Workload(config, tokenizer, train, dev, f"{model_dir} + {data_dir}", weights)


def forward_flops(config: AlbertConfig, lengths: torch.Tensor) -> float:
    """Multiply-adds x2 of one forward pass over sequences of these (unpadded) lengths."""
    h, i, e = config.hidden_size, config.intermediate_size, config.embedding_size
    layers = config.num_hidden_layers * config.inner_group_num
    tokens = float(lengths.sum())
    per_token = 2 * e * h + layers * 2 * (4 * h * h + 2 * h * i)
    attention = layers * 4 * h * float((lengths.double() ** 2).sum())  # QK^T and AV
    return tokens * per_token + attention + len(lengths) * 2 * h * (h + config.num_labels)  # + pooler, classifier


def matmul_ceiling(device: torch.device, seconds: float = 1.0) -> float:
    """GFLOP/s of a 2048x2048 fp32 matmul: the most this machine's cores do on dense work."""
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    for _ in range(2):
        a @ b
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    synchronize(device)
    return count * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def ort_matmul_rate(seconds: float = 1.0) -> float:
    """GFLOP/s of the same matmul in ONNX Runtime (MLAS), which can beat torch's BLAS on some CPUs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n = 2048
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    session.run(None, {"x": x})
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"x": x})
        count += 1
    return count * 2 * n**3 / (time.perf_counter() - start) / 1e9


class TrainVariant:
    def __init__(self, key: str, label: str, model: torch.nn.Module, batches: list[list[int]], collator: Collator,
                 work: Workload, device: torch.device, precision: Precision):
        self.key, self.label = key, label
        self.model, self.collator, self.work = model.to(device).train(), collator, work
        self.batches, self.device, self.precision = batches, device, precision
        self.optimizer = build_optimizer("adamw", self.model, 2e-5, 0.01, device)
        self.scheduler = linear_schedule(self.optimizer, 0, 10**6)
        self.scaler = precision.grad_scaler(device)
        self.position, self.seconds, self.samples, self.flops = 0, 0.0, 0, 0.0
        self.per_round: list[float] = []  # samples/s of each timed round

    def timed_round(self, steps: int) -> None:
        seconds, samples = self.seconds, self.samples
        self.run(steps)
        self.per_round.append((self.samples - samples) / (self.seconds - seconds))

    def run(self, steps: int, timed: bool = True) -> None:
        for _ in range(steps):
            rows = self.batches[self.position % len(self.batches)]
            self.position += 1
            batch = self.collator([self.work.train[i] for i in rows])
            synchronize(self.device)
            start = time.perf_counter()
            train_step(self.model, batch, self.precision, self.device, self.scaler, 1, sync=True)
            optimizer_step(self.model, self.optimizer, self.scheduler, self.scaler, 1.0)
            synchronize(self.device)
            if timed:
                self.seconds += time.perf_counter() - start
                self.samples += len(rows)
                self.flops += 3 * forward_flops(self.work.config, self.work.train.lengths[rows])


def benchmark_training(work: Workload, device: torch.device, precision: Precision, rounds: int, steps: int,
                       batch_size: int = 32) -> tuple[dict[str, dict], list[TrainVariant]]:
    torch.manual_seed(0)
    initial = work.weights or AlbertForSequenceClassification.from_config(work.config).state_dict()
    n = len(work.train)
    generator = torch.Generator().manual_seed(0)
    shuffled = [b.tolist() for b in torch.randperm(n, generator=generator).split(batch_size) if len(b) == batch_size]
    grouped = [b for b in LengthGroupedBatchSampler(work.train.lengths, batch_size, seed=0) if len(b) == batch_size]
    pad_multiple = default_pad_multiple(device)

    def reference() -> TransformersAlbert:
        model = TransformersAlbert(work.config)
        model.load_state_dict(initial)
        return model

    ours = AlbertForSequenceClassification(work.config)
    ours.load_state_dict(initial)
    variants = {v.key: v for v in (
        TrainVariant("transformers_padded", "transformers, padded to 128", reference(), shuffled,
                     Collator(0, PADDED), work, device, precision),
        TrainVariant("transformers_per_batch", "transformers, padded per batch", reference(), shuffled,
                     Collator(0, pad_multiple), work, device, precision),
        TrainVariant("ours", "ours (length-grouped, per-batch padding)", ours, grouped, Collator(0, pad_multiple),
                     work, device, precision),
    )}
    for variant in variants.values():
        variant.run(1, timed=False)  # warm-up: allocator, kernels, lazy init
    for round_number in range(1, rounds + 1):
        for variant in variants.values():
            logger.info("training round %d/%d: %s", round_number, rounds, variant.label)
            variant.timed_round(steps)
    results = {v.key: {"label": v.label, "samples_per_s": v.samples / v.seconds, "gflops": v.flops / v.seconds / 1e9,
                       "per_round_samples_per_s": v.per_round} for v in variants.values()}
    return results, variants


def training_memory(variants: dict[str, TrainVariant], batch_size: int = 32) -> dict:
    """Peak memory of a training step, transformers against ours, on the same 32 sentences padded to 128.

    Takes the timed variants as they are (warmed up, AdamW's moments allocated). On an accelerator:
    the allocator's peak over the step. The CPU allocator keeps no statistics, so there it is what a
    step holds at its peak, the end of the forward pass: weights, gradients and AdamW's two moments,
    plus every tensor autograd saved for the backward pass (each storage once).
    """
    peaks = {}
    for name, key in (("transformers", "transformers_padded"), ("ours", "ours")):
        variant = variants[key]
        variant.batches, variant.collator = [list(range(batch_size))], Collator(0, PADDED)
        peaks[name] = _step_peak_bytes(variant) / 2**20
    device = variants["ours"].device
    return {"peak_train_memory_mb": peaks,
            "train_memory_ratio_vs_transformers": peaks["ours"] / peaks["transformers"],
            "memory_measure": "allocator peak" if device.type != "cpu" else "state + saved activations"}


def _step_peak_bytes(variant: TrainVariant) -> int:
    device = variant.device
    if device.type != "cpu":
        backend = getattr(torch, device.type)
        backend.reset_peak_memory_stats(device)
        variant.run(1, timed=False)
        return backend.max_memory_allocated(device)
    params = list(variant.model.parameters())
    weights = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        variant.run(1, timed=False)
    moments = sum(t.nbytes for state in variant.optimizer.state.values() for t in state.values()
                  if isinstance(t, torch.Tensor))
    return 2 * sum(p.nbytes for p in params) + moments + sum(saved.values())


@torch.no_grad()
def benchmark_inference(work: Workload, device: torch.device, precision: Precision, rounds: int,
                        work_dir: Path, batch_size: int = 32) -> tuple[dict[str, dict], dict]:
    from .deploy.export import export
    from .deploy.optimize import optimize

    torch.manual_seed(0)
    ours = AlbertForSequenceClassification.from_config(work.config)
    if work.weights is not None:
        ours.load_state_dict(work.weights)
    ours.eval().to(device)
    reference = TransformersAlbert(work.config).eval()
    reference.load_state_dict(ours.state_dict())
    reference.to(device)
    model_dir = work_dir / "model"
    ours.save_pretrained(model_dir)
    work.tokenizer.save_pretrained(str(model_dir))
    exported = export(model_dir, work_dir, 4, PADDED, dynamic=True)
    fp32, int8 = work_dir / "ort_fp32.onnx", work_dir / "ort_int8.onnx"
    optimize(exported, fp32, "ort")
    optimize(exported, int8, "ort", int8=True)

    dev, n = work.dev, len(work.dev)
    in_order = [list(range(i, min(n, i + batch_size))) for i in range(0, n, batch_size)]
    by_length = list(EvalShardSampler(dev.lengths, batch_size))
    flops = forward_flops(work.config, dev.lengths)
    outputs: dict[str, np.ndarray] = {}

    def torch_runner(model, collator, batches):
        def run_once():
            logits = np.zeros((n, 2), dtype=np.float32)
            for rows in batches:
                logits[rows] = batch_logits(model, collator([dev[i] for i in rows]), device, precision).numpy()
            return logits
        return run_once

    def ort_runner(path):
        import onnxruntime as ort

        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), providers=providers)
        collator = Collator(0, 1)

        def run_once():
            logits = np.zeros((n, 2), dtype=np.float32)
            for rows in by_length:
                batch = collator([dev[i] for i in rows])
                feed = {k: batch[k].numpy() for k in ("input_ids", "attention_mask", "token_type_ids")}
                logits[rows] = session.run(None, feed)[0]
            return logits
        return run_once

    pad_multiple = default_pad_multiple(device)
    runners = {  # key: (label, run once over the dev rows)
        "transformers_padded": ("transformers eager, padded to 128",
                                torch_runner(reference, Collator(0, PADDED), in_order)),
        "ours_pytorch": ("ours, PyTorch (length-sorted)", torch_runner(ours, Collator(0, pad_multiple), by_length)),
        "ours_ort_fp32": ("ours, ONNX Runtime fp32", ort_runner(fp32)),
        "ours_ort_int8": ("ours, ONNX Runtime int8", ort_runner(int8)),
    }
    per_round: dict[str, list[float]] = {key: [] for key in runners}
    for key, (_, runner) in runners.items():
        outputs[key] = runner()  # warm-up, and the logits compared below
    for round_number in range(1, rounds + 1):
        for key, (label, runner) in runners.items():
            logger.info("inference round %d/%d: %s", round_number, rounds, label)
            synchronize(device)
            start = time.perf_counter()
            runner()
            synchronize(device)
            per_round[key].append(time.perf_counter() - start)
    results = {key: {"label": label, "samples_per_s": n * rounds / sum(per_round[key]),
                     "gflops": flops * rounds / sum(per_round[key]) / 1e9,
                     "per_round_samples_per_s": [n / s for s in per_round[key]]}
               for key, (label, _) in runners.items()}
    fp32_pred = outputs["ours_ort_fp32"].argmax(-1)
    checks = {"int8_argmax_agreement": float((outputs["ours_ort_int8"].argmax(-1) == fp32_pred).mean()),
              "fp32_max_abs_diff_vs_transformers": float(np.abs(outputs["ours_ort_fp32"]
                                                                - outputs["transformers_padded"]).max())}
    return results, checks


class PretrainVariant:
    """One pretraining setup timed over whole steps: masking and padding the batch, forward, backward, AdamW."""

    def __init__(self, key: str, label: str, model: torch.nn.Module, collate, batches: list[list[dict]],
                 device: torch.device, precision: Precision):
        self.key, self.label, self.collate, self.batches = key, label, collate, batches
        self.model, self.device, self.precision = model.to(device).train(), device, precision
        self.optimizer = build_optimizer("adamw", self.model, 1e-4, 0.01, device)
        self.scheduler = linear_schedule(self.optimizer, 0, 10**6)
        self.scaler = precision.grad_scaler(device)
        self.position = 0
        self.per_round: list[float] = []  # tokens/s of each timed round
        self.seconds, self.tokens = 0.0, 0

    def timed_round(self, steps: int) -> None:
        seconds, tokens = self.seconds, self.tokens
        for _ in range(steps):
            self.step(timed=True)
        self.per_round.append((self.tokens - tokens) / (self.seconds - seconds))

    def step(self, timed: bool) -> None:
        rows = self.batches[self.position % len(self.batches)]
        self.position += 1
        synchronize(self.device)
        start = time.perf_counter()
        batch = self.collate(rows)
        train_step(self.model, batch, self.precision, self.device, self.scaler, 1, sync=True)
        optimizer_step(self.model, self.optimizer, self.scheduler, self.scaler, 1.0)
        synchronize(self.device)
        if timed:
            self.seconds += time.perf_counter() - start
            self.tokens += sum(len(row["input_ids"]) for row in rows)


def pretraining_pairs(tokenizer, corpus: Path | None, work_dir: Path, rows: int):
    """Sentence-order pairs of at most 64 tokens: WikiText-2 from ../shared, else the embedded sample's text."""
    from .data.corpus import load_or_build_pair_shards
    from .io import text_files

    if corpus is None:
        corpus = work_dir / "sample.txt"
        examples, _ = read_split(get_task("SST-2"), sample_data_dir(), "train")
        corpus.write_text("\n\n".join(e.text_a for e in examples) + "\n")
    pairs = load_or_build_pair_shards(text_files([corpus]), tokenizer, 64, cache_dir=work_dir)
    picked = np.random.default_rng(0).permutation(len(pairs))[:rows]
    return [{**pairs[int(i)], "batch_seed": int(i)} for i in picked]


def benchmark_pretraining(plan: PretrainPlan, work_dir: Path, device: torch.device,
                          precision: Precision) -> dict[str, dict]:
    import transformers
    from transformers import DataCollatorForLanguageModeling

    from .data.masking import MaskingCollator, MaskingSpec
    from .modeling import AlbertForPreTraining

    model_dir = SHARED / "albert_base_v2" if (SHARED / "albert_base_v2").is_dir() else \
        prepare_sample_model(work_dir / "sample_model")
    tokenizer = load_tokenizer(model_dir)
    config = AlbertConfig.from_pretrained(model_dir)
    if plan.config_overrides:
        config = config.with_overrides(plan.config_overrides)
    corpus = SHARED / "corpus" / "wikitext-2"
    rows = pretraining_pairs(tokenizer, corpus if corpus.is_dir() else None, work_dir, plan.batch_size * 8)
    batches = [rows[i:i + plan.batch_size] for i in range(0, len(rows), plan.batch_size)]
    torch.manual_seed(0)
    ours = AlbertForPreTraining.from_config(config)
    ours.save_pretrained(work_dir / f"init_{plan.name}")
    theirs = transformers.AlbertForPreTraining.from_pretrained(work_dir / f"init_{plan.name}")
    mlm_collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)

    def transformers_collate(batch_rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = mlm_collator([{"input_ids": r["input_ids"].tolist(), "token_type_ids": r["token_type_ids"].tolist()}
                              for r in batch_rows])
        batch["sentence_order_label"] = torch.stack([r["sentence_order_label"] for r in batch_rows])
        return batch

    spec = MaskingSpec.from_tokenizer(tokenizer)
    variants = (
        PretrainVariant("transformers_full_logits", "transformers + DataCollatorForLanguageModeling", theirs,
                        transformers_collate, batches, device, precision),
        PretrainVariant("ours", "ours: n-gram masks, logits at masked positions", ours,
                        MaskingCollator(tokenizer.pad_token_id, spec, default_pad_multiple(device)), batches, device,
                        precision),
    )
    for variant in variants:
        variant.step(timed=False)  # warm-up
    for round_number in range(1, plan.rounds + 1):
        for variant in variants:
            logger.info("pretraining (%s) round %d/%d: %s", plan.name, round_number, plan.rounds, variant.label)
            variant.timed_round(plan.steps)
    return {v.key: {"label": v.label, "tokens_per_s": v.tokens / v.seconds, "per_round_tokens_per_s": v.per_round,
                    "batch_size": plan.batch_size} for v in variants}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m albert_pytorch.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rows and shorter rounds, indicative figures only "
                                                             "(docs/benchmarks.md says how long it takes)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or npu")
    parser.add_argument("--bf16", action="store_true", help="autocast bf16 on every variant (GPU)")
    parser.add_argument("--model_dir", default=None, help="config + tokenizer (default: ../shared albert-base-v2)")
    parser.add_argument("--data_dir", default=None, help="an SST-2 folder (default: ../shared SST-2)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="which benchmarks to run (default: all)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # Our figures at INFO; the libraries' own chatter (ORT's fusion and quantization logs) at ERROR.
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    logger.setLevel(logging.INFO)
    device = resolve_device(args.device)
    precision = Precision(torch.bfloat16 if args.bf16 else None)
    plan = QUICK if args.quick else FULL
    sections: dict[str, dict] = {}
    checks: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = load_workload(args.model_dir, args.data_dir, plan.train_rows, plan.dev_rows, Path(tmp))
        ceiling = matmul_ceiling(device)
        ort_rate = ort_matmul_rate() if device.type == "cpu" else None
        logger.info("workload: %s; %d threads; torch matmul ceiling %.0f GFLOP/s%s", work.source,
                    torch.get_num_threads(), ceiling,
                    f" (ONNX Runtime's matmul: {ort_rate:.0f} GFLOP/s)" if ort_rate else "")
        if "training" in args.sections:
            sections["training"], variants = benchmark_training(work, device, precision, plan.train_rounds,
                                                                plan.train_steps)
            logger.info("peak training memory: one step each")
            checks.update(training_memory(variants))
            del variants  # three models and their optimizer states: free them before inference
        if "inference" in args.sections:
            sections["inference"], inference_checks = benchmark_inference(work, device, precision, plan.infer_rounds,
                                                                          Path(tmp))
            checks.update(inference_checks)
        if "pretraining" in args.sections:
            for pretrain_plan in PRETRAIN_PLANS["quick" if args.quick else "full"]:
                sections[f"pretraining_{pretrain_plan.name}"] = benchmark_pretraining(
                    pretrain_plan, Path(tmp) / pretrain_plan.name, device, precision)
    report = summarize(sections, checks, ceiling, work, device)
    report["ort_matmul_gflops"] = ort_rate
    report["quick"] = args.quick
    if args.quick:
        logger.info("--quick: %d training and %d dev rows, short rounds: the figures are indicative only (see the "
                    "spreads); the full run is the one to judge by", plan.train_rows, plan.dev_rows)
    if args.json:
        atomic_write_json(args.json, report)


def summarize(sections: dict[str, dict], checks: dict, ceiling: float, work: Workload, device: torch.device) -> dict:
    def table(title: str, rows: dict, base: str, unit: str) -> None:
        logger.info("\n%s\n%-50s %12s %8s %10s %9s", title, "variant", unit.replace("_per_s", "/s"), "ratio",
                    "GFLOP/s", "of ceil")
        for r in rows.values():
            flops = f"{r['gflops']:10.1f} {100 * r['gflops'] / ceiling:8.0f}%" if "gflops" in r else ""
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
    report = {"device": str(device), "matmul_ceiling_gflops": ceiling, **sections, **checks}
    for name, (section, variant, base) in RATIOS.items():
        if section not in sections:
            continue
        rows = sections[section]
        unit = "tokens_per_s" if section.startswith("pretraining") else "samples_per_s"
        report[name] = rows[variant][unit] / rows[base][unit]
        per_round = [a / b for a, b in zip(rows[variant][f"per_round_{unit}"], rows[base][f"per_round_{unit}"],
                                           strict=True)]
        report[f"{name}_spread"] = {"min": min(per_round), "median": float(np.median(per_round)),
                                    "max": max(per_round), "rounds": len(per_round)}
    if "training" in sections:
        train_flops_per_sample = 3 * forward_flops(work.config, work.train.lengths) / len(work.train)
        report.update({"train_physical_limit_samples_per_s": ceiling * 1e9 / train_flops_per_sample,
                       "train_fraction_of_limit": sections["training"]["ours"]["gflops"] / ceiling})
        logger.info("\npeak training memory, batch 32 padded to 128 (%s): %s", report["memory_measure"],
                    ", ".join(f"{name} {mb:.0f} MB" for name, mb in report["peak_train_memory_mb"].items()))
    for name in RATIOS:
        if name in report:
            spread = report[f"{name}_spread"]
            logger.info("%-28s %6.2fx  (rounds: min %.2f, median %.2f, max %.2f)", name, report[name], spread["min"],
                        spread["median"], spread["max"])
    logger.info("\n%s", json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}, indent=1))
    if work.weights is None and "inference" in sections:
        logger.info("note: int8 argmax agreement on random weights is a weak signal; pass --model_dir with a "
                    "fine-tuned model for a meaningful one")
    return report


if __name__ == "__main__":
    main()
