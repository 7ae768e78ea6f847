"""Runtime outputs (`{i}_0.npy`, from our runtime or ais_bench) + labels -> the task's metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..data.glue import get_task
from ..io import atomic_write_json
from ..metrics import class_report, compute_metrics, predictions_from_logits
from .preprocess import MANIFEST


class OutputError(ValueError):
    """Runtime outputs that do not line up with the labels."""


def load_outputs(result_dir: Path, basenames: list[str], width: int, outfmt: str = "NPY",
                 dtype: str = "float32") -> np.ndarray:
    """One row of `width` values per sample, in label order; missing, extra or mis-shaped files are errors.

    `outfmt` BIN reads ais_bench's default output: raw values of `dtype`, no header.
    """
    suffix = {"NPY": ".npy", "BIN": ".bin"}.get(outfmt)
    if suffix is None:
        raise OutputError(f"--outfmt {outfmt!r}: use NPY or BIN")
    names = [f"{b}_0{suffix}" for b in basenames]
    missing = [n for n in names if not (result_dir / n).is_file()]
    if missing:
        raise OutputError(f"{result_dir}: {len(missing)} output files are missing, e.g. {', '.join(missing[:5])}")
    extra = sorted(p.name for p in result_dir.glob(f"*_0{suffix}") if p.name not in set(names))
    if extra:
        raise OutputError(f"{result_dir}: {len(extra)} output files match no label, e.g. {', '.join(extra[:5])}")
    rows = []
    for name in names:
        path = result_dir / name
        array = np.load(path, allow_pickle=False) if outfmt == "NPY" else np.fromfile(path, dtype=dtype)
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]
        if array.shape != (width,):
            raise OutputError(f"{path}: {array.size} values ({outfmt}, shape {list(array.shape)}); expected one "
                              f"sample's {width} {'values of ' + dtype if outfmt == 'BIN' else 'logits'}")
        rows.append(array)
    return np.stack(rows)


def default_report_path(result_dir: str | os.PathLike) -> Path:
    """`<result_dir>_postprocess.json`: beside the results folder, as the runtime's `_summary.json` is."""
    result_dir = Path(result_dir)
    return result_dir.with_name(f"{result_dir.name}_postprocess.json")


def postprocess(result_dir: str | os.PathLike, label_path: str | os.PathLike, task_name: str | None = None,
                outfmt: str = "NPY", output_dtype: str = "float32",
                output_file: str | os.PathLike | None = None) -> dict:
    """The task's metrics over the runtime's outputs (per-class figures too for classes), also written as JSON
    to `output_file` (default: `default_report_path`)."""
    result_dir, label_path = Path(result_dir), Path(label_path)
    labels = np.load(label_path, allow_pickle=False)
    manifest_path = label_path.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    task = get_task(task_name or (manifest["task"] if manifest else "SST-2"))
    if manifest is not None and manifest["num_examples"] != len(labels):
        raise OutputError(f"{label_path}: {len(labels)} labels, but {manifest_path} lists {manifest['num_examples']}")
    logits = load_outputs(result_dir, [str(i) for i in range(len(labels))], task.num_labels, outfmt, output_dtype)
    predictions = predictions_from_logits(task, logits)
    report = {"task": task.name, "num_examples": len(labels), **compute_metrics(task, predictions, labels)}
    if not task.is_regression:
        report.update(class_report(task, predictions, labels))
    atomic_write_json(output_file or default_report_path(result_dir), report)
    return report
