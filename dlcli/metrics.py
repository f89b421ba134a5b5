"""Classification metrics of a split from its confusion matrix, or from each sample's class
probabilities and label: per-class precision, recall and F1, one-vs-rest ROC and precision-recall
curves, calibration. Plain NumPy, so that dlcli eval needs no scikit-learn; the definitions are
scikit-learn's where it has one."""

import numpy as np


def per_class_recall(confusion: list[list[int]]) -> list[float]:
    """Of each class's samples, the fraction predicted as that class (0 for a class with none)."""
    return [row[i] / sum(row) if sum(row) else 0.0 for i, row in enumerate(confusion)]


def per_class_precision(confusion: list[list[int]]) -> list[float]:
    """Of the samples predicted as each class, the fraction that are (0 for a class never predicted)."""
    predicted = np.asarray(confusion).sum(0).tolist()
    return [confusion[i][i] / p if p else 0.0 for i, p in enumerate(predicted)]


def per_class_f1(confusion: list[list[int]]) -> list[float]:
    """The harmonic mean of each class's precision and recall (0 where both are)."""
    pairs = zip(per_class_precision(confusion), per_class_recall(confusion))
    return [2 * p * r / (p + r) if p + r else 0.0 for p, r in pairs]


def f1_macro(confusion: list[list[int]]) -> float:
    """The mean F1 over the classes the split holds or the model predicts; a class that is neither has
    no F1 to speak of."""
    counts = np.asarray(confusion)
    seen = (counts.sum(0) + counts.sum(1)) > 0
    f1 = np.asarray(per_class_f1(confusion))[seen]
    return float(f1.mean()) if f1.size else 0.0


def balanced_accuracy(confusion: list[list[int]]) -> float:
    """The mean recall over the classes the split holds."""
    recalls = [row[i] / sum(row) for i, row in enumerate(confusion) if sum(row)]
    return sum(recalls) / len(recalls) if recalls else 0.0


def confused_pairs(confusion: list[list[int]], top: int) -> list[tuple[int, int, int]]:
    """The `top` largest off-diagonal cells as (true class, predicted class, count), largest first;
    equal counts in matrix order."""
    cells = [(i, j, c) for i, row in enumerate(confusion) for j, c in enumerate(row) if i != j and c]
    return sorted(cells, key=lambda cell: -cell[2])[:top]


def _ranked(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(each distinct score, highest first; the positives and negatives scoring at least that).

    Samples with equal scores are one threshold: they are all in or all out, so a tie between a
    positive and a negative counts as half a correct ordering in the area, as the rank statistic has it.
    """
    order = np.argsort(-scores, kind="stable")
    scores, positive = scores[order], positive[order].astype(bool)
    last = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]  # the last sample of each run of equal scores
    true_pos = np.cumsum(positive)[last]
    return scores[last], true_pos, last + 1 - true_pos


def roc_curve(scores, positive) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(false positive rates, true positive rates, thresholds) from (0, 0) at an infinite threshold to
    (1, 1), one point per distinct score; None when the samples are all positive or all negative."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if not n_pos or not n_neg:
        return None
    thresholds, true_pos, false_pos = _ranked(scores, positive)
    return np.r_[0.0, false_pos / n_neg], np.r_[0.0, true_pos / n_pos], np.r_[np.inf, thresholds]


def trapezoid_area(x: np.ndarray, y: np.ndarray) -> float:
    """The area under the polyline through (x, y), x ascending."""
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def roc_auc(scores, positive) -> float | None:
    """The area under the ROC curve: the chance a random positive scores above a random negative
    (ties half); None where it is undefined, a split without positives or without negatives."""
    curve = roc_curve(scores, positive)
    return None if curve is None else trapezoid_area(curve[0], curve[1])


def precision_recall_curve(scores, positive) -> tuple[np.ndarray, np.ndarray] | None:
    """(recalls, precisions), one point per distinct score from the highest, after a first point at
    recall 0, precision 1; None without positives (recall is undefined)."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    if not n_pos:
        return None
    _, true_pos, false_pos = _ranked(scores, positive)
    return np.r_[0.0, true_pos / n_pos], np.r_[1.0, true_pos / (true_pos + false_pos)]


def average_precision(scores, positive) -> float | None:
    """Σ (R_n − R_{n−1}) P_n over the thresholds: the precision at each threshold, weighted by the recall
    it adds (no interpolation, scikit-learn's definition); None without positives."""
    curve = precision_recall_curve(scores, positive)
    if curve is None:
        return None
    recall, precision = curve
    return float(np.sum(np.diff(recall) * precision[1:]))


def one_vs_rest(metric, probabilities, labels) -> list[float | None]:
    """metric(scores, positive) for each class k: its probability as the score, label k as positive."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    return [metric(probabilities[:, k], labels == k) for k in range(probabilities.shape[1])]


def macro_mean(values: list[float | None]) -> float | None:
    """The mean of the defined values (None: a class absent from the split, whose AUC or AP is
    undefined, is left out rather than counted as 0); None if none is defined."""
    defined = [v for v in values if v is not None]
    return sum(defined) / len(defined) if defined else None


def calibration_bins(confidence, correct, bins: int) -> dict[str, np.ndarray]:
    """Samples grouped by confidence into `bins` equal-width bins (lo, hi] of [0, 1] (0 itself in the
    first): per bin its edges, count, mean confidence and accuracy (NaN for an empty bin)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(confidence, correct, bins: int) -> float:
    """Σ over the bins of (its share of the samples) · |its accuracy − its mean confidence|: how far
    the predicted class's probability is from how often it is right."""
    grouped = calibration_bins(confidence, correct, bins)
    filled = grouped["count"] > 0
    gaps = np.abs(grouped["accuracy"][filled] - grouped["confidence"][filled])
    return float(np.sum(grouped["count"][filled] * gaps) / grouped["count"].sum())
