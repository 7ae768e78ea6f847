"""What the tests share besides fixtures: the tiny model shape, toy texts, the commands tests start, fault
injection and the resume-parity check. (Fixtures live in conftest.py.)"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from albert_pytorch import AlbertConfig

ROOT = Path(__file__).resolve().parents[1]
# the project's shared data beside the checkout, or where ALBERT_PYTORCH_SHARED_DATA points
SHARED = Path(os.environ.get("ALBERT_PYTORCH_SHARED_DATA", ROOT.parent / "shared" / "data"))
TEXTS = [
    "the film is a joy to watch .", "a dull , lifeless movie .", "the acting shines from start to finish .",
    "the plot drags and the jokes fall flat .", "warm , funny and smart .", "i was bored and annoyed .",
    "a small masterpiece of a comedy .", "the ending is sappy and shallow .", "hello , my dog is cute",
    "two sentences make a pair , and a pair needs a separator .",
] * 8
# the tiny ALBERT every test trains: as AlbertConfig fields, and as --config_overrides
TINY_SHAPE = {"embedding_size": 16, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 37, "max_position_embeddings": 64}
TINY_OVERRIDES = ",".join(f"{name}={value}" for name, value in TINY_SHAPE.items())


def tiny_config(**overrides) -> AlbertConfig:
    return AlbertConfig(**{"vocab_size": 120, **TINY_SHAPE, **overrides})


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for training subprocesses: one thread each (CI has 2 cores), and temporary files
    (torchrun's log folders among them) kept under the test's own folder."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), **extra}


def torchrun_command(nproc: int, command: str, *args: str, torchrun_args: tuple[str, ...] = ()) -> list[str]:
    """`torchrun --nproc_per_node=N --standalone [torchrun_args] -m albert_pytorch <command> ...`, as README
    launches it."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
            *torchrun_args, "-m", "albert_pytorch", command, *args]


def train_command(tiny_task_dir, tiny_model_dir, output_dir, *extra) -> list[str]:
    """`python3 -m albert_pytorch train` on the tiny task: 40 steps, a checkpoint every 2."""
    return [sys.executable, "-m", "albert_pytorch", "train", "--data_dir", str(tiny_task_dir),
            "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(output_dir), "--from_scratch",
            "--do_train", "--learning_rate", "2e-3", "--batch_size", "8", "--max_seq_length", "48",
            "--max_steps", "40", "--save_steps", "2", "--logging_steps", "2", "--device", "cpu", "--seed", "3",
            *extra]


def tiny_run(tiny_task_dir, tiny_model_dir, output_dir, **overrides):
    """The tiny task's TrainConfig, in process: 4 steps, a checkpoint and a log line every 2."""
    from albert_pytorch.train import TrainConfig

    values = dict(data_dir=str(tiny_task_dir), model_name_or_path=str(tiny_model_dir), output_dir=str(output_dir),
                  from_scratch=True, learning_rate=2e-3, batch_size=16, max_seq_length=48, max_steps=4, save_steps=2,
                  logging_steps=2, do_eval=False, progress=False, device="cpu")
    values.update(overrides)
    return TrainConfig(**values)


def log_steps(output_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (its lock aside) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".albert_pytorch.lock"}


def make_loss_overflow_at(monkeypatch, call_number: int) -> None:
    """Fault injection: the model's loss is multiplied by inf on its `call_number`-th computation."""
    from albert_pytorch import AlbertForSequenceClassification

    calls = {"n": 0}
    real_loss = AlbertForSequenceClassification.loss

    def loss(self, logits, labels):
        calls["n"] += 1
        value = real_loss(self, logits, labels)
        return value * float("inf") if calls["n"] == call_number else value

    monkeypatch.setattr(AlbertForSequenceClassification, "loss", loss)


def max_weight_difference(model_dir_a: Path, model_dir_b: Path) -> float:
    """Largest |difference| between two saved models' weights, over every tensor."""
    from safetensors.torch import load_file

    a, b = load_file(model_dir_a / "model.safetensors"), load_file(model_dir_b / "model.safetensors")
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def assert_resume_matches_uninterrupted(run: Callable[[Any], Any], config_for: Callable[[Path], Any],
                                        tmp_path: Path) -> None:
    """A run of 12 steps (a checkpoint every 4) against the same run cut back to checkpoint-8 and resumed
    from it: the weights must match, and the log must hold each step once."""
    run(config_for(tmp_path / "full"))
    partial = config_for(tmp_path / "part")
    run(partial)
    shutil.rmtree(tmp_path / "part" / "checkpoint-12")  # steps 9..12 are redone
    partial.resume_from_checkpoint = "latest"
    run(partial)
    assert max_weight_difference(tmp_path / "full", tmp_path / "part") < 1e-6
    steps = [line.split('"step": ')[1].split(",")[0]
             for line in (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(steps))


class SignalsItself:
    """An object whose finalizer sends this process a signal: Python raises the handler's exception inside the
    finalizer, prints "Exception ignored" and drops it (tests record it with the `dropped` fixture)."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        time.sleep(1.0)  # where the handler has not run yet, it runs (and raises) in here
