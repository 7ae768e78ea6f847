"""Pretraining steps in tokens/s: transformers' AlbertForPreTraining with run_mlm's collator against ours."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..config import AlbertConfig
from ..data import get_task, read_split
from ..data.corpus import PairSettings
from ..data.masking import MaskingCollator, MaskingSpec
from ..data.prepare import prepare_corpus
from ..device import Precision, default_pad_multiple
from ..io import text_files
from ..modeling import AlbertForPreTraining
from ..run_config import default_attention
from ..sample import sample_data_dir
from ..tokenization import load_tokenizer
from .harness import PretrainPlan, TimedVariant, albert_base_dir, logger


class PretrainVariant(TimedVariant):
    """Whole pretraining steps, the batch's masking and padding included; counts tokens."""

    collation_is_timed = True

    def __init__(self, key: str, label: str, model: torch.nn.Module, collate, batches: list[list[dict]],
                 device: torch.device, precision: Precision):
        super().__init__(key, label, model, batches, device, precision, learning_rate=1e-4)
        self.collate_rows = collate

    def collate(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        return self.collate_rows(rows)

    def amount(self, rows: list[dict]) -> int:
        return sum(len(row["input_ids"]) for row in rows)


def pretraining_pairs(tokenizer, corpus: Path | None, work_dir: Path, rows: int):
    """Sentence-order pairs of at most 64 tokens: WikiText-2 from ../shared, else the embedded sample's text."""
    if corpus is None:
        corpus = work_dir / "sample.txt"
        examples, _ = read_split(get_task("SST-2"), sample_data_dir(), "train")
        corpus.write_text("\n\n".join(e.text_a for e in examples) + "\n")
    pairs, _ = prepare_corpus(text_files([corpus]), tokenizer, PairSettings(64), cache_dir=work_dir)
    picked = np.random.default_rng(0).permutation(len(pairs))[:rows]
    return [{**pairs[int(i)], "batch_seed": int(i)} for i in picked]


def benchmark_pretraining(plan: PretrainPlan, work_dir: Path, device: torch.device, precision: Precision,
                          shared_dir: Path) -> dict[str, dict]:
    import transformers
    from transformers import DataCollatorForLanguageModeling

    model_dir = albert_base_dir(shared_dir, work_dir)
    tokenizer = load_tokenizer(model_dir)
    config = AlbertConfig.from_pretrained(model_dir)
    if plan.config_overrides:
        config = config.with_overrides(plan.config_overrides)
    corpus = shared_dir / "corpus" / "wikitext-2"
    rows = pretraining_pairs(tokenizer, corpus if corpus.is_dir() else None, work_dir, plan.batch_size * 8)
    batches = [rows[i:i + plan.batch_size] for i in range(0, len(rows), plan.batch_size)]
    torch.manual_seed(0)
    ours = AlbertForPreTraining.from_config(
        dataclasses.replace(config, attn_implementation=default_attention(device, precision.dtype == torch.bfloat16)))
    ours.save_pretrained(work_dir / f"init_{plan.name}")
    theirs = transformers.AlbertForPreTraining.from_pretrained(work_dir / f"init_{plan.name}",
                                                               attn_implementation="sdpa")
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
        variant.run(1, timed=False)  # warm-up
    for round_number in range(1, plan.rounds + 1):
        for variant in variants:
            logger.info("pretraining (%s) round %d/%d: %s", plan.name, round_number, plan.rounds, variant.label)
            variant.timed_round(plan.steps)
    return {v.key: {"label": v.label, "tokens_per_s": v.count / v.seconds, "per_round_tokens_per_s": v.per_round,
                    "batch_size": plan.batch_size} for v in variants}


