"""README.md kept true: its commands and flags exist, the main job prints what it shows, and what its
commands write lands where git ignores it."""

import logging
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from albert_pytorch.benchmark.report import build_parser as benchmark_parser
from albert_pytorch.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# the ModelZoo-named wrappers and module entry points, as the subcommand each runs
ENTRY_POINTS = {("Albert_preprocess.py",): "preprocess", ("Albert_pth2onnx.py",): "pth2onnx",
                ("opt_onnx.py",): "opt_onnx", ("Albert_postprocess.py",): "postprocess",
                ("-m", "albert_pytorch.infer"): "infer"}
OUTPUT_FLAGS = ("--output_dir", "--save_dir", "--onnx_dir", "--output", "--output_file", "--json")


def commands() -> list[list[str]]:
    """Every `python3 ...` command of README's bash blocks and inline code, as shell words."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        joined = block.replace("\\\n", " ")
        lines += [line.split(" #")[0] for line in joined.splitlines() if line.strip().startswith("python3")]
    lines += [m for m in re.findall(r"`(python3 [^`]+)`", README)]
    return [shlex.split(line) for line in lines]


def subcommand_flags() -> dict[str, set[str]]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    flags = {name: set(sub._option_string_actions) for name, sub in subparsers.choices.items()}
    flags["benchmark"] = set(benchmark_parser()._option_string_actions)
    return flags


def named(words: list[str]) -> tuple[str | None, list[str]]:
    """(the subcommand a command line runs, its arguments); (None, []) for other programs (onnxsim ...)."""
    if words[1:3] == ["-m", "albert_pytorch"]:
        return words[3], words[4:]
    if words[1:3] == ["-m", "albert_pytorch.benchmark"]:
        return "benchmark", words[3:]
    for prefix, name in ENTRY_POINTS.items():
        if tuple(words[1:1 + len(prefix)]) == prefix:
            return name, words[1 + len(prefix):]
    return None, []


def test_every_command_and_flag_readme_names_exists():
    flags = subcommand_flags()
    checked = set()
    for words in commands():
        name, arguments = named(words)
        if name is None:
            continue
        assert name in flags, f"README runs `{' '.join(words)}`, but there is no {name!r} command"
        for argument in arguments:
            if argument.startswith("--"):
                flag = argument.split("=")[0]
                assert flag in flags[name], f"README: `{name} {flag}` is not a flag of {name}"
        checked.add(name)
    assert {"train", "evaluate", "predict", "pretrain", "tokenizer", "preprocess", "pth2onnx", "opt_onnx", "infer",
            "postprocess", "benchmark"} <= checked  # the blocks were found and read


def test_what_readmes_commands_write_is_ignored_by_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/outputs/" in ignored
    for words in commands():
        name, arguments = named(words)
        values = [arguments[i + 1] for i, a in enumerate(arguments[:-1]) if a in OUTPUT_FLAGS]
        values += [a.split("=", 1)[1] for a in arguments if a.split("=")[0] in OUTPUT_FLAGS and "=" in a]
        if words[1:3] == ["-m", "onnxsim"]:
            values.append(words[-1])
        for value in values:
            assert value.removeprefix("./").startswith("outputs/"), f"README writes {value} (`{' '.join(words)}`)"


def test_the_main_job_prints_the_summary_readme_shows(tmp_path, caplog):
    shown = re.search(r"`(summary: [^`]+)`", README).group(1)
    quoted_accuracies = set(re.findall(r"acc=(0\.\d{4})", README))
    caplog.set_level(logging.INFO)
    with pytest.raises(SystemExit) as done:
        main(["train", "--output_dir", str(tmp_path / "sample"), "--device", "cpu"])
    assert done.value.code == 0
    printed = re.search(r"summary: .*", caplog.text).group(0)
    fields = dict(item.split("=", 1) for item in printed.split()[1:])
    expected = dict(item.split("=", 1) for item in shown.split()[1:])
    assert list(fields) == list(expected)  # the same figures, in the same order
    for key in ("task", "device", "world_size", "global_batch_size", "step", "epoch", "skipped_steps",
                "eval_examples"):
        assert fields[key] == expected[key], key
    assert fields["acc"] in quoted_accuracies, f"the main job printed acc={fields['acc']}; README quotes " \
                                               f"{sorted(quoted_accuracies)}"


def test_git_ignores_the_outputs_folder():
    done = subprocess.run(["git", "check-ignore", "-q", "outputs/SST-2/model.safetensors"], cwd=ROOT)
    if done.returncode == 128:
        pytest.skip("not a git checkout")
    assert done.returncode == 0


LAUNCHER_FLAGS = {"--data_path", "--model_path", "--task_name", "--device", "--nproc", "--output_dir", "--log_dir"}


def test_readmes_launcher_commands_name_real_launchers_flags_and_outputs():
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.DOTALL):
        lines += [shlex.split(line) for line in block.replace("\\\n", " ").splitlines()
                  if line.strip().startswith("bash test/")]
    assert lines, "README's CPU-sized launcher block"
    trainer_flags = subcommand_flags()["train"]
    for words in lines:
        assert (ROOT / words[1]).is_file(), words[1]
        for argument in words[2:]:
            flag, _, value = argument.partition("=")
            assert flag in LAUNCHER_FLAGS or flag in trainer_flags, f"README: `{words[1]} {flag}` is no flag"
            if flag in ("--output_dir", "--log_dir"):
                assert value.startswith("outputs/"), f"README's launcher writes {value}"


def test_readmes_score_a_dataset_block_runs_on_the_shared_dev_set(trained_model, tmp_path):
    import pyarrow.parquet as pq

    (words,) = [w for w in commands() if named(w)[0] == "predict" and "--output" in w]
    arguments = named(words)[1]
    source = Path(arguments[arguments.index("--input") + 1])
    if not (ROOT / source).is_file():
        pytest.skip("../shared is not beside this checkout")
    out = tmp_path / Path(arguments[arguments.index("--output") + 1]).name
    arguments[arguments.index("--output") + 1] = str(out)
    arguments[arguments.index("--model_dir") + 1] = str(trained_model)  # README's is trained by an earlier block
    arguments[arguments.index("--input") + 1] = str(ROOT / source)
    with pytest.raises(SystemExit) as done:
        main(["predict", *arguments])
    assert done.value.code == 0
    table = pq.read_table(out)
    assert table.num_rows == 872 and table.column_names[:2] == ["sentence", "label_input"]
    assert set(table.column("label").to_pylist()) <= {"negative", "positive"}
