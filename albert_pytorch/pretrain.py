"""Pretraining: ALBERT's masked-LM + sentence-order objective on raw text, through the shared loop.

    run(PretrainConfig(train_files=["corpus/"], tokenizer_name="tokenizer/", from_scratch=True,
                       output_dir="outputs/pretrain"))

Text becomes sentence-order pairs in cached, memory-mapped shards (`data/corpus.py`); each batch is
masked as it is drawn (`data/masking.py`); `loop.fit` trains. The output directory is an
AlbertForPreTraining model with its tokenizer, which transformers loads and `train` fine-tunes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from .config import AlbertConfig
from .data import EvalShardSampler, LengthGroupedBatchSampler
from .data.corpus import PairSettings, PairShards
from .data.masking import IGNORE_INDEX, MaskingCollator, MaskingSpec
from .data.prepare import prepare_corpus
from .device import (
    DistContext,
    Precision,
    barrier,
    default_pad_multiple,
    end_together,
    init_distributed,
    shutdown_distributed,
)
from .errors import UsageError
from .io import atomic_write_json, text_files
from .loop import Ranking, fit, split_gemm_rows, start_on_device, write_trainer_state
from .modeling import AlbertForPreTraining, count_parameters
from .run_config import PretrainConfig, run_model_config, run_settings
from .rundir import TRAINING, OutputFolder, claimed
from .runlog import RunLog, format_values
from .tokenization import load_tokenizer, save_tokenizer_files
from .weights import resolve_model_dir

logger = logging.getLogger("albert_pytorch")


def run(cfg: PretrainConfig, ray_address: str | None = None) -> dict[str, Any]:
    """Pretrain as `cfg` says; returns the summary (on every process). Every input is read and checked
    before the output folder is touched, as `train.run` does. With `ray_address` ("local" or a cluster's
    address), the corpus's parts are prepared as Ray tasks."""
    cfg.validate()
    if ray_address is not None and DistContext.from_env().enabled:
        raise UsageError("--ray prepares the corpus from one process, not from torchrun's ranks: run `pretrain "
                         "--prepare_only --ray` first, then the torchrun job with the same corpus settings")
    if cfg.prepare_only:
        return prepare_only(cfg, ray_address)
    with claimed(cfg.output_dir, holder=DistContext.from_env().is_main):
        cfg, ctx, device = start_on_device(cfg)
        try:
            built = build_pretraining(cfg, ctx, device, ray_address)
            folder = OutputFolder.check(cfg.output_dir, TRAINING, cfg.overwrite_output_dir, cfg.resume_from_checkpoint,
                                        sources=(cfg.model_name_or_path, cfg.tokenizer_name))
            with folder.opened(ctx.is_main):
                barrier(ctx)
                cfg = split_gemm_rows(cfg, ctx, device, built.model, cfg.batch_size * cfg.max_seq_length, trains=True)
                summary = _pretrain(cfg, ctx, device, built)
            end_together(ctx, device)
            return summary
        finally:
            shutdown_distributed()


@dataclass
class PretrainingRun:
    """What a pretraining run is made of, every part read and checked before its folder is touched."""

    tokenizer_dir: Path
    tokenizer: Any
    model: AlbertForPreTraining
    train_set: PairShards
    eval_set: PairShards | None
    collator: MaskingCollator
    identity: dict[str, Any]
    resume_from: Path | None


def build_pretraining(cfg: PretrainConfig, ctx: DistContext, device: torch.device,
                      ray_address: str | None = None) -> PretrainingRun:
    """Text files, tokenizer, model and masking for `cfg`, each checked; writes nothing but caches."""
    inputs = CorpusInputs.of(cfg)
    config = pretraining_config(cfg, inputs.model_dir, len(inputs.tokenizer))
    train_set = corpus_pairs(cfg, inputs.train_files, inputs.tokenizer, ctx, ray_address)
    eval_set = (corpus_pairs(cfg, inputs.validation_files, inputs.tokenizer, ctx, ray_address)
                if inputs.validation_files else None)
    identity = {"settings": run_settings(cfg), "model": config.to_dict(), "train_data": train_set.key,
                "eval_data": eval_set.key if eval_set is not None else None}
    resume_from = None
    if cfg.resume_from_checkpoint:
        resume_from = ckpt.checkpoint_to_resume(Path(cfg.output_dir), cfg.resume_from_checkpoint, identity)
    torch.manual_seed(cfg.seed)
    if inputs.model_dir is None or cfg.from_scratch:
        model = AlbertForPreTraining.from_config(config)
    else:
        model = AlbertForPreTraining.from_pretrained(inputs.model_dir, config=config)
    model.to(device)
    model.use_kernels(cfg.kernels)
    logger.info("pretraining %s parameters (%s) on %s (attention %s, kernels %s), world size %d",
                f"{count_parameters(model):,}", "from scratch" if cfg.from_scratch else cfg.model_name_or_path, device,
                cfg.attn_implementation, cfg.kernels, ctx.world_size)
    tokenizer = inputs.tokenizer
    spec = MaskingSpec.from_tokenizer(tokenizer, mask_prob=cfg.mlm_probability, max_ngram=cfg.max_ngram,
                                      max_predictions=cfg.max_predictions_per_seq)
    collator = MaskingCollator(tokenizer.pad_token_id, spec, cfg.pad_to_multiple_of or default_pad_multiple(device))
    return PretrainingRun(inputs.tokenizer_dir, tokenizer, model, train_set, eval_set, collator, identity, resume_from)


def _pretrain(cfg: PretrainConfig, ctx: DistContext, device: torch.device, built: PretrainingRun) -> dict[str, Any]:
    model, train_set, eval_set, collator = built.model, built.train_set, built.eval_set, built.collator
    output_dir = Path(cfg.output_dir)
    if ctx.is_main:
        atomic_write_json(output_dir / "train_config.json", dataclasses.asdict(cfg))

    def evaluate() -> dict[str, float]:
        return evaluate_pretraining(model, eval_set, collator, cfg.eval_batch_size, device, cfg.precision, ctx,
                                    cfg.seed, cfg.max_eval_samples)

    def write_model_files(trained: nn.Module, directory: Path) -> None:
        trained.save_pretrained(directory)
        save_tokenizer_files(built.tokenizer, built.tokenizer_dir, directory, trained.config.max_position_embeddings)

    sampler = LengthGroupedBatchSampler(train_set.lengths, cfg.batch_size, cfg.seed, ctx.world_size, ctx.rank,
                                        group_by_length=cfg.group_by_length)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collator, num_workers=cfg.num_workers,
                        pin_memory=device.type == "cuda")
    metric = cfg.metric_for_best_model or "loss"
    run_log = RunLog(output_dir, enabled=ctx.is_main, tensorboard=cfg.report_to == "tensorboard")
    trained = fit(model, loader, cfg, ctx, device, run_log, write_model_files,
                  evaluate=evaluate if eval_set is not None else None,
                  ranking=Ranking(metric, greater_is_better=metric.endswith("accuracy")), identity=built.identity,
                  resume_from=built.resume_from)
    final = trained.pop("final_evaluation")
    summary: dict[str, Any] = {"device": device.type, "world_size": ctx.world_size,
                               "global_batch_size": cfg.batch_size * ctx.world_size * cfg.gradient_accumulation_steps,
                               "train_pairs": len(train_set), **{k: v for k, v in trained.items() if v is not None}}
    if trained["best_metric"] is not None:  # say what ranked the evaluations
        summary["metric_for_best_model"] = metric
    results: dict[str, Any] = {"epoch": trained["epoch"], "train_loss": trained["train_loss"],
                               "train_runtime": trained["train_seconds"], "train_samples": len(train_set),
                               "train_samples_per_second": trained["train_samples_per_second"]}
    if eval_set is not None:
        if final is None:  # else the loop evaluated these very weights at the last step
            final = evaluate()
            run_log.write({"type": "eval", "step": trained["step"], "final": True,
                           **{f"eval_{k}": v for k, v in final.items()}})
        results.update({f"eval_{k}": v for k, v in final.items()})
        summary.update({k: final[k] for k in ("mlm_accuracy", "sop_accuracy")})
    if ctx.is_main:
        ckpt.save_model_files(output_dir, lambda directory: write_model_files(model, directory))
        atomic_write_json(output_dir / "all_results.json", results)
        write_trainer_state(cfg, summary, run_log)
        run_log.plot("eval_mlm_accuracy", "eval_sop_accuracy", evaluated_on="held-out")
        logger.info("pretrained model saved to %s (loads in transformers' AlbertForPreTraining; fine-tune it with "
                    "`train --model_name_or_path %s`)", output_dir, output_dir)
        logger.info("summary: %s", format_values(summary))
    run_log.close()
    return summary


def pretraining_config(cfg: PretrainConfig, model_dir: Path | None, tokenizer_size: int) -> AlbertConfig:
    """The config to pretrain: --model_name_or_path's (any ALBERT, a fine-tuned classifier's encoder included),
    or for random init albert-base-v2's shape, whose vocabulary is the tokenizer's."""
    config = run_model_config(AlbertConfig.from_pretrained(model_dir) if model_dir else AlbertConfig(),
                              cfg.config_overrides, cfg.max_seq_length, cfg.attn_implementation)
    if cfg.from_scratch:
        config = dataclasses.replace(config, vocab_size=tokenizer_size)
    elif tokenizer_size > config.vocab_size:
        raise UsageError(f"the tokenizer has {tokenizer_size} pieces, more than the model's vocab_size "
                         f"{config.vocab_size}: it is not this model's tokenizer (drop --tokenizer_name, or "
                         "pretrain --from_scratch)")
    # a fine-tuned model's labels and task name describe its classifier, which pretraining does not keep
    config.set_labels(["LABEL_0", "LABEL_1"])
    config.problem_type = config.finetuning_task = None
    return config


@dataclass
class CorpusInputs:
    """The text files and the tokenizer of a pretraining run, found and checked."""

    train_files: list[Path]
    validation_files: list[Path] | None
    model_dir: Path | None
    tokenizer_dir: Path
    tokenizer: Any

    @classmethod
    def of(cls, cfg: PretrainConfig) -> CorpusInputs:
        try:
            train_files = text_files(cfg.train_files)
            validation_files = text_files(cfg.validation_files) if cfg.validation_files else None
        except FileNotFoundError as err:
            raise UsageError(str(err)) from None
        model_dir = resolve_model_dir(cfg.model_name_or_path) if cfg.model_name_or_path else None
        tokenizer_dir = Path(cfg.tokenizer_name) if cfg.tokenizer_name else model_dir
        if not tokenizer_dir.is_dir():
            raise UsageError(f"--tokenizer_name {tokenizer_dir}: no such folder")
        return cls(train_files, validation_files, model_dir, tokenizer_dir, load_tokenizer(tokenizer_dir))


def corpus_pairs(cfg: PretrainConfig, files: list[Path], tokenizer, ctx: DistContext,
                 ray_address: str | None = None) -> PairShards:
    """The sentence-order pairs of text files, each part prepared once per job (`data/prepare.py`) and cached."""
    settings = PairSettings(cfg.max_seq_length, cfg.short_seq_prob, cfg.seed, cfg.line_by_line)
    pairs, _ = prepare_corpus(files, tokenizer, settings, cfg.cache_dir, cfg.corpus_part_mb,
                              cfg.preprocessing_num_workers, ctx, ray_address, cfg.progress and ctx.is_main)
    return pairs


def prepare_only(cfg: PretrainConfig, ray_address: str | None = None) -> dict[str, Any]:
    """`--prepare_only`: the corpus's cache and nothing else (a CPU job ahead of the training job), every rank
    of a torchrun job preparing its share. Returns the pair counts and what identifies them."""
    ctx, device = init_distributed("cpu", cfg.dist_timeout)
    try:
        inputs = CorpusInputs.of(cfg)
        summary: dict[str, Any] = {}
        for name, files in (("train", inputs.train_files), ("eval", inputs.validation_files)):
            if files:
                pairs = corpus_pairs(cfg, files, inputs.tokenizer, ctx, ray_address)
                summary.update({f"{name}_pairs": len(pairs), f"{name}_data": pairs.key})
        if ctx.is_main:
            logger.info("prepared: %s (the training run finds it with the same corpus, tokenizer, --cache_dir, "
                        "--max_seq_length, --short_seq_prob, --seed, --line_by_line and --corpus_part_mb)",
                        format_values(summary))
        end_together(ctx, device)
        return summary
    finally:
        shutdown_distributed()


@torch.no_grad()
def evaluate_pretraining(model: nn.Module, dataset: PairShards, collator: MaskingCollator, batch_size: int,
                         device: torch.device, precision: Precision, ctx: DistContext, seed: int,
                         limit: int | None = None) -> dict[str, float]:
    """Masked-LM loss and accuracy over the predicted tokens, sentence-order loss and accuracy over the pairs
    of held-out text (its first `limit` pairs), with the same masks at every call; summed over all ranks."""
    was_training = model.training
    model.eval()
    lengths = dataset.lengths[:limit] if limit else dataset.lengths
    loader = DataLoader(dataset, batch_sampler=EvalShardSampler(lengths, batch_size, ctx.world_size, ctx.rank, seed),
                        collate_fn=collator)
    totals = torch.zeros(6, dtype=torch.float64, device=device)
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items() if k != "index"}
        with precision.autocast(device):
            out = model(**batch)
        labels, order = batch["labels"], batch["sentence_order_label"]
        targets = labels[labels != IGNORE_INDEX]
        sop = out.sop_logits.float()
        totals += torch.stack([out.mlm_loss * targets.numel(), out.mlm_correct.sum(),
                               torch.tensor(targets.numel(), device=device),
                               F.cross_entropy(sop, order, reduction="sum"), (sop.argmax(-1) == order).sum(),
                               torch.tensor(order.numel(), device=device)]).double()
    if ctx.enabled:
        dist.all_reduce(totals)
    model.train(was_training)
    mlm_loss, mlm_correct, tokens, sop_loss, sop_correct, pairs = totals.tolist()
    tokens = max(tokens, 1)  # held-out text with nothing to predict scores 0, not 0/0
    return {"loss": mlm_loss / tokens + sop_loss / pairs, "mlm_loss": mlm_loss / tokens,
            "mlm_accuracy": mlm_correct / tokens, "sop_loss": sop_loss / pairs, "sop_accuracy": sop_correct / pairs,
            "num_examples": int(pairs)}
