"""`python3 -m albert_pytorch <command>`: the only place that parses command lines."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing

_HELP = {
    "task_name": "GLUE task: CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE or WNLI",
    "data_dir": "the task's folder of GLUE TSVs (e.g. dataset/SST-2); omit with --model_name_or_path to "
                "train the embedded sample",
    "model_name_or_path": "model directory (config.json + weights + spiece.model) or hub id",
    "batch_size": "training batch size per device",
    "max_steps": "optimizer steps to train; > 0 overrides --num_train_epochs",
    "save_steps": "write checkpoint-<step>/ every N steps (0: only at the end)",
    "eval_steps": "evaluate on dev every N steps (0: only at the end)",
    "optimizer": "adamw, or lamb (ALBERT's optimizer; apex's fused LAMB on CUDA/NPU when installed)",
    "fp16_opt_level": "apex level O1 or O2, both mapped onto native torch.amp (no apex needed)",
    "from_scratch": "random init from the model directory's config.json instead of loading weights",
    "config_overrides": "comma-separated config changes, e.g. hidden_size=256,num_hidden_layers=4",
    "resume_from_checkpoint": "'latest' (newest good checkpoint in --output_dir) or a checkpoint directory",
    "group_by_length": "batch sentences of similar length together, which cuts padding (on by default)",
    "pad_to_multiple_of": "pad each batch's length to a multiple of N (0: 8 on GPU/NPU, 1 on CPU)",
    "skip_bad_rows": "skip malformed TSV rows (counted and reported) instead of stopping at the first",
    "dist_timeout": "seconds a process waits for a dead peer before failing",
}
_ACTIONS = ("do_train", "do_eval", "do_predict")


def _unwrap_optional(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return args[0]
    return annotation


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, aliases: dict[str, list[str]] | None = None):
    """One flag per dataclass field, typed from its annotation; booleans become on/off switches."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = _unwrap_optional(hints[f.name])
        names = [f"--{f.name}", *(aliases or {}).get(f.name, [])]
        help_text = _HELP.get(f.name, "")
        if kind is bool:
            parser.add_argument(*names, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(*names, type=kind, default=None,
                                help=f"{help_text} (default: {f.default})".strip())


def _train_config(args: argparse.Namespace):
    from .train import TrainConfig

    given = {k: v for k, v in vars(args).items() if v is not None and k in TrainConfig.__dataclass_fields__}
    if not any(given.get(action) for action in _ACTIONS):
        given.update(do_train=True, do_eval=True)  # a bare `train` trains and evaluates
    else:
        given = {**{a: False for a in _ACTIONS}, **given}
    if args.model_type != "albert":
        raise ValueError(f"--model_type {args.model_type}: only albert is supported")
    if "data_dir" not in given and "model_name_or_path" not in given:
        from .sample import SAMPLE_RECIPE

        recipe = {k: v for k, v in SAMPLE_RECIPE.items() if k not in given}
        logging.getLogger("albert_pytorch").info(
            "embedded sample recipe: %s", ", ".join(f"{k}={v}" for k, v in recipe.items()))
        given.update(recipe)
    if not sys.stderr.isatty() or os.environ.get("CI"):
        given.setdefault("progress", False)
    return TrainConfig(**given)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import run

    summary = run(_train_config(args))
    return 0 if summary is not None else 1


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    parser = argparse.ArgumentParser(prog="python3 -m albert_pytorch",
                                     description="Fine-tune ALBERT on GLUE and ship it through ONNX.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="fine-tune and/or evaluate on a GLUE task (torchrun for many devices)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_arguments(train, TrainConfig, aliases={"batch_size": ["--batch-size"]})
    train.add_argument("--model_type", default="albert", help="accepted for compatibility; only albert")
    train.add_argument("--local_rank", "--local-rank", type=int, default=None,
                       help="ignored: launch with torchrun, which sets LOCAL_RANK")
    train.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if int(os.environ.get("RANK", 0)) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        # Our errors already name the file, line and fix; a traceback would only bury them.
        if os.environ.get("ALBERT_PYTORCH_DEBUG"):
            raise
        logging.getLogger("albert_pytorch").error("%s", err)
        code = 2
    sys.exit(code)
