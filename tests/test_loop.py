"""`fit()` knows no task: here it trains ALBERT's pretraining objective on a toy corpus."""

import json

import torch
from conftest import tiny_config
from torch.utils.data import DataLoader

from albert_pytorch import AlbertForPreTraining
from albert_pytorch.config import LoopConfig
from albert_pytorch.data import LengthGroupedBatchSampler
from albert_pytorch.device import DistContext
from albert_pytorch.loop import fit
from albert_pytorch.runlog import RunLog

MASK_ID = 4


def toy_mlm_batches(rows: int = 64, length: int = 12):
    """Sequences over 10 token ids with every 4th position masked, and random sentence-order labels."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 15, (rows, length), generator=generator)
    masked = torch.zeros(rows, length, dtype=torch.bool)
    masked[:, 1::4] = True
    examples = [{"input_ids": torch.where(masked[i], MASK_ID, ids[i]), "attention_mask": torch.ones(length).long(),
                 "token_type_ids": torch.zeros(length).long(), "labels": torch.where(masked[i], ids[i], -100),
                 "sentence_order_label": torch.randint(0, 2, (), generator=generator)} for i in range(rows)]
    sampler = LengthGroupedBatchSampler(torch.full((rows,), length), batch_size=8, seed=0)
    collate = lambda batch: {k: torch.stack([row[k] for row in batch]) for k in batch[0]}  # noqa: E731
    return DataLoader(examples, batch_sampler=sampler, collate_fn=collate)


def test_fit_trains_the_pretraining_objective_with_the_same_loop(tmp_path):
    model = AlbertForPreTraining.from_config(tiny_config())
    cfg = LoopConfig(output_dir=str(tmp_path), max_steps=40, learning_rate=5e-3, warmup_proportion=0.0,
                     logging_steps=10, eval_steps=20, save_steps=20, progress=False, device="cpu")
    evaluations = []
    summary = fit(model, toy_mlm_batches(), cfg, DistContext(), torch.device("cpu"), RunLog(tmp_path, enabled=True),
                  write_model_files=lambda trained, directory: trained.save_pretrained(directory),
                  evaluate=lambda: evaluations.append(1) or {"calls": len(evaluations)})
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["type"] == "train"]
    # from ln(120) + ln(2) towards the 10 ids' entropy: the masked tokens' distribution is learned
    assert summary["step"] == 40 and losses[0] > losses[-1] + 1.0
    assert [r["eval_calls"] for r in log if r["type"] == "eval"] == [1, 2]
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-40"]
    assert (tmp_path / "checkpoint-40" / "model.safetensors").is_file()
