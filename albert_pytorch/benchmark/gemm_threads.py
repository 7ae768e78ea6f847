"""Does oneDNN use every thread on the GEMMs whose output is hidden-wide? On a 2-core host with 2 threads, oneDNN
3.12's bf16 matmul ran those of about 672 to 1,500 rows (batch 32 at lengths 21-47) on one thread (docs/benchmarks.md,
fourteenth session). Each such GEMM (the attention output and FFN output projections' shapes) is timed here whole
and as two halves of its rows, interleaved, over batch 32's row counts: where the halves are much faster, oneDNN
left a thread idle. A diagnostic of the host's oneDNN, beside what our training does about it: a bf16 run on a CPU
measures the window at start and runs those GEMMs in row chunks (`gemm_rows`; the training section's
`train_ratio_gemm_row_split`)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from .. import gemm_rows
from ..gemm_rows import RowSplit
from .harness import logger

ROWS = tuple(32 * length for length in range(4, 61, 4))  # batch 32 at lengths 4 to 60
IDLE_THREAD_RATIO = 1.3  # halves this much faster than the whole GEMM: one thread did the whole one's work


def _median_seconds(run, repeats: int) -> float:
    run()  # oneDNN builds its kernel for the shape
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def halves_ratio(rows: int, inner: int, width: int, rounds: int, repeats: int = 5) -> float:
    """The whole bf16 GEMM's time over its two row halves' ([rows, inner] x [inner, width]), median of rounds."""
    x = torch.randn(rows, inner).bfloat16()
    weight = torch.randn(width, inner).bfloat16().t()
    in_halves = RowSplit(width, math.ceil(rows / 2), ((rows, rows),))  # as training splits a GEMM (`gemm_rows`)

    def whole() -> None:
        gemm_rows.matmul(x, weight, None, None)

    def halves() -> None:
        gemm_rows.matmul(x, weight, None, in_halves)

    ratios = [_median_seconds(whole, repeats) / _median_seconds(halves, repeats) for _ in range(rounds)]
    return float(np.median(ratios))


def benchmark_gemm_threads(hidden: int, intermediate: int, rounds: int, rows: tuple[int, ...] = ROWS) -> dict:
    """Per inner size (the hidden size and the FFN's) and row count, whole time over halves' time; the rows where
    the halves were `IDLE_THREAD_RATIO` faster for either."""
    ratios = {str(inner): {str(m): halves_ratio(m, inner, hidden, rounds) for m in rows}
              for inner in (hidden, intermediate)}
    idle = [m for m in rows if max(ratios[str(inner)][str(m)] for inner in (hidden, intermediate)) >= IDLE_THREAD_RATIO]
    largest = max(r for per_rows in ratios.values() for r in per_rows.values())
    logger.info("hidden-wide bf16 GEMMs, %d threads: whole against two halves of the rows, up to %.2fx; a thread "
                "idle (halves >= %.1fx) at %s rows", torch.get_num_threads(), largest, IDLE_THREAD_RATIO,
                ", ".join(map(str, idle)) or "no")
    return {"threads": torch.get_num_threads(), "width": hidden, "halves_ratio": ratios,
            "hidden_gemm_halves_ratio_max": largest, "hidden_gemm_idle_thread_rows": idle}
