"""The command-line contract: every flag documented once, names frozen, bad flags refused before any write."""

import json
import re
from pathlib import Path

import pytest
import torch
from helpers import SignalsItself

from albert_pytorch.cli import main
from albert_pytorch.run_config import SAMPLE_RECIPE, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("train", "evaluate", "pretrain", "preprocess", "pth2onnx", "opt_onnx", "infer", "postprocess",
               "predict", "serve", "tokenizer", "download")

# A rename here breaks users' scripts and the ModelZoo launchers: change it only on purpose.
CONTRACT = {
    "train": {
        "--task_name", "--data_dir", "--threads", "--attn_implementation", "--kernels", "--gemm_row_split",
        "--model_name_or_path", "--output_dir",
        "--do_train", "--no-do_train",
        "--do_eval", "--no-do_eval", "--do_predict", "--no-do_predict", "--max_seq_length", "--max_train_samples",
        "--max_eval_samples", "--from_scratch", "--no-from_scratch", "--config_overrides", "--group_by_length",
        "--no-group_by_length", "--pad_to_multiple_of", "--skip_bad_rows", "--no-skip_bad_rows", "--cache_dir",
        "--num_train_epochs", "--max_steps", "--batch_size", "--batch-size", "--eval_batch_size", "--learning_rate",
        "--weight_decay", "--warmup_proportion", "--gradient_accumulation_steps", "--max_grad_norm", "--seed",
        "--logging_steps", "--save_steps", "--save_total_limit", "--eval_steps", "--optimizer", "--fp16",
        "--no-fp16", "--fp16_opt_level", "--bf16", "--no-bf16", "--device", "--resume_from_checkpoint",
        "--num_workers", "--torch_compile", "--no-torch_compile", "--dist_timeout", "--progress", "--no-progress",
        "--model_type", "--local_rank", "--local-rank", "--overwrite_output_dir", "--no-overwrite_output_dir",
        "--report_to", "--per_device_train_batch_size", "--per_device_eval_batch_size", "--warmup_ratio",
        "--do_lower_case", "--spm_model_file", "--train_file", "--validation_file", "--test_file", "--text_column",
        "--text_pair_column", "--label_column", "--label_names", "--task_type", "--save_strategy", "--eval_strategy",
        "--load_best_model_at_end", "--no-load_best_model_at_end", "--metric_for_best_model",
        "--early_stopping_patience",
    },
    "preprocess": {"--pth_dir", "--data_dir", "--save_dir", "--max_seq_length", "--task_name", "--split",
                   "--prefix_dir"},
    "pth2onnx": {"--pth_dir", "--onnx_dir", "--batch_size", "--max_seq_length", "--dynamic", "--data_dir",
                 "--task_name", "--opset", "--prefix_dir", "--layout", "--optimize", "--int8"},
    "opt_onnx": {"--input_file", "--output_file", "--target", "--fp16", "--int8", "--model_size"},
    "infer": {"--model", "--input", "--output", "--output_dirname", "--outfmt", "--batchsize", "--device",
              "--provider", "--loop", "--warmup_count"},
    "postprocess": {"--result_dir", "--label_path", "--task_name", "--outfmt", "--output_dtype", "--output_file"},
    "evaluate": {"--model_dir", "--task_name", "--data_dir", "--validation_file", "--text_column",
                 "--text_pair_column", "--label_column", "--max_seq_length", "--eval_batch_size", "--max_eval_samples",
                 "--device", "--output_dir", "--overwrite_output_dir", "--skip_bad_rows", "--onnx", "--provider"},
    "predict": {"--model_dir", "--onnx", "--input", "--batch_size", "--max_seq_length", "--provider", "--bf16",
                "--quantize", "--output", "--text_column", "--text_pair_column", "--threads", "--chunk_rows",
                "--resume", "--overwrite", "--skip_bad_rows", "--quiet", "--ray", "--num_replicas"},
    "serve": {"--model_dir", "--backend", "--onnx", "--quantize", "--bf16", "--provider", "--host", "--port",
              "--served_model_name", "--api_key", "--max_batch_requests", "--max_batch_tokens",
              "--max_client_batch_size", "--max_concurrent_requests", "--payload_limit", "--max_input_length",
              "--threads", "--shutdown_timeout", "--max_connections", "--head_timeout", "--body_timeout",
              "--max_queue_wait", "--ray", "--num_replicas", "--min_replicas", "--max_replicas"},
    "tokenizer": {"--input", "--vocab_size", "--output_dir", "--max_sentences", "--seed", "--overwrite_output_dir"},
    "download": {"--tasks", "--data_dir", "--base_url", "--retries"},
}
# pretrain shares the loop's flags and the model/length/cache ones with train, and has its corpus's own
CONTRACT["pretrain"] = (CONTRACT["train"] - {
    "--task_name", "--data_dir", "--do_train", "--no-do_train", "--do_eval", "--no-do_eval", "--do_predict",
    "--no-do_predict", "--max_train_samples", "--skip_bad_rows", "--no-skip_bad_rows", "--model_type", "--local_rank",
    "--local-rank", "--do_lower_case", "--spm_model_file", "--train_file", "--validation_file", "--test_file",
    "--text_column", "--text_pair_column", "--label_column", "--label_names", "--task_type",
}) | {"--train_files", "--validation_files", "--tokenizer_name", "--line_by_line", "--no-line_by_line",
      "--short_seq_prob", "--mlm_probability", "--max_ngram", "--max_predictions_per_seq", "--corpus_part_mb",
      "--preprocessing_num_workers", "--prepare_only", "--no-prepare_only", "--ray"}
LAUNCHER_FLAGS = {"--data_path", "--model_path", "--task_name", "--device", "--nproc", "--output_dir", "--log_dir"}


def help_entries(command: str, capsys) -> dict[str, str]:
    """`--help` as the user reads it: each option's invocation -> its help text (wrapped lines joined)."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    entries, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        if re.match(r"^  -", line):
            invocation, _, text = line.strip().partition("  ")
            current = invocation
            entries[current] = text.strip()
        elif current is not None and line.startswith("      "):
            entries[current] = (entries[current] + " " + line.strip()).strip()
        else:
            current = None
    return entries


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_flag_has_help_and_shows_its_default_at_most_once(command, capsys):
    entries = help_entries(command, capsys)
    for invocation, text in entries.items():
        assert text, f"{command} {invocation}: no help text"
        assert text.count("(default:") <= 1, f"{command} {invocation}: {text}"
        assert "(default: None)" not in text and "==SUPPRESS==" not in text, f"{command} {invocation}: {text}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_flag_names_are_the_published_contract(command, capsys):
    flags = {flag for invocation in help_entries(command, capsys) for flag in re.findall(r"--[\w-]+", invocation)}
    assert flags - {"--help"} == CONTRACT[command] | {"--debug"}


def test_train_help_shows_each_config_default(capsys):
    import dataclasses

    text = " ".join(help_entries("train", capsys).values())
    for field in dataclasses.fields(TrainConfig):
        if field.default not in (None, "") and not field.metadata["shown_default"]:
            assert f"(default: {field.default})" in text, field.name


def test_modelzoo_launchers_keep_their_flags():
    text = (ROOT / "test" / "launcher_common.sh").read_text()
    assert {f"--{name}" for name in re.findall(r"^\s+--(\w+)=\*\)", text, re.MULTILINE)} == LAUNCHER_FLAGS


@pytest.mark.parametrize("flags,message", [
    (["--optimizer", "sgd"], "invalid choice: 'sgd'"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
    (["--warmup_proportion", "1.5"], "--warmup_proportion/--warmup_ratio: must be a number in [0, 1), got 1.5"),
    (["--batch_size", "0"], "must be an integer >= 1, got 0"),
    (["--task_name", "SST-3"], "unknown GLUE task"),
    (["--data_dir", "somewhere"], "--model_name_or_path is missing"),
    (["--fp16", "--bf16"], "choose one of --fp16 and --bf16"),
    (["--task_name", "CoLA"], "the embedded sample is SST-2"),
    (["--max_train_samples", "0"], "--max_train_samples: must be an integer >= 1, got 0"),
    (["--max_eval_samples", "-5"], "--max_eval_samples: must be an integer >= 1, got -5"),
    (["--data_dir", "no/such/folder", "--model_name_or_path", "m"], "--data_dir no/such/folder: no such folder"),
    (["--train_file", "no/such.csv", "--model_name_or_path", "."], "--train_file no/such.csv: no such file"),
])
def test_bad_flags_fail_before_anything_is_written(tmp_path, capsys, caplog, flags, message):
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as done:
        main(["train", "--output_dir", str(output_dir), "--device", "cpu", *flags])
    assert done.value.code == 2
    assert message in capsys.readouterr().err + caplog.text
    assert not output_dir.exists()


def test_bare_train_trains_and_evaluates_the_sample_with_its_recipe():
    config = TrainConfig.from_flags({"output_dir": "x"})
    assert config.do_train and config.do_eval and not config.do_predict
    assert {k: getattr(config, k) for k in SAMPLE_RECIPE} == SAMPLE_RECIPE


def test_flags_given_win_over_the_sample_recipe_and_the_defaults():
    config = TrainConfig.from_flags({"learning_rate": 1e-4, "do_eval": False})
    assert config.learning_rate == 1e-4 and config.batch_size == SAMPLE_RECIPE["batch_size"]
    assert config.do_train and not config.do_eval
    named = TrainConfig.from_flags({"data_dir": "d", "model_name_or_path": "m", "do_eval": True})
    assert not named.do_train and named.do_eval and not named.do_predict  # only what was asked
    assert named.learning_rate == TrainConfig.learning_rate  # no sample recipe with real data


def test_lonepatient_spm_model_file_must_be_the_model_directorys_tokenizer(tiny_model_dir, tmp_path, caplog):
    args = ["train", "--data_dir", str(tmp_path), "--model_name_or_path", str(tiny_model_dir), "--do_lower_case",
            "--output_dir", str(tmp_path / "out")]
    other = tmp_path / "other.model"
    other.write_bytes(b"not the same model")
    with pytest.raises(SystemExit) as done:
        main([*args, "--spm_model_file", str(other)])
    assert done.value.code == 2 and "is not the tokenizer of --model_name_or_path" in caplog.text
    assert not (tmp_path / "out").exists()


def test_task_names_as_the_datasets_library_spells_them():
    from albert_pytorch.data import get_task

    assert [get_task(n).name for n in ("sst2", "stsb", "cola", "mnli", "STS_B", "sst-2")] == [
        "SST-2", "STS-B", "CoLA", "MNLI", "STS-B", "SST-2"]


def test_run_glue_spellings_set_the_same_fields():
    import argparse

    from albert_pytorch.cli import add_config_arguments

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig, "run")
    given = vars(parser.parse_args(["--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "4",
                                    "--warmup_ratio", "0.06", "--overwrite_output_dir", "--report_to", "none"]))
    assert given == {"batch_size": 8, "eval_batch_size": 4, "warmup_proportion": 0.06, "overwrite_output_dir": True,
                     "report_to": "none"}


def test_predict_names_a_missing_model_folder_and_a_file_that_is_not_utf8(tmp_path, caplog, trained_model):
    with pytest.raises(SystemExit) as done:
        main(["predict", "--model_dir", "outputs/no-such-model", "a sentence"])
    assert done.value.code == 2 and "--model_dir outputs/no-such-model: no such folder" in caplog.text
    assert "huggingface" not in caplog.text.lower() and "hub" not in caplog.text
    bad = tmp_path / "inputs.txt"
    bad.write_bytes(b"a fine line\nanother \xff line\n")
    with pytest.raises(SystemExit) as done:
        main(["predict", "--model_dir", str(trained_model), "--input", str(bad)])
    assert done.value.code == 1 and f"{bad}:2: not UTF-8 text" in caplog.text


def test_ctrl_c_prints_one_line_naming_the_last_checkpoint_and_exits_130(tiny_task_dir, tiny_model_dir, tmp_path):
    import signal
    import subprocess
    import time

    from helpers import child_env, train_command

    out = tmp_path / "out"
    command = train_command(tiny_task_dir, tiny_model_dir, out).copy()
    command[command.index("--max_steps") + 1] = "100000"
    process = subprocess.Popen(command, env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.time() + 120
        while not list(out.glob("checkpoint-*")) and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:  # a child that outlives its test would train on for 100,000 steps
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted. This run's last checkpoint is" in err and "--resume_from_checkpoint latest" in err


def test_a_ctrl_c_python_drops_in_a_finalizer_is_raised_by_the_next_check_once(own_signal_handlers, dropped):
    import signal

    from albert_pytorch import signals

    signals.stop_on_signals()
    SignalsItself(signal.SIGINT)
    assert dropped == [KeyboardInterrupt]
    with pytest.raises(KeyboardInterrupt):
        signals.raise_if_signalled()
    signals.raise_if_signalled()  # once
    SignalsItself(signal.SIGTERM)
    assert dropped == [KeyboardInterrupt, signals.Terminated]
    with pytest.raises(signals.Terminated):
        signals.raise_if_signalled()


def test_training_stops_at_the_next_step_on_a_ctrl_c_python_dropped(tiny_task_dir, tiny_model_dir, tmp_path,
                                                                    monkeypatch, caplog, own_signal_handlers,
                                                                    dropped):
    import signal

    from albert_pytorch import loop

    steps = []

    def step_dropping_a_ctrl_c_at_the_third(*args, **kwargs):
        steps.append(1)
        if len(steps) == 3:
            SignalsItself(signal.SIGINT)
        return train_step(*args, **kwargs)

    train_step = loop.train_step
    monkeypatch.setattr(loop, "train_step", step_dropping_a_ctrl_c_at_the_third)
    with pytest.raises(SystemExit) as done:
        main(["train", "--data_dir", str(tiny_task_dir), "--model_name_or_path", str(tiny_model_dir), "--from_scratch",
              "--output_dir", str(tmp_path / "out"), "--max_steps", "40", "--save_steps", "2", "--max_seq_length",
              "48", "--device", "cpu"])
    assert done.value.code == 130 and len(steps) == 3 and dropped == [KeyboardInterrupt]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "interrupted. This run's last checkpoint is" in errors[0]
    assert errors[0].endswith("--resume_from_checkpoint latest.") and "checkpoint-2" in errors[0]


@pytest.mark.parametrize("command", [
    ["train", "--data_dir", "{missing}", "--model_name_or_path", "{model}", "--output_dir", "{used}"],
    ["pretrain", "--train_files", "{missing}", "--tokenizer_name", "{model}", "--from_scratch", "--output_dir",
     "{used}"],
    ["evaluate", "--model_dir", "{missing}"],
    ["preprocess", "--pth_dir", "{model}", "--data_dir", "{missing}", "--save_dir", "{out}"],
    ["pth2onnx", "--pth_dir", "{missing}", "--onnx_dir", "{out}"],
    ["opt_onnx", "--input_file", "{missing}.onnx", "--output_file", "{out}.onnx"],
    ["infer", "--model", "{missing}.onnx", "--input", "{missing}", "--output", "{out}"],
    ["postprocess", "--result_dir", "{missing}", "--label_path", "{missing}.npy"],
    ["predict", "--model_dir", "{model}", "--onnx", "{missing}.onnx", "a sentence"],
    ["predict", "--model_dir", "{model}", "--input", "{missing}.txt"],
    ["tokenizer", "--input", "{missing}", "--output_dir", "{used}"],
])
def test_every_subcommand_names_a_missing_input_in_one_line_and_exits_2(command, tmp_path, tiny_model_dir, capsys,
                                                                       caplog):
    used = tmp_path / "used"  # a folder another run filled: the typo is still what the message names
    used.mkdir()
    (used / "train_config.json").write_text("{}")
    places = {"missing": tmp_path / "missing", "model": tiny_model_dir, "out": tmp_path / "out", "used": used}
    with pytest.raises(SystemExit) as done:
        main([part.format(**places) for part in command])
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert done.value.code == 2 and len(errors) == 1
    assert str(tmp_path / "missing") in errors[0].getMessage() and "no such" in errors[0].getMessage()
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not Path("out").exists()
    assert sorted(p.name for p in used.iterdir()) == ["train_config.json"]


def test_evaluate_scores_a_trained_model_and_writes_only_where_told(tiny_task_dir, tiny_model_dir, tmp_path, capsys):
    trained = tmp_path / "trained"
    with pytest.raises(SystemExit):
        main(["train", "--data_dir", str(tiny_task_dir), "--model_name_or_path", str(tiny_model_dir), "--from_scratch",
              "--output_dir", str(trained), "--max_steps", "3", "--max_seq_length", "48", "--device", "cpu"])
    capsys.readouterr()
    before = sorted(p.name for p in trained.iterdir())
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--model_dir", str(trained), "--data_dir", str(tiny_task_dir), "--max_seq_length", "48",
              "--device", "cpu"])
    printed = json.loads(capsys.readouterr().out)
    assert done.value.code == 0 and printed["eval_samples"] == 120 and set(printed["eval_per_class"]) == {
        "negative", "positive"}
    assert sorted(p.name for p in trained.iterdir()) == before  # nothing written beside the model
    with pytest.raises(SystemExit):
        main(["evaluate", "--model_dir", str(trained), "--data_dir", str(tiny_task_dir), "--max_seq_length", "48",
              "--device", "cpu", "--output_dir", str(tmp_path / "eval")])
    assert json.loads((tmp_path / "eval" / "eval_results.json").read_text()) == json.loads(capsys.readouterr().out)


def test_do_predict_leaves_the_implicit_train_and_evaluate_in_place():
    config = TrainConfig.from_flags({"output_dir": "x", "do_predict": True})
    assert config.do_train and config.do_eval and config.do_predict
    only_eval = TrainConfig.from_flags({"output_dir": "x", "data_dir": "d", "model_name_or_path": "m",
                                        "do_eval": True, "do_predict": True})
    assert not only_eval.do_train and only_eval.do_eval and only_eval.do_predict


def test_resuming_a_finished_run_keeps_its_loss_and_every_json_file_is_strict(tiny_task_dir, tiny_model_dir, tmp_path,
                                                                              capsys):
    args = ["train", "--data_dir", str(tiny_task_dir), "--model_name_or_path", str(tiny_model_dir), "--from_scratch",
            "--output_dir", str(tmp_path), "--max_steps", "4", "--save_steps", "2", "--logging_steps", "2",
            "--max_seq_length", "48", "--device", "cpu"]
    with pytest.raises(SystemExit):
        main(args)
    first = json.loads((tmp_path / "all_results.json").read_text())["train_loss"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--resume_from_checkpoint", "latest"])
    assert done.value.code == 0
    assert json.loads((tmp_path / "all_results.json").read_text())["train_loss"] == first
    assert "train_loss=nan" not in capsys.readouterr().err

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    for path in [*tmp_path.rglob("*.json"), *tmp_path.rglob("*.jsonl")]:
        for line in (path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]):
            json.loads(line, parse_constant=refuse)  # NaN, Infinity: refused, as jq and strict parsers do


def test_evaluate_refuses_a_head_that_does_not_fit_the_task(tiny_task_dir, tiny_model_dir, tmp_path, caplog):
    from glue_fixtures import FIXTURES
    from helpers import tiny_config, tiny_run

    from albert_pytorch import AlbertForPreTraining
    from albert_pytorch.tokenization import load_tokenizer, save_tokenizer_files
    from albert_pytorch.train import run

    classifier = tmp_path / "sst2"
    run(tiny_run(tiny_task_dir, tiny_model_dir, classifier, report_to="none"))
    stsb = tmp_path / "STS-B"
    stsb.mkdir()
    (stsb / "dev.tsv").write_text(FIXTURES["STS-B"]["train.tsv"])
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--model_dir", str(classifier), "--task_name", "STS-B", "--data_dir", str(stsb),
              "--device", "cpu"])
    assert done.value.code == 2
    assert "has a 2-class head (trained on SST-2), but STS-B is a regression task" in caplog.text
    encoder = tmp_path / "pretrained"  # pretraining's output: an encoder with no classifier at all
    AlbertForPreTraining.from_config(tiny_config(vocab_size=len(load_tokenizer(tiny_model_dir)))).save_pretrained(
        encoder)
    save_tokenizer_files(load_tokenizer(tiny_model_dir), tiny_model_dir, encoder)
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--model_dir", str(encoder), "--data_dir", str(tiny_task_dir), "--device", "cpu",
              "--max_seq_length", "48"])
    assert done.value.code == 2 and "holds no trained classifier for SST-2" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")
@pytest.mark.parametrize("command", ["train", "benchmark"])
def test_device_cuda_on_a_host_without_cuda_is_a_bad_argument(command, tmp_path, capsys, caplog, monkeypatch):
    from albert_pytorch.benchmark.report import main as benchmark

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        if command == "train":
            main(["train", "--device", "cuda", "--output_dir", str(tmp_path / "out")])
        else:
            benchmark(["--device", "cuda", "--sections", "training"])
    assert done.value.code == 2
    assert "--device cuda was asked for, but torch sees no CUDA device" in capsys.readouterr().err + caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", ["Albert_preprocess.py", "Albert_pth2onnx.py", "opt_onnx.py",
                                    "Albert_postprocess.py"])
def test_each_modelzoo_wrapper_names_itself_in_its_help(script):
    import subprocess
    import sys

    from helpers import ROOT

    done = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith(f"usage: python3 {script} ")
