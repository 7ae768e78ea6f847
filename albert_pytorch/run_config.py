"""The settings of a run (`train_config.json`): the training loop's, fine-tuning's and pretraining's.

`LoopConfig` (what every training command shares), `TrainConfig` (fine-tuning) and `PretrainConfig` hold
each setting's default, help text and allowed values in one place; `cli.py` generates the command-line
flags from them. `validate()` makes every check the settings alone allow, before anything is read.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import ATTENTION_IMPLEMENTATIONS, KERNEL_IMPLEMENTATIONS, AlbertConfig, ConfigError
from .data.glue import get_task
from .device import Precision
from .errors import UsageError
from .gemm_rows import RowSplit
from .metrics import resolve_metric
from .ranges import (
    COUNT,
    FRACTION,
    NON_NEGATIVE,
    OPEN_PROBABILITY,
    POSITIVE,
    POSITIVE_INT,
    PRETRAINING_SEQUENCE_LENGTH,
    PROBABILITY,
    SEQUENCE_LENGTH,
    STEPS_OR_UNSET,
    Range,
)


def run_model_config(config: AlbertConfig, overrides: str, max_seq_length: int,
                     attn_implementation: str | None = None) -> AlbertConfig:
    """`config` with a run's --config_overrides applied, checked to hold --max_seq_length, computing attention as
    the run says (`LoopConfig.on_device` chose it); a flag that does not fit is a usage error."""
    try:
        if overrides:
            config = config.with_overrides(overrides)
        config.check_sequence_length(max_seq_length)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    if attn_implementation is not None:
        config = dataclasses.replace(config, attn_implementation=attn_implementation)
    return config


def default_kernels(device: torch.device, bf16: bool) -> str:
    """The kernels that trained faster, measured (docs/benchmarks.md): compiled for bf16 on a CPU (the GELU's forward
    and backward 2.1-2.5x, the weight-gradient GEMMs on transposed copies about 2x; whole steps 1.13-1.18x at
    albert-base) where a C++ compiler is there for inductor; eager elsewhere (unmeasured on accelerators, and in
    fp32 on a CPU, where MKL reads transposed operands at full speed, not worth the compile time that every run
    would pay)."""
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("clang++")
    return "compiled" if device.type == "cpu" and bf16 and compiler else "eager"


def default_attention(device: torch.device, bf16: bool) -> str:
    """The attention that trained faster, measured per device and precision (docs/benchmarks.md): eager for bf16
    on a CPU, whose oneDNN matmuls beat the fused kernel's bf16 backward; sdpa elsewhere."""
    return "eager" if device.type == "cpu" and bf16 else "sdpa"


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None, aliases: tuple[str, ...] = (),
            shown_default: str | None = None, defines_run: bool = False, range: Range | None = None) -> Any:
    """A run-config field with its command-line help; `choices` and a numeric field's `range` are checked here
    and by the parser.

    `defines_run`: the setting shapes what is trained (data, schedule, precision ...), so a run resumed from a
    checkpoint must have the value the checkpoint was trained with (`run_settings`).
    """
    return field(default=default, metadata={"help": help, "choices": choices, "aliases": aliases,
                                            "shown_default": shown_default, "defines_run": defines_run,
                                            "range": range})


def run_settings(config: Any) -> dict[str, Any]:
    """The settings of a run config that define the run (see `setting`), by name."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.metadata.get("defines_run")}


@dataclass
class LoopConfig:
    """The settings of the training loop itself, shared by every training command."""

    output_dir: str = setting("outputs/run", "where the model, checkpoints and logs go; training refuses a "
                                             "non-empty one unless --overwrite_output_dir or resuming")
    overwrite_output_dir: bool = setting(False, "replace the files of an earlier run in --output_dir (one that "
                                                "holds a train_config.json) once every input is checked; your own "
                                                "files there stay, and other non-empty folders are refused")
    num_train_epochs: float = setting(3.0, "epochs to train (fractions allowed)", defines_run=True, range=NON_NEGATIVE)
    max_steps: int = setting(-1, "optimizer steps to train; > 0 overrides --num_train_epochs", defines_run=True,
                             range=STEPS_OR_UNSET)
    batch_size: int = setting(32, "training batch size per device",
                              aliases=("--batch-size", "--per_device_train_batch_size"), defines_run=True,
                              range=POSITIVE_INT)
    eval_batch_size: int = setting(64, "evaluation batch size per device", aliases=("--per_device_eval_batch_size",),
                                   range=POSITIVE_INT)
    learning_rate: float = setting(2e-5, "peak learning rate", defines_run=True, range=POSITIVE)
    weight_decay: float = setting(0.01, "decoupled weight decay on weight matrices (not biases or LayerNorm)",
                                  defines_run=True, range=NON_NEGATIVE)
    warmup_proportion: float = setting(0.1, "fraction of the steps spent warming the learning rate up; then "
                                            "it decays linearly to 0", aliases=("--warmup_ratio",), defines_run=True,
                                            range=FRACTION)
    gradient_accumulation_steps: int = setting(1, "micro-batches per optimizer step", defines_run=True,
                                               range=POSITIVE_INT)
    max_grad_norm: float = setting(1.0, "clip the gradient norm to this (0: no clipping)", defines_run=True,
                                   range=NON_NEGATIVE)
    seed: int = setting(42, "seed for initialization, shuffling and dropout", defines_run=True, range=COUNT)
    logging_steps: int = setting(50, "write a train_log.jsonl line every N steps", range=POSITIVE_INT)
    save_steps: int = setting(0, "write checkpoint-<step>/ every N steps (0: only at the end)", range=COUNT)
    save_total_limit: int = setting(2, "checkpoints kept; older ones are deleted (never the best one)",
                                    range=POSITIVE_INT)
    save_strategy: str = setting("steps", "when to checkpoint: every --save_steps, at each epoch's end, or "
                                          "never", choices=("steps", "epoch", "no"))
    eval_steps: int = setting(0, "evaluate every N steps (0: only at the end)", range=COUNT)
    eval_strategy: str = setting("steps", "when to evaluate during training: every --eval_steps, at each "
                                          "epoch's end, or never", choices=("steps", "epoch", "no"))
    load_best_model_at_end: bool = setting(False, "end with the best evaluated checkpoint's weights instead of "
                                                  "the last ones (a checkpoint is saved at every evaluation)")
    metric_for_best_model: str | None = setting(None, "what ranks evaluations: a metric (acc, mcc, corr, f1, "
                                                      "pearson, ... or transformers' names) or loss",
                                                shown_default="the task's main metric", defines_run=True)
    early_stopping_patience: int = setting(0, "stop after N evaluations without improvement (0: never)", range=COUNT)
    optimizer: str = setting("adamw", "adamw, or lamb (ALBERT's optimizer; apex's fused LAMB on CUDA/NPU "
                                      "when installed)", choices=("adamw", "lamb"), defines_run=True)
    fp16: bool = setting(False, "mixed precision in float16 with dynamic loss scaling", defines_run=True)
    fp16_opt_level: str = setting("O1", "apex level, accepted for ModelZoo scripts: O1 and O2 both map onto "
                                        "native torch.amp (no apex needed)", choices=("O1", "O2"), defines_run=True)
    bf16: bool = setting(False, "mixed precision in bfloat16 (no loss scaling needed)", defines_run=True)
    device: str = setting("auto", "auto picks cuda, then npu, then cpu; a named device that is absent is an "
                                  "error", choices=("auto", "cpu", "cuda", "npu"))
    resume_from_checkpoint: str | None = setting(None, "'latest' (newest good checkpoint in --output_dir) or a "
                                                       "checkpoint directory")
    num_workers: int = setting(0, "DataLoader worker processes for training batches", range=COUNT)
    attn_implementation: str | None = setting(None, "attention kernels: sdpa (torch's fused ones) or eager (matmul, "
                                                    "softmax, matmul); the same numbers, and the model's config.json "
                                                    "carries the choice to transformers",
                                              choices=ATTENTION_IMPLEMENTATIONS,
                                              shown_default="eager for --bf16 on a CPU (measured 1.33x sdpa's "
                                                            "training speed at albert-base), sdpa elsewhere")
    kernels: str | None = setting(
        None, "kernels for the element-wise and layout work: eager (torch's) or compiled (torch.compile: the tanh "
              "GELU's value and slope in one loop, and contiguous transposed operands for the shared weights' "
              "gradient GEMMs); the same numbers",
        choices=KERNEL_IMPLEMENTATIONS,
        shown_default="compiled for --bf16 on a CPU where a C++ compiler is installed (measured 1.13-1.18x "
                      "training steps at albert-base), eager elsewhere")
    gemm_row_split: str | None = setting(
        None, "the shared layer's GEMMs with a hidden-wide output run in row chunks where the host's oneDNN would "
              "leave a thread idle: off, or WIDTH:CHUNK:LO-HI[,LO-HI...] (calls of at most CHUNK rows for row counts "
              "in those windows); the same products, to float rounding",
        shown_default="measured when a --bf16 run starts on a CPU in one process (about 2 s at albert-base; "
                      "train_config.json records it and a resume reuses it), off elsewhere")
    threads: int | None = setting(None, "intra-op CPU threads", range=POSITIVE_INT,
                                  shown_default="the cores idle at start, shared among torchrun's ranks on the "
                                                "machine (on a busy machine, spinning threads cost more than they "
                                                "give); OMP_NUM_THREADS when set")
    torch_compile: bool = setting(False, "run the training step through torch.compile")
    dist_timeout: float = setting(600.0, "seconds a process waits for a dead peer before failing", range=POSITIVE)
    progress: bool = setting(True, "progress bars", shown_default="on when stderr is a terminal and CI is unset")
    report_to: str = setting("tensorboard", "also log to TensorBoard (one folder per run under "
                                            "<output_dir>/tensorboard), or not", choices=("tensorboard", "none"))

    @property
    def evaluates_during_training(self) -> bool:
        return self.eval_strategy == "epoch" or (self.eval_strategy == "steps" and self.eval_steps > 0)

    @property
    def precision(self) -> Precision:
        """The run's precision: fp32, fp16 with loss scaling, or bf16."""
        return Precision.from_flags(self.fp16, self.bf16, self.fp16_opt_level)

    def validate(self) -> None:
        """Every check the settings alone allow, so that a bad flag fails before anything is written."""
        for f in dataclasses.fields(self):
            choices, value = f.metadata.get("choices"), getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise UsageError(f"--{f.name} {value!r}: choose from {', '.join(choices)}")
            if f.metadata.get("range") is not None:
                f.metadata["range"].check(f"--{f.name}", value)
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise UsageError("--num_train_epochs must be positive (or give --max_steps)")
        if self.fp16 and self.bf16:
            raise UsageError("choose one of --fp16 and --bf16")
        if self.gemm_row_split is not None:
            try:
                RowSplit.parse(self.gemm_row_split)
            except ValueError as err:
                raise UsageError(f"--gemm_row_split {err}") from None
        for name in ("load_best_model_at_end", "early_stopping_patience"):
            if getattr(self, name) and not self.evaluates_during_training:
                raise UsageError(f"--{name} ranks evaluations made during training: add --eval_steps N or "
                                 "--eval_strategy epoch")
        if self.load_best_model_at_end and self.save_strategy == "no":
            raise UsageError("--load_best_model_at_end needs checkpoints; drop --save_strategy no")

    def thread_count(self) -> int | None:
        """--threads; on a resume without it (or OMP_NUM_THREADS), the count the run computed with before (its
        train_config.json): the thread split changes the order of float sums, and a resume is exact only with the
        same split."""
        if self.threads or os.environ.get("OMP_NUM_THREADS"):
            return self.threads
        recorded = self.recorded("threads")
        return recorded if isinstance(recorded, int) and recorded > 0 else None

    def row_split(self) -> str | None:
        """--gemm_row_split; on a resume without it, the split the run computed with before (as `thread_count`)."""
        if self.gemm_row_split is not None:
            return self.gemm_row_split
        recorded = self.recorded("gemm_row_split")
        if not isinstance(recorded, str):
            return None
        try:
            RowSplit.parse(recorded)
        except ValueError:
            return None  # an edited record: measured afresh
        return recorded

    def recorded(self, name: str) -> Any:
        """Setting `name` as the run being resumed recorded it in its train_config.json; None for a new run."""
        if not self.resume_from_checkpoint:
            return None
        try:
            with open(os.path.join(self.output_dir, "train_config.json"), encoding="utf-8") as handle:
                return json.load(handle).get(name)
        except (OSError, ValueError, AttributeError):
            return None

    def on_device(self, device: torch.device):
        """The settings as they run on `device`; train_config.json records what ran. fp16 on a CPU (no native fp16
        there: emulated, about 6x slower than fp32) runs in fp32, said once. Attention is --attn_implementation's,
        or the faster measured for the device and precision: eager for bf16 on a CPU (1.33x sdpa's training steps
        at albert-base, docs/benchmarks.md), sdpa elsewhere."""
        cfg = self
        if cfg.fp16 and device.type == "cpu":
            logging.getLogger("albert_pytorch").warning(
                "--fp16 on a CPU: it has no fp16 arithmetic (emulated, about 6x slower), so this run trains in fp32 "
                "(--bf16 is the fast mixed precision on CPUs with bf16 units)")
            cfg = dataclasses.replace(cfg, fp16=False)
        if cfg.attn_implementation is None:
            cfg = dataclasses.replace(cfg, attn_implementation=default_attention(device, cfg.bf16))
        if cfg.kernels is None:
            cfg = dataclasses.replace(cfg, kernels=default_kernels(device, cfg.bf16))
        return cfg

    @classmethod
    def from_flags(cls, given: dict[str, Any]):
        """The run a command line means, from the flags that were typed (`given`); progress bars show only
        in a terminal."""
        values = dict(given)
        values.setdefault("progress", sys.stderr.isatty() and not os.environ.get("CI"))
        config = cls(**values)
        config.validate()
        return config


# The embedded sample trains a tiny model from scratch, which wants a far higher learning rate than
# fine-tuning does; these replace the defaults of every flag not given when no data is named.
SAMPLE_RECIPE = {"learning_rate": 2e-3, "num_train_epochs": 10.0, "batch_size": 16, "warmup_proportion": 0.1,
                 "logging_steps": 10, "max_seq_length": 64}


@dataclass
class TrainConfig(LoopConfig):
    """One fine-tuning run; saved as train_config.json beside its outputs."""

    task_name: str = setting("SST-2", "GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI",
                             defines_run=True)
    data_dir: str | None = setting(None, "the task's folder of GLUE TSVs (e.g. dataset/SST-2); with neither it "
                                         "nor --model_name_or_path, the embedded sample is trained")
    model_name_or_path: str | None = setting(None, "model directory (config.json, weights, spiece.model) or "
                                                   "hub id")
    train_file: str | None = setting(None, "your own training data instead of a GLUE task: .csv, .tsv or .jsonl "
                                           "with named columns")
    validation_file: str | None = setting(None, "your own dev data, same columns (for --do_eval)")
    test_file: str | None = setting(None, "your own test data, labels optional (for --do_predict)")
    text_column: str | None = setting(None, "the text column of your files",
                                      shown_default="sentence, or else the file's one column besides the label "
                                                    "(two: a pair), as run_glue picks them")
    text_pair_column: str | None = setting(None, "the second text column, for sentence pairs")
    label_column: str = setting("label", "the label column of your files")
    label_names: str = setting("", "comma-separated classes in the order the model numbers them",
                               shown_default="the training file's labels, sorted")
    task_type: str = setting("auto", "classification or regression; auto: regression when the labels are "
                                     "non-integer numbers", choices=("auto", "classification", "regression"))
    output_dir: str = setting("outputs/SST-2", "where the model, checkpoints and logs go")
    do_train: bool = setting(True, "train", shown_default="on, unless --do_eval is asked for without --do_train")
    do_eval: bool = setting(True, "evaluate on the dev set(s)",
                            shown_default="on, unless --do_train is asked for without --do_eval; own data: when "
                                          "--validation_file is given")
    do_predict: bool = setting(False, "write test-set predictions in GLUE submission format (independent of "
                                      "--do_train and --do_eval)")
    max_seq_length: int = setting(128, "longest input in tokens; longer ones are cut (pairs longest-first)",
                                  defines_run=True, range=SEQUENCE_LENGTH)
    max_train_samples: int | None = setting(None, "train on the first N examples only", defines_run=True,
                                            range=POSITIVE_INT)
    max_eval_samples: int | None = setting(None, "evaluate on the first N examples only", defines_run=True,
                                           range=POSITIVE_INT)
    from_scratch: bool = setting(False, "random init from the model directory's config.json instead of loading "
                                        "weights")
    config_overrides: str = setting("", "comma-separated config changes, e.g. hidden_size=256,num_hidden_layers=4")
    group_by_length: bool = setting(True, "batch sentences of similar length together, which cuts padding",
                                    defines_run=True)
    pad_to_multiple_of: int = setting(0, "pad each batch's length to a multiple of N (0: 8 on GPU/NPU, 1 on CPU)",
                                      range=COUNT)
    skip_bad_rows: bool = setting(False, "skip malformed TSV rows (counted and reported) instead of stopping at "
                                         "the first")
    cache_dir: str | None = setting(None, "feature cache folder", shown_default="$ALBERT_PYTORCH_CACHE or "
                                                                                "~/.cache/albert_pytorch")

    def validate(self) -> None:
        super().validate()
        if not (self.do_train or self.do_eval or self.do_predict):
            raise UsageError("nothing to do: --no-do_train, --no-do_eval and no --do_predict")
        if self.from_scratch and not self.do_train:
            raise UsageError("--from_scratch without --do_train would evaluate random weights")
        if self.resume_from_checkpoint and not self.do_train:
            raise UsageError("--resume_from_checkpoint continues training: add --do_train")
        names = self.label_name_list
        if names is not None and len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise UsageError(f"--label_names names {', '.join(map(repr, duplicates))} more than once")
        if self.own_files:
            self._validate_own_files()
            return
        try:
            task = get_task(self.task_name)
            resolve_metric(self.metric_for_best_model, task)
        except ValueError as err:
            raise UsageError(str(err)) from None
        if (self.data_dir is None) != (self.model_name_or_path is None):
            missing = "--data_dir" if self.data_dir is None else "--model_name_or_path"
            raise UsageError(f"{missing} is missing: give both --data_dir and --model_name_or_path, or neither "
                             "to run the embedded sample")
        if self.data_dir is None and task.name != "SST-2":
            raise UsageError(f"the embedded sample is SST-2; give --data_dir and --model_name_or_path for "
                             f"{task.name}")

    @property
    def own_files(self) -> bool:
        return any((self.train_file, self.validation_file, self.test_file))

    @property
    def label_name_list(self) -> list[str] | None:
        """--label_names as a list, or None when not given."""
        return [name.strip() for name in self.label_names.split(",") if name.strip()] or None

    def _validate_own_files(self) -> None:
        if self.data_dir is not None:
            raise UsageError("--data_dir (a GLUE task) and --train_file/--validation_file/--test_file (your own "
                             "data) exclude each other")
        if self.model_name_or_path is None:
            raise UsageError("your own data needs --model_name_or_path (a model directory, or its config.json "
                             "with --from_scratch)")
        for action, file, flag in (("do_train", self.train_file, "--train_file"),
                                   ("do_eval", self.validation_file, "--validation_file"),
                                   ("do_predict", self.test_file, "--test_file")):
            if getattr(self, action) and not file:
                raise UsageError(f"--{action} with your own data needs {flag}")
        if self.evaluates_during_training and not self.validation_file:
            raise UsageError("evaluating during training (--eval_steps, --eval_strategy epoch) needs "
                             "--validation_file")

    @classmethod
    def from_flags(cls, given: dict[str, Any]) -> TrainConfig:
        """The run a command line means; `given` holds only the flags that were typed.

        As in run_glue, --do_train, --do_eval and --do_predict are independent. Asking for neither --do_train
        nor --do_eval trains and evaluates (your own data: evaluates when it has a --validation_file); asking
        for one of them does only what is asked; --no-do_train or --no-do_eval turns off just that one. With no
        data and no model named it runs the embedded sample, whose recipe (SAMPLE_RECIPE) fills every flag not
        given.
        """
        values = dict(given)
        asked = bool(given.get("do_train") or given.get("do_eval"))
        values.setdefault("do_train", not asked)
        values.setdefault("do_eval", not asked)
        if values.get("train_file") and "do_eval" not in given:
            values["do_eval"] = bool(values.get("validation_file"))  # own data evaluates when it has a dev file
        if not any(name in values for name in ("data_dir", "model_name_or_path", "train_file", "validation_file",
                                                "test_file")):
            recipe = {k: v for k, v in SAMPLE_RECIPE.items() if k not in values}
            logging.getLogger("albert_pytorch").info(
                "embedded sample recipe: %s", ", ".join(f"{k}={v}" for k, v in recipe.items()))
            values.update(recipe)
        return super().from_flags(values)


# What a pretraining evaluation reports; the losses rank lower-is-better.
PRETRAINING_METRICS = ("loss", "mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy")


@dataclass
class PretrainConfig(LoopConfig):
    """One pretraining run (masked LM + sentence order on raw text); saved as train_config.json."""

    train_files: list[str] | None = setting(None, "text files, or folders of .txt files, to pretrain on "
                                                  "(never a dev or test file of a task you will evaluate)")
    validation_files: list[str] | None = setting(None, "held-out text for MLM loss/accuracy and SOP accuracy")
    model_name_or_path: str | None = setting(None, "model directory to continue pretraining from, or whose "
                                                   "config.json --from_scratch starts from")
    tokenizer_name: str | None = setting(None, "tokenizer directory (the tokenizer command's output)",
                                         shown_default="--model_name_or_path's")
    from_scratch: bool = setting(False, "random init; the config comes from --model_name_or_path or, without "
                                        "it, is albert-base-v2's, and its vocab_size follows the tokenizer")
    config_overrides: str = setting("", "comma-separated config changes, e.g. hidden_size=256,num_hidden_layers=4")
    line_by_line: bool = setting(False, "each non-blank line is a document of its own (a file of short phrases); "
                                        "otherwise documents end at blank lines and WikiText title lines",
                                 defines_run=True)
    max_seq_length: int = setting(128, "tokens per pretraining sequence, [CLS] and both [SEP] included",
                                  defines_run=True, range=PRETRAINING_SEQUENCE_LENGTH)
    short_seq_prob: float = setting(0.1, "probability of a shorter target length for a sequence", defines_run=True,
                                    range=PROBABILITY)
    mlm_probability: float = setting(0.15, "share of the (non-special) tokens predicted", defines_run=True,
                                     range=OPEN_PROBABILITY)
    max_ngram: int = setting(3, "longest masked n-gram, in whole words (p(n) proportional to 1/n)", defines_run=True,
                             range=POSITIVE_INT)
    max_predictions_per_seq: int = setting(20, "cap on the predicted tokens of one sequence", defines_run=True,
                                           range=POSITIVE_INT)
    max_eval_samples: int | None = setting(None, "evaluate on the first N held-out pairs only", defines_run=True,
                                           range=POSITIVE_INT)
    group_by_length: bool = setting(True, "batch sequences of similar length together, which cuts padding",
                                    defines_run=True)
    pad_to_multiple_of: int = setting(0, "pad each batch's length to a multiple of N (0: 8 on GPU/NPU, 1 on CPU)",
                                      range=COUNT)
    cache_dir: str | None = setting(None, "token shard cache folder (on a cluster, storage every machine shares, "
                                          "so each part is prepared once)",
                                    shown_default="$ALBERT_PYTORCH_CACHE's pretraining/")
    corpus_part_mb: float = setting(4.0, "text per preparation part, each cut moved on to the next document start; "
                                         "a part's pairs have their own seed, so this changes the pairs",
                                    range=POSITIVE)
    preprocessing_num_workers: int | None = setting(None, "processes preparing the corpus's parts on this machine "
                                                          "(torchrun's ranks on it share them)",
                                                    shown_default="its cores", range=POSITIVE_INT)
    prepare_only: bool = setting(False, "prepare the corpus's cache and stop: a CPU job ahead of the training "
                                        "job, which needs the same corpus and corpus settings")
    output_dir: str = setting("outputs/pretrain", "where the model, checkpoints and logs go")
    optimizer: str = setting("lamb", "lamb (ALBERT's optimizer; apex's fused LAMB on CUDA/NPU when installed) or "
                                     "adamw", choices=("adamw", "lamb"), defines_run=True)
    learning_rate: float = setting(8e-3, "peak learning rate (for LAMB at batch 64; 2e-3 lowered the MLM loss "
                                         "4x less in 250 steps, see docs/results.md)", defines_run=True, range=POSITIVE)
    batch_size: int = field(default=64, metadata=LoopConfig.__dataclass_fields__["batch_size"].metadata)
    metric_for_best_model: str | None = setting(None, "what ranks evaluations: " + ", ".join(PRETRAINING_METRICS),
                                                shown_default="loss", defines_run=True)

    def validate(self) -> None:
        super().validate()
        if not self.train_files:
            raise UsageError("--train_files is missing: name the text files or folders to pretrain on")
        if self.model_name_or_path is None and not self.from_scratch and not self.prepare_only:
            raise UsageError("give --model_name_or_path (a model to continue pretraining), or --from_scratch")
        if self.model_name_or_path is None and self.tokenizer_name is None:
            raise UsageError("--from_scratch without --model_name_or_path needs --tokenizer_name (a directory the "
                             "tokenizer command wrote)")
        if self.metric_for_best_model not in (None, *PRETRAINING_METRICS):
            raise UsageError(f"--metric_for_best_model {self.metric_for_best_model!r}: choose from "
                             f"{', '.join(PRETRAINING_METRICS)}")
        if self.evaluates_during_training and not self.validation_files:
            raise UsageError("evaluating during pretraining needs --validation_files (held-out text)")
