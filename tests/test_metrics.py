import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from albert_pytorch.data import get_task
from albert_pytorch.metrics import compute_metrics, predictions_from_logits


def test_accuracy_and_f1_for_mrpc():
    metrics = compute_metrics(get_task("MRPC"), np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert metrics["acc"] == 0.75 and metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["acc_and_f1"] == pytest.approx((0.75 + 2 / 3) / 2)


def test_matthews_for_cola():
    metrics = compute_metrics(get_task("CoLA"), np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert metrics["mcc"] == pytest.approx(1 / np.sqrt(3))


def test_pearson_spearman_for_stsb():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 50)
    preds = labels + rng.normal(0, 1, 50)
    metrics = compute_metrics(get_task("STS-B"), preds, labels)
    assert metrics["pearson"] == pytest.approx(pearsonr(preds, labels)[0])
    assert metrics["spearmanr"] == pytest.approx(spearmanr(preds, labels)[0])
    assert metrics["corr"] == pytest.approx((metrics["pearson"] + metrics["spearmanr"]) / 2)


def test_argmax_for_any_number_of_classes():
    logits = np.array([[0.1, 0.5, 0.2], [2.0, -1.0, 0.0]])
    assert predictions_from_logits(get_task("MNLI"), logits).tolist() == [1, 0]
    assert predictions_from_logits(get_task("STS-B"), np.array([[1.5], [3.0]])).tolist() == [1.5, 3.0]


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        compute_metrics(get_task("SST-2"), np.array([1, 0, 1]), np.array([1, 0]))
