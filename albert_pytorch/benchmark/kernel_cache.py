"""oneDNN's kernel cache under per-batch lengths: bf16 training steps over a cycle of batch lengths, as an epoch of
length-grouped batches meets them, in a process with oneDNN's default cache (1,024 kernels) and in one sized as
every command sizes it (`device.size_kernel_cache`), interleaved round by round. Each process times its second
pass over the lengths, once every length has been seen: with the default cache, the kernels of the first lengths
are gone by then and are built again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..device import ONEDNN_KERNEL_CACHE
from .harness import albert_base_dir, logger, spread

ONEDNN_DEFAULT_CACHE = 1024
# every length from 4 to 59 tokens once a pass, batch 32; albert-base's widths with 2 layers (the kernels are per
# shape, not per layer, so more layers would only take longer)
LENGTHS = range(4, 60)
LAYERS = 2

_TIMED_RUN = """
import sys, time
import torch
from albert_pytorch.config import AlbertConfig
from albert_pytorch.modeling import AlbertForSequenceClassification
from albert_pytorch.optim import build_optimizer
config_dir, layers, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
config = AlbertConfig.from_pretrained(config_dir).with_overrides(
    f"num_hidden_layers={layers},attn_implementation=eager")
model = AlbertForSequenceClassification.from_config(config).train()
optimizer = build_optimizer("adamw", model, 2e-5, 0.01, torch.device("cpu"))

def step(length):
    ids = torch.randint(5, config.vocab_size, (32, length))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(ids, torch.ones_like(ids), labels=torch.zeros(32, dtype=torch.long)).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

lengths = range(first, last)
for length in lengths:
    step(length)
started = time.perf_counter()
for length in lengths:
    step(length)
print((time.perf_counter() - started) / len(lengths) * 1000)
"""


def step_ms(config_dir: Path, capacity: int) -> float:
    """The mean step time (ms) of the second pass, in a process whose oneDNN keeps `capacity` kernels."""
    done = subprocess.run([sys.executable, "-c", _TIMED_RUN, str(config_dir), str(LAYERS), str(LENGTHS.start),
                           str(LENGTHS.stop)], env={**os.environ, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": str(capacity)},
                          capture_output=True, text=True, check=True, timeout=900)
    return float(done.stdout.split()[-1])


def benchmark_kernel_cache(work_dir: Path, shared_dir: Path, rounds: int) -> dict:
    """Step times per cache size and round, the order alternating, and the steady step's speed-up from ours."""
    config_dir = albert_base_dir(shared_dir, work_dir)
    times: dict[str, list[float]] = {"default": [], "ours": []}
    for number in range(1, rounds + 1):
        order = ("default", "ours") if number % 2 else ("ours", "default")
        for name in order:
            times[name].append(step_ms(config_dir, ONEDNN_DEFAULT_CACHE if name == "default" else ONEDNN_KERNEL_CACHE))
            logger.info("kernel cache round %d/%d: %-8s %.0f ms a step", number, rounds, name, times[name][-1])
    rounds_ratio = spread([d / o for d, o in zip(times["default"], times["ours"], strict=True)])
    return {"step_ms": times, "lengths": [LENGTHS.start, LENGTHS.stop - 1], "layers": LAYERS,
            "kernel_cache_train_ratio": rounds_ratio["median"], "kernel_cache_train_ratio_spread": rounds_ratio}
