"""training_curves.png: training loss and the evaluation metrics against the optimizer step."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from .io import atomic_write

logger = logging.getLogger(__name__)


def plot_training_curves(records: list[dict], out_path: Path, metrics: Sequence[str],
                         evaluated_on: str) -> Path | None:
    """Train loss, and each of `metrics` (`eval_` keys) at each evaluation on the set named `evaluated_on`;
    the final evaluation, of the model as saved, is a star."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed: no %s (pip install matplotlib)", out_path.name)
        return None
    train = [r for r in records if r["type"] == "train"]
    fig, loss_axis = plt.subplots(figsize=(7, 4))
    loss_axis.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", label="train loss")
    loss_axis.set_xlabel("optimizer step")
    loss_axis.set_ylabel("train loss", color="tab:blue")
    evaluated = [m for m in metrics if any(r["type"] == "eval" and m in r for r in records)]
    if evaluated:
        metric_axis = loss_axis.twinx()
        for metric, color in zip(evaluated, ("tab:orange", "tab:green", "tab:purple"), strict=False):
            evals = [r for r in records if r["type"] == "eval" and metric in r and not r.get("final")]
            final = [r for r in records if r["type"] == "eval" and metric in r and r.get("final")]
            name = metric.removeprefix("eval_")
            metric_axis.plot([r["step"] for r in evals], [r[metric] for r in evals], "o-", color=color,
                             label=f"{evaluated_on} {name}")
            metric_axis.plot([r["step"] for r in final], [r[metric] for r in final], "*", markersize=14,
                             color=color, label=f"final {name}")
        metric_axis.set_ylabel(", ".join(m.removeprefix("eval_") for m in evaluated))
        metric_axis.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(out_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return out_path
