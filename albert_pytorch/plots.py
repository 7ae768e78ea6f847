"""training_curves.png: training loss and the dev metric against the optimizer step."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .io import atomic_write

logger = logging.getLogger(__name__)


def plot_training_curves(log_path: Path, out_path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install matplotlib)", out_path.name)
        return None
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="train loss")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    if evals:
        metric = next(k for k in evals[0] if k.startswith("eval_") and k != "eval_num_examples")
        metric_axis = loss_axis.twinx()
        metric_axis.plot([r["step"] for r in evals], [r[metric] for r in evals], "o-", color="tab:orange")
        metric_axis.set_ylabel(metric.removeprefix("eval_"), color="tab:orange")
    fig.tight_layout()
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return out_path
