"""A finished run is never lost: resume where there is nothing to resume, kill -9, Ctrl-C and SIGTERM at every
stage of an --overwrite_output_dir run, and two runs into one folder, with real processes and real signals."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from helpers import TEXTS, child_env, log_steps, snapshot, tiny_run, train_command

from albert_pytorch import checkpoint
from albert_pytorch.cli import main
from albert_pytorch.errors import UsageError
from albert_pytorch.rundir import PREVIOUS_RUN, FolderLock, list_checkpoints
from albert_pytorch.train import run


class Child:
    """A command in a process group of its own (as a terminal's Ctrl-C reaches one), its output collected."""

    def __init__(self, command: list[str], tmp_path, **popen):
        self.process = subprocess.Popen(command, env=child_env(tmp_path), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True)
        self.reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until(self, condition, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while not condition():
            assert self.process.poll() is None, f"exited with {self.process.returncode}: {self.output[-2000:]}"
            assert time.time() < deadline, f"timed out: {self.output[-2000:]}"
            time.sleep(0.1)

    def signal_group(self, sig: int) -> int:
        os.killpg(self.process.pid, sig)
        code = self.process.wait(timeout=60)
        self.reader.join(timeout=10)
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


@pytest.fixture
def children():
    """Every process a test starts is killed when it ends, pass or fail."""
    started: list[Child] = []
    yield started
    for child in started:
        child.stop()


def test_resume_where_there_is_no_checkpoint_is_a_fresh_run_under_every_guard(tiny_task_dir, tiny_model_dir,
                                                                              tmp_path):
    finished = tmp_path / "finished"
    run(tiny_run(tiny_task_dir, tiny_model_dir, finished, save_strategy="no", report_to="none"))
    evaluation = tmp_path / "evaluation"
    run(tiny_run(tiny_task_dir, tiny_model_dir, evaluation, model_name_or_path=str(finished), from_scratch=False,
                 do_train=False, do_eval=True))
    own = tmp_path / "own"
    own.mkdir()
    (own / "config.json").write_text('{"mine": true}\n')
    for folder, holds in ((finished, "a finished training run"), (evaluation, "a finished evaluation"),
                          (own, "files of its own")):
        before = snapshot(folder)
        with pytest.raises(UsageError, match=f"holds no checkpoint to resume \\(it holds {holds}"):
            run(tiny_run(tiny_task_dir, tiny_model_dir, folder, resume_from_checkpoint="latest", max_steps=6,
                         learning_rate=1e-3))
        assert snapshot(folder) == before
    fresh = tmp_path / "fresh"  # an empty (or new) folder: the run starts from the beginning
    run(tiny_run(tiny_task_dir, tiny_model_dir, fresh, resume_from_checkpoint="latest"))
    assert log_steps(fresh) == [2, 4]


def test_an_overwrite_keeps_the_finished_run_through_kill_9_ctrl_c_and_sigterm(tiny_task_dir, tiny_model_dir,
                                                                               tmp_path, children):
    out = tmp_path / "run"
    run(tiny_run(tiny_task_dir, tiny_model_dir, out, report_to="none"))
    finished = snapshot(out)
    overwrite = [*train_command(tiny_task_dir, tiny_model_dir, out), "--overwrite_output_dir", "--report_to", "none",
                 "--max_steps", "100000", "--logging_steps", "1000"]

    # kill -9 before the first checkpoint: the finished run waits in .previous-run
    children.append(killed := Child([*overwrite, "--save_steps", "0"], tmp_path))
    killed.wait_until(lambda: (out / PREVIOUS_RUN).is_dir() and (out / "train_config.json").is_file())
    killed.process.kill()
    killed.process.wait(timeout=30)
    assert snapshot(out / PREVIOUS_RUN) == finished

    # a rerun replaces the unfinished run; Ctrl-C before its first checkpoint puts the finished one back
    children.append(interrupted := Child([*overwrite, "--save_steps", "0"], tmp_path))
    interrupted.wait_until(lambda: "training:" in interrupted.output)
    assert interrupted.signal_group(signal.SIGINT) == 130
    assert f"interrupted. Nothing of this run was kept; the earlier training run is back in place in {out}." \
        in interrupted.output
    assert snapshot(out) == finished and not (out / PREVIOUS_RUN).exists()

    # Ctrl-C after a checkpoint: that checkpoint to resume, and the finished run kept beside it
    children.append(checkpointed := Child([*overwrite, "--save_steps", "2"], tmp_path))
    checkpointed.wait_until(lambda: (out / PREVIOUS_RUN).is_dir() and bool(list_checkpoints(out)))
    assert checkpointed.signal_group(signal.SIGINT) == 130
    assert re.search(f"interrupted. This run's last checkpoint is {out}/checkpoint-\\d+: continue with "
                     f"--resume_from_checkpoint latest. The earlier finished run stays in {out / PREVIOUS_RUN} until "
                     "a run there finishes.", checkpointed.output)
    assert snapshot(out / PREVIOUS_RUN) == finished

    # SIGTERM (kill, timeout, a scheduler) on the resumed run: stopped as Ctrl-C stops it, one line, exit 143
    children.append(resumed := Child([*overwrite, "--save_steps", "2", "--resume_from_checkpoint", "latest"],
                                      tmp_path))
    interrupted_at = list_checkpoints(out)[-1]
    resumed.wait_until(lambda: list_checkpoints(out)[-1] != interrupted_at)
    assert resumed.signal_group(signal.SIGTERM) == 143
    assert "terminated (SIGTERM). This run's last checkpoint is" in resumed.output and "Traceback" not in resumed.output
    assert snapshot(out / PREVIOUS_RUN) == finished


def test_the_earlier_run_is_deleted_once_the_new_run_finishes(tiny_task_dir, tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(tiny_run(tiny_task_dir, tiny_model_dir, out, report_to="none"))
    finished = snapshot(out)
    real_prune = checkpoint._prune

    def interrupt_after_the_first_checkpoint(output_dir, keep, protect):
        real_prune(output_dir, keep, protect)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_prune", interrupt_after_the_first_checkpoint)
    cfg = tiny_run(tiny_task_dir, tiny_model_dir, out, overwrite_output_dir=True, learning_rate=1e-3,
                   report_to="none")
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert snapshot(out / PREVIOUS_RUN) == finished
    monkeypatch.setattr(checkpoint, "_prune", real_prune)
    cfg.resume_from_checkpoint = "latest"
    run(cfg)
    assert not (out / PREVIOUS_RUN).exists() and log_steps(out) == [2, 4]
    assert (out / "model.safetensors").read_bytes() != finished["model.safetensors"]


def test_two_runs_into_one_folder_the_second_is_refused_naming_the_first(tiny_task_dir, tiny_model_dir, tmp_path,
                                                                         children):
    out = tmp_path / "shared"
    command = [*train_command(tiny_task_dir, tiny_model_dir, out), "--max_steps", "100000", "--report_to", "none"]
    children.extend(pair := [Child(command, tmp_path), Child(command, tmp_path)])
    deadline = time.time() + 120
    while all(child.process.poll() is None for child in pair):
        assert time.time() < deadline, pair[0].output[-2000:] + pair[1].output[-2000:]
        time.sleep(0.1)
    loser, winner = sorted(pair, key=lambda child: child.process.poll() is None)
    assert loser.process.wait() == 2, loser.output[-2000:]
    loser.reader.join(timeout=10)
    assert f"is in use by another run (pid {winner.process.pid})" in loser.output
    assert len(loser.output.strip().splitlines()) == 1
    winner.wait_until(lambda: bool(list_checkpoints(out)))
    assert winner.signal_group(signal.SIGINT) == 130
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".json")) == ["train_config.json"]


@pytest.mark.parametrize("command", ["train", "pretrain", "evaluate", "tokenizer"])
def test_every_command_that_fills_a_folder_takes_its_lock(command, tiny_task_dir, tiny_model_dir, tmp_path, caplog):
    folder = tmp_path / "held"
    folder.mkdir()
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXTS))
    argv = {"train": ["train", "--data_dir", str(tiny_task_dir), "--model_name_or_path", str(tiny_model_dir),
                      "--from_scratch"],
            "pretrain": ["pretrain", "--train_files", str(text), "--model_name_or_path", str(tiny_model_dir),
                         "--from_scratch"],
            "evaluate": ["evaluate", "--model_dir", str(tiny_model_dir), "--data_dir", str(tiny_task_dir)],
            "tokenizer": ["tokenizer", "--input", str(text), "--vocab_size", "100"]}[command]
    with FolderLock(folder):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--output_dir", str(folder), "--device", "cpu"] if command != "tokenizer"
                 else [*argv, "--output_dir", str(folder)])
    assert exit_info.value.code == 2
    assert f"--output_dir {folder} is in use by another run (pid {os.getpid()})" in caplog.text
    assert list(folder.iterdir()) == []


def test_a_crashed_holder_leaves_no_stale_lock(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    holder = subprocess.run([sys.executable, "-c", "import os, pathlib, signal\n"
                             "from albert_pytorch.rundir import FolderLock\n"
                             f"FolderLock(pathlib.Path({str(folder)!r})).__enter__()\n"
                             "os.kill(os.getpid(), signal.SIGKILL)"], env=child_env(tmp_path))
    assert holder.returncode == -signal.SIGKILL and (folder / ".albert_pytorch.lock").exists()
    with FolderLock(folder):  # the kernel released the dead holder's lock
        pass
    assert list(folder.iterdir()) == []


def test_an_unfinished_run_used_as_a_model_is_named_as_one(tiny_task_dir, tiny_model_dir, tmp_path, monkeypatch):
    from albert_pytorch.tokenization import TokenizerError, load_tokenizer

    out = tmp_path / "run"
    real_prune = checkpoint._prune

    def interrupt_after_the_first_checkpoint(output_dir, keep, protect):
        real_prune(output_dir, keep, protect)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "_prune", interrupt_after_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_run(tiny_task_dir, tiny_model_dir, out, report_to="none"))
    with pytest.raises(TokenizerError, match="holds an unfinished training run \\(its last checkpoint: "
                                             "checkpoint-2\\), not a model yet: finish it with --resume_from"):
        load_tokenizer(out)


def test_ctrl_c_reaches_a_run_started_as_a_background_job(tiny_task_dir, tiny_model_dir, tmp_path, children):
    out = tmp_path / "run"
    command = [*train_command(tiny_task_dir, tiny_model_dir, out), "--max_steps", "100000", "--report_to", "none"]

    def as_a_background_job():  # what `cmd &` in a script does: the child starts with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    children.append(child := Child(command, tmp_path, preexec_fn=as_a_background_job))
    child.wait_until(lambda: bool(list_checkpoints(out)))
    assert child.signal_group(signal.SIGINT) == 130 and "interrupted." in child.output
