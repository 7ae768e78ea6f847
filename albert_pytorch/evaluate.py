"""Evaluation that scores every example exactly once, on one process or many."""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import Collator, EvalShardSampler, GlueFeatures, GlueTask
from .device import DistContext, Precision
from .metrics import compute_metrics, predictions_from_logits


@torch.no_grad()
def predict_logits(model: nn.Module, features: GlueFeatures, batch_size: int, device: torch.device,
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
        with precision.autocast(device):
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                        batch["token_type_ids"].to(device)).logits
        indices.append(batch["index"])
        logits.append(out.float().cpu())
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


def evaluate(model: nn.Module, task: GlueTask, features: GlueFeatures, batch_size: int, device: torch.device,
             precision: Precision, ctx: DistContext, collator: Collator,
             progress: bool = False) -> tuple[dict[str, float], np.ndarray]:
    """The task's metrics over the whole split, and the logits they came from."""
    logits = predict_logits(model, features, batch_size, device, precision, ctx, collator, progress)
    metrics = compute_metrics(task, predictions_from_logits(task, logits), features.labels.numpy())
    return metrics, logits
