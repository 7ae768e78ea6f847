"""`python3 -m albert_pytorch <command>`: the only place that parses command lines."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import types
import typing
from pathlib import Path

from .device import size_kernel_cache
from .errors import UsageError
from .io import to_json
from .ranges import COUNT, PORT, POSITIVE, POSITIVE_INT, SEQUENCE_LENGTH, VOCAB_SIZE, Range
from .run_config import LoopConfig, PretrainConfig, TrainConfig
from .signals import Terminated, stop_on_signals

# the opsets torch's TorchScript exporter writes
OPSET = Range(int, "an ONNX opset in [9, 20]", low=9, high=20)


class Parser(argparse.ArgumentParser):
    """argparse, whose error is one line (the usage of a command with 60 flags is a screenful): what is wrong,
    and where the flags are listed."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One flag per field of a run config: typed from its annotation, help and choices from its metadata.

    Defaults stay out of the parsed namespace (SUPPRESS), so the config sees only the flags that were
    typed and applies its defaults in one place (`TrainConfig.from_flags`); help shows each default once.
    Booleans are on/off switches (`--fp16` / `--no-fp16`), which our launchers rely on to override a
    recipe. transformers.HfArgumentParser offers neither of those two, so this 20-line generator is ours.
    """
    hints = typing.get_type_hints(cls)
    own = parser.add_argument_group(title)
    shared = parser.add_argument_group("the training loop (shared by every training command)")
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name in LoopConfig.__dataclass_fields__):
        group = shared if f.name in LoopConfig.__dataclass_fields__ else own
        kind = _unwrap_optional(hints[f.name])
        shown = f.metadata.get("shown_default") or ("none" if f.default in (None, "") else f.default)
        common = {"default": argparse.SUPPRESS, "help": f"{f.metadata['help']} (default: {shown})"}
        names = [f"--{f.name}", *f.metadata.get("aliases", ())]
        if kind is bool:
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        elif typing.get_origin(kind) is list:
            group.add_argument(*names, nargs="+", type=typing.get_args(kind)[0], **common)
        else:
            group.add_argument(*names, type=f.metadata.get("range") or kind, choices=f.metadata.get("choices"),
                               **common)


def option(parser: argparse.ArgumentParser, *names: str, help: str, **kwargs) -> None:
    """add_argument with the default, when there is one worth showing, written once into the help."""
    default = kwargs.get("default")
    if default not in (None, False):
        help = f"{help} (default: {default})"
    parser.add_argument(*names, help=help, **kwargs)


def _unwrap_optional(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return args[0]
    return annotation


def cmd_train(args: argparse.Namespace) -> int:
    from .train import run

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    config = TrainConfig.from_flags(given)
    if args.spm_model_file is not None:
        _check_same_tokenizer(Path(args.spm_model_file), config)
    run(config)
    return 0


def _check_same_tokenizer(spm_model_file: Path, config) -> None:
    """lonePatient's --spm_model_file names the tokenizer; ours comes from the model directory, so the two
    must be the same file, or the run would silently use another tokenizer than the one asked for."""
    from .io import sha256_file

    model_spm = Path(config.model_name_or_path or "") / "spiece.model"
    if not spm_model_file.is_file():
        raise UsageError(f"--spm_model_file {spm_model_file}: no such file")
    if config.model_name_or_path is None or not model_spm.is_file() or (
            sha256_file(model_spm) != sha256_file(spm_model_file)):
        raise UsageError(f"--spm_model_file {spm_model_file} is not the tokenizer of --model_name_or_path "
                         f"({model_spm}); the model directory's spiece.model is the one used. Copy the file there, "
                         "or drop --spm_model_file.")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`train --do_eval` on a trained model, read as one command: the results are printed, and written (with
    the settings) to --output_dir only when one is named."""
    import json
    import tempfile

    from .train import run, sequence_classifier

    require(args.model_dir, "--model_dir", folder=True)
    require(args.onnx, "--onnx")
    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
    given.update(model_name_or_path=args.model_dir, do_train=False, do_eval=True)
    model_factory = sequence_classifier
    if args.onnx is not None:  # the export scores the examples; the directory gives labels and tokenizer
        from .deploy.predict import OnnxSequenceClassifier

        def model_factory(config, weights_dir):
            return OnnxSequenceClassifier(args.onnx, config, args.provider)

    with tempfile.TemporaryDirectory(prefix="albert-evaluate-") as scratch:
        given.setdefault("output_dir", scratch)
        config = TrainConfig.from_flags(given)
        run(config, model_factory)
        results = json.loads((Path(config.output_dir) / "eval_results.json").read_text())
    print(to_json(results))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import run

    run(PretrainConfig.from_flags({k: v for k, v in vars(args).items() if k in PretrainConfig.__dataclass_fields__}),
        ray_address=args.ray)
    return 0


def require(path: str | None, flag: str, folder: bool = False) -> None:
    """A missing input is a bad argument (exit 2), named with its flag, before any work is done."""
    if path is not None and not (Path(path).is_dir() if folder else Path(path).is_file()):
        raise UsageError(f"{flag} {path}: no such {'folder' if folder else 'file'}")


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .deploy.preprocess import preprocess

    require(args.pth_dir, "--pth_dir", folder=True)
    require(args.data_dir, "--data_dir", folder=True)
    out = preprocess(args.pth_dir, args.data_dir, args.save_dir, args.max_seq_length, args.task_name, args.split)
    print(f"wrote {out}")
    return 0


def cmd_pth2onnx(args: argparse.Namespace) -> int:
    from .deploy.export import export

    require(args.pth_dir, "--pth_dir", folder=True)
    require(args.data_dir, "--data_dir", folder=True)
    texts = None
    if args.data_dir:  # the ModelZoo script exports with the first dev batch; we check on it too
        from .data import get_task, read_split

        texts = [e.text_a for e in read_split(get_task(args.task_name), args.data_dir, "dev")[0]]
    if args.int8 and args.optimize != "ort":
        raise UsageError("--int8 quantizes the ONNX Runtime graph: add --optimize ort")
    # ONNX Runtime fuses attention on the dynamic graph (see opt_onnx.py): --optimize ort exports it
    path = export(args.pth_dir, args.onnx_dir, args.batch_size, args.max_seq_length,
                  args.dynamic or args.optimize == "ort", texts, args.opset, layout=args.layout)
    print(f"wrote {path}")
    if args.optimize:
        from .deploy.optimize import optimize

        optimized = path.with_name(f"{path.stem}_{args.optimize}{'_int8' if args.int8 else ''}.onnx")
        report = optimize(path, optimized, args.optimize, int8=args.int8)
        print(f"wrote {optimized}: {to_json(report, indent=None)}")
    return 0


def cmd_opt_onnx(args: argparse.Namespace) -> int:
    from .deploy.optimize import optimize

    require(args.input_file, "--input_file")
    report = optimize(args.input_file, args.output_file, args.target, args.fp16, args.int8)
    print(to_json(report))
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    from .deploy.runtime import RunOptions, run

    require(args.model, "--model")
    for folder in args.input.split(","):
        require(folder, "--input", folder=True)
    options = RunOptions(args.output_dirname, args.outfmt, args.batchsize, args.device, args.provider, args.loop,
                         args.warmup_count, progress=sys.stderr.isatty())
    summary = run(args.model, args.input.split(","), args.output, options)
    print(to_json(summary))
    return 0


def cmd_postprocess(args: argparse.Namespace) -> int:
    from .deploy.postprocess import postprocess

    require(args.result_dir, "--result_dir", folder=True)
    require(args.label_path, "--label_path")
    print(to_json(postprocess(args.result_dir, args.label_path, args.task_name, args.outfmt, args.output_dtype,
                              args.output_file)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .deploy.predict import predict, read_inputs, scoring_engine
    from .deploy.table import TableJob, input_files, run_table_job, summary_line

    if args.input is None:
        if args.output or args.resume or args.overwrite or args.skip_bad_rows or args.ray:
            raise UsageError("--output, --resume, --overwrite, --skip_bad_rows and --ray score a table: give --input")
        for record in predict(args.model_dir, read_inputs(args.texts), args.onnx, args.batch_size,
                              args.max_seq_length, args.provider, args.bf16):
            print(to_json(record, indent=None))
        return 0
    if args.texts:
        raise UsageError("give sentences on the command line or --input, not both")
    job = TableJob(args.input, args.output, args.text_column, args.text_pair_column, args.chunk_rows, args.batch_size,
                   args.skip_bad_rows, args.resume, args.overwrite, progress=not args.quiet)
    files = input_files(args.input)  # a mistyped path is named before the model loads
    engine = scoring_engine(args.model_dir, args.onnx, args.max_seq_length, args.provider, args.bf16, args.quantize,
                            args.threads)
    scorer = None
    if args.ray is not None:
        from .deploy.table_ray import RayScale, ray_scorer

        scorer = ray_scorer(RayScale(None if args.ray == "local" else args.ray, args.num_replicas, args.threads))
    summary = run_table_job(engine, job, files, scorer)
    logging.getLogger("albert_pytorch").info("%s", summary_line(summary, args.output))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving.app import ServeOptions
    from .serving.engine import EngineOptions
    from .serving.server import RayOptions, serve, serve_on_ray

    require(args.model_dir, "--model_dir", folder=True)
    require(args.onnx, "--onnx")
    engine = EngineOptions(args.model_dir, args.backend, args.onnx, args.quantize, args.provider,
                           args.max_batch_requests, args.max_batch_tokens, args.max_input_length, args.threads,
                           args.bf16, args.max_queue_wait)
    options = ServeOptions(engine, args.host, args.port, args.served_model_name,
                           args.api_key or os.environ.get("ALBERT_PYTORCH_API_KEY"), args.payload_limit,
                           args.max_client_batch_size, args.max_concurrent_requests, args.shutdown_timeout,
                           args.max_connections, args.head_timeout, args.body_timeout)
    if args.ray is None:
        return serve(options)
    address = None if args.ray == "local" else args.ray
    return serve_on_ray(options, RayOptions(address, args.num_replicas, args.min_replicas, args.max_replicas))


def cmd_tokenizer(args: argparse.Namespace) -> int:
    from .tokenization import build_tokenizer

    print(to_json(build_tokenizer(args.input, args.output_dir, args.vocab_size, args.max_sentences, args.seed,
                                  args.overwrite_output_dir)))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data.download import GLUE_BASE_URL, download_tasks

    for folder in download_tasks(args.tasks.split(","), args.data_dir, args.base_url or GLUE_BASE_URL, args.retries):
        print(f"ready: {folder}")
    return 0


def build_parser(scripts: dict[str, str] | None = None) -> argparse.ArgumentParser:
    """Every command's parser; `scripts` names the ModelZoo wrapper a command runs behind (pth2onnx:
    Albert_pth2onnx.py), which its help and errors then name as the program."""
    scripts = scripts or {}

    parser = Parser(prog="python3 -m albert_pytorch",
                                     description="Fine-tune ALBERT on GLUE (or your data), pretrain it on raw text, "
                                                 "and ship it through ONNX.")
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an error, show the Python traceback too")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        if name in scripts:
            kwargs["prog"] = f"python3 {scripts[name]}"
        return sub.add_parser(name, parents=[common], **kwargs)

    train = command("train", help="fine-tune and/or evaluate on a GLUE task (torchrun for many devices)",
                           description="Fine-tune and/or evaluate ALBERT on a GLUE task. With no --data_dir and "
                                       "--model_name_or_path: the embedded sample. Many devices: the same command "
                                       "under torchrun --nproc_per_node=N -m albert_pytorch train ...")
    add_config_arguments(train, TrainConfig, "the fine-tuning run")
    train.add_argument("--model_type", choices=("albert",), default="albert",
                       help="accepted for ModelZoo/lonePatient scripts; only albert (default: albert)")
    train.add_argument("--local_rank", "--local-rank", type=int, default=None,
                       help="accepted and ignored: launch with torchrun, which sets LOCAL_RANK")
    train.add_argument("--do_lower_case", action="store_true",
                       help="accepted for lonePatient scripts: lower-casing is the tokenizer's own setting")
    train.add_argument("--spm_model_file", default=None,
                       help="accepted for lonePatient scripts: the tokenizer is --model_name_or_path's spiece.model; "
                            "a different file here is an error")
    train.set_defaults(func=cmd_train)

    ev = command("evaluate", help="score a trained model on a GLUE dev set or your own file",
                 description="Evaluate a trained model directory: a GLUE task's dev set(s) (--task_name, --data_dir) "
                             "or your own labelled file (--validation_file). Prints eval_results.json; writes it "
                             "only into an --output_dir you name (a folder of its own, never a training run's).")
    option(ev, "--model_dir", required=True, help="the trained model directory (config.json, weights, tokenizer)")
    option(ev, "--task_name", help="GLUE task (default: SST-2)")
    option(ev, "--data_dir", help="the task's folder of GLUE TSVs")
    option(ev, "--validation_file", help="your own labelled .csv, .tsv, .json or .jsonl instead of a GLUE task")
    option(ev, "--text_column", help="its text column (default: as train picks it)")
    option(ev, "--text_pair_column", help="its second text column, for pairs")
    option(ev, "--label_column", help="its label column (default: label)")
    option(ev, "--max_seq_length", type=SEQUENCE_LENGTH, help="longer inputs are cut (default: 128)")
    option(ev, "--eval_batch_size", type=POSITIVE_INT, help="batch size per device (default: 64)")
    option(ev, "--max_eval_samples", type=POSITIVE_INT, help="score the first N examples only")
    option(ev, "--device", choices=("auto", "cpu", "cuda", "npu"), help="default: auto")
    option(ev, "--output_dir", help="also write eval_config.json, eval_results.json and all_results.json here")
    option(ev, "--overwrite_output_dir", action="store_true", default=None,
           help="replace an earlier evaluation's files in --output_dir")
    option(ev, "--skip_bad_rows", action="store_true", default=None, help="skip malformed rows, counted")
    option(ev, "--onnx", help="score this export of the model (any of pth2onnx's, optimized or int8 too) on ONNX "
                              "Runtime instead of its PyTorch weights; --model_dir gives the labels and tokenizer")
    option(ev, "--provider", choices=("cpu", "cuda", "tensorrt", "cann"), default="cpu",
           help="ONNX Runtime provider for --onnx, with its fallback chain")
    ev.set_defaults(func=cmd_evaluate)

    pretrain = command("pretrain", help="pretrain on raw text: masked LM + sentence order (torchrun for many "
                                        "devices)",
                       description="Pretrain ALBERT on raw text with its own objective (n-gram masked LM and "
                                   "sentence-order prediction). The output directory loads in transformers and "
                                   "`train --model_name_or_path` fine-tunes it.")
    add_config_arguments(pretrain, PretrainConfig, "the pretraining run")
    pretrain.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                          help="prepare the corpus's parts as Ray tasks: on a local Ray instance, or on the cluster "
                               "at ADDRESS, whose machines must share --cache_dir (one process, not under torchrun)")
    pretrain.set_defaults(func=cmd_pretrain)

    pre = command("preprocess", help="dev set -> one .npy per sample (Albert_preprocess.py)")
    option(pre, "--pth_dir", required=True, help="fine-tuned model directory (config.json + tokenizer)")
    option(pre, "--data_dir", required=True, help="the task's folder of GLUE TSVs")
    option(pre, "--save_dir", required=True, help="where input_ids/, attention_mask/, token_type_ids/ go")
    option(pre, "--max_seq_length", type=SEQUENCE_LENGTH, default=128, help="every sample is padded to this length")
    option(pre, "--task_name", default="SST-2", help="GLUE task")
    option(pre, "--split", default="dev", help="which file of the task folder (dev, test, train, dev_matched ...)")
    option(pre, "--prefix_dir", help="accepted for ModelZoo compatibility and ignored")
    pre.set_defaults(func=cmd_preprocess)

    exp = command("pth2onnx", help="export to ONNX, checked against PyTorch (Albert_pth2onnx.py)")
    option(exp, "--pth_dir", required=True, help="fine-tuned model directory")
    option(exp, "--onnx_dir", default="./outputs/", help="where albert_seq<L>_bs<B>.onnx is written")
    option(exp, "--batch_size", type=POSITIVE_INT, default=16, help="the static batch size of the export")
    option(exp, "--max_seq_length", type=SEQUENCE_LENGTH, default=128, help="the static sequence length of the export")
    option(exp, "--dynamic", action="store_true", help="dynamic batch and sequence axes (albert_dynamic.onnx)")
    option(exp, "--data_dir", help="the task's folder: check the export on its dev sentences")
    option(exp, "--task_name", default="SST-2", help="GLUE task of --data_dir")
    option(exp, "--opset", type=OPSET, default=14, help="ONNX opset (14 keeps LayerNorm decomposed, for ATC)")
    option(exp, "--layout", choices=("modelzoo", "optimum"), default="modelzoo",
           help="modelzoo: one .onnx file named by shape; optimum: --onnx_dir becomes a folder (model.onnx with "
                "dynamic axes, config.json, tokenizer) that optimum's ORTModelForSequenceClassification loads")
    option(exp, "--optimize", choices=("ort", "atc"),
           help="also write the optimized graph beside the export in the same command, as opt_onnx.py --target "
                "does (ort: ONNX Runtime's fusions, on a dynamic export; atc: for Ascend's ATC)")
    option(exp, "--int8", action="store_true", help="with --optimize ort: dynamic int8 weights (CPU)")
    option(exp, "--prefix_dir", help="accepted for ModelZoo compatibility and ignored")
    exp.set_defaults(func=cmd_pth2onnx)

    opt = command("opt_onnx", help="graph optimization for ORT or Ascend ATC (opt_onnx.py)")
    option(opt, "--input_file", required=True, help="the exported (or onnxsim-simplified) model")
    option(opt, "--output_file", required=True, help="where the optimized model is written")
    option(opt, "--target", choices=("ort", "atc"), default="ort",
           help="ort: ONNX Runtime's fusions; atc: standard ops rewritten for Ascend ATC")
    option(opt, "--fp16", action="store_true", help="fp16 weights and compute (ort target, for GPUs)")
    option(opt, "--int8", action="store_true", help="dynamic int8 weight quantization (ort target, CPU)")
    option(opt, "--model_size", help="accepted for ModelZoo compatibility and ignored: sizes are read off the graph")
    opt.set_defaults(func=cmd_opt_onnx)

    inf = command("infer", help="ais_bench-compatible runtime on ONNX Runtime")
    option(inf, "--model", required=True, help="the ONNX model to run")
    option(inf, "--input", required=True, help="comma-separated folders, one per model input, in order")
    option(inf, "--output", required=True, help="folder for the outputs and the summary")
    option(inf, "--output_dirname", help="subfolder of --output for the outputs (default: a timestamp, as "
                                         "ais_bench)")
    option(inf, "--outfmt", choices=("NPY", "BIN", "TXT"), default="NPY", help="output file format")
    option(inf, "--batchsize", type=POSITIVE_INT, default=1, help="samples per run (a static model's own batch)")
    option(inf, "--device", type=COUNT, default=0, help="device id for the cuda, tensorrt and cann providers")
    option(inf, "--provider", choices=("cpu", "cuda", "tensorrt", "cann"), default="cpu",
           help="ONNX Runtime execution provider")
    option(inf, "--loop", type=POSITIVE_INT, default=1, help="passes over the inputs (timings cover all)")
    option(inf, "--warmup_count", type=COUNT, default=1, help="untimed runs before timing")
    inf.set_defaults(func=cmd_infer)

    post = command("postprocess", help="metrics from runtime outputs (Albert_postprocess.py)")
    option(post, "--result_dir", required=True, help="folder of {i}_0.npy (or .bin) outputs")
    option(post, "--label_path", required=True, help="label.npy written by preprocess")
    option(post, "--task_name", help="GLUE task (default: from the manifest beside label.npy)")
    option(post, "--outfmt", choices=("NPY", "BIN"), default="NPY",
           help="the runtime's output format (ais_bench writes BIN unless told otherwise)")
    option(post, "--output_dtype", choices=("float32", "float16"), default="float32",
           help="the model output's dtype, for BIN files (which carry none)")
    option(post, "--output_file", help="where the report is also written as JSON (default: "
                                       "<result_dir>_postprocess.json, beside the results folder)")
    post.set_defaults(func=cmd_postprocess)

    pred = command("predict", help="labels and probabilities for raw text, or for every row of a table of any size",
                   description="Score sentences given as arguments (JSON lines on stdout), or every row of --input: "
                               "a CSV, TSV, JSON lines, Parquet or text file, a folder of them or a glob, read as a "
                               "stream. Each row comes back with its own columns plus label, score (the winning "
                               "class's probability) and probability_<label> per class (a regression model: score), "
                               "into --output (its extension picks the format) or stdout. --output is written in "
                               "parts, each whole; after a stop the same command with --resume continues.")
    pred.add_argument("texts", nargs="*", help="sentences; a pair is two sentences joined by a tab")
    option(pred, "--model_dir", required=True, help="fine-tuned model directory (labels, tokenizer)")
    option(pred, "--onnx", help="run this exported model on ONNX Runtime instead of PyTorch")
    option(pred, "--quantize", choices=("int8",),
           help="run the model directory's cached ONNX export with dynamic int8 quantization")
    option(pred, "--input", help="a table (.csv .tsv .json .jsonl .parquet, or .txt: a sentence or a tab-separated "
                                 "pair per line), a folder of them, or a glob")
    option(pred, "--output", help="where the rows go with their predictions: .jsonl, .csv, .tsv or .parquet "
                                  "(default: JSON lines on stdout)")
    option(pred, "--text_column", help="the text column of a table (default as for training: sentence, "
                                       "sentence1/sentence2, or the one column besides label and id)")
    option(pred, "--text_pair_column", help="the second text's column, for pairs")
    option(pred, "--batch_size", type=POSITIVE_INT, default=32, help="sentences per forward pass")
    option(pred, "--max_seq_length", type=SEQUENCE_LENGTH, default=128,
           help="longer inputs are cut to this many tokens")
    option(pred, "--provider", choices=("cpu", "cuda", "tensorrt", "cann"), default="cpu",
           help="ONNX Runtime provider for --onnx, with its fallback chain (tensorrt -> cuda -> cpu)")
    option(pred, "--bf16", action="store_true", help="PyTorch in bfloat16 (fast on CPUs with bf16 units)")
    option(pred, "--threads", type=POSITIVE_INT, help="the model's intra-op threads (default: the cores idle at "
                                                        "start; OMP_NUM_THREADS when set)")
    option(pred, "--chunk_rows", type=POSITIVE_INT, default=4096,
           help="input rows per part of --output: the memory held, what a resumed run may redo, and the rows "
                "sorted by length together (a few hundred or more, or batches pad more)")
    option(pred, "--resume", action="store_true", help="continue a stopped run into the same --output")
    option(pred, "--overwrite", action="store_true", help="replace an existing --output (or a stopped run's parts)")
    option(pred, "--skip_bad_rows", action="store_true",
           help="write a row that cannot be scored to <output>.rejected.jsonl with its reason, and go on "
                "(default: stop at it, naming file, line and column)")
    option(pred, "--quiet", action="store_true", help="no progress bar")
    pred.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                      help="score --input on Ray Data: a local Ray instance, or the cluster at ADDRESS (ray start "
                           "--head prints it); reading and tokenizing as tasks, the model on --num_replicas actors")
    option(pred, "--num_replicas", type=POSITIVE_INT, default=2,
           help="with --ray: model replicas, each with --threads intra-op threads")
    pred.set_defaults(func=cmd_predict)

    srv = command("serve", help="serve a trained model over HTTP: TEI's /predict and Triton's v2 API, dynamic batching",
                  description="Serve a model directory that train wrote (or an optimum-layout export, or an ONNX file "
                              "of the deployment chain with --onnx) over HTTP with dynamic batching: TEI's POST "
                              "/predict, the Open Inference Protocol (Triton's HTTP API), /health, /info, /metrics, "
                              "a page to try it at /, OpenAPI at /docs. --ray runs it as Ray Serve replicas.")
    option(srv, "--model_dir", required=True, help="the trained model directory (labels, tokenizer, weights)")
    option(srv, "--backend", choices=("onnx", "torch"), default="onnx",
           help="onnx: ONNX Runtime, the directory exported once into a cache; torch: our PyTorch model")
    option(srv, "--onnx", help="run this exported model instead of exporting the directory's weights")
    option(srv, "--quantize", choices=("int8",), help="ONNX Runtime's dynamic int8 quantization of the export")
    option(srv, "--bf16", action="store_true", help="with --backend torch: compute in bfloat16 (fast on CPUs "
                                                   "with bf16 units)")
    option(srv, "--provider", choices=("cpu", "cuda", "tensorrt", "cann"), default="cpu",
           help="ONNX Runtime provider, with its fallback chain down to the CPU")
    option(srv, "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 opens it to the network)")
    option(srv, "--port", type=PORT, default=8080, help="port to listen on (0: any free one, printed when ready)")
    option(srv, "--served_model_name", help="the model's name on the v2 routes (default: the model folder's name)")
    option(srv, "--api_key", help="require 'Authorization: Bearer <key>' on every route but health and the page "
                                  "(default: $ALBERT_PYTORCH_API_KEY)")
    option(srv, "--max_batch_requests", type=POSITIVE_INT, default=32, help="rows (inputs) in one model call")
    option(srv, "--max_batch_tokens", type=POSITIVE_INT, default=16384,
           help="padded tokens (longest input x inputs) in one model call")
    option(srv, "--max_client_batch_size", type=POSITIVE_INT, default=32,
           help="inputs one request may carry (413 above)")
    option(srv, "--max_concurrent_requests", type=POSITIVE_INT, default=512,
           help="requests in flight; more are refused with 429 and Retry-After (after a 1 s wait)")
    option(srv, "--payload_limit", type=POSITIVE_INT, default=2_000_000, help="bytes of a request body (413 above)")
    option(srv, "--max_input_length", type=SEQUENCE_LENGTH,
           help="tokens of one input (default: the model's position limit); longer ones are refused unless the "
                "request says truncate")
    option(srv, "--threads", type=POSITIVE_INT, help="the model's intra-op threads (default: the cores idle at "
                                                       "start; OMP_NUM_THREADS when set)")
    option(srv, "--shutdown_timeout", type=POSITIVE, default=30.0,
           help="seconds SIGTERM waits for accepted requests before exiting")
    option(srv, "--max_connections", type=POSITIVE_INT,
           help="open connections; at the cap the one waiting longest for a request is closed (default: what "
                "the process's file limit allows, less 64)")
    option(srv, "--head_timeout", type=POSITIVE, default=10.0,
           help="seconds a request's head may take to arrive (idle connections close after it); 408 after")
    option(srv, "--body_timeout", type=POSITIVE, default=30.0,
           help="seconds a request's body may take to arrive once its head has; 408 after")
    option(srv, "--max_queue_wait", type=POSITIVE, default=30.0,
           help="seconds a request may wait for a batch; 503 with Retry-After after, and /health says so")
    srv.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                     help="deploy on Ray Serve: a local Ray instance, or the cluster at ADDRESS (ray start --head "
                          "prints it)")
    option(srv, "--num_replicas", type=POSITIVE_INT, default=1, help="with --ray: replicas, each with its own batcher")
    option(srv, "--min_replicas", type=COUNT, help="with --ray: autoscale from this many replicas")
    option(srv, "--max_replicas", type=POSITIVE_INT, help="with --ray: autoscale up to this many replicas")
    srv.set_defaults(func=cmd_serve)

    tok = command("tokenizer", help="train a SentencePiece tokenizer with ALBERT's conventions on raw text")
    tok.add_argument("--input", nargs="+", required=True,
                     help="text files, or folders of .txt files; blank lines are skipped")
    option(tok, "--vocab_size", type=VOCAB_SIZE, default=30000, help="pieces, special ones included (fewer if the text "
                                                                "is too small for that many)")
    option(tok, "--output_dir", required=True, help="where spiece.model and the tokenizer files go (a new or empty "
                                                     "folder)")
    option(tok, "--overwrite_output_dir", action="store_true",
           help="replace the tokenizer files of a used --output_dir (its other files stay)")
    option(tok, "--max_sentences", type=COUNT, default=0, help="train on this many lines sampled from the input "
                                                             "(0: all)")
    option(tok, "--seed", type=COUNT, default=42, help="seed for that sampling")
    tok.set_defaults(func=cmd_tokenizer)

    down = command("download", help="fetch GLUE task archives (checksummed, safely unpacked)")
    option(down, "--tasks", default="SST-2,STS-B", help="comma-separated GLUE task names")
    option(down, "--data_dir", default="dataset", help="each task lands in <data_dir>/<task>/")
    option(down, "--base_url", help="a mirror holding the same archives (default: GLUE's own)")
    option(down, "--retries", type=POSITIVE_INT, default=3, help="attempts per archive")
    down.set_defaults(func=cmd_download)
    return parser


def main(argv: list[str] | None = None, script: str | None = None) -> None:
    """Exit codes: 0 done, 2 bad arguments (argparse's own code too), 1 a failure while running, 130 Ctrl-C, 143
    SIGTERM. Handled errors print one line that names the file, line or flag and the fix; --debug adds the
    traceback. `script`: the ModelZoo wrapper (Albert_pth2onnx.py ...) that runs `argv[0]`'s command."""
    args = build_parser({argv[0]: script} if script and argv else None).parse_args(argv)
    size_kernel_cache()
    _configure_logging(args.debug)
    stop_on_signals()
    try:
        code = args.func(args)
    except (KeyboardInterrupt, Terminated) as stop:
        if args.debug:
            raise
        terminated = isinstance(stop, Terminated)
        logging.getLogger("albert_pytorch").error("%s. %s", "terminated (SIGTERM)" if terminated else "interrupted",
                                                  " ".join(getattr(stop, "__notes__", ["Nothing was written."])))
        code = 143 if terminated else 130  # the shell's codes for a process ended by SIGTERM and by Ctrl-C
    except (ValueError, OSError, RuntimeError) as err:
        if args.debug:
            raise
        logging.getLogger("albert_pytorch").error("%s", " ".join([str(err), *getattr(err, "__notes__", [])]))
        code = 2 if isinstance(err, UsageError) else 1
    sys.exit(code)


def _configure_logging(debug: bool) -> None:
    """Our lines at INFO (WARNING on every rank but the first); the libraries' own (ONNX Runtime's fusion logs,
    the quantizer's, transformers') at WARNING, and everything with --debug."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    ours = logging.INFO if int(os.environ.get("RANK", 0)) == 0 else logging.WARNING
    logging.getLogger("albert_pytorch").setLevel(logging.DEBUG if debug else ours)
    if not debug:  # read when transformers is first imported (later, and only by the commands that need it)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


