"""The CPU runtime policy: threads from the idle cores at start, shared among a machine's ranks, and a oneDNN kernel
cache that keeps every kernel a run builds; what the user sets wins."""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from albert_pytorch import device, threads


def counters(*idle_fractions: float) -> dict[int, list[int]]:
    """/proc/stat-like fields per CPU after 100 ticks: user nice system idle iowait ..."""
    return {cpu: [int(100 * (1 - f)), 0, 0, int(100 * f), 0, 0, 0, 0] for cpu, f in enumerate(idle_fractions)}


@pytest.mark.parametrize("idle, ranks, expected", [((1.0, 1.0), 1, 2), ((0.05, 0.1), 1, 1), ((0.5, 0.4), 1, 1),
                                                   ((0.9, 0.7), 1, 2), ((1.0, 1.0), 2, 1)])
def test_threads_follow_the_idle_cores_and_are_shared_among_ranks(monkeypatch, idle, ranks, expected):
    readings = iter([counters(0.0, 0.0), {cpu: [a + b for a, b in zip(busy, counters(*idle)[cpu], strict=True)]
                                          for cpu, busy in counters(0.0, 0.0).items()}])
    monkeypatch.setattr(threads, "_cpu_times", lambda stat_file: next(readings))
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.default_threads(ranks) == expected


def test_omp_num_threads_set_by_the_user_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() is None


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat")
def test_the_kernels_counters_read_as_a_count_of_idle_cores():
    idle = threads.idle_cores(0.05)
    assert idle is not None and 0 <= idle <= threads.usable_cores() + 0.01


def test_a_run_records_the_threads_it_computed_with(tiny_task_dir, tiny_model_dir, tmp_path, monkeypatch):
    import torch
    from helpers import tiny_run

    from albert_pytorch.train import run

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    session_threads = torch.get_num_threads()
    try:
        run(tiny_run(tiny_task_dir, tiny_model_dir, tmp_path / "out", max_steps=1, save_steps=0, threads=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(session_threads)
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["threads"] == 1
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == str(device.ONEDNN_KERNEL_CACHE)  # sized by the run


def test_onednn_keeps_every_kernel_unless_the_user_sized_its_cache(monkeypatch):
    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)
    device.size_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "65536"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "100")
    device.size_kernel_cache()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "100"


def test_a_resume_computes_with_the_threads_of_the_run_it_resumes(tmp_path, monkeypatch):
    from albert_pytorch.run_config import TrainConfig

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    (tmp_path / "train_config.json").write_text(json.dumps({"threads": 3}))
    resumed = TrainConfig(output_dir=str(tmp_path), resume_from_checkpoint="latest")
    assert resumed.thread_count() == 3
    assert TrainConfig(output_dir=str(tmp_path), resume_from_checkpoint="latest", threads=1).thread_count() == 1
    assert TrainConfig(output_dir=str(tmp_path)).thread_count() is None  # a new run: the idle cores
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resumed.thread_count() is None  # the user's environment wins


def test_a_thread_that_may_not_lower_its_priority_works_on(monkeypatch):
    def forbidden(*args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(threads.os, "setpriority", forbidden)
    with ThreadPoolExecutor(1, initializer=threads.lower_thread_priority) as pool:
        assert pool.submit(sum, [1, 2]).result() == 3  # an initializer that raised would break the pool
