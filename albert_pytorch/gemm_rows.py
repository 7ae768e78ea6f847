"""GEMMs with a hidden-wide output run in row chunks where the host's oneDNN would leave a thread idle.

oneDNN's AMX matmul picks how to split a GEMM among threads with a model of the caches. With two threads on the
hosts measured (docs/benchmarks.md), oneDNN 3.12 ran every bf16 GEMM with a 768-wide output of about 672 to 1,500
rows on one thread, 1.5-1.9x slower than calls of fewer rows each; with another thread count the window moves,
and with one thread chunks only cost. So the window is measured on the host, at the run's thread count, when a
run starts (`measure`), written into the run's settings as a spec (`RowSplit.spec`, --gemm_row_split) and applied
by SharedLinear to the GEMMs whose output is that wide (the attention and FFN output projections forward, the
input gradients of the query-key-value and FFN projections backward).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

OFF = "off"
SLOWER = 0.8  # a row count whose rate falls below this fraction of a smaller count's best is a candidate window
GAIN = 1.15  # chunks at least this much faster than the whole call: the row count is in the window
_SPEC = re.compile(r"(\d+):(\d+):(\d+-\d+(?:,\d+-\d+)*)")


@dataclass(frozen=True)
class RowSplit:
    """GEMMs with a `width`-wide output whose row count lies in one of `windows` (inclusive ranges) run as calls
    of at most `chunk` rows; others run whole."""

    width: int
    chunk: int
    windows: tuple[tuple[int, int], ...]

    def calls(self, rows: int) -> int:
        """How many calls a GEMM of `rows` rows with this split's output width runs as."""
        return math.ceil(rows / self.chunk) if any(lo <= rows <= hi for lo, hi in self.windows) else 1

    def spec(self) -> str:
        """`width:chunk:lo-hi[,lo-hi...]`, the --gemm_row_split form."""
        return f"{self.width}:{self.chunk}:" + ",".join(f"{lo}-{hi}" for lo, hi in self.windows)

    @classmethod
    def parse(cls, spec: str) -> RowSplit | None:
        """The split a --gemm_row_split value means; None for "off"."""
        if spec == OFF:
            return None
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise ValueError(f"{spec!r}: use 'off' or WIDTH:CHUNK:LO-HI[,LO-HI...], e.g. 768:448:704-1472")
        width, chunk = int(match[1]), int(match[2])
        windows = tuple(tuple(int(n) for n in window.split("-")) for window in match[3].split(","))
        if width < 1 or chunk < 1 or any(lo > hi for lo, hi in windows):
            raise ValueError(f"{spec!r}: the width and chunk must be positive and each window LO <= HI")
        return cls(width, chunk, windows)


def matmul(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, split: RowSplit | None) -> torch.Tensor:
    """a @ b (+ bias) for 2-D a, in `split`'s row chunks where it applies."""
    rows, width = a.shape[0], b.shape[1]
    calls = split.calls(rows) if split is not None and width == split.width else 1
    if calls == 1:
        return a @ b if bias is None else torch.addmm(bias, a, b)
    out = a.new_empty(rows, width)
    step = math.ceil(rows / calls)
    for start in range(0, rows, step):
        part = slice(start, start + step)
        if bias is None:
            torch.mm(a[part], b, out=out[part])
        else:
            torch.addmm(bias, a[part], b, out=out[part])
    return out


def choose(rows: Sequence[int], whole_seconds: Sequence[float],
           chunked_seconds: Callable[[int, int], float], width: int) -> RowSplit | None:
    """The split that timings call for. `rows` ascending, `whole_seconds` each count's whole GEMM; a count whose
    rate (rows per second) falls `SLOWER` below the best of the smaller counts marks where a window may start,
    that best count is the chunk, and `chunked_seconds(rows, chunk)` decides each larger count: in the window
    where its chunks are `GAIN` faster. A window's ends lie halfway to the neighbouring counts measured."""
    rates = [m / t for m, t in zip(rows, whole_seconds, strict=True)]
    first = next((i for i in range(1, len(rows)) if rates[i] < SLOWER * max(rates[:i])), None)
    if first is None:
        return None
    chunk = rows[max(range(first), key=lambda i: rates[i])]
    slow = [i for i in range(first, len(rows)) if whole_seconds[i] > GAIN * chunked_seconds(rows[i], chunk)]
    if not slow:
        return None
    windows: list[list[int]] = []
    for i in slow:
        lo = (rows[i - 1] + rows[i]) // 2 + 1
        hi = (rows[i] + rows[i + 1]) // 2 if i + 1 < len(rows) else rows[i]
        if windows and windows[-1][1] + 1 >= lo:
            windows[-1][1] = hi
        else:
            windows.append([lo, hi])
    return RowSplit(width, chunk, tuple((lo, hi) for lo, hi in windows))


def measure(width: int, inner: int, max_rows: int, dtype: torch.dtype, step: int = 128,
            repeats: int = 3) -> RowSplit | None:
    """Time the FFN output projection's GEMM ([rows, inner] x [inner, width]) at every multiple of `step` rows up
    to `max_rows`, whole and (above a slowdown) in chunks, on this process's threads; `choose` reads the timings.
    Takes a few seconds at albert-base's sizes (each new row count builds a oneDNN kernel)."""
    weight = torch.randn(width, inner, dtype=dtype).t()
    rows = list(range(step, max(max_rows, step) + 1, step))
    x = torch.randn(rows[-1], inner, dtype=dtype)

    def seconds(m: int, chunk: int) -> float:
        split = RowSplit(width, chunk, ((m, m),))
        matmul(x[:m], weight, None, split)  # oneDNN builds its kernels for the shapes
        best = math.inf
        for _ in range(repeats):
            started = time.perf_counter()
            matmul(x[:m], weight, None, split)
            best = min(best, time.perf_counter() - started)
        return best

    return choose(rows, [seconds(m, m) for m in rows], seconds, width)
