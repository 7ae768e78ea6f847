"""What a training run leaves to read: train_log.jsonl, TensorBoard scalars and training_curves.png.

Only the main process writes; on the others every method is a no-op.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .io import atomic_write_text, to_json

logger = logging.getLogger("albert_pytorch")

LOG_NAME = "train_log.jsonl"


def format_values(values: dict[str, Any]) -> str:
    """`key=value` pairs, floats to 4 places: the one-line form the launchers parse."""
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


class RunLog:
    """One JSON record per line (`type` "train" or "eval", `step`, then numbers), mirrored to TensorBoard
    (a folder per run, `tensorboard/<start time>`, so a resumed run does not write into another's events)."""

    def __init__(self, output_dir: Path, enabled: bool, tensorboard: bool = True):
        self.output_dir, self.enabled, self.use_tensorboard = output_dir, enabled, tensorboard
        self.path = output_dir / LOG_NAME
        self.run_name = time.strftime("%Y%m%d-%H%M%S")
        self._tensorboard = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(to_json(record, indent=None) + "\n")
        writer = self._writer()
        if writer is not None:
            for key, value in record.items():
                if key not in ("type", "step") and isinstance(value, int | float):
                    writer.add_scalar(f"{record['type']}/{key}", value, record["step"])
        if record["type"] == "eval":
            logger.info("step %d: %s", record["step"], format_values(
                {k: v for k, v in record.items() if k.startswith("eval_")}))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, step: int) -> None:
        """Drop records past `step`: a run resumed from that checkpoint writes them again."""
        if self.enabled and self.path.is_file():
            kept = [record for record in self.records() if record["step"] <= step]
            atomic_write_text(self.path, "".join(to_json(record, indent=None) + "\n" for record in kept))

    def plot(self, *metrics: str, evaluated_on: str = "dev") -> None:
        """training_curves.png: train loss and `metrics` (`eval_` keys of the eval records), labelled with the
        name of the evaluation set."""
        if self.enabled and self.path.is_file():
            from .plots import plot_training_curves  # matplotlib, imported only when a run plots

            plot_training_curves(self.records(), self.output_dir / "training_curves.png", metrics, evaluated_on)

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None

    def _writer(self):
        if self._tensorboard is None and self.use_tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                return None  # tensorboard is optional; train_log.jsonl has the same numbers
            self._tensorboard = SummaryWriter(str(self.output_dir / "tensorboard" / self.run_name))
        return self._tensorboard
