"""Fine-tuning steps: transformers padded to 128 and padded per batch, against ours (and ours with the shared layer's
gradients summed by autograd, with torch's eager kernels where ours compiles them, and with every GEMM one call where
ours splits some in row chunks); and a step's peak memory."""

from __future__ import annotations

import dataclasses

import torch

from .. import gemm_rows
from ..data import Collator, LengthGroupedBatchSampler
from ..device import Precision, default_pad_multiple
from ..gemm_rows import RowSplit
from ..modeling import AlbertForSequenceClassification
from ..run_config import default_attention, default_kernels
from .harness import PADDED, TimedVariant, Workload, forward_flops, logger, matmul_ceiling
from .reference import TransformersAlbert


class TrainVariant(TimedVariant):
    """Fine-tuning batches of the workload's training rows, padded by `collator`; counts samples and FLOPs."""

    def __init__(self, key: str, label: str, model: torch.nn.Module, batches: list[list[int]], collator: Collator,
                 work: Workload, device: torch.device, precision: Precision):
        super().__init__(key, label, model, batches, device, precision, learning_rate=2e-5)
        self.collator, self.work, self.flops = collator, work, 0.0
        self.per_round_gflops: list[float] = []

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        return self.collator([self.work.train[i] for i in rows])

    def after_timed_step(self, rows: list[int]) -> None:
        self.flops += 3 * forward_flops(self.work.config, self.work.train.lengths[rows])

    def timed_round(self, steps: int) -> None:
        flops, seconds = self.flops, self.seconds
        super().timed_round(steps)
        self.per_round_gflops.append((self.flops - flops) / (self.seconds - seconds) / 1e9)


class ModulesVariant(TrainVariant):
    """Ours with every nn.Linear called as a module, autograd summing the shared layer's weight gradients: what
    SharedLinear (one query-key-value GEMM, gradients summed inside the GEMMs) is measured against."""

    def step(self, rows: list[int], timed: bool) -> None:  # every step, warm-up and memory measure included
        with self.model.implementation("modules"):
            super().step(rows, timed)


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

    # ours as a training run builds it: with the attention and kernels the run's defaults pick for this device and
    # precision
    bf16 = precision.dtype == torch.bfloat16
    attention, kernels = default_attention(device, bf16), default_kernels(device, bf16)
    # the row split a training run measures where it starts (bf16 on a CPU): here for the longest batch timed
    split = gemm_rows.measure(work.config.hidden_size, work.config.intermediate_size,
                              batch_size * max(work.train.lengths), precision.dtype
                              ) if bf16 and device.type == "cpu" else None

    def ours(kernels: str = kernels, split: RowSplit | None = split) -> AlbertForSequenceClassification:
        model = AlbertForSequenceClassification(dataclasses.replace(work.config, attn_implementation=attention))
        model.load_state_dict(initial)
        model.use_kernels(kernels)
        model.split_gemm_rows(split)
        return model

    # where the default kernels are the compiled ones, ours with torch's too, to show what compiling gives
    eager_kernels = [TrainVariant("ours_eager_kernels", "ours, torch's eager kernels", ours("eager"),
                                  grouped, Collator(0, pad_multiple), work, device, precision)
                     ] if kernels != "eager" else []
    # where the measured split runs some GEMMs in row chunks, ours with whole calls too, to show what it gives
    whole_gemms = [TrainVariant("ours_whole_gemms", "ours, every GEMM one call", ours(split=None), grouped,
                                Collator(0, pad_multiple), work, device, precision)] if split is not None else []
    variants = {v.key: v for v in (
        TrainVariant("transformers_padded", "transformers, padded to 128", reference(), shuffled,
                     Collator(0, PADDED), work, device, precision),
        TrainVariant("transformers_per_batch", "transformers, padded per batch", reference(), shuffled,
                     Collator(0, pad_multiple), work, device, precision),
        ModulesVariant("ours_modules", "ours, shared weights' gradients summed by autograd", ours(), grouped,
                       Collator(0, pad_multiple), work, device, precision),
        *eager_kernels,
        *whole_gemms,
        TrainVariant("ours", "ours (length-grouped, per-batch padding)", ours(), grouped, Collator(0, pad_multiple),
                     work, device, precision),
    )}
    for variant in variants.values():
        variant.warm_up(rounds * steps)  # allocator, lazy init, and the kernels of every batch shape timed below
    ceilings = []  # torch's matmul ceiling in ours' format, just before each of ours' rounds: the host drifts
    for round_number in range(1, rounds + 1):
        for variant in variants.values():
            logger.info("training round %d/%d: %s", round_number, rounds, variant.label)
            if variant.key == "ours":
                ceilings.append(matmul_ceiling(device, torch.bfloat16 if bf16 else torch.float32, seconds=0.5))
            variant.timed_round(steps)
    number_format = "bf16" if precision.dtype == torch.bfloat16 else "fp32"
    results = {v.key: {"label": v.label, "format": number_format, "samples_per_s": v.count / v.seconds,
                       "gflops": v.flops / v.seconds / 1e9,
                       "per_round_samples_per_s": v.per_round} for v in variants.values()}
    results["ours"]["gemm_row_split"] = split.spec() if split is not None else gemm_rows.OFF
    results["ours"]["per_round_fraction_of_round_ceiling"] = [
        gflops / ceiling for gflops, ceiling in zip(variants["ours"].per_round_gflops, ceilings, strict=True)]
    results["ours"]["round_ceilings_gflops"] = ceilings
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


