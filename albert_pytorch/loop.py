"""The training loop that every training command shares: `fit()`.

It knows no task. It gets a model whose forward returns `.loss`, a loader whose batch sampler can
resume mid-epoch, and, as arguments, what differs between runs: how to evaluate, and how to write
the model files a checkpoint holds. One `train_step` (forward and scaled backward of a micro-batch)
and one `optimizer_step` (unscale, clip, step); mixed precision, gradient accumulation and DDP wrap
them and never copy them. Randomness (shuffling, dropout) is a pure function of (seed, rank, epoch,
batch), so a run resumed from a checkpoint replays exactly what the uninterrupted run would do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import gemm_rows
from .data.samplers import step_seed
from .device import (
    DistContext,
    Precision,
    barrier,
    cpu_features,
    has_native_bf16,
    init_distributed,
    size_kernel_cache,
    synchronize,
    use_threads,
)
from .gemm_rows import RowSplit
from .io import atomic_write_json
from .modeling import AlbertPreTrainedModel
from .optim import build_optimizer, linear_schedule
from .run_config import LoopConfig
from .rundir import list_checkpoints
from .runlog import RunLog
from .signals import raise_if_signalled

logger = logging.getLogger("albert_pytorch")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite in fp32/bf16, where no loss scaler can absorb it."""


class ResumableBatchSampler(Protocol):
    """A batch sampler whose order is fixed by the epoch, and which can start partway through one."""

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None: ...

    def __len__(self) -> int: ...


@dataclass
class TrainState:
    """Where training stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of `epoch` already trained on
    train_seconds: float = 0.0
    train_samples: int = 0
    skipped_steps: int = 0  # fp16 steps the grad scaler skipped for overflow
    best_metric: float | None = None  # of the evaluations so far, by `Ranking`
    best_step: int = 0
    evaluations_since_best: int = 0

    def progress(self, batches_per_epoch: int) -> float:
        """Epochs trained, fractional (2.5: halfway through the third)."""
        return round(self.epoch + self.batch_in_epoch / batches_per_epoch, 4)

    def record_evaluation(self, value: float, ranking: Ranking) -> None:
        better = self.best_metric is None or (value > self.best_metric if ranking.greater_is_better
                                              else value < self.best_metric)
        if better:
            self.best_metric, self.best_step, self.evaluations_since_best = value, self.step, 0
        else:
            self.evaluations_since_best += 1


@dataclass(frozen=True)
class Ranking:
    """Which of `evaluate()`'s metrics ranks evaluations (for the best checkpoint and early stopping)."""

    metric: str
    greater_is_better: bool = True


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
    """Unscale, clip, step; returns 1 if the step was skipped for an fp16 overflow, else 0 (a device tensor).

    The scaler skips a step exactly when a gradient is inf or NaN, which makes the gradient norm
    non-finite; reading the norm keeps the count on the device instead of syncing with the host.
    """
    scaler.unscale_(optimizer)
    parameters = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    else:
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    if not scaler.is_enabled():
        return torch.zeros((), device=norm.device)
    return (~torch.isfinite(norm)).float()


@dataclass
class LogWindow:
    """The steps since the last log line. Sums stay on the device, so a window costs one host sync."""

    loss: torch.Tensor
    skipped: torch.Tensor
    first_bad_step: torch.Tensor  # the first step whose loss was NaN/inf (fp32/bf16), or -1
    batches: int = 0
    samples: int = 0
    started: float = 0.0

    @classmethod
    def open(cls, device: torch.device) -> LogWindow:
        zero = torch.zeros((), device=device)
        return cls(zero.clone(), zero.clone(), torch.full((), -1, device=device), started=time.perf_counter())

    def add(self, loss: torch.Tensor, samples: int, step: int, watch_for_nan: bool) -> None:
        self.loss += loss.float()
        self.batches += 1
        self.samples += samples
        if watch_for_nan:  # without a loss scaler nothing absorbs a NaN: remember where it first appeared
            bad = ~torch.isfinite(loss)
            self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), step, self.first_bad_step)

    def raise_if_diverged(self, output_dir: Path) -> None:
        bad_step = int(self.first_bad_step.item())
        if bad_step >= 0:
            good = list_checkpoints(output_dir)
            last = str(good[-1]) if good else "none saved yet"
            raise TrainingDiverged(f"the loss became NaN or infinite at step {bad_step}; training stopped. "
                                   f"Last good checkpoint: {last}. Try a lower --learning_rate, --max_grad_norm 1.0, "
                                   "or --bf16/--fp16 with loss scaling.")

    def close(self, state: TrainState, device: torch.device) -> dict[str, float]:
        """Fold the window into `state`; returns its loss, throughput and skip count, and starts anew."""
        synchronize(device)
        elapsed = time.perf_counter() - self.started
        state.train_seconds += elapsed
        state.train_samples += self.samples
        state.skipped_steps += int(self.skipped.item())
        figures = {"loss": self.loss.item() / max(1, self.batches),
                   "samples_per_second": self.samples / max(elapsed, 1e-9), "skipped_steps": state.skipped_steps}
        self.loss.zero_()
        self.skipped.zero_()
        self.batches = 0
        self.restart_clock()
        return figures

    def restart_clock(self) -> None:
        """Time spent evaluating or saving is not training time."""
        self.started, self.samples = time.perf_counter(), 0


RunConfig = TypeVar("RunConfig", bound=LoopConfig)


def start_on_device(cfg: RunConfig) -> tuple[RunConfig, DistContext, torch.device]:
    """This process's device and distributed context, and the run's settings as they run there: oneDNN's kernel
    cache sized before the run's first matmul, the threads chosen (recorded in the settings)."""
    ctx, device = init_distributed(cfg.device, cfg.dist_timeout)
    size_kernel_cache()
    cfg = dataclasses.replace(cfg.on_device(device), threads=use_threads(cfg.thread_count(), ctx.local_world_size))
    return cfg, ctx, device


def split_gemm_rows(cfg: RunConfig, ctx: DistContext, device: torch.device, model: AlbertPreTrainedModel,
                    max_rows: int, trains: bool) -> RunConfig:
    """Apply the run's --gemm_row_split to `model`: the one given, the one the run being resumed recorded, or, for a
    bf16 training run on a CPU in one process, the one measured here (several processes would time each other's
    load); off elsewhere. Returns the settings with it filled in, for train_config.json."""
    spec = cfg.row_split()
    if spec is None:
        split = None
        if trains and cfg.bf16 and device.type == "cpu" and ctx.world_size == 1:
            config = model.config
            split = gemm_rows.measure(config.hidden_size, config.intermediate_size, max_rows, torch.bfloat16)
            logger.info("GEMMs with a %d-wide output, measured on %d threads: %s", config.hidden_size,
                        torch.get_num_threads(), f"row chunks ({split.spec()})" if split else "whole calls")
        spec = split.spec() if split else gemm_rows.OFF
    model.split_gemm_rows(RowSplit.parse(spec))
    return dataclasses.replace(cfg, gemm_row_split=spec)


def fit(model: nn.Module, loader: DataLoader, cfg: LoopConfig, ctx: DistContext, device: torch.device,
        run_log: RunLog, write_model_files: Callable[[nn.Module, Path], None],
        evaluate: Callable[[], dict[str, float]] | None = None, ranking: Ranking | None = None,
        identity: dict[str, Any] | None = None, resume_from: Path | None = None) -> dict[str, Any]:
    """Train `model` on `loader` as `cfg` says, checkpointing in `cfg.output_dir`.

    `evaluate()` returns metrics to log when `cfg.eval_strategy` says; `ranking` names the one that picks
    the best checkpoint and stops early; `write_model_files(model, dir)` writes what a checkpoint holds
    besides the training state; `identity` (what defines the run) goes into every checkpoint's manifest;
    `resume_from` is the checkpoint to continue (`checkpoint.checkpoint_to_resume` found and matched it).
    Returns the step count, throughput and best evaluation, and `final_evaluation`: the metrics of an evaluation
    made at the last step of the weights it returns (None if there was none), so the caller need not repeat it.
    """
    sampler: ResumableBatchSampler = loader.batch_sampler
    batches_per_epoch = len(sampler)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * steps_per_epoch)
    run = _Run.start(model, cfg, ctx, device, run_log, write_model_files, total_steps, identity, resume_from)
    state, precision = run.state, cfg.precision
    train_model = _wrap(model, cfg.torch_compile, ctx, device)
    model.train()
    logger.info("training: %d examples, %d steps (%d per epoch), batch %d x %d devices x %d accumulation",
                len(loader.dataset), total_steps, steps_per_epoch, cfg.batch_size, ctx.world_size,
                cfg.gradient_accumulation_steps)
    advice = bf16_advice(precision, device, getattr(getattr(model, "config", None), "hidden_size", 0), cpu_features())
    if advice and ctx.is_main:
        logger.info("%s", advice)
    window = LogWindow.open(device)
    bar = tqdm(total=total_steps, initial=state.step, desc="train", disable=not (cfg.progress and ctx.is_main))
    while state.step < total_steps and not run.stopped_early():
        sampler.set_epoch(state.epoch, state.batch_in_epoch)
        for batch in loader:
            raise_if_signalled()
            torch.manual_seed(step_seed(cfg.seed, ctx.rank, state.epoch, state.batch_in_epoch))
            state.batch_in_epoch += 1
            ends_epoch = state.batch_in_epoch == batches_per_epoch
            ends_group = state.batch_in_epoch % cfg.gradient_accumulation_steps == 0 or ends_epoch
            loss = train_step(train_model, batch, precision, device, run.scaler, cfg.gradient_accumulation_steps,
                              sync=ends_group)
            window.add(loss, len(batch["input_ids"]) * ctx.world_size, state.step + 1,
                       watch_for_nan=precision.dtype != torch.float16)
            if not ends_group:
                continue
            window.skipped += optimizer_step(train_model, run.optimizer, run.scheduler, run.scaler,
                                             cfg.max_grad_norm)
            state.step += 1
            bar.update(1)
            run.after_step(window, bar, batches_per_epoch, ends_epoch, evaluate, ranking)
            if state.step >= total_steps or run.stopped_early():
                break
        else:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    bar.close()
    window.raise_if_diverged(run.output_dir)
    if cfg.save_strategy != "no" and run.saved_at != state.step:
        run.save()
    last_evaluation = run.last_evaluation
    if cfg.load_best_model_at_end and state.best_step:
        run.load_best(ranking)
        last_evaluation = None  # of other weights than the ones it ends with
    return {"step": state.step, "epoch": state.progress(batches_per_epoch),
            "train_loss": run.last_loss,
            "train_samples_per_second": state.train_samples / max(state.train_seconds, 1e-9),
            "train_seconds": state.train_seconds, "skipped_steps": state.skipped_steps,
            "best_metric": state.best_metric, "best_step": state.best_step or None,
            "final_evaluation": last_evaluation[1] if last_evaluation and last_evaluation[0] == state.step else None}


# From this width up, bf16 autocast trains faster than fp32 on a CPU with bf16 units (AMX or AVX512-BF16); at
# hidden 128 it gains nothing (the measurements: docs/benchmarks.md, "bf16 on a CPU with bf16 units").
BF16_WINS_FROM_HIDDEN = 256


def bf16_advice(precision: Precision, device: torch.device, hidden_size: int, features: list[str]) -> str | None:
    """One line on what bf16 would do for this run on this CPU, where it matters."""
    if device.type != "cpu":
        return None
    native = has_native_bf16(features)
    units = " ".join(f for f in features if "bf16" in f)
    if precision.dtype == torch.bfloat16 and not native:
        return "--bf16 on a CPU without bf16 units: bf16 is emulated here and trains slower than fp32"
    if precision.dtype is None and native and hidden_size >= BF16_WINS_FROM_HIDDEN:
        return (f"this CPU has bf16 units ({units}): --bf16 trains a model this wide (hidden {hidden_size}) "
                "1.3x to 2.1x faster (docs/benchmarks.md)")
    if precision.dtype == torch.bfloat16 and native and hidden_size < BF16_WINS_FROM_HIDDEN:
        return f"--bf16 gains nothing at hidden {hidden_size} on this CPU; fp32 trains as fast"
    return None


@dataclass
class _Run:
    """What one `fit()` call holds besides the model: optimizer, schedule, scaler and where training stands,
    and what happens between steps (log lines, evaluations, checkpoints)."""

    model: nn.Module
    cfg: LoopConfig
    ctx: DistContext
    device: torch.device
    run_log: RunLog
    write_model_files: Callable[[nn.Module, Path], None]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    state: TrainState
    total_steps: int
    identity: dict[str, Any] | None
    saved_at: int = -1
    last_loss: float | None = None  # of the last log line
    last_evaluation: tuple[int, dict[str, float]] | None = None  # (step, metrics) of the last evaluation

    @classmethod
    def start(cls, model: nn.Module, cfg: LoopConfig, ctx: DistContext, device: torch.device, run_log: RunLog,
              write_model_files: Callable[[nn.Module, Path], None], total_steps: int,
              identity: dict[str, Any] | None, resume_from: Path | None) -> _Run:
        """A fresh run, or the one saved in `resume_from` with its optimizer, schedule and state."""
        optimizer = build_optimizer(cfg.optimizer, model, cfg.learning_rate, cfg.weight_decay, device)
        scheduler = linear_schedule(optimizer, int(cfg.warmup_proportion * total_steps), total_steps)
        scaler = cfg.precision.grad_scaler(device)
        run = cls(model, cfg, ctx, device, run_log, write_model_files, optimizer, scheduler, scaler, TrainState(),
                  total_steps, identity)
        if resume_from is not None:
            run.state = TrainState(**ckpt.resume_training(resume_from, model, optimizer, scheduler, scaler,
                                                          ctx.world_size))
            run_log.truncate(run.state.step)
            # a run resumed at its end trains no step: its loss is the one its log holds
            run.last_loss = next((r["loss"] for r in reversed(run_log.records()) if r["type"] == "train"), None)
        return run

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)

    def after_step(self, window: LogWindow, bar: tqdm, batches_per_epoch: int, ends_epoch: bool,
                   evaluate: Callable[[], dict[str, float]] | None, ranking: Ranking | None) -> None:
        """The log line, evaluation and checkpoint that fall on the step just taken, if any."""
        cfg, state = self.cfg, self.state
        at_log = state.step % cfg.logging_steps == 0 or state.step == self.total_steps
        at_eval = evaluate is not None and _due(cfg.eval_strategy, cfg.eval_steps, state.step, ends_epoch)
        # the best checkpoint can only be loaded at the end if every evaluated state was saved
        at_save = (_due(cfg.save_strategy, cfg.save_steps, state.step, ends_epoch)
                   or (at_eval and cfg.load_best_model_at_end))
        if at_log or at_save or at_eval:
            window.raise_if_diverged(self.output_dir)
        if at_log:
            figures = window.close(state, self.device)
            self.run_log.write({"type": "train", "step": state.step, "epoch": state.progress(batches_per_epoch),
                                **figures, "learning_rate": self.scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{figures['loss']:.4f}")
            self.last_loss = figures["loss"]
            if not cfg.progress and self.ctx.is_main:  # no bar (a log file, a CI runner): a line instead
                logger.info("%s", progress_line(state, self.total_steps, figures, self.scheduler.get_last_lr()[0],
                                                state.progress(batches_per_epoch)))
        if at_eval:
            metrics = evaluate()
            self.last_evaluation = (state.step, metrics)
            self.run_log.write({"type": "eval", "step": state.step, **{f"eval_{k}": v for k, v in metrics.items()}})
            if ranking is not None:
                state.record_evaluation(metrics[ranking.metric], ranking)
                if self.stopped_early():
                    logger.info("early stopping at step %d: %d evaluations without a better %s than step %d's %.4f",
                                state.step, state.evaluations_since_best, ranking.metric, state.best_step,
                                state.best_metric)
            self.model.train()
        if at_save:
            self.save()
        if at_eval or at_save:
            window.restart_clock()

    def stopped_early(self) -> bool:
        return 0 < self.cfg.early_stopping_patience <= self.state.evaluations_since_best

    def save(self) -> None:
        state = self.state
        if self.ctx.is_main:
            path = ckpt.save_training_checkpoint(self.output_dir, state.step,
                                                 lambda d: self.write_model_files(self.model, d), self.optimizer,
                                                 self.scheduler, self.scaler, dataclasses.asdict(state),
                                                 self.ctx.world_size, self.cfg.save_total_limit,
                                                 protect=state.best_step, run=self.identity)
            logger.info("saved %s", path)
        barrier(self.ctx)
        self.saved_at = state.step

    def load_best(self, ranking: Ranking) -> None:
        best = self.output_dir / f"checkpoint-{self.state.best_step}"
        self.model.load_state_dict(ckpt.load_model_weights(best, self.model), strict=False)
        self.model.tie_weights()
        logger.info("loaded the best checkpoint, %s (%s %.4f)", best, ranking.metric, self.state.best_metric)


def progress_line(state: TrainState, total_steps: int, figures: dict[str, float], learning_rate: float,
                  epoch: float) -> str:
    """run_glue's log line (loss, learning rate, epoch) with the speed and the time left at that speed."""
    seconds_left = (total_steps - state.step) * state.train_seconds / max(state.step, 1)
    minutes, seconds = divmod(round(seconds_left), 60)
    hours, minutes = divmod(minutes, 60)
    eta = f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
    return (f"step {state.step}/{total_steps}: loss={figures['loss']:.4f} learning_rate={learning_rate:.3g} "
            f"epoch={epoch:.2f} samples_per_second={figures['samples_per_second']:.1f} eta={eta}")


def write_trainer_state(cfg: LoopConfig, summary: dict[str, Any], run_log: RunLog) -> None:
    """trainer_state.json as transformers' Trainer writes it: the log history and the best evaluation."""
    best_step = summary.get("best_step")
    state = {"global_step": summary["step"], "epoch": summary["epoch"], "max_steps": cfg.max_steps,
             "num_train_epochs": cfg.num_train_epochs, "train_batch_size": cfg.batch_size,
             "logging_steps": cfg.logging_steps, "eval_steps": cfg.eval_steps, "save_steps": cfg.save_steps,
             "best_metric": summary.get("best_metric"), "best_global_step": best_step,
             "best_model_checkpoint": str(Path(cfg.output_dir) / f"checkpoint-{best_step}") if best_step else None,
             "log_history": run_log.records()}
    atomic_write_json(Path(cfg.output_dir) / "trainer_state.json", state)


def _due(strategy: str, every: int, step: int, ends_epoch: bool) -> bool:
    """Whether an evaluation or a checkpoint falls on this step under its strategy."""
    if strategy == "epoch":
        return ends_epoch
    return strategy == "steps" and every > 0 and step % every == 0


def _wrap(model: nn.Module, compile_model: bool, ctx: DistContext, device: torch.device) -> nn.Module:
    """The module the steps run: compiled and/or DDP-wrapped. `model` itself stays the one to save."""
    if compile_model:
        model = torch.compile(model)
    if ctx.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.index is not None else None)
    return model
