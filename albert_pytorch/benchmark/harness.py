"""What every section shares: the workload, the analytic FLOP count, the matmul ceilings and `TimedVariant`,
a setup timed step by step (its own optimizer, per-round rates), which each section's variants extend."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import AlbertConfig
from ..data import Features, get_task, read_split
from ..data.features import build_features
from ..device import Precision, cpu_features, has_native_bf16, synchronize
from ..loop import optimizer_step, train_step
from ..modeling import AlbertForSequenceClassification
from ..optim import build_optimizer, linear_schedule
from ..sample import prepare_sample_model, sample_data_dir
from ..tokenization import load_tokenizer

logger = logging.getLogger("albert_pytorch.benchmark")
PADDED = 128
DEMO_SHAPE = "hidden_size=128,num_attention_heads=2,intermediate_size=512,embedding_size=64,num_hidden_layers=4"


def spread(per_round: list[float]) -> dict:
    """A ratio's spread over the rounds it was taken in."""
    return {"min": min(per_round), "median": float(np.median(per_round)), "max": max(per_round),
            "rounds": len(per_round)}


@contextmanager
def processes_running(code: str, args: list[str], count: int) -> Iterator[None]:
    """`count` Python processes running `code` with `args` (each must end by itself, bounded in time), given a
    second to get going before the body runs; killed when it ends."""
    processes = [subprocess.Popen([sys.executable, "-c", code, *args]) for _ in range(count)]
    try:
        time.sleep(1.0)
        yield
    finally:
        for process in processes:
            process.kill()
            process.wait()


def default_shared_dir() -> Path:
    """The project's shared data: $ALBERT_PYTORCH_SHARED_DATA, else ../shared/data from the working folder."""
    return Path(os.environ.get("ALBERT_PYTORCH_SHARED_DATA", "../shared/data"))


@dataclass(frozen=True)
class Plan:
    train_rounds: int  # every training variant, in turn, per round
    train_steps: int  # timed steps per variant and round
    infer_rounds: int  # passes over the dev rows per inference variant
    train_rows: int
    dev_rows: int


@dataclass(frozen=True)
class PretrainPlan:
    name: str
    config_overrides: str  # on albert-base-v2's config
    batch_size: int
    rounds: int
    steps: int  # timed steps per variant and round


@dataclass
class Workload:
    config: AlbertConfig
    tokenizer: object
    train: Features
    dev: Features
    source: str
    weights: dict | None  # a fine-tuned model's, when --model_dir has them; else random init


def albert_base_dir(shared_dir: Path, work_dir: Path) -> Path:
    """albert-base-v2's config and tokenizer from the shared data; without them, the embedded sample's."""
    shared = shared_dir / "albert_base_v2"
    return shared if (shared / "config.json").is_file() else prepare_sample_model(work_dir / "sample_model")


def sst2_dir(shared_dir: Path) -> Path:
    """GLUE's SST-2 from the shared data; without it, the embedded sample."""
    shared = shared_dir / "glue" / "SST-2"
    return shared if shared.is_dir() else sample_data_dir()


def load_workload(model_dir: str | None, data_dir: str | None, train_rows: int, dev_rows: int, work: Path,
                  shared_dir: Path) -> Workload:
    """albert-base-v2's config and tokenizer with real SST-2 (from `shared_dir`) when present, else the embedded
    sample."""
    model_dir = model_dir or str(albert_base_dir(shared_dir, work))
    data_dir = data_dir or str(sst2_dir(shared_dir))
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


def matmul_ceiling(device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 1.0) -> float:
    """GFLOP/s of a 2048x2048 matmul in `dtype` (bf16 through oneDNN on a CPU): the most this machine's cores
    do on dense work in that format."""
    a = torch.randn(2048, 2048, device=device).to(dtype)
    b = torch.randn(2048, 2048, device=device).to(dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    synchronize(device)
    return count * 2 * 2048**3 / (time.perf_counter() - start) / 1e9


def ort_matmul_rate(int8: bool = False, seconds: float = 1.0) -> float:
    """GFLOP/s (GOP/s for int8) of the same matmul in ONNX Runtime: fp32 through MLAS's SGEMM, which beats
    torch's BLAS on some CPUs; or int8 (uint8 x int8 -> int32, `MatMulInteger`), the integer GEMM that dynamic
    quantization runs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n, rng = 2048, np.random.default_rng(0)
    if int8:
        weight = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
        node = helper.make_node("MatMulInteger", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.UINT8, TensorProto.INT32
        x = rng.integers(0, 256, (n, n), dtype=np.uint8)
    else:
        weight = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "w")
        node = helper.make_node("MatMul", ["x", "w"], ["y"])
        x_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
        x = rng.standard_normal((n, n), dtype=np.float32)
    graph = helper.make_graph([node], "matmul", [helper.make_tensor_value_info("x", x_type, [n, n])],
                              [helper.make_tensor_value_info("y", y_type, [n, n])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, {"x": x})
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        session.run(None, {"x": x})
        count += 1
    return count * 2 * n**3 / (time.perf_counter() - start) / 1e9


@dataclass(frozen=True)
class Ceilings:
    """The most this machine's cores do per number format, measured: fp32 the better of torch and ONNX Runtime,
    bf16 torch's (oneDNN) where the CPU has bf16 units, int8 ONNX Runtime's integer GEMM."""

    cpu_flags: list[str]
    fp32_torch: float
    fp32_ort: float | None
    bf16: float | None
    int8: float | None

    @classmethod
    def measure(cls, device: torch.device) -> Ceilings:
        flags = cpu_features() if device.type == "cpu" else []
        on_cpu = device.type == "cpu"
        bf16 = matmul_ceiling(device, torch.bfloat16) if (not on_cpu or has_native_bf16(flags)) else None
        return cls(flags, matmul_ceiling(device), ort_matmul_rate() if on_cpu else None, bf16,
                   ort_matmul_rate(int8=True) if on_cpu else None)

    @property
    def fp32(self) -> float:
        return max(self.fp32_torch, self.fp32_ort or 0.0)

    def of(self, number_format: str) -> float | None:
        return {"fp32": self.fp32, "bf16": self.bf16, "int8": self.int8}[number_format]

    def report(self) -> dict:
        return {"cpu_flags": self.cpu_flags, "matmul_ceiling_gflops_fp32": self.fp32,
                "matmul_ceiling_gflops_fp32_torch": self.fp32_torch, "matmul_ceiling_gflops_fp32_ort": self.fp32_ort,
                "matmul_ceiling_gflops_bf16": self.bf16, "matmul_ceiling_gflops_int8": self.int8}


class TimedVariant:
    """One setup timed over whole steps (forward, backward, AdamW), with its own optimizer; `per_round` holds
    each timed round's rate. Subclasses say what a batch is (`collate`) and what a rate counts (`amount`)."""

    collation_is_timed = False  # pretraining's masking is part of its step; fine-tuning's padding is not

    def __init__(self, key: str, label: str, model: torch.nn.Module, batches: list, device: torch.device,
                 precision: Precision, learning_rate: float):
        self.key, self.label, self.batches = key, label, batches
        self.model, self.device, self.precision = model.to(device).train(), device, precision
        self.optimizer = build_optimizer("adamw", self.model, learning_rate, 0.01, device)
        self.scheduler = linear_schedule(self.optimizer, 0, 10**6)
        self.scaler = precision.grad_scaler(device)
        self.position, self.seconds, self.count = 0, 0.0, 0
        self.per_round: list[float] = []

    def collate(self, rows) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def amount(self, rows) -> int:
        """What a rate counts for one batch: samples, unless a subclass counts tokens."""
        return len(rows)

    def after_timed_step(self, rows) -> None:
        """Bookkeeping a subclass adds to each timed step (FLOPs)."""

    def timed_round(self, steps: int) -> None:
        seconds, count = self.seconds, self.count
        self.run(steps)
        self.per_round.append((self.count - count) / (self.seconds - seconds))

    def warm_up(self, steps: int) -> None:
        """One untimed step on each batch shape among the first `steps` batches, then start over at the first: the
        timed rounds then meet only shapes whose kernels are built, as a training run does after its first few
        hundred steps (oneDNN builds kernels per shape: 50-80 ms more on a bf16 albert-base step with a new
        length)."""
        shapes = set()
        for rows in self.batches[:steps]:
            shape = tuple(self.collate(rows)["input_ids"].shape)
            if shape not in shapes:
                shapes.add(shape)
                self.step(rows, timed=False)
        self.position = 0

    def run(self, steps: int, timed: bool = True) -> None:
        for _ in range(steps):
            self.step(self.batches[self.position % len(self.batches)], timed)
            self.position += 1

    def step(self, rows, timed: bool) -> None:
        batch = None if self.collation_is_timed else self.collate(rows)
        synchronize(self.device)
        start = time.perf_counter()
        if batch is None:
            batch = self.collate(rows)
        train_step(self.model, batch, self.precision, self.device, self.scaler, 1, sync=True)
        optimizer_step(self.model, self.optimizer, self.scheduler, self.scaler, 1.0)
        synchronize(self.device)
        if timed:
            self.seconds += time.perf_counter() - start
            self.count += self.amount(rows)
            self.after_timed_step(rows)
