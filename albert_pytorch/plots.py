"""training_curves.png: training loss and the dev metric against the optimizer step."""

from __future__ import annotations

import logging
from pathlib import Path

from .io import atomic_write

logger = logging.getLogger(__name__)


def plot_training_curves(records: list[dict], out_path: Path, metric: str) -> Path | None:
    """Train loss, and `metric` (an `eval_` key) at each evaluation; the final evaluation, of the model
    as saved, is a star."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install matplotlib)", out_path.name)
        return None
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval" and metric in r and not r.get("final")]
    final = [r for r in records if r["type"] == "eval" and metric in r and r.get("final")]
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="train loss")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    if evals or final:
        metric_axis = loss_axis.twinx()
        metric_axis.plot([r["step"] for r in evals], [r[metric] for r in evals], "o-", color="tab:orange",
                         label=f"dev {metric.removeprefix('eval_')}")
        metric_axis.plot([r["step"] for r in final], [r[metric] for r in final], "*", markersize=14,
                         color="tab:red", label="final evaluation")
        metric_axis.set_ylabel(metric.removeprefix("eval_"), color="tab:orange")
        metric_axis.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return out_path
