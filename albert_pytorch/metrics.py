"""GLUE metrics, computed by scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
)

from .data.tasks import Task

# Our metric names -> transformers' (run_glue and the `evaluate` library's "glue" metric) for the same numbers.
TRANSFORMERS_NAMES = {"acc": "accuracy", "mcc": "matthews_correlation", "f1": "f1", "pearson": "pearson",
                      "spearmanr": "spearmanr", "acc_and_f1": "combined_score", "corr": "combined_score",
                      "loss": "loss"}


def metric_names(task: Task) -> tuple[str, ...]:
    """What `compute_metrics` reports for `task`, and the evaluation loss."""
    if task.is_regression:
        return "pearson", "spearmanr", "corr", "loss"
    extra = {"mcc": ("mcc",), "acc_and_f1": ("f1", "acc_and_f1")}.get(task.metric, ())
    return "acc", *extra, "loss"


def resolve_metric(name: str | None, task: Task) -> str:
    """Our name for a metric given in either spelling, with or without `eval_`; None: the task's main metric."""
    if name is None:
        return task.metric
    bare = name.removeprefix("eval_")
    for ours in metric_names(task):
        if bare in (ours, TRANSFORMERS_NAMES[ours]):
            return ours
    raise ValueError(f"metric {name!r}: {task.name} reports {', '.join(metric_names(task))}")


def predictions_from_logits(task: Task, logits: np.ndarray) -> np.ndarray:
    """Class indices by argmax (any number of classes), or the regression score itself."""
    logits = np.asarray(logits)
    return logits.reshape(-1) if task.is_regression else logits.argmax(axis=-1)


def compute_metrics(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if task.is_regression:
        # A constant prediction has no defined correlation; it predicts nothing, so it scores 0.
        pearson = float(pearsonr(predictions, labels)[0]) if np.ptp(predictions) > 0 else 0.0
        spearman = float(spearmanr(predictions, labels)[0]) if np.ptp(predictions) > 0 else 0.0
        return {"pearson": pearson, "spearmanr": spearman, "corr": (pearson + spearman) / 2}
    metrics = {"acc": float(accuracy_score(labels, predictions))}
    if task.metric == "mcc":
        metrics["mcc"] = float(matthews_corrcoef(labels, predictions))
    if task.metric == "acc_and_f1":
        metrics["f1"] = float(f1_score(labels, predictions))
        metrics["acc_and_f1"] = (metrics["acc"] + metrics["f1"]) / 2
    return metrics


def class_report(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict:
    """Precision, recall, F1 and support per class (by label name), and the confusion matrix
    (rows: true class, columns: predicted, in the task's label order)."""
    classes = list(range(task.num_labels))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=classes,
                                                                     zero_division=0)
    per_class = {task.names[c]: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                                  "support": int(support[c])} for c in classes}
    return {"per_class": per_class, "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist()}
