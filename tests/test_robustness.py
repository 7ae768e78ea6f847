"""Faults a user meets: malformed TSVs (fuzzed), fp16 overflow, a rank that dies, a torchrun restart."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import child_env, make_loss_overflow_at, max_weight_difference, train_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from albert_pytorch.data import TASKS, GlueDataError, get_task, read_file
from albert_pytorch.train import TrainConfig, run

FIELD = st.one_of(st.text(max_size=30), st.sampled_from(["0", "1", "2", "nan", "inf", "-1", "5.0", "3.2", "",
                                                         '"', "entailment", "neutral", "x\r"]))
ROW = st.lists(FIELD, min_size=0, max_size=12).map("\t".join)


def header_for(task):
    if task.headerless_columns is not None:
        return None
    return [task.text_a] + ([task.text_b] if task.text_b else []) + [task.label]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(task_name=st.sampled_from(sorted(TASKS)), rows=st.lists(ROW, max_size=6), bom=st.booleans(),
       crlf=st.booleans(), junk=st.binary(max_size=8), header=st.booleans())
def test_fuzzed_tsvs_parse_correctly_or_fail_with_file_and_line(tmp_path, task_name, rows, bom, crlf, junk, header):
    task = get_task(task_name)
    names = header_for(task)
    lines = (["\t".join(names)] if names and header else []) + rows
    newline = "\r\n" if crlf else "\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + newline.join(lines).encode() + junk
    path = tmp_path / "train.tsv"
    path.write_bytes(data)
    try:
        examples, _ = read_file(task, path, "train")
    except GlueDataError as err:
        assert str(path) in str(err) and err.problem
        return
    for e in examples:  # what parses must be right: non-empty texts and labels from the task's set
        assert e.text_a.strip() and (task.text_b is None or e.text_b.strip())
        if task.is_regression:
            assert 0.0 <= e.label <= 5.0
        else:
            assert 0 <= e.label < task.num_labels


def test_very_long_lines_are_read_and_truncated_later(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\n" + "word " * 200_000 + "\t1\n")
    (example,), _ = read_file(get_task("SST-2"), path, "train")
    assert len(example.text_a) == 1_000_000


def test_fp16_overflow_steps_are_skipped_and_counted(tiny_task_dir, tiny_model_dir, tmp_path, monkeypatch):
    make_loss_overflow_at(monkeypatch, 3)
    run(TrainConfig(data_dir=str(tiny_task_dir), model_name_or_path=str(tiny_model_dir), output_dir=str(tmp_path),
                    from_scratch=True, fp16=True, max_steps=6, logging_steps=3, batch_size=16, max_seq_length=48,
                    do_eval=False, progress=False, device="cpu", learning_rate=1e-3))
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in log] == [1, 1]  # counted once, and training went on to step 6
    assert log[-1]["step"] == 6


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_surviving_rank_exits_with_a_message_when_its_peer_dies(tiny_task_dir, tiny_model_dir, tmp_path):
    port = _free_port()
    output_dir = tmp_path / "out"  # apart from the children's TMPDIR: a used folder would be refused
    command = [sys.executable, "-m", "albert_pytorch", "train", "--data_dir", str(tiny_task_dir),
               "--model_name_or_path", str(tiny_model_dir), "--output_dir", str(output_dir), "--from_scratch",
               "--do_train", "--max_steps", "100000", "--batch_size", "4", "--max_seq_length", "48",
               "--device", "cpu", "--dist_timeout", "30", "--logging_steps", "1000"]
    procs = []
    for rank in (0, 1):
        env = child_env(tmp_path, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                        MASTER_PORT=str(port))
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    deadline = time.time() + 60
    while not (output_dir / "train_config.json").exists() and time.time() < deadline:
        time.sleep(0.2)
    assert (output_dir / "train_config.json").exists()
    time.sleep(2)  # well inside the training loop
    procs[1].kill()
    start = time.time()
    out, _ = procs[0].communicate(timeout=120)
    assert time.time() - start < 90 and procs[0].returncode != 0
    assert "ERROR" in out or "Error" in out


def _worker_pids(agent_pid: int) -> list[int]:
    children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds torchrun's workers through /proc")
def test_torchrun_max_restarts_resumes_after_a_worker_is_killed(tiny_task_dir, tiny_model_dir, tmp_path):
    env = child_env(tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone"]

    def train(output_dir, *extra):
        return [*torchrun, *extra, "-m", *train_command(tiny_task_dir, tiny_model_dir, output_dir,
                                                          "--resume_from_checkpoint", "latest")[2:]]

    subprocess.run(train(tmp_path / "full"), check=True, env=env, capture_output=True, timeout=240)
    # twice: before the fix the restarted group failed to connect about one time in four
    for attempt in range(2):
        target = tmp_path / f"killed{attempt}"
        agent = subprocess.Popen(train(target, "--max-restarts=2"), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            deadline = time.time() + 120
            while not list(target.glob("checkpoint-*")) and agent.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            os.kill(_worker_pids(agent.pid)[-attempt - 1], signal.SIGKILL)
            out, _ = agent.communicate(timeout=240)
        finally:  # a hung group must not outlive the test
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGKILL)
        assert agent.returncode == 0, out[-4000:]
        assert "exitcode: -9" in out and "resumed from" in out
        assert max_weight_difference(tmp_path / "full", target) < 1e-6


def test_no_unsafe_deserialization_in_the_package():
    import albert_pytorch

    for path in Path(albert_pytorch.__file__).parent.rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            assert "trust_remote_code" not in line, path
            assert "import pickle" not in line and "pickle.load" not in line, path
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}: {line.strip()}"
        assert "allow_pickle=True" not in text, path
