"""Classification figures from true and predicted labels (numpy; no torch)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(n_classes), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(n_classes), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n_classes), where=precision + recall > 0)
    # macro averages are over all the run's classes (scikit-learn's average="macro", zero_division=0): a class
    # without samples in the split still counts, with F1 0 if the model predicts it, so it cannot flatter the figure
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "per_class_accuracy": recall.tolist(),
        "per_class_precision": precision.tolist(),
        "per_class_f1": f1.tolist(),
        "macro_f1": float(f1.mean()),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "support": support.tolist(),
        "confusion_matrix": cm.tolist(),
    }
