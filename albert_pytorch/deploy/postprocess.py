"""Runtime outputs (`{i}_0.npy`, from our runtime or ais_bench) + labels -> the task's metrics."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..data.glue import get_task
from ..metrics import compute_metrics, predictions_from_logits
from .preprocess import MANIFEST


class OutputError(ValueError):
    """Runtime outputs that do not line up with the labels."""


def load_outputs(result_dir: Path, basenames: list[str]) -> np.ndarray:
    """One row per sample, in label order; missing, extra or mis-shaped files are errors, not skips."""
    missing = [b for b in basenames if not (result_dir / f"{b}_0.npy").is_file()]
    if missing:
        raise OutputError(f"{result_dir}: {len(missing)} output files are missing, e.g. "
                          f"{', '.join(f'{b}_0.npy' for b in missing[:5])}")
    expected = {f"{b}_0.npy" for b in basenames}
    extra = sorted(p.name for p in result_dir.glob("*_0.npy") if p.name not in expected)
    if extra:
        raise OutputError(f"{result_dir}: {len(extra)} output files match no label, e.g. {', '.join(extra[:5])}")
    rows = []
    for b in basenames:
        path = result_dir / f"{b}_0.npy"
        array = np.load(path, allow_pickle=False)
        if array.ndim == 2 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 1 or (rows and array.shape != rows[0].shape):
            raise OutputError(f"{path}: shape {array.shape}; expected [1, classes] like "
                              f"{(1, *rows[0].shape) if rows else 'the others'}")
        rows.append(array)
    return np.stack(rows)


def postprocess(result_dir: str | os.PathLike, label_path: str | os.PathLike,
                task_name: str | None = None) -> dict:
    result_dir, label_path = Path(result_dir), Path(label_path)
    labels = np.load(label_path, allow_pickle=False)
    manifest_path = label_path.parent / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    task = get_task(task_name or (manifest["task"] if manifest else "SST-2"))
    if manifest is not None and manifest["num_examples"] != len(labels):
        raise OutputError(f"{label_path}: {len(labels)} labels, but {manifest_path} lists {manifest['num_examples']}")
    basenames = [str(i) for i in range(len(labels))]
    logits = load_outputs(result_dir, basenames)
    if logits.shape[1] != task.num_labels:
        raise OutputError(f"{result_dir}: outputs have {logits.shape[1]} values per sample; {task.name} needs "
                          f"{task.num_labels}")
    metrics = compute_metrics(task, predictions_from_logits(task, logits), labels)
    return {"task": task.name, "num_examples": len(labels), **metrics}
