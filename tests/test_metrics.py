"""classification_metrics against scikit-learn, with classes absent from the labels or the predictions."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score

from glamor_model.eval.metrics import classification_metrics


def _cases():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n_classes = int(rng.integers(1, 9))
        n = int(rng.integers(1, 40))
        # draw from a random subset of the classes, so some are absent from y_true, from y_pred or both
        true_from = rng.choice(n_classes, int(rng.integers(1, n_classes + 1)), replace=False)
        pred_from = rng.choice(n_classes, int(rng.integers(1, n_classes + 1)), replace=False)
        y_true = rng.choice(true_from, n)
        y_pred = np.where(rng.random(n) < rng.uniform(0, 0.8), y_true, rng.choice(pred_from, n))
        yield y_true, y_pred, n_classes


CASES = list(_cases())


def test_the_cases_cover_absent_and_unpredicted_classes():
    absent = predicted_absent = never_predicted = 0
    for y_true, y_pred, n in CASES:
        in_true, in_pred = set(y_true), set(y_pred)
        absent += any(c not in in_true for c in range(n))
        predicted_absent += bool(in_pred - in_true)
        never_predicted += bool(in_true - in_pred)
    assert min(absent, predicted_absent, never_predicted) >= 15


@pytest.mark.filterwarnings("ignore:A single label was found")  # accuracy_score on one-class cases
@pytest.mark.parametrize("y_true,y_pred,n_classes", CASES)
def test_against_scikit_learn(y_true, y_pred, n_classes):
    m = classification_metrics(y_true, y_pred, n_classes)
    labels = list(range(n_classes))
    per_class = dict(labels=labels, average=None, zero_division=0)
    macro = dict(labels=labels, average="macro", zero_division=0)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    np.testing.assert_allclose(m["per_class_accuracy"], recall_score(y_true, y_pred, **per_class))
    np.testing.assert_allclose(m["per_class_precision"], precision_score(y_true, y_pred, **per_class))
    np.testing.assert_allclose(m["per_class_f1"], f1_score(y_true, y_pred, **per_class))
    assert m["macro_precision"] == pytest.approx(precision_score(y_true, y_pred, **macro))
    assert m["macro_recall"] == pytest.approx(recall_score(y_true, y_pred, **macro))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, **macro))
    np.testing.assert_array_equal(m["confusion_matrix"], confusion_matrix(y_true, y_pred, labels=labels))
    np.testing.assert_array_equal(m["support"], np.bincount(y_true, minlength=n_classes))


def test_a_class_predicted_but_absent_counts_in_the_macro_average():
    # class 2 has no sample but one prediction: its F1 is 0, and the macro-F1 is over all three classes
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0, 2, 1, 1]), 3)
    assert m["per_class_f1"] == pytest.approx([2 / 3, 1.0, 0.0])
    assert m["macro_f1"] == pytest.approx(5 / 9)
