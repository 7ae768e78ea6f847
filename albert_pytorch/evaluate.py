"""Evaluation that scores every example exactly once, on one process or many; GLUE submission files."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import INPUT_NAMES, Collator, EvalShardSampler, Example, Features, Task
from .device import DistContext, Precision
from .io import atomic_write_text
from .metrics import TRANSFORMERS_NAMES, class_report, compute_metrics, predictions_from_logits

logger = logging.getLogger("albert_pytorch")


def batch_logits(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device,
                 precision: Precision) -> torch.Tensor:
    """The model's logits for one collated batch, in float32 on the host."""
    with precision.autocast(device):
        logits = model(*(batch[name].to(device) for name in INPUT_NAMES)).logits
    return logits.float().cpu()


@torch.no_grad()
def predict_logits(model: nn.Module, features: Features, batch_size: int, device: torch.device,
                   precision: Precision, ctx: DistContext, collator: Collator,
                   progress: bool = False) -> np.ndarray:
    """Logits for every example in file order, on every rank.

    Each rank scores a disjoint shard (no DistributedSampler padding, no dropped partial batch);
    the shards are gathered with their indices and put back in order. A count check makes "every
    example exactly once" an invariant rather than a hope.
    """
    was_training = model.training
    model.eval()
    sampler = EvalShardSampler(features.lengths, batch_size, ctx.world_size, ctx.rank)
    loader = DataLoader(features, batch_sampler=sampler, collate_fn=collator)
    indices, logits = [], []
    for batch in tqdm(loader, desc="eval", disable=not (progress and ctx.is_main), leave=False):
        indices.append(batch["index"])
        logits.append(batch_logits(model, batch, device, precision))
    model.train(was_training)
    num_labels = model.config.num_labels
    local_index = torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long)
    local_logits = torch.cat(logits) if logits else torch.zeros(0, num_labels)
    if ctx.enabled:
        local_index, local_logits = _all_gather_rows(local_index, local_logits, device)
    counts = torch.bincount(local_index, minlength=len(features))
    if len(local_index) != len(features) or not bool((counts == 1).all()):
        raise RuntimeError(f"evaluation scored {len(local_index)} rows for {len(features)} examples")
    ordered = torch.empty(len(features), num_labels)
    ordered[local_index] = local_logits
    return ordered.numpy()


def _all_gather_rows(index: torch.Tensor, rows: torch.Tensor, device: torch.device):
    """Gather variable-length shards with tensor collectives (padded to the longest shard)."""
    backend_device = device if dist.get_backend() != "gloo" else torch.device("cpu")
    size = torch.tensor([len(index)], device=backend_device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded_index = torch.full((longest,), -1, dtype=torch.long, device=backend_device)
    padded_rows = torch.zeros(longest, rows.shape[1], device=backend_device)
    padded_index[: len(index)] = index.to(backend_device)
    padded_rows[: len(rows)] = rows.to(backend_device)
    all_index = [torch.empty_like(padded_index) for _ in sizes]
    all_rows = [torch.empty_like(padded_rows) for _ in sizes]
    dist.all_gather(all_index, padded_index)
    dist.all_gather(all_rows, padded_rows)
    parts = [(i[: int(s.item())].cpu(), r[: int(s.item())].cpu()) for i, r, s in zip(all_index, all_rows, sizes,
                                                                                     strict=True)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def evaluate(model: nn.Module, task: Task, features: Features, batch_size: int, device: torch.device,
             precision: Precision, ctx: DistContext, collator: Collator,
             progress: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """The task's metrics and mean loss over the whole split, and the logits they came from."""
    logits = predict_logits(model, features, batch_size, device, precision, ctx, collator, progress)
    metrics = compute_metrics(task, predictions_from_logits(task, logits), features.labels.numpy())
    return {"loss": task_loss(task, logits, features.labels), **metrics}, logits


def task_loss(task: Task, logits: np.ndarray, labels: torch.Tensor) -> float:
    """The training objective on held-out rows: mean squared error (STS-B) or cross-entropy."""
    logits = torch.from_numpy(logits)
    if task.is_regression:
        return float(F.mse_loss(logits.view(-1), labels.float().view(-1)))
    return float(F.cross_entropy(logits, labels.view(-1)))


def evaluate_splits(model: nn.Module, task: Task, eval_sets: dict[str, Features], batch_size: int,
                    device: torch.device, precision: Precision, ctx: DistContext, collator: Collator,
                    progress: bool = False, per_class: bool = False) -> dict[str, dict[str, Any]]:
    """Metrics per split (MNLI has two dev sets), each with its example count; with `per_class`, also
    per-class precision/recall/F1 and the confusion matrix (classification)."""
    results = {}
    for split, features in eval_sets.items():
        metrics, logits = evaluate(model, task, features, batch_size, device, precision, ctx, collator, progress)
        results[split] = {"num_examples": len(features), **metrics}
        if per_class and not task.is_regression:
            results[split].update(class_report(task, predictions_from_logits(task, logits), features.labels.numpy()))
    return results


def trainer_eval_results(task: Task, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One flat record as transformers' Trainer writes eval_results.json: `eval_<name>` with transformers'
    metric names and `eval_samples`; a second dev set's keys end in `_mm` (MNLI mismatched), as run_glue's."""
    flat = {}
    for i, (split, metrics) in enumerate(results.items()):
        suffix = "" if i == 0 else "_mm" if split == "dev_mismatched" else f"_{split}"
        for name, value in metrics.items():
            key = "samples" if name == "num_examples" else TRANSFORMERS_NAMES.get(name, name)
            flat[f"eval_{key}{suffix}"] = value
    return flat


def write_submission(task: Task, examples: list[Example], logits: np.ndarray, path: Path) -> None:
    """GLUE's submission format: `index<TAB>prediction`, label names, scores clipped to the task's range."""
    predictions = predictions_from_logits(task, logits)
    if task.is_regression:
        scores = predictions if task.score_range is None else np.clip(predictions, *task.score_range)
        values = [f"{score:.3f}" for score in scores]
    else:
        values = [task.labels[int(p)] for p in predictions]
    rows = "".join(f"{e.guid}\t{v}\n" for e, v in zip(examples, values, strict=True))
    atomic_write_text(path, "index\tprediction\n" + rows)
    logger.info("test predictions written to %s", path)
