"""Fine-tuning: a GLUE task's data and a classifier, built as values and handed to the shared loop.

    run(TrainConfig(task_name="SST-2", data_dir=..., model_name_or_path=..., output_dir=...))

`build_run` makes everything the run needs (data, tokenizer, model, collator) and checks it before
anything is written; `loop.fit` trains; evaluation, submission files and the final model follow.
One process, or many under torchrun, with the same code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import AlbertConfig, TrainConfig, UsageError
from .data import (
    Collator,
    GlueFeatures,
    GlueTask,
    LengthGroupedBatchSampler,
    get_task,
    load_or_build_features,
    read_split,
)
from .data.files import own_data_task
from .device import DistContext, barrier, default_pad_multiple, init_distributed, shutdown_distributed
from .evaluate import evaluate_splits, predict_logits, trainer_eval_results, write_submission
from .io import atomic_write_text
from .loop import Ranking, fit, prepare_output_dir, write_trainer_state
from .metrics import resolve_metric
from .modeling import AlbertForSequenceClassification, count_parameters, resolve_model_dir
from .runlog import RunLog, format_values
from .tokenization import load_tokenizer, save_tokenizer_files

logger = logging.getLogger("albert_pytorch")

# (config with the task's labels, weights directory or None for random init) -> the model to train.
ModelFactory = Callable[[AlbertConfig, Path | None], nn.Module]


def sequence_classifier(config: AlbertConfig, weights_dir: Path | None) -> AlbertForSequenceClassification:
    """Our model: random init from `config`, or the weights in `weights_dir` with a classifier for `config`'s labels."""
    if weights_dir is None:
        return AlbertForSequenceClassification.from_config(config)
    return AlbertForSequenceClassification.from_pretrained(weights_dir, config=config)


@dataclass
class FinetuneRun:
    """What a fine-tuning run is made of."""

    task: GlueTask
    data_dir: Path
    model_dir: Path  # where the config and tokenizer come from
    tokenizer: Any
    model: nn.Module
    collator: Collator
    eval_sets: dict[str, GlueFeatures]


def run(cfg: TrainConfig, model_factory: ModelFactory = sequence_classifier) -> dict[str, Any]:
    """Train and/or evaluate as `cfg` says; returns the summary (on every process)."""
    cfg.validate()
    ctx, device = init_distributed(cfg.device, cfg.dist_timeout)
    try:
        return _finetune(cfg, ctx, device, model_factory)
    finally:
        shutdown_distributed()


def _finetune(cfg: TrainConfig, ctx: DistContext, device: torch.device, model_factory: ModelFactory) -> dict:
    prepare_output_dir(cfg, ctx, trains=cfg.do_train)
    built = build_run(cfg, ctx, device, model_factory)
    task, model, output_dir = built.task, built.model, Path(cfg.output_dir)
    precision = cfg.precision
    if ctx.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(output_dir / "train_config.json", json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

    def evaluate(progress: bool = False, per_class: bool = False) -> dict[str, dict[str, Any]]:
        return evaluate_splits(model, task, built.eval_sets, cfg.eval_batch_size, device, precision, ctx,
                               built.collator, progress, per_class)

    def write_model_files(trained: nn.Module, directory: Path) -> None:
        save_model_dir(trained, built.tokenizer, built.model_dir, directory)

    global_batch = cfg.batch_size * ctx.world_size * cfg.gradient_accumulation_steps
    summary: dict[str, Any] = {"task": task.name, "device": device.type, "world_size": ctx.world_size,
                               "global_batch_size": global_batch}
    run_log = RunLog(output_dir, enabled=ctx.is_main, tensorboard=cfg.report_to == "tensorboard")
    train_results: dict[str, Any] = {}
    if cfg.do_train:
        train_set = _features(cfg, task, built.data_dir, "train", built.tokenizer, cfg.max_train_samples)[0]
        main_split = task.eval_splits[0]
        metric = resolve_metric(cfg.metric_for_best_model, task)
        trained = fit(model, train_loader(cfg, train_set, built.collator, ctx, device), cfg, ctx, device, run_log,
                      write_model_files, evaluate=(lambda: evaluate()[main_split]) if built.eval_sets else None,
                      ranking=Ranking(metric, greater_is_better=metric != "loss"))
        summary.update({k: v for k, v in trained.items() if v is not None})
        train_results = {"epoch": trained["epoch"], "train_loss": trained["train_loss"],
                         "train_runtime": trained["train_seconds"], "train_samples": len(train_set),
                         "train_samples_per_second": trained["train_samples_per_second"]}
    eval_results: dict[str, Any] = {}
    if cfg.do_eval:
        results = evaluate(progress=cfg.progress, per_class=True)
        eval_results = {"epoch": summary.get("epoch"), **trainer_eval_results(task, results)}
        if ctx.is_main:
            atomic_write_text(output_dir / "eval_results.json", json.dumps(eval_results, indent=2) + "\n")
        first = results[task.eval_splits[0]]
        summary.update({task.metric: first[task.metric], "eval_examples": first["num_examples"]})
        if cfg.do_train:  # the model as saved, in the log history and the curves beside the evaluations so far
            run_log.write({"type": "eval", "step": summary["step"], "final": True,
                           **{f"eval_{k}": v for k, v in first.items() if isinstance(v, int | float)}})
    if ctx.is_main:
        atomic_write_text(output_dir / "all_results.json",
                          json.dumps({**train_results, **eval_results}, indent=2) + "\n")
    if cfg.do_predict:
        for split in task.test_splits:
            features, examples = _features(cfg, task, built.data_dir, split, built.tokenizer, None)
            logits = predict_logits(model, features, cfg.eval_batch_size, device, precision, ctx, built.collator)
            if ctx.is_main:
                write_submission(task, examples, logits, output_dir / task.submission_name(split))
    if ctx.is_main and cfg.do_train:
        write_model_files(model, output_dir)
        logger.info("model saved to %s (loads in transformers too)", output_dir)
        write_trainer_state(cfg, summary, run_log)
        run_log.plot(f"eval_{task.metric}")
    run_log.close()
    if ctx.is_main:
        logger.info("summary: %s", format_values(summary))
    return summary


def build_run(cfg: TrainConfig, ctx: DistContext, device: torch.device, model_factory: ModelFactory) -> FinetuneRun:
    """Data, tokenizer, model and collator for `cfg`, each checked (paths, lengths, weights) before training."""
    if cfg.own_files:
        data_dir, model_dir, from_scratch = Path.cwd(), resolve_model_dir(cfg.model_name_or_path), cfg.from_scratch
        task = _own_data_task(cfg, model_dir)
    else:
        task = get_task(cfg.task_name)
        data_dir, model_dir, from_scratch = _resolve_inputs(cfg, task, ctx)
    tokenizer = load_tokenizer(model_dir)
    config = AlbertConfig.from_pretrained(model_dir)
    if cfg.config_overrides:
        config = config.with_overrides(cfg.config_overrides)
    config.check_sequence_length(cfg.max_seq_length)
    config.set_labels(None if task.is_regression else list(task.labels))
    config.finetuning_task = task.name
    torch.manual_seed(cfg.seed)
    model = model_factory(config, None if from_scratch else model_dir).to(device)
    precision = cfg.precision
    logger.info("%s: %s parameters, %s on %s, world size %d", task.name, f"{count_parameters(model):,}",
                precision.name, device, ctx.world_size)
    collator = Collator(tokenizer.pad_token_id, cfg.pad_to_multiple_of or default_pad_multiple(device))
    eval_sets = {}
    if cfg.do_eval or cfg.eval_steps > 0:
        eval_sets = {split: _features(cfg, task, data_dir, split, tokenizer, cfg.max_eval_samples)[0]
                     for split in task.eval_splits}
    return FinetuneRun(task, data_dir, model_dir, tokenizer, model, collator, eval_sets)


def _own_data_task(cfg: TrainConfig, model_dir: Path) -> GlueTask:
    """The user's files as a task; evaluating without a training file, the classes are the trained model's."""
    names = [name.strip() for name in cfg.label_names.split(",") if name.strip()] or None
    task_type = cfg.task_type
    if names is None and cfg.train_file is None:
        config = AlbertConfig.from_pretrained(model_dir)
        names = [config.id2label[i] for i in range(config.num_labels)]
        task_type = "regression" if config.is_regression else "classification"
    return own_data_task(cfg.train_file, cfg.validation_file, cfg.test_file, cfg.text_column, cfg.text_pair_column,
                         cfg.label_column, names, task_type)


def _resolve_inputs(cfg: TrainConfig, task: GlueTask, ctx: DistContext) -> tuple[Path, Path, bool]:
    """(data folder, model folder, from scratch?): the user's, or the embedded sample's."""
    if cfg.data_dir is None:
        from .sample import prepare_sample_model, sample_data_dir

        model_dir = Path(cfg.output_dir) / "sample_model"
        if ctx.is_main:
            prepare_sample_model(model_dir)
        barrier(ctx)
        logger.info("no --data_dir/--model_name_or_path: training the embedded sample from scratch")
        return sample_data_dir(), model_dir, True
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"--data_dir {data_dir}: no such folder. It should hold the {task.name} TSVs; get "
                         f"them with `python3 -m albert_pytorch download --tasks {task.name} --data_dir "
                         f"{data_dir.parent}`")
    return data_dir, resolve_model_dir(cfg.model_name_or_path), cfg.from_scratch


def _features(cfg: TrainConfig, task: GlueTask, data_dir: Path, split: str, tokenizer,
              limit: int | None) -> tuple[GlueFeatures, list]:
    examples, report = read_split(task, data_dir, split, skip_bad_rows=cfg.skip_bad_rows)
    if report.skipped:
        logger.warning(report.summary())
    features = load_or_build_features(task, split, examples, tokenizer, cfg.max_seq_length, cfg.cache_dir)
    if limit is not None:
        features, examples = features.subset(limit), examples[:limit]
    return features, examples


def train_loader(cfg: TrainConfig, features: GlueFeatures, collator: Collator, ctx: DistContext,
                 device: torch.device) -> DataLoader:
    """Shuffled, length-grouped batches, this rank's share of each global batch."""
    sampler = LengthGroupedBatchSampler(features.lengths, cfg.batch_size, cfg.seed, ctx.world_size, ctx.rank,
                                        group_by_length=cfg.group_by_length)
    return DataLoader(features, batch_sampler=sampler, collate_fn=collator, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda")


def save_model_dir(model: nn.Module, tokenizer, source_dir: Path, directory: Path) -> None:
    """A Hugging Face model directory: config.json, model.safetensors and the tokenizer files."""
    model.save_pretrained(directory)
    save_tokenizer_files(tokenizer, source_dir, directory)
