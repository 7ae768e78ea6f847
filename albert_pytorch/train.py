"""Fine-tuning: a GLUE task's data and a classifier, built as values and handed to the shared loop.

    run(TrainConfig(task_name="SST-2", data_dir=..., model_name_or_path=..., output_dir=...))

`build_run` makes everything the run needs (data, tokenizer, model, collator) and checks it before
anything is written; `loop.fit` trains; evaluation, submission files and the final model follow.
One process, or many under torchrun, with the same code.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint as ckpt
from .config import AlbertConfig
from .data import (
    Collator,
    Example,
    Features,
    LengthGroupedBatchSampler,
    Task,
    get_task,
    load_or_build_features,
    read_split,
)
from .data.files import own_data_task
from .device import (
    DistContext,
    barrier,
    default_pad_multiple,
    end_together,
    shutdown_distributed,
)
from .errors import UsageError
from .evaluate import evaluate_splits, predict_logits, trainer_eval_results, write_submission
from .io import atomic_write_json
from .loop import Ranking, fit, split_gemm_rows, start_on_device, write_trainer_state
from .metrics import resolve_metric
from .modeling import AlbertForSequenceClassification, AlbertPreTrainedModel, count_parameters
from .run_config import TrainConfig, run_model_config, run_settings
from .rundir import EVALUATION, TRAINING, OutputFolder, claimed
from .runlog import RunLog, format_values
from .sample import prepare_sample_model, sample_data_dir
from .tokenization import load_tokenizer, save_tokenizer_files
from .weights import resolve_model_dir

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
    """What a fine-tuning run is made of, every part read and checked before its folder is touched."""

    task: Task
    data_dir: Path
    model_dir: Path  # where the config and tokenizer come from
    tokenizer: Any
    model: nn.Module
    collator: Collator
    train_set: Features | None
    eval_sets: dict[str, Features]
    test_sets: dict[str, tuple[Features, list[Example]]]
    identity: dict[str, Any]  # what defines the run: recorded in checkpoints, matched on resume
    resume_from: Path | None


def run(cfg: TrainConfig, model_factory: ModelFactory = sequence_classifier) -> dict[str, Any]:
    """Train and/or evaluate as `cfg` says; returns the summary (on every process).

    Every input is read and checked (data, labels, tokenizer, config, the checkpoint to resume) before the
    output folder is touched; a run that fails before saving anything leaves the folder as it found it.
    """
    cfg.validate()
    with claimed(cfg.output_dir, holder=DistContext.from_env().is_main):
        cfg, ctx, device = start_on_device(cfg)
        try:
            with tempfile.TemporaryDirectory(prefix="albert-sample-model-") as scratch:
                built = build_run(cfg, ctx, device, model_factory, Path(scratch))
                folder = OutputFolder.check(cfg.output_dir, TRAINING if cfg.do_train else EVALUATION,
                                            cfg.overwrite_output_dir, cfg.resume_from_checkpoint,
                                            sources=(cfg.model_name_or_path,))
                with folder.opened(ctx.is_main):
                    barrier(ctx)
                    if isinstance(built.model, AlbertPreTrainedModel):
                        cfg = split_gemm_rows(cfg, ctx, device, built.model, cfg.batch_size * cfg.max_seq_length,
                                              trains=cfg.do_train)
                    summary = _finetune(cfg, ctx, device, built)
                end_together(ctx, device)
                return summary
        finally:
            shutdown_distributed()


def _finetune(cfg: TrainConfig, ctx: DistContext, device: torch.device, built: FinetuneRun) -> dict[str, Any]:
    task, model, output_dir = built.task, built.model, Path(cfg.output_dir)
    precision = cfg.precision
    if ctx.is_main:
        atomic_write_json(output_dir / ("train_config.json" if cfg.do_train else "eval_config.json"),
                          dataclasses.asdict(cfg))

    def evaluate(progress: bool = False, per_class: bool = False) -> dict[str, dict[str, Any]]:
        return evaluate_splits(model, task, built.eval_sets, cfg.eval_batch_size, device, precision, ctx,
                               built.collator, progress, per_class)

    def write_model_files(trained: nn.Module, directory: Path) -> None:
        save_model_dir(trained, built.tokenizer, built.model_dir, directory)

    # the samples one step takes: a training step's, or for an evaluation one evaluation batch's
    per_device = cfg.batch_size * cfg.gradient_accumulation_steps if cfg.do_train else cfg.eval_batch_size
    global_batch = per_device * ctx.world_size
    summary: dict[str, Any] = {"task": task.name, "device": device.type, "world_size": ctx.world_size,
                               "global_batch_size": global_batch}
    run_log = RunLog(output_dir, enabled=ctx.is_main and cfg.do_train, tensorboard=cfg.report_to == "tensorboard")
    train_results: dict[str, Any] = {}
    if built.train_set is not None:
        metric = resolve_metric(cfg.metric_for_best_model, task)
        main_split = task.eval_splits[0] if built.eval_sets else None
        trained = fit(model, train_loader(cfg, built.train_set, built.collator, ctx, device), cfg, ctx, device,
                      run_log, write_model_files,
                      evaluate=(lambda: evaluate()[main_split]) if main_split else None,
                      ranking=Ranking(metric, greater_is_better=metric != "loss"), identity=built.identity,
                      resume_from=built.resume_from)
        trained.pop("final_evaluation")  # the final evaluation below covers every split, per class
        summary.update({k: v for k, v in trained.items() if v is not None})
        if trained["best_metric"] is not None:  # say what ranked the evaluations
            summary["metric_for_best_model"] = metric
        train_results = {"epoch": trained["epoch"], "train_loss": trained["train_loss"],
                         "train_runtime": trained["train_seconds"], "train_samples": len(built.train_set),
                         "train_samples_per_second": trained["train_samples_per_second"]}
    eval_results: dict[str, Any] = {}
    if cfg.do_eval and built.eval_sets:
        results = evaluate(progress=cfg.progress, per_class=True)
        eval_results = {**({"epoch": summary["epoch"]} if "epoch" in summary else {}),
                        **trainer_eval_results(task, results)}
        if ctx.is_main:
            atomic_write_json(output_dir / "eval_results.json", eval_results)
        first = results[task.eval_splits[0]]
        summary.update({task.metric: first[task.metric], "eval_examples": first["num_examples"]})
        if cfg.do_train:  # the model as saved, in the log history and the curves beside the evaluations so far
            run_log.write({"type": "eval", "step": summary["step"], "final": True,
                           **{f"eval_{k}": v for k, v in first.items() if isinstance(v, int | float)}})
    if ctx.is_main and (train_results or eval_results):
        atomic_write_json(output_dir / "all_results.json", {**train_results, **eval_results})
    for split, (features, examples) in built.test_sets.items():
        logits = predict_logits(model, features, cfg.eval_batch_size, device, precision, ctx, built.collator)
        if ctx.is_main:
            write_submission(task, examples, logits, output_dir / task.submission_name(split))
    if ctx.is_main and cfg.do_train:
        ckpt.save_model_files(output_dir, lambda directory: write_model_files(model, directory))
        logger.info("model saved to %s (loads in transformers too)", output_dir)
        write_trainer_state(cfg, summary, run_log)
        run_log.plot(f"eval_{task.metric}")
    run_log.close()
    if ctx.is_main:
        logger.info("summary: %s", format_values(summary))
    return summary


def build_run(cfg: TrainConfig, ctx: DistContext, device: torch.device, model_factory: ModelFactory,
              scratch: Path) -> FinetuneRun:
    """Data, tokenizer, model and collator for `cfg`, each checked (paths, rows, labels, lengths, weights,
    the checkpoint to resume); writes nothing but caches (and the embedded sample's model into `scratch`)."""
    if cfg.own_files:
        data_dir, model_dir, from_scratch = Path.cwd(), resolve_model_dir(cfg.model_name_or_path), cfg.from_scratch
        task = _own_data_task(cfg, model_dir)
    else:
        task = get_task(cfg.task_name)
        data_dir, model_dir, from_scratch = _resolve_inputs(cfg, task, scratch)
    tokenizer = load_tokenizer(model_dir)
    config = run_model_config(AlbertConfig.from_pretrained(model_dir), cfg.config_overrides, cfg.max_seq_length,
                              cfg.attn_implementation)
    if not cfg.do_train:
        _check_head_fits(config, task, model_dir)
    config.set_labels(None if task.is_regression else list(task.names))
    config.finetuning_task = task.name
    train_set = _features(cfg, task, data_dir, "train", tokenizer, cfg.max_train_samples)[0] if cfg.do_train else None
    eval_sets = {}
    if cfg.do_eval or (cfg.do_train and cfg.evaluates_during_training):
        eval_sets = {split: _features(cfg, task, data_dir, split, tokenizer, cfg.max_eval_samples)[0]
                     for split in task.eval_splits}
    test_sets = {split: _features(cfg, task, data_dir, split, tokenizer, None)
                 for split in (task.test_splits if cfg.do_predict else ())}
    identity = {"settings": run_settings(cfg), "labels": task.labels, "model": config.to_dict(),
                "train_data": train_set.fingerprint() if train_set is not None else None,
                "eval_data": {split: features.fingerprint() for split, features in eval_sets.items()}}
    resume_from = None
    if cfg.resume_from_checkpoint:
        resume_from = ckpt.checkpoint_to_resume(Path(cfg.output_dir), cfg.resume_from_checkpoint, identity)
    torch.manual_seed(cfg.seed)
    model = model_factory(config, None if from_scratch else model_dir).to(device)
    if isinstance(model, AlbertPreTrainedModel):  # ours; another factory's model (ONNX, transformers) has its own
        model.use_kernels(cfg.kernels)
    fresh = getattr(model, "newly_initialized", [])
    if not cfg.do_train and fresh:
        raise UsageError(f"{model_dir} holds no trained classifier for {task.name} ({', '.join(fresh[:2])} would "
                         f"start random, and so would its scores): fine-tune it first, with train "
                         f"--model_name_or_path {model_dir}")
    logger.info("%s: %s parameters, %s on %s (attention %s, kernels %s), world size %d", task.name,
                f"{count_parameters(model):,}", cfg.precision.name, device, cfg.attn_implementation,
                cfg.kernels, ctx.world_size)
    collator = Collator(tokenizer.pad_token_id, cfg.pad_to_multiple_of or default_pad_multiple(device))
    return FinetuneRun(task, data_dir, model_dir, tokenizer, model, collator, train_set, eval_sets, test_sets,
                       identity, resume_from)


def _check_head_fits(model_config: AlbertConfig, task: Task, model_dir: Path) -> None:
    """An evaluation scores the model's own head, so it must be one for this task: a regressor for a regression
    task, a classifier with the task's number of classes otherwise (else the head would start random and its
    metrics mean nothing)."""
    def head(regression: bool, classes: int) -> str:
        return "a regression" if regression else f"a {classes}-class"

    task_classes = 1 if task.is_regression else len(task.names)
    if (model_config.is_regression, model_config.num_labels) != (task.is_regression, task_classes):
        trained_on = f" (trained on {model_config.finetuning_task})" if model_config.finetuning_task else ""
        raise UsageError(f"{model_dir} has {head(model_config.is_regression, model_config.num_labels)} head"
                         f"{trained_on}, but {task.name} is {head(task.is_regression, task_classes)} task: evaluate "
                         f"it on the task it was trained for, or fine-tune it on {task.name} first")


def _own_data_task(cfg: TrainConfig, model_dir: Path) -> Task:
    """The user's files as a task; evaluating without a training file, the classes are the trained model's."""
    names, task_type = cfg.label_name_list, cfg.task_type
    if names is None and cfg.train_file is None:
        config = AlbertConfig.from_pretrained(model_dir)
        names = [config.id2label[i] for i in range(config.num_labels)]
        task_type = "regression" if config.is_regression else "classification"
    for flag, path in (("--train_file", cfg.train_file), ("--validation_file", cfg.validation_file),
                       ("--test_file", cfg.test_file)):
        if path and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    return own_data_task(cfg.train_file, cfg.validation_file, cfg.test_file, cfg.text_column, cfg.text_pair_column,
                         cfg.label_column, names, task_type, cfg.skip_bad_rows)


def _resolve_inputs(cfg: TrainConfig, task: Task, scratch: Path) -> tuple[Path, Path, bool]:
    """(data folder, model folder, from scratch?): the user's, or the embedded sample's (its tokenizer and
    config made in `scratch`)."""
    if cfg.data_dir is None:
        logger.info("no --data_dir/--model_name_or_path: training the embedded sample from scratch")
        return sample_data_dir(), prepare_sample_model(scratch), True
    data_dir = Path(cfg.data_dir)
    if not data_dir.is_dir():
        raise UsageError(f"--data_dir {data_dir}: no such folder. It should hold the {task.name} TSVs; get "
                         f"them with `python3 -m albert_pytorch download --tasks {task.name} --data_dir "
                         f"{data_dir.parent}`")
    splits = [*(["train"] if cfg.do_train else []), *(task.eval_splits if cfg.do_eval else []),
              *(task.test_splits if cfg.do_predict else [])]
    missing = [task.file_name(split) for split in splits if not (data_dir / task.file_name(split)).is_file()]
    if missing:
        raise UsageError(f"--data_dir {data_dir} lacks {', '.join(missing)} (get {task.name} with "
                         f"`python3 -m albert_pytorch download --tasks {task.name}`)")
    return data_dir, resolve_model_dir(cfg.model_name_or_path), cfg.from_scratch


def _features(cfg: TrainConfig, task: Task, data_dir: Path, split: str, tokenizer,
              limit: int | None) -> tuple[Features, list]:
    examples, report = read_split(task, data_dir, split, skip_bad_rows=cfg.skip_bad_rows)
    if report.skipped:
        logger.warning(report.summary())
    features = load_or_build_features(task, split, examples, tokenizer, cfg.max_seq_length, cfg.cache_dir)
    if limit is not None:
        features, examples = features.subset(limit), examples[:limit]
    return features, examples


def train_loader(cfg: TrainConfig, features: Features, collator: Collator, ctx: DistContext,
                 device: torch.device) -> DataLoader:
    """Shuffled, length-grouped batches, this rank's share of each global batch."""
    sampler = LengthGroupedBatchSampler(features.lengths, cfg.batch_size, cfg.seed, ctx.world_size, ctx.rank,
                                        group_by_length=cfg.group_by_length)
    return DataLoader(features, batch_sampler=sampler, collate_fn=collator, num_workers=cfg.num_workers,
                      pin_memory=device.type == "cuda")


def save_model_dir(model: nn.Module, tokenizer, source_dir: Path, directory: Path) -> None:
    """A Hugging Face model directory: config.json, model.safetensors and the tokenizer files."""
    model.save_pretrained(directory)
    save_tokenizer_files(tokenizer, source_dir, directory, model.config.max_position_embeddings)
