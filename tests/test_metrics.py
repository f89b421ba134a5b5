"""dlcli.metrics on cases small enough to work out by hand."""

import numpy as np
import pytest

from dlcli import metrics


def test_auc_of_a_perfect_a_reversed_and_an_all_tied_ranking():
    positive = [1, 1, 0, 0, 0]
    assert metrics.roc_auc([0.9, 0.8, 0.3, 0.2, 0.1], positive) == 1.0
    assert metrics.roc_auc([0.1, 0.2, 0.3, 0.8, 0.9], positive) == 0.0
    assert metrics.roc_auc([0.5] * 5, positive) == 0.5


def test_roc_groups_equal_scores_into_one_threshold():
    """A positive and a negative at 0.5 are one step of the curve, a diagonal: half a correct pair.
    Pairs: 0.9 beats both negatives, 0.5+ beats 0.1 and ties 0.5-, so 3.5 of 4."""
    fpr, tpr, thresholds = metrics.roc_curve([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert thresholds.tolist() == [np.inf, 0.9, 0.5, 0.1]
    assert fpr.tolist() == [0, 0, 0.5, 1] and tpr.tolist() == [0, 0.5, 1, 1]
    assert metrics.roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == 0.875
    # the order of tied samples does not matter
    assert metrics.roc_auc([0.5, 0.5, 0.9, 0.1], [0, 1, 1, 0]) == 0.875


def test_auc_and_average_precision_are_undefined_without_positives_and_left_out_of_the_mean():
    assert metrics.roc_auc([0.2, 0.4], [0, 0]) is None
    assert metrics.roc_auc([0.2, 0.4], [1, 1]) is None  # no negatives either
    assert metrics.average_precision([0.2, 0.4], [0, 0]) is None
    assert metrics.macro_mean([1.0, None, 0.5]) == 0.75
    assert metrics.macro_mean([None]) is None
    probabilities = np.array([[0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.6, 0.3, 0.1]])
    assert metrics.one_vs_rest(metrics.roc_auc, probabilities, np.array([0, 1, 1])) == [1.0, 1.0, None]


def test_average_precision_weighs_each_threshold_s_precision_by_the_recall_it_adds():
    # thresholds 0.9, 0.8, 0.7, 0.6: (recall, precision) = (1/2, 1), (1/2, 1/2), (1, 2/3), (1, 1/2)
    recall, precision = metrics.precision_recall_curve([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    assert recall.tolist() == [0, 0.5, 0.5, 1, 1]
    assert precision == pytest.approx([1, 1, 0.5, 2 / 3, 0.5])
    assert metrics.average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics.average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert metrics.average_precision([0.5, 0.5, 0.5, 0.5], [1, 0, 0, 0]) == 0.25  # all tied: the prevalence


def test_ece_of_a_calibrated_toy_is_about_zero_and_of_an_overconfident_one_its_gap():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 200_000)
    right = rng.uniform(0, 1, confidence.size) < confidence  # right as often as it is confident
    assert metrics.expected_calibration_error(confidence, right, 15) < 0.005
    # always 90 % sure, right half the time
    assert metrics.expected_calibration_error([0.9] * 4, [1, 0, 1, 0], 15) == pytest.approx(0.4)
    # two bins of two: |1 - 0.95| and |0 - 0.25|, each half the samples
    assert metrics.expected_calibration_error([0.9, 1.0, 0.2, 0.3], [1, 1, 0, 0], 10) == pytest.approx(0.15)


def test_calibration_bins_are_equal_width_and_closed_on_the_right():
    grouped = metrics.calibration_bins([0.0, 0.2, 0.21, 0.5, 1.0], [1, 0, 1, 1, 1], 5)
    assert grouped["edges"] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])
    assert grouped["count"].tolist() == [2, 1, 1, 0, 1]  # 0.0 and 0.2 in the first bin, 1.0 in the last
    assert grouped["accuracy"][:3].tolist() == [0.5, 1, 1] and np.isnan(grouped["accuracy"][3])
    assert grouped["confidence"][0] == pytest.approx(0.1)


def test_precision_recall_f1_from_a_confusion_matrix():
    confusion = [[3, 1, 0], [2, 2, 0], [0, 0, 0]]  # class 2: neither in the split nor predicted
    assert metrics.per_class_recall(confusion) == [0.75, 0.5, 0.0]
    assert metrics.per_class_precision(confusion) == [0.6, 2 / 3, 0.0]
    f1 = metrics.per_class_f1(confusion)
    assert f1 == pytest.approx([2 * 0.6 * 0.75 / 1.35, 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 0.0])
    assert metrics.f1_macro(confusion) == pytest.approx((f1[0] + f1[1]) / 2)
    assert metrics.balanced_accuracy(confusion) == 0.625


def test_confused_pairs_are_off_diagonal_largest_first():
    confusion = [[50, 3, 7], [0, 40, 3], [9, 1, 30]]
    assert metrics.confused_pairs(confusion, 3) == [(2, 0, 9), (0, 2, 7), (0, 1, 3)]
    assert len(metrics.confused_pairs(confusion, 10)) == 5  # the zero cell is no pair
