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


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .deploy.preprocess import preprocess

    out = preprocess(args.pth_dir, args.data_dir, args.save_dir, args.max_seq_length, args.task_name, args.split)
    print(f"wrote {out}")
    return 0


def cmd_pth2onnx(args: argparse.Namespace) -> int:
    from .deploy.export import export

    texts = None
    if args.data_dir:  # the ModelZoo script exports with the first dev batch; we check on it too
        from .data.glue import get_task, read_split

        texts = [e.text_a for e in read_split(get_task(args.task_name), args.data_dir, "dev")[0]]
    path = export(args.pth_dir, args.onnx_dir, args.batch_size, args.max_seq_length, args.dynamic, texts,
                  args.opset)
    print(f"wrote {path}")
    return 0


def cmd_opt_onnx(args: argparse.Namespace) -> int:
    import json

    from .deploy.optimize import optimize

    report = optimize(args.input_file, args.output_file, args.target, args.fp16, args.int8)
    print(json.dumps(report, indent=2))
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    import json

    from .deploy.runtime import RunOptions, run

    options = RunOptions(args.output_dirname, args.outfmt, args.batchsize, args.device, args.provider, args.loop,
                         args.warmup_count, progress=sys.stderr.isatty())
    summary = run(args.model, args.input.split(","), args.output, options)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_postprocess(args: argparse.Namespace) -> int:
    import json

    from .deploy.postprocess import postprocess

    print(json.dumps(postprocess(args.result_dir, args.label_path, args.task_name), indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import json

    from .deploy.predict import predict, read_inputs

    pairs = read_inputs(args.texts, args.input)
    for record in predict(args.model_dir, pairs, args.onnx, args.batch_size, args.max_seq_length):
        print(json.dumps(record, ensure_ascii=False))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data.download import GLUE_BASE_URL, download_tasks

    for folder in download_tasks(args.tasks.split(","), args.data_dir, args.base_url or GLUE_BASE_URL, args.retries):
        print(f"ready: {folder}")
    return 0


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

    defaults = argparse.ArgumentDefaultsHelpFormatter
    pre = sub.add_parser("preprocess", help="dev set -> one .npy per sample (Albert_preprocess.py)",
                         formatter_class=defaults)
    pre.add_argument("--pth_dir", required=True, help="fine-tuned model directory (config.json + tokenizer)")
    pre.add_argument("--data_dir", required=True, help="the task's folder of GLUE TSVs")
    pre.add_argument("--save_dir", required=True, help="where input_ids/, attention_mask/, ... go")
    pre.add_argument("--max_seq_length", type=int, default=128)
    pre.add_argument("--task_name", default="SST-2")
    pre.add_argument("--split", default="dev")
    pre.add_argument("--prefix_dir", help="ignored: accepted for ModelZoo compatibility")
    pre.set_defaults(func=cmd_preprocess)

    exp = sub.add_parser("pth2onnx", help="export to ONNX, checked against PyTorch (Albert_pth2onnx.py)",
                         formatter_class=defaults)
    exp.add_argument("--pth_dir", required=True, help="fine-tuned model directory")
    exp.add_argument("--onnx_dir", default="./outputs/")
    exp.add_argument("--batch_size", type=int, default=16)
    exp.add_argument("--max_seq_length", type=int, default=128)
    exp.add_argument("--dynamic", action="store_true", help="dynamic batch and sequence axes")
    exp.add_argument("--data_dir", help="the task's folder: check the export on its dev sentences")
    exp.add_argument("--task_name", default="SST-2")
    exp.add_argument("--opset", type=int, default=14)
    exp.add_argument("--prefix_dir", help="ignored: accepted for ModelZoo compatibility")
    exp.set_defaults(func=cmd_pth2onnx)

    opt = sub.add_parser("opt_onnx", help="graph optimization for ORT or Ascend ATC (opt_onnx.py)",
                         formatter_class=defaults)
    opt.add_argument("--input_file", required=True)
    opt.add_argument("--output_file", required=True)
    opt.add_argument("--target", choices=("ort", "atc"), default="ort")
    opt.add_argument("--fp16", action="store_true", help="fp16 weights and compute (ort target, for GPUs)")
    opt.add_argument("--int8", action="store_true", help="dynamic int8 weight quantization (ort target, CPU)")
    opt.add_argument("--model_size", help="ignored: sizes are read off the graph")
    opt.set_defaults(func=cmd_opt_onnx)

    inf = sub.add_parser("infer", help="ais_bench-compatible runtime on ONNX Runtime", formatter_class=defaults)
    inf.add_argument("--model", required=True)
    inf.add_argument("--input", required=True, help="comma-separated folders, one per model input, in order")
    inf.add_argument("--output", required=True)
    inf.add_argument("--output_dirname", default=None, help="default: a timestamp, as ais_bench")
    inf.add_argument("--outfmt", choices=("NPY", "BIN", "TXT"), default="NPY")
    inf.add_argument("--batchsize", type=int, default=1)
    inf.add_argument("--device", type=int, default=0)
    inf.add_argument("--provider", choices=("cpu", "cuda", "tensorrt", "cann"), default="cpu")
    inf.add_argument("--loop", type=int, default=1)
    inf.add_argument("--warmup_count", type=int, default=1)
    inf.set_defaults(func=cmd_infer)

    post = sub.add_parser("postprocess", help="metrics from runtime outputs (Albert_postprocess.py)",
                          formatter_class=defaults)
    post.add_argument("--result_dir", required=True, help="folder of {i}_0.npy outputs")
    post.add_argument("--label_path", required=True, help="label.npy written by preprocess")
    post.add_argument("--task_name", default=None, help="default: from the manifest beside label.npy")
    post.set_defaults(func=cmd_postprocess)

    pred = sub.add_parser("predict", help="labels and probabilities for raw text, as JSON lines",
                          formatter_class=defaults)
    pred.add_argument("texts", nargs="*", help="sentences; a pair is two sentences joined by a tab")
    pred.add_argument("--model_dir", required=True, help="fine-tuned model directory (labels, tokenizer)")
    pred.add_argument("--onnx", default=None, help="run this exported model instead of PyTorch")
    pred.add_argument("--input", default=None, help="a file with one sentence (or tab-separated pair) per line")
    pred.add_argument("--batch_size", type=int, default=32)
    pred.add_argument("--max_seq_length", type=int, default=128)
    pred.set_defaults(func=cmd_predict)

    down = sub.add_parser("download", help="fetch GLUE task archives (checksummed, safely unpacked)",
                          formatter_class=defaults)
    down.add_argument("--tasks", default="SST-2,STS-B", help="comma-separated GLUE task names")
    down.add_argument("--data_dir", default="dataset", help="each task lands in <data_dir>/<task>/")
    down.add_argument("--base_url", default=None, help="a mirror holding the same archives")
    down.add_argument("--retries", type=int, default=3)
    down.set_defaults(func=cmd_download)
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
