"""Every numeric flag of every command, and every numeric field of the run configs, states its range in one place
(albert_pytorch/ranges.py): nan, inf, -1 and 0 are each either taken, or refused in one line with exit 2 before
anything runs or is written."""

import dataclasses
import math
import typing

import pytest

from albert_pytorch.benchmark.report import build_parser as benchmark_parser
from albert_pytorch.cli import build_parser, main
from albert_pytorch.ranges import Range
from albert_pytorch.run_config import PretrainConfig, TrainConfig

PROBES = ("nan", "inf", "-1", "0")


def commands() -> dict:
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    return {**subcommands, "benchmark": benchmark_parser()}


def numeric_flags() -> list[tuple[str, str, object]]:
    flags = []
    for command, parser in commands().items():
        for action in parser._actions:
            if action.type in (int, float) or isinstance(action.type, Range):
                flags.append((command, action.option_strings[0], action.type))
    return flags


def test_every_numeric_flag_states_its_range():
    unbounded = [f"{command} {flag}" for command, flag, kind in numeric_flags() if not isinstance(kind, Range)
                 and flag not in ("--local_rank",)]  # accepted for old launchers and ignored
    assert unbounded == []
    assert len(numeric_flags()) > 50


@pytest.mark.parametrize("command,flag,kind", [f for f in numeric_flags() if isinstance(f[2], Range)],
                         ids=lambda value: value if isinstance(value, str) else "")
def test_each_numeric_flag_takes_or_refuses_nan_inf_minus_one_and_zero(command, flag, kind, tmp_path, capsys,
                                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    for probe in PROBES:
        number = float(probe)
        if kind.contains(number) and (kind.kind is float or math.isfinite(number)):
            assert kind(probe) == kind.kind(probe)  # taken: the parser hands the command that value
            continue
        argv = [flag, probe] if command == "benchmark" else [command, flag, probe]
        with pytest.raises(SystemExit) as done:
            if command == "benchmark":
                benchmark_parser().parse_args(argv)
            else:
                main(argv)
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and f"must be {kind.words}" in err
        assert list(tmp_path.iterdir()) == []


def config_fields():
    for cls in (TrainConfig, PretrainConfig):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = typing.get_args(hints[f.name]) or (hints[f.name],)
            if {int, float} & set(kind) and bool not in kind:
                yield cls, f


@pytest.mark.parametrize("cls,field", list(config_fields()),
                         ids=lambda v: getattr(v, "name", getattr(v, "__name__", "")))
def test_every_numeric_setting_is_checked_by_the_config_itself(cls, field, tiny_task_dir, tiny_model_dir):
    bounds = field.metadata.get("range")
    assert isinstance(bounds, Range), f"{cls.__name__}.{field.name} states no range"
    required = ({"data_dir": str(tiny_task_dir), "model_name_or_path": str(tiny_model_dir)} if cls is TrainConfig
                else {"train_files": ["x.txt"], "from_scratch": True, "tokenizer_name": "t"})
    for probe in map(float, PROBES):
        if bounds.contains(probe):
            continue
        value = probe if bounds.kind is float or not math.isfinite(probe) else int(probe)
        with pytest.raises(ValueError, match=f"--{field.name} must be"):
            cls(**required, **{field.name: value}).validate()
