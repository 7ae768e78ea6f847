"""An ais_bench-compatible offline runtime on ONNX Runtime (CPU, CUDA, TensorRT or CANN providers).

Same inputs and outputs as ais_bench: per-sample files taken in natural sort order, grouped into
batches, outputs split back per sample as `{output}/{output_dirname}/{basename}_{k}.npy`, and a
summary at `{output}/{output_dirname}_summary.json`. So `Albert_postprocess.py` reads either's
results. The summary gives compute-only figures (what ais_bench reports) and end-to-end ones that
include reading inputs, host copies and writing outputs.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import UsageError
from ..io import atomic_write_json

logger = logging.getLogger("albert_pytorch")

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider", "cann": "CANNExecutionProvider"}
# ONNX Runtime gives each node to the first provider in the list that can run it.
FALLBACKS = {"cpu": ("cpu",), "cuda": ("cuda", "cpu"), "tensorrt": ("tensorrt", "cuda", "cpu"), "cann": ("cann", "cpu")}
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
                "tensor(float16)": np.float16}


class InputError(ValueError):
    """Input files that do not fit the model."""


def natural_key(name: str) -> list:
    """'10.npy' after '9.npy', as ais_bench orders its inputs."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass
class RunOptions:
    output_dirname: str | None = None
    outfmt: str = "NPY"  # NPY | BIN | TXT
    batchsize: int = 1
    device: int = 0
    provider: str = "cpu"
    loop: int = 1
    warmup_count: int = 1
    progress: bool = True


def open_session(model: str | os.PathLike, provider: str = "cpu", device: int = 0, threads: int | None = None):
    """A session on `provider`, with ONNX Runtime's fallback chain behind it (FALLBACKS: TensorRT, then
    CUDA, then CPU for the nodes the one before cannot run). A provider this onnxruntime build lacks is
    skipped with one warning, down the chain to the CPU. `threads`: intra-op threads (default ORT's)."""
    import onnxruntime as ort

    if provider not in PROVIDERS:
        raise UsageError(f"--provider {provider!r}: choose from {', '.join(PROVIDERS)}")
    if not Path(model).is_file():
        raise UsageError(f"{model}: no such ONNX file")
    available = ort.get_available_providers()
    chain = [p for p in FALLBACKS[provider] if PROVIDERS[p] in available]
    if PROVIDERS[provider] not in available:
        logger.warning("--provider %s: this onnxruntime build lacks %s (it has %s), so the model runs on %s; install "
                       "the matching onnxruntime package to use it", provider, PROVIDERS[provider],
                       ", ".join(available), chain[0])
    options = [{} if p == "cpu" else {"device_id": device} for p in chain]
    session_options = ort.SessionOptions()
    if threads:
        session_options.intra_op_num_threads = threads
    return ort.InferenceSession(str(model), sess_options=session_options, providers=[PROVIDERS[p] for p in chain],
                                provider_options=options)


def static_dims(session) -> tuple[int | None, int | None]:
    """The model's fixed batch size and sequence length; None for an axis that is dynamic."""
    batch, seq = session.get_inputs()[0].shape[:2]
    return (batch if isinstance(batch, int) else None), (seq if isinstance(seq, int) else None)


def pad_to_batch(rows: np.ndarray, batch_size: int | None) -> np.ndarray:
    """A short batch for a fixed-batch model, topped up with zero rows (whose outputs are dropped)."""
    if batch_size is None or len(rows) == batch_size:
        return rows
    return np.pad(rows, [(0, batch_size - len(rows))] + [(0, 0)] * (rows.ndim - 1))


def _input_files(session, input_dirs: list[Path]) -> list[list[Path]]:
    model_inputs = session.get_inputs()
    if len(input_dirs) != len(model_inputs):
        raise InputError(f"--input gives {len(input_dirs)} folders; the model has {len(model_inputs)} inputs "
                         f"({', '.join(i.name for i in model_inputs)}), in that order")
    listings = []
    for folder in input_dirs:
        if not folder.is_dir():
            raise InputError(f"{folder}: no such input folder")
        listings.append(sorted((p for p in folder.iterdir() if p.suffix in (".npy", ".bin")),
                               key=lambda p: natural_key(p.name)))
    names = [[p.stem for p in files] for files in listings]
    for folder, listing in zip(input_dirs[1:], names[1:], strict=True):
        if listing != names[0]:
            raise InputError(f"{folder}: its files do not match {input_dirs[0]}'s one for one")
    if not names[0]:
        raise InputError(f"{input_dirs[0]}: no .npy input files")
    return [list(files) for files in zip(*listings, strict=True)]


def _load(path: Path, spec) -> np.ndarray:
    array = np.load(path, allow_pickle=False)
    expected = _NUMPY_TYPES.get(spec.type)
    if expected is not None and array.dtype != expected:
        raise InputError(f"{path}: dtype {array.dtype}, but model input {spec.name!r} takes {np.dtype(expected)}")
    shape = list(spec.shape)
    fixed = [d if isinstance(d, int) else None for d in shape]
    if array.ndim != len(shape) or any(f is not None and i > 0 and a != f
                                       for i, (a, f) in enumerate(zip(array.shape, fixed, strict=True))):
        raise InputError(f"{path}: shape {list(array.shape)}, but model input {spec.name!r} takes "
                         f"{[f if f is not None else '?' for f in fixed]} (one sample per file)")
    return array


def run(model: str | os.PathLike, input_dirs: list[str | os.PathLike], output: str | os.PathLike,
        options: RunOptions) -> dict:
    session = open_session(model, options.provider, options.device)
    specs = session.get_inputs()
    output_names = [o.name for o in session.get_outputs()]
    samples = _input_files(session, [Path(d) for d in input_dirs])
    static_batch, static_seq = static_dims(session)
    if static_batch is not None and static_batch != options.batchsize:
        raise InputError(f"{model} has a fixed batch of {static_batch}; pass --batchsize {static_batch}")
    dynamic_seq = static_seq is None
    mask_index = next((i for i, s in enumerate(specs) if s.name == "attention_mask"), None)

    started = time.perf_counter()
    arrays = [[_load(path, spec) for path, spec in zip(files, specs, strict=True)] for files in samples]
    order = list(range(len(samples)))
    if dynamic_seq and mask_index is not None:
        # Similar lengths share a batch, which is then cut to its longest row: less padding computed.
        order.sort(key=lambda i: int(arrays[i][mask_index].sum()), reverse=True)
    out_dir = Path(output) / (options.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S"))
    out_dir.mkdir(parents=True, exist_ok=True)

    compute_ms, feed_ms, split_ms, e2e_ms = [], [], [], []
    batches = [order[i:i + options.batchsize] for i in range(0, len(order), options.batchsize)]
    for _ in range(options.warmup_count):
        session.run(output_names, _assemble(arrays, batches[0], specs, static_batch, dynamic_seq, mask_index))
    for loop in range(options.loop):
        for batch in tqdm(batches, desc="infer", disable=not options.progress or loop > 0):
            t0 = time.perf_counter()
            feed = _assemble(arrays, batch, specs, static_batch, dynamic_seq, mask_index)
            t1 = time.perf_counter()
            results = session.run(output_names, feed)
            t2 = time.perf_counter()
            # one sample's rows per file; padding rows (past len(batch)) are not saved
            rows = [[np.ascontiguousarray(result[row:row + 1]) for result in results] for row in range(len(batch))]
            t3 = time.perf_counter()
            if loop == options.loop - 1:
                for index, outputs in zip(batch, rows, strict=True):
                    for k, array in enumerate(outputs):
                        _save(out_dir / f"{samples[index][0].stem}_{k}", array, options.outfmt)
            t4 = time.perf_counter()
            feed_ms.append((t1 - t0) * 1000)
            compute_ms.append((t2 - t1) * 1000)
            split_ms.append((t3 - t2) * 1000)
            e2e_ms.append((t4 - t0) * 1000)
    total_s = time.perf_counter() - started
    summary = {"model": str(model), "provider": options.provider, "batchsize": options.batchsize,
               "num_samples": len(samples), "loop": options.loop, "dynamic_sequence": dynamic_seq,
               "compute": _latency_summary(compute_ms, len(samples) * options.loop),
               "end_to_end": _latency_summary(e2e_ms, len(samples) * options.loop),
               "wall_time_s": total_s, "output_dir": str(out_dir),
               # ais_bench's own keys, so tools that read its summaries read ours: times in ms per batch,
               # throughput over compute only. On ONNX Runtime, "H2D" is assembling the batch's inputs and
               # "D2H" splitting the outputs per sample (session.run does its own copies inside the compute).
               "NPU_compute_time": _ais_bench_stats(compute_ms), "H2D_latency": _ais_bench_stats(feed_ms),
               "D2H_latency": _ais_bench_stats(split_ms),
               "throughput": 1000 * options.batchsize / float(np.mean(compute_ms))}
    summary_path = Path(output) / f"{out_dir.name}_summary.json"
    atomic_write_json(summary_path, summary)
    return summary


def _assemble(arrays, batch: list[int], specs, static_batch: int | None, dynamic_seq: bool,
              mask_index: int | None) -> dict[str, np.ndarray]:
    feed = {spec.name: pad_to_batch(np.concatenate([arrays[i][k] for i in batch]), static_batch)
            for k, spec in enumerate(specs)}
    if dynamic_seq and mask_index is not None:
        longest = int(feed[specs[mask_index].name].sum(axis=1).max())
        feed = {name: value[:, :longest] for name, value in feed.items()}
    return feed


def _save(stem: Path, array: np.ndarray, outfmt: str) -> None:
    if outfmt == "NPY":
        np.save(f"{stem}.npy", array)
    elif outfmt == "BIN":
        array.tofile(f"{stem}.bin")
    elif outfmt == "TXT":
        np.savetxt(f"{stem}.txt", array.reshape(array.shape[0], -1))
    else:
        raise ValueError(f"--outfmt {outfmt!r}: use NPY, BIN or TXT")


def _ais_bench_stats(ms: list[float]) -> dict:
    values = np.array(ms)
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
            "median": float(np.median(values)), "percentile(99%)": float(np.percentile(values, 99))}


def _latency_summary(ms: list[float], samples: int) -> dict:
    """Per-batch latency percentiles, and samples per second over the summed batch times."""
    values = np.array(ms)
    return {"latency_ms_mean": float(values.mean()), "latency_ms_p50": float(np.percentile(values, 50)),
            "latency_ms_p99": float(np.percentile(values, 99)),
            "throughput_samples_per_s": samples / (values.sum() / 1000)}
