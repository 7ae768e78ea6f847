"""Everything device-specific: CPU/CUDA/Ascend NPU choice, mixed precision, process groups.

torch_npu is imported only when installed and asked for (or auto-detected), never at import time.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import logging
import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UsageError
from .threads import default_threads

logger = logging.getLogger(__name__)


def npu_available() -> bool:
    if importlib.util.find_spec("torch_npu") is None:
        return False
    import torch_npu  # noqa: F401  registers torch.npu

    return torch.npu.is_available()


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks CUDA, then NPU, then CPU; a named device that is absent is an error, not a fallback."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "npu" if npu_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda was asked for, but torch sees no CUDA device (--device cpu, or auto)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name == "npu":
        if not npu_available():
            raise UsageError("--device npu was asked for, but torch_npu is not installed or sees no NPU "
                             "(--device cpu, or auto)")
        torch.npu.set_device(local_rank)
        return torch.device("npu", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise UsageError(f"--device {name!r}: use auto, cpu, cuda or npu")


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # the ranks on this machine

    @classmethod
    def from_env(cls) -> DistContext:
        """This process's place in the job, as torchrun's RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE say
        (one process: 0/1/0/1)."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("LOCAL_WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str, timeout_s: float = 600.0) -> tuple[DistContext, torch.device]:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; start the process group when there is more than one rank.

    The timeout bounds every collective: if a rank dies, the others fail with an error after
    `timeout_s` instead of hanging forever.
    """
    ctx = DistContext.from_env()
    device = resolve_device(device_name, ctx.local_rank)
    if ctx.enabled and not dist.is_initialized():
        backend = {"cuda": "nccl", "npu": "hccl"}.get(device.type, "gloo")
        timeout = datetime.timedelta(seconds=timeout_s)
        store = _restart_safe_store(ctx.world_size, timeout)
        dist.init_process_group(backend, timeout=timeout, device_id=device if device.type == "cuda" else None,
                                store=store, rank=ctx.rank if store else -1,
                                world_size=ctx.world_size if store else -1)
    return ctx, device


def _restart_safe_store(world_size: int, timeout: datetime.timedelta) -> dist.Store | None:
    """torchrun's shared store, with keys kept apart per restart; None: let torch make the store.

    torchrun (c10d rendezvous) hands every restart of the workers the same store, and torch does not
    separate the attempts' keys, so a restarted rank can read a dead peer's address and fail with
    "Connection refused" (pytorch#135712). On one node all workers restart together and agree on
    TORCHELASTIC_RESTART_COUNT, so it can name the attempt; across nodes it cannot, and the cure is
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 in torchrun's environment.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if int(os.environ.get("LOCAL_WORLD_SIZE", world_size)) != world_size:
        if int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0)) > 0:
            logger.warning("torchrun --max-restarts across nodes: set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for "
                           "torchrun, or a restarted group may fail to connect (pytorch#135712)")
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"albert_pytorch/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', 0)}", store)


def end_together(ctx: DistContext, device: torch.device, timeout_s: float = 10.0) -> None:
    """The last collective of a finished run: every rank waits here until all have arrived, then until the
    backend has let go of it.

    So no rank exits while the main one is still writing the run's last files; and no process exits while
    one of gloo's worker threads still holds a collective's tensors: a worker that frees a tensor after
    Python began to shut down cannot take the GIL and aborts the process ("terminate called without an
    active exception", SIGABRT; torch 2.13, Python 3.11), and torchrun then stops the other ranks and
    reports the finished run as failed. The token's reference count falls back to 1, ours, once the
    worker has freed its work; until then the sleep leaves the GIL to it.
    """
    if not ctx.enabled:
        return
    token = torch.zeros(1, device=device)
    dist.all_reduce(token)
    deadline = time.monotonic() + timeout_s
    while token._use_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.001)  # the worker that dropped the count may be waiting for the GIL to free the tensor


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# oneDNN, which runs bf16 and int8 matmuls on a CPU, keeps 1,024 built kernels by default. Training on per-batch
# lengths needs many more: a bf16 step builds a few dozen per distinct length, so an epoch over SST-2's ~60 lengths
# evicted kernels it needed again and rebuilt them step after step, 1.2x (albert-base) to 1.85x (two layers) the
# steady step time (docs/benchmarks.md, "bf16 training nearer its ceiling"). A kept kernel costs little memory.
ONEDNN_KERNEL_CACHE = 65536


def size_kernel_cache() -> None:
    """Let oneDNN keep every kernel this process builds (ONEDNN_PRIMITIVE_CACHE_CAPACITY, unless the user set it).
    oneDNN reads it when it builds its first kernel: call this before any bf16 or int8 matmul."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_KERNEL_CACHE))


def use_threads(threads: int | None, ranks_here: int = 1) -> int:
    """Compute with `threads` intra-op threads, or by default the idle cores at start shared among this machine's
    `ranks_here` ranks (OMP_NUM_THREADS when set: `threads.default_threads`); returns the count in use."""
    chosen = threads or default_threads(ranks_here)
    if chosen:
        torch.set_num_threads(chosen)
    count = torch.get_num_threads()
    how = ("--threads" if threads else "OMP_NUM_THREADS" if chosen is None
           else "the idle cores at start" + (f", shared by {ranks_here} ranks" if ranks_here > 1 else ""))
    logger.info("%d intra-op thread%s (%s)", count, "s" if count != 1 else "", how)
    return count


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


@dataclass
class Precision:
    """fp32, fp16 (autocast + dynamic loss scaling) or bf16 (autocast, no scaling needed).

    apex's O1 and O2 both map onto native autocast: weights stay fp32 (O2's "master weights") and
    each op runs in fp16 where autocast deems it safe, so apex is not needed.
    """

    dtype: torch.dtype | None = None

    @classmethod
    def from_flags(cls, fp16: bool, bf16: bool, opt_level: str = "O1") -> Precision:
        if fp16 and bf16:
            raise ValueError("choose one of --fp16 and --bf16")
        if opt_level not in ("O1", "O2"):
            raise ValueError(f"--fp16_opt_level {opt_level!r}: use O1 or O2")
        return cls(torch.float16 if fp16 else torch.bfloat16 if bf16 else None)

    @property
    def name(self) -> str:
        return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[self.dtype]

    def autocast(self, device: torch.device):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)


CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni", "avx_vnni")


def cpu_features() -> list[str]:
    """The CPU's features that decide each number format's speed, from /proc/cpuinfo (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            line = next(line for line in handle if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    present = set(line.split(":", 1)[1].split())
    return [flag for flag in CPU_FEATURES if flag in present]


def has_native_bf16(features: list[str]) -> bool:
    """bf16 units (AVX512-BF16 or AMX): without them bf16 is emulated and slower than fp32."""
    return "avx512_bf16" in features or "amx_bf16" in features


def default_pad_multiple(device: torch.device) -> int:
    """Batches padded to a multiple of 8 suit tensor cores (GPU) and cube units (NPU); CPUs gain nothing."""
    return 1 if device.type == "cpu" else 8


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "npu":
        torch.npu.synchronize(device)

