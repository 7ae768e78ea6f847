"""Fine-tune ALBERT on a GLUE task: one process, or many under torchrun, same code.

The loop is one `train_step` (forward + scaled backward of one micro-batch) and one
`optimizer_step` (unscale, clip, step); mixed precision, gradient accumulation and DDP wrap them
and never copy them. Randomness (shuffling, dropout) is a pure function of (seed, rank, epoch,
batch), so a run resumed from a checkpoint replays exactly what the uninterrupted run would do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .config import AlbertConfig
from .data import Collator, GlueFeatures, LengthGroupedBatchSampler, get_task, load_or_build_features, read_split
from .device import DistContext, Precision, barrier, init_distributed, shutdown_distributed, synchronize
from .evaluate import evaluate, predict_logits
from .io import atomic_write_text
from .modeling import AlbertForSequenceClassification, count_parameters, resolve_model_dir
from .optim import build_optimizer, linear_schedule
from .tokenization import SPIECE_NAME, load_tokenizer

logger = logging.getLogger("albert_pytorch")


@dataclass
class TrainConfig:
    """One fine-tuning run; saved as train_config.json beside its outputs."""

    task_name: str = "SST-2"
    data_dir: str | None = None  # the task's folder (e.g. dataset/SST-2); None: the embedded sample
    model_name_or_path: str | None = None  # model directory or hub id; None: the embedded sample's tiny model
    output_dir: str = "outputs/SST-2"
    do_train: bool = True
    do_eval: bool = True
    do_predict: bool = False  # write test-set predictions in GLUE submission format
    num_train_epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides num_train_epochs
    batch_size: int = 32  # per device
    eval_batch_size: int = 64  # per device
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup_proportion: float = 0.1
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0  # <= 0 disables clipping
    max_seq_length: int = 128
    seed: int = 42
    logging_steps: int = 50
    save_steps: int = 0  # 0: a checkpoint only at the end
    save_total_limit: int = 2
    eval_steps: int = 0  # 0: evaluate only at the end
    optimizer: str = "adamw"  # adamw | lamb
    fp16: bool = False
    fp16_opt_level: str = "O1"
    bf16: bool = False
    device: str = "auto"  # auto | cpu | cuda | npu
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    from_scratch: bool = False  # random init from the model directory's config.json
    config_overrides: str = ""  # e.g. "hidden_size=256,num_hidden_layers=4"
    resume_from_checkpoint: str | None = None  # "latest" or a checkpoint directory
    group_by_length: bool = True  # batch similar lengths together (less padding)
    pad_to_multiple_of: int = 0  # 0: 8 on accelerators (tensor cores), 1 on CPU
    num_workers: int = 0
    torch_compile: bool = False
    skip_bad_rows: bool = False
    cache_dir: str | None = None
    dist_timeout: float = 600.0  # seconds a collective may wait for a dead rank
    progress: bool = True
    implementation: str = "ours"  # ours | transformers (the reference model, for side-by-side comparisons)

    def validate(self) -> None:
        positive = ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "max_seq_length",
                    "logging_steps", "save_total_limit")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps <= 0 and self.num_train_epochs <= 0 and self.do_train:
            raise ValueError("--num_train_epochs must be positive (or give --max_steps)")
        if not 0 <= self.warmup_proportion < 1:
            raise ValueError(f"--warmup_proportion must be in [0, 1), got {self.warmup_proportion}")
        if (self.data_dir is None) != (self.model_name_or_path is None):
            missing = "--data_dir" if self.data_dir is None else "--model_name_or_path"
            raise ValueError(f"{missing} is missing: give both --data_dir and --model_name_or_path, or neither "
                             "to run the embedded sample")
        if self.from_scratch and not self.do_train:
            raise ValueError("--from_scratch without --do_train would evaluate random weights")
        Precision.from_flags(self.fp16, self.bf16, self.fp16_opt_level)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite in fp32/bf16, where no loss scaler can absorb it."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already trained on
    train_seconds: float = 0.0
    train_samples: int = 0
    skipped_steps: int = 0  # fp16 steps the grad scaler skipped for overflow


# -- the step -----------------------------------------------------------------------------------

def train_step(model: nn.Module, batch: dict[str, torch.Tensor], precision: Precision, device: torch.device,
               scaler: torch.amp.GradScaler, accumulation: int, sync: bool) -> torch.Tensor:
    """Forward and backward of one micro-batch; returns its (unscaled, detached) loss.

    `sync=False` skips DDP's gradient all-reduce on micro-batches that do not end an accumulation.
    """
    no_sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not sync else contextlib.nullcontext()
    with no_sync:
        with precision.autocast(device):
            loss = model(**{k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "index"}).loss
        scaler.scale(loss / accumulation).backward()
    return loss.detach()


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
                   max_grad_norm: float) -> torch.Tensor:
    """Unscale, clip, step, and return 1 if the scaler skipped this step for overflow (a device tensor)."""
    scaler.unscale_(optimizer)
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    # The scaler records per device whether it found inf/nan; reading its record keeps the skip
    # count on the device instead of forcing a host sync every step.
    found_inf = sum(scaler._found_inf_per_device(optimizer).values()) if scaler.is_enabled() else None
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return torch.zeros(()) if found_inf is None else found_inf.float()


def step_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + epoch) * 1_000_033 + batch


# -- the run ------------------------------------------------------------------------------------

def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train and/or evaluate as `cfg` says; returns the summary (on the main process)."""
    cfg.validate()
    ctx, device = init_distributed(cfg.device, cfg.dist_timeout)
    try:
        return Trainer(cfg, ctx, device).run()
    finally:
        shutdown_distributed()


class Trainer:
    def __init__(self, cfg: TrainConfig, ctx: DistContext, device: torch.device):
        self.cfg, self.ctx, self.device = cfg, ctx, device
        self.output_dir = Path(cfg.output_dir)
        self.precision = Precision.from_flags(cfg.fp16, cfg.bf16, cfg.fp16_opt_level)
        self.task = get_task(cfg.task_name)
        self.log_path = self.output_dir / "train_log.jsonl"
        self.tensorboard = None

    # -- set-up ---------------------------------------------------------------------------------

    def _resolve_inputs(self) -> tuple[Path, Path, bool]:
        cfg = self.cfg
        if cfg.data_dir is None:
            from .sample import prepare_sample_model, sample_data_dir

            if self.task.name != "SST-2":
                raise ValueError("the embedded sample is SST-2; give --data_dir and --model_name_or_path for "
                                 f"{self.task.name}")
            model_dir = self.output_dir / "sample_model"
            if self.ctx.is_main:
                prepare_sample_model(model_dir)
            barrier(self.ctx)
            logger.info("no --data_dir/--model_name_or_path: training the embedded sample from scratch")
            return sample_data_dir(), model_dir, True
        data_dir = Path(cfg.data_dir)
        if not data_dir.is_dir():
            raise FileNotFoundError(f"--data_dir {data_dir}: no such folder. It should hold the {self.task.name} "
                                    f"TSVs; get them with `python3 -m albert_pytorch download --tasks "
                                    f"{self.task.name} --data_dir {data_dir.parent}`")
        return data_dir, resolve_model_dir(cfg.model_name_or_path), cfg.from_scratch

    def _build_model(self, model_dir: Path, from_scratch: bool) -> AlbertForSequenceClassification:
        config = AlbertConfig.from_pretrained(model_dir)
        if self.cfg.config_overrides:
            config = config.with_overrides(self.cfg.config_overrides)
        config.set_labels(None if self.task.is_regression else list(self.task.labels))
        config.finetuning_task = self.task.name
        if self.cfg.max_seq_length > config.max_position_embeddings:
            raise ValueError(f"--max_seq_length {self.cfg.max_seq_length} exceeds the model's "
                             f"max_position_embeddings ({config.max_position_embeddings})")
        torch.manual_seed(self.cfg.seed)
        model_class = AlbertForSequenceClassification
        if self.cfg.implementation == "transformers":
            from .reference import TransformersAlbert as model_class
        elif self.cfg.implementation != "ours":
            raise ValueError(f"--implementation {self.cfg.implementation!r}: use ours or transformers")
        if from_scratch:
            # Initial weights come from our init either way, so both implementations start identical.
            initial = AlbertForSequenceClassification.from_config(config)
            if model_class is AlbertForSequenceClassification:
                return initial
            model = model_class(config)
            model.load_state_dict(initial.state_dict())
            return model
        labels = None if self.task.is_regression else list(self.task.labels)
        return model_class.from_pretrained(model_dir, labels=labels, config=config)

    def _features(self, data_dir: Path, split: str, limit: int | None) -> tuple[GlueFeatures, list]:
        examples, report = read_split(self.task, data_dir, split, skip_bad_rows=self.cfg.skip_bad_rows)
        if report.skipped:
            logger.warning(report.summary())
        features = load_or_build_features(self.task, split, examples, self.tokenizer, self.cfg.max_seq_length,
                                          self.cfg.cache_dir)
        if limit is not None:
            features, examples = features.subset(limit), examples[:limit]
        return features, examples

    # -- main -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        data_dir, model_dir, from_scratch = self._resolve_inputs()
        self.tokenizer = load_tokenizer(model_dir)
        self.model_dir = model_dir
        model = self._build_model(model_dir, from_scratch).to(self.device)
        logger.info("%s: %s parameters, %s on %s, world size %d", self.task.name, f"{count_parameters(model):,}",
                    self.precision.name, self.device, ctx.world_size)
        pad_multiple = cfg.pad_to_multiple_of or (8 if self.device.type != "cpu" else 1)
        self.collator = Collator(self.tokenizer.pad_token_id, pad_multiple)
        eval_sets = {}
        if cfg.do_eval or cfg.eval_steps > 0:
            for split in self.task.eval_splits:
                eval_sets[split] = self._features(data_dir, split, cfg.max_eval_samples)[0]
        if ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / "train_config.json",
                              json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")

        summary: dict[str, Any] = {"task": self.task.name}
        if cfg.do_train:
            train_features, _ = self._features(data_dir, "train", cfg.max_train_samples)
            summary.update(self._train(model, train_features, eval_sets))
        results = {}
        if cfg.do_eval:
            results = self._evaluate_all(model, eval_sets, progress=cfg.progress)
            if ctx.is_main:
                record = {"task": self.task.name, "step": summary.get("step"), "splits": results}
                atomic_write_text(self.output_dir / "eval_results.json", json.dumps(record, indent=2) + "\n")
            first = results[self.task.eval_splits[0]]
            summary.update({self.task.metric: first[self.task.metric], "eval_examples": first["num_examples"]})
        if cfg.do_predict:
            self._predict_test(model, data_dir)
        if ctx.is_main:
            if cfg.do_train:
                self._save_final(model)
                self._plot()
            logger.info("summary: %s", " ".join(f"{k}={_fmt(v)}" for k, v in summary.items()))
        if self.tensorboard is not None:
            self.tensorboard.close()
        return summary

    def _evaluate_all(self, model: nn.Module, eval_sets: dict[str, GlueFeatures], progress: bool = False):
        bare = _unwrap(model)
        results = {}
        for split, features in eval_sets.items():
            metrics, _ = evaluate(bare, self.task, features, self.cfg.eval_batch_size, self.device, self.precision,
                                  self.ctx, self.collator, progress)
            results[split] = {"num_examples": len(features), **metrics}
        return results

    def _train(self, model: nn.Module, features: GlueFeatures, eval_sets: dict[str, GlueFeatures]) -> dict:
        cfg, ctx, device = self.cfg, self.ctx, self.device
        sampler = LengthGroupedBatchSampler(features.lengths, cfg.batch_size, cfg.seed, ctx.world_size, ctx.rank,
                                            group_by_length=cfg.group_by_length)
        loader = DataLoader(features, batch_sampler=sampler, collate_fn=self.collator, num_workers=cfg.num_workers,
                            pin_memory=device.type == "cuda")
        batches_per_epoch = len(sampler)
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
        total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
        optimizer = build_optimizer(cfg.optimizer, model, cfg.learning_rate, cfg.weight_decay, device)
        scheduler = linear_schedule(optimizer, int(cfg.warmup_proportion * total_steps), total_steps)
        scaler = self.precision.grad_scaler(device)
        state = TrainState()
        if cfg.resume_from_checkpoint:
            state = self._resume(model, optimizer, scheduler, scaler)
        train_model: nn.Module = model
        if cfg.torch_compile:
            train_model = torch.compile(train_model)
        if ctx.enabled:
            train_model = DistributedDataParallel(train_model, device_ids=[device.index] if device.index is not None
                                                  else None)
        self._open_tensorboard()
        model.train()
        logger.info("training: %d examples, %d steps (%d per epoch), batch %d x %d devices x %d accumulation",
                    len(features), total_steps, steps_per_epoch, cfg.batch_size, ctx.world_size,
                    cfg.gradient_accumulation_steps)

        window_loss, window_batches = torch.zeros((), device=device), 0
        skipped = torch.zeros((), device=device)
        first_bad_step = torch.full((), -1, device=device)
        window_start, window_samples = time.perf_counter(), 0
        bar = tqdm(total=total_steps, initial=state.step, desc="train", disable=not (cfg.progress and ctx.is_main))
        while state.step < total_steps:
            sampler.set_epoch(state.epoch, state.batch_in_epoch)
            for batch in loader:
                torch.manual_seed(step_seed(cfg.seed, ctx.rank, state.epoch, state.batch_in_epoch))
                state.batch_in_epoch += 1
                ends_group = (state.batch_in_epoch % cfg.gradient_accumulation_steps == 0
                              or state.batch_in_epoch == batches_per_epoch)
                loss = train_step(train_model, batch, self.precision, device, scaler,
                                  cfg.gradient_accumulation_steps, sync=ends_group)
                window_loss += loss.float()
                window_batches += 1
                window_samples += len(batch["input_ids"]) * ctx.world_size
                if self.precision.dtype != torch.float16:
                    # Without a scaler nothing absorbs a NaN: remember where it first appeared.
                    bad = ~torch.isfinite(loss)
                    first_bad_step = torch.where(bad & (first_bad_step < 0), state.step + 1, first_bad_step)
                if not ends_group:
                    continue
                skipped += optimizer_step(train_model, optimizer, scheduler, scaler, cfg.max_grad_norm).to(device)
                state.step += 1
                bar.update(1)
                at_log = state.step % cfg.logging_steps == 0 or state.step == total_steps
                at_save = cfg.save_steps > 0 and state.step % cfg.save_steps == 0
                at_eval = cfg.eval_steps > 0 and state.step % cfg.eval_steps == 0
                if at_log or at_save or at_eval:
                    self._check_finite(first_bad_step)
                if at_log:
                    synchronize(device)
                    elapsed = time.perf_counter() - window_start
                    state.train_seconds += elapsed
                    state.train_samples += window_samples
                    state.skipped_steps += int(skipped.item())
                    skipped.zero_()
                    record = {"type": "train", "step": state.step,
                              "epoch": round(state.epoch + state.batch_in_epoch / batches_per_epoch, 4),
                              "loss": window_loss.item() / max(1, window_batches),
                              "learning_rate": scheduler.get_last_lr()[0],
                              "samples_per_second": window_samples / max(elapsed, 1e-9),
                              "skipped_steps": state.skipped_steps}
                    self._log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}")
                    window_loss.zero_()
                    window_batches = 0
                if at_eval and eval_sets:
                    results = self._evaluate_all(model, eval_sets)
                    first = results[self.task.eval_splits[0]]
                    self._log({"type": "eval", "step": state.step, **{f"eval_{k}": v for k, v in first.items()}})
                    model.train()
                if at_save:
                    self._save_checkpoint(model, optimizer, scheduler, scaler, state)
                if at_log or at_eval or at_save:
                    window_start, window_samples = time.perf_counter(), 0
                if state.step >= total_steps:
                    break
            else:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
        bar.close()
        self._check_finite(first_bad_step)
        if cfg.save_steps <= 0 or state.step % cfg.save_steps:
            self._save_checkpoint(model, optimizer, scheduler, scaler, state)
        return {"step": state.step, "train_samples_per_second": state.train_samples / max(state.train_seconds, 1e-9),
                "train_seconds": state.train_seconds, "skipped_steps": state.skipped_steps}

    def _check_finite(self, first_bad_step: torch.Tensor) -> None:
        bad_step = int(first_bad_step.item())
        if bad_step >= 0:
            good = ckpt.list_checkpoints(self.output_dir)
            last = str(good[-1]) if good else "none saved yet"
            raise TrainingDiverged(f"the loss became NaN or infinite at step {bad_step}; training stopped. "
                                   f"Last good checkpoint: {last}. Try a lower --learning_rate, --max_grad_norm 1.0, "
                                   "or --bf16/--fp16 with loss scaling.")

    # -- checkpoints ------------------------------------------------------------------------------

    def _save_checkpoint(self, model, optimizer, scheduler, scaler, state: TrainState) -> None:
        if self.ctx.is_main:
            training_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                              "scaler": scaler.state_dict(), "train_state": dataclasses.asdict(state),
                              "world_size": self.ctx.world_size}
            path = ckpt.save_checkpoint(self.output_dir, state.step, lambda d: self._write_model_files(model, d),
                                        training_state, self.cfg.save_total_limit)
            logger.info("saved %s", path)
        barrier(self.ctx)

    def _resume(self, model, optimizer, scheduler, scaler) -> TrainState:
        candidates = ckpt.resolve_resume(self.output_dir, self.cfg.resume_from_checkpoint)
        for path in candidates:
            try:
                saved = ckpt.load_state(path)
                resumed = AlbertForSequenceClassification.from_pretrained(path, config=model.config)
            except Exception as err:  # any damage means: try the previous checkpoint
                logger.warning("cannot resume from %s (%s); trying an older checkpoint", path, err)
                continue
            if saved.get("world_size") != self.ctx.world_size:
                logger.warning("%s was written with world size %s, now %s: the data order will differ", path,
                               saved.get("world_size"), self.ctx.world_size)
            model.load_state_dict(resumed.state_dict())
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            state = TrainState(**saved["train_state"])
            if self.ctx.is_main:
                self._truncate_log(state.step)
            logger.info("resumed from %s at step %d", path, state.step)
            return state
        if candidates:
            raise ckpt.CheckpointError(f"none of the checkpoints in {self.output_dir} could be loaded")
        return TrainState()

    def _write_model_files(self, model: nn.Module, directory: Path) -> None:
        _unwrap(model).save_pretrained(directory)
        self.tokenizer.save_pretrained(str(directory))
        spiece = self.model_dir / SPIECE_NAME
        if spiece.is_file():
            shutil.copyfile(spiece, directory / SPIECE_NAME)

    def _save_final(self, model: nn.Module) -> None:
        self._write_model_files(model, self.output_dir)
        logger.info("model saved to %s (loads in transformers too)", self.output_dir)

    # -- logs -------------------------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        if not self.ctx.is_main:
            return
        with open(self.log_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if key not in ("type", "step") and isinstance(value, int | float):
                    self.tensorboard.add_scalar(f"{record['type']}/{key}", value, record["step"])
        if record["type"] == "eval":
            logger.info("step %d: %s", record["step"], " ".join(f"{k}={_fmt(v)}" for k, v in record.items()
                                                                if k.startswith("eval_")))

    def _truncate_log(self, step: int) -> None:
        """Drop log lines past the checkpoint: the resumed run writes them again."""
        if self.log_path.is_file():
            kept = [line for line in self.log_path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= step]
            atomic_write_text(self.log_path, "".join(line + "\n" for line in kept))

    def _open_tensorboard(self) -> None:
        if not self.ctx.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return  # tensorboard is optional; train_log.jsonl has the same numbers
        self.tensorboard = SummaryWriter(str(self.output_dir / "tensorboard"))

    def _plot(self) -> None:
        from .plots import plot_training_curves

        plot_training_curves(self.log_path, self.output_dir / "training_curves.png")

    def _predict_test(self, model: nn.Module, data_dir: Path) -> None:
        from .metrics import predictions_from_logits

        for split in self.task.test_splits:
            features, examples = self._features(data_dir, split, None)
            logits = predict_logits(_unwrap(model), features, self.cfg.eval_batch_size, self.device,
                                    self.precision, self.ctx, self.collator)
            if not self.ctx.is_main:
                continue
            predictions = predictions_from_logits(self.task, logits)
            if self.task.is_regression:
                values = [f"{min(5.0, max(0.0, float(p))):.3f}" for p in predictions]
            else:
                values = [self.task.labels[int(p)] for p in predictions]
            rows = "".join(f"{e.guid}\t{v}\n" for e, v in zip(examples, values, strict=True))
            path = self.output_dir / self.task.submission_name(split)
            atomic_write_text(path, "index\tprediction\n" + rows)
            logger.info("test predictions written to %s", path)


def _unwrap(model: nn.Module) -> nn.Module:
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
