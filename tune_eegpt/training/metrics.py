"""Classification metrics from scikit-learn, at window and recording level."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, prefix: str = "") -> dict[str, float]:
    """AUROC, balanced accuracy (at p >= 0.5) and PR-AUC. NaN when one class is missing."""
    y_true = np.asarray(y_true).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    if len(np.unique(y_true)) < 2 or not np.isfinite(prob).all():
        nan = float("nan")
        return {f"{prefix}auroc": nan, f"{prefix}bal_acc": nan, f"{prefix}pr_auc": nan}
    return {
        f"{prefix}auroc": float(roc_auc_score(y_true, prob)),
        f"{prefix}bal_acc": float(balanced_accuracy_score(y_true, prob >= 0.5)),
        f"{prefix}pr_auc": float(average_precision_score(y_true, prob)),
    }


def recording_level(
    y_true: np.ndarray, prob: np.ndarray, recording_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean probability over each recording's windows -> (recording ids, labels, probs)."""
    frame = pd.DataFrame({"rec": recording_ids, "y": y_true, "p": prob})
    grouped = frame.groupby("rec", sort=True).agg(y=("y", "first"), p=("p", "mean"))
    return grouped.index.to_numpy(), grouped["y"].to_numpy(), grouped["p"].to_numpy()
