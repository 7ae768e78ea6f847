"""How many intra-op threads a process computes with (by default, the cores that are idle when it starts), and
which of its threads give way to the others.

OpenMP's threads spin while they wait for the next parallel region, so on a machine where other work holds
the cores each region waits for its slowest thread to be scheduled: on 2 cores beside 2 CPU-bound processes,
the README's job ran 6-18x slower with the library's 2 threads than with 1 (docs/benchmarks.md, "busy").
Counting the idle cores at start gives an idle machine all of them and a busy one what is left. A count the
user sets (`--threads`, or OMP_NUM_THREADS in the environment) always wins.
"""

from __future__ import annotations

import os
import sys
import threading
import time


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def idle_cores(window_s: float = 0.2, stat_file: str = "/proc/stat") -> float | None:
    """How many of this process's cores were idle over the next `window_s` seconds (fractions summed), from
    the kernel's per-CPU counters; None where there are none to read (not Linux)."""
    try:
        before = _cpu_times(stat_file)
        time.sleep(window_s)
        after = _cpu_times(stat_file)
    except OSError:
        return None
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(before)
    idle = 0.0
    for cpu in allowed & set(before) & set(after):
        total = sum(after[cpu]) - sum(before[cpu])
        if total > 0:
            # fields: user nice system idle iowait irq softirq steal ...; idle and iowait are free time
            idle += (after[cpu][3] + after[cpu][4] - before[cpu][3] - before[cpu][4]) / total
    return idle


def _cpu_times(stat_file: str) -> dict[int, list[int]]:
    with open(stat_file) as handle:
        return {int(fields[0][3:]): [int(v) for v in fields[1:]]
                for fields in (line.split() for line in handle) if fields and fields[0][3:].isdigit()
                and fields[0].startswith("cpu")}


def default_threads(ranks_here: int = 1) -> int | None:
    """The intra-op threads for a process that shares this machine with `ranks_here - 1` sibling ranks: None
    when OMP_NUM_THREADS is set (the library already follows it), else the idle cores rounded to the nearest
    whole one, at least 1, divided among the ranks (all usable cores where idleness cannot be read)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return None
    idle = idle_cores()
    cores = usable_cores() if idle is None else min(usable_cores(), round(idle))
    return max(1, cores // max(1, ranks_here))


# The least favoured niceness: the scheduler then runs such a thread only when no other wants the core.
BACKGROUND_NICENESS = 19


def lower_thread_priority() -> bool:
    """Give the calling thread the least scheduling priority (niceness 19), so that whatever else this process
    runs takes a core first. Linux only, where a thread's niceness is its own; elsewhere the call would lower the
    whole process, so it does nothing. Returns whether it did it.

    `serve` tokenizes long texts in such threads: at the default niceness, two clients looping 1.8 MB texts made
    the one-sentence requests beside them 4x slower, at 19 under 2x (docs/benchmarks.md, "Serving beside long
    texts"); a thread cannot take the priority back, which suits a pool that only does that work."""
    if sys.platform != "linux":
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICENESS)
    except OSError:  # a sandbox that forbids it (seccomp): the thread works on at its priority, which is no error
        return False
    return True
