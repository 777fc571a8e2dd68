"""High-confidence failures: the threshold, ranking, grouping, summaries and the baseline comparison."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cifar_helpers.analysis.failures import (
    ConfusedPair,
    FailureSet,
    FailureSummary,
    _most_confused_pairs,
    _per_class_failure_rate,
    compare_failures,
    confidence_histogram,
    failure_summary,
    find_high_confidence_failures,
)
from cifar_helpers.core.evaluation import confusion_matrix

CLASSES = ["cat", "dog", "frog"]


def make_probs(predicted: list[int], confidence: list[float], num_classes: int = 3) -> torch.Tensor:
    """Rows whose argmax is ``predicted`` with probability ``confidence``, the rest spread evenly."""
    rows = []
    for pred, conf in zip(predicted, confidence, strict=True):
        row = torch.full((num_classes,), (1.0 - conf) / (num_classes - 1), dtype=torch.float64)
        row[pred] = conf
        rows.append(row)
    return torch.stack(rows)


def roundtrip_json(obj: dict) -> dict:
    return json.loads(json.dumps(obj))


# --- the threshold -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exactly_at_threshold_is_not_a_failure_just_above_is(dtype: torch.dtype) -> None:
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.9000001, 0.0999999, 0.0], [0.95, 0.05, 0.0]], dtype=dtype)
    labels = torch.tensor([1, 1, 0])
    failures = find_high_confidence_failures(probs, labels, threshold=0.9)
    assert failures.indices.tolist() == [1]
    assert failures.num_errors == 2
    assert failures.num_images == 3
    assert failures.confidence.dtype == torch.float32
    assert failures.indices.dtype == failures.true_labels.dtype == failures.predicted.dtype == torch.int64


def test_ranked_by_confidence_ties_by_lower_index() -> None:
    labels = torch.tensor([0, 0, 0, 0, 0])
    probs = make_probs([1, 2, 1, 2, 0], [0.95, 0.99, 0.95, 0.97, 0.99])
    failures = find_high_confidence_failures(probs, labels)
    assert failures.indices.tolist() == [1, 3, 0, 2]
    assert failures.predicted.tolist() == [2, 2, 1, 1]
    assert failures.true_labels.tolist() == [0, 0, 0, 0]
    assert torch.allclose(failures.confidence, torch.tensor([0.99, 0.97, 0.95, 0.95]))
    assert failures.num_errors == 4


def test_failure_set_json_roundtrip_is_exact() -> None:
    torch.manual_seed(0)
    probs = torch.randn(200, 10).mul(4).softmax(dim=1)
    labels = torch.randint(0, 10, (200,))
    failures = find_high_confidence_failures(probs, labels, threshold=0.5)
    assert len(failures) > 0
    restored = FailureSet.from_dict(roundtrip_json(failures.to_dict()))
    for name in ("indices", "true_labels", "predicted", "confidence"):
        assert torch.equal(getattr(restored, name), getattr(failures, name)), name
    assert (restored.threshold, restored.num_images, restored.num_errors) == (0.5, 200, failures.num_errors)
    with pytest.raises(ValueError, match="missing"):
        FailureSet.from_dict({"indices": []})


# --- validation ----------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors() -> None:
    probs = make_probs([0, 1], [0.95, 0.95])
    labels = torch.tensor([0, 0])
    with pytest.raises(ValueError, match="sum to 1"):
        find_high_confidence_failures(torch.tensor([[0.5, 0.4], [0.5, 0.5]]), labels)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        find_high_confidence_failures(torch.tensor([[2.0, -1.0], [0.5, 0.5]]), labels)  # logits
    with pytest.raises(ValueError, match=r"threshold.*\(0, 1\)"):
        find_high_confidence_failures(probs, labels, threshold=1.0)
    with pytest.raises(ValueError, match=r"threshold.*\(0, 1\)"):
        find_high_confidence_failures(probs, labels, threshold=0.0)
    with pytest.raises(ValueError, match="labels has 3"):
        find_high_confidence_failures(probs, torch.tensor([0, 0, 0]))
    with pytest.raises(ValueError, match="class indices"):
        find_high_confidence_failures(probs, torch.tensor([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        find_high_confidence_failures(probs, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="2-D"):
        find_high_confidence_failures(probs[0], labels)


# --- empty results -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("predicted", "confidence", "num_errors"),
    [
        ([0, 1, 2, 0], [0.99, 0.99, 0.99, 0.5], 0),  # no errors at all
        ([1, 2, 0, 0], [0.6, 0.9, 0.7, 0.99], 3),  # errors, all at or below the threshold
    ],
    ids=["no-errors", "errors-below-threshold"],
)
def test_empty_failures_are_handled_everywhere(
    predicted: list[int], confidence: list[float], num_errors: int
) -> None:
    labels = torch.tensor([0, 1, 2, 0])
    probs = make_probs(predicted, confidence)
    failures = find_high_confidence_failures(probs, labels)
    assert len(failures) == 0 and failures.num_errors == num_errors
    assert FailureSet.from_dict(roundtrip_json(failures.to_dict())).indices.shape == (0,)
    assert torch.equal(
        confusion_matrix(failures.predicted, failures.true_labels, 3), torch.zeros(3, 3, dtype=torch.int64)
    )
    assert _most_confused_pairs(failures, CLASSES) == ()
    assert _per_class_failure_rate(failures, labels, 3).tolist() == [0.0, 0.0, 0.0]

    summary = FailureSummary.from_dict(
        roundtrip_json(failure_summary(probs, labels, failures, CLASSES).to_dict())
    )
    assert summary.num_high_confidence == 0
    assert summary.num_errors == num_errors
    assert summary.accuracy == pytest.approx(1 - num_errors / 4)
    assert summary.share_of_errors_high_confidence == (None if num_errors == 0 else 0.0)
    assert summary.most_confused_pairs == ()

    histogram = confidence_histogram(probs, labels)
    assert sum(histogram.correct) == 4 - num_errors and sum(histogram.wrong) == num_errors

    comparison = compare_failures(probs, probs, labels)
    assert comparison.counts() == dict.fromkeys(
        ("baseline_failures", "augmented_failures", "fixed", "kept_same", "kept_different", "new"), 0
    )
    assert comparison.table(CLASSES) == []
    assert roundtrip_json(comparison.to_dict())["counts"] == comparison.counts()


# --- grouping and summaries ----------------------------------------------------------------------------
def test_confused_pairs_counts_and_order() -> None:
    # true -> predicted: dog->cat x2, cat->dog x2, frog->cat x1, cat->frog x1 (low confidence, excluded)
    labels = torch.tensor([1, 1, 0, 0, 2, 0, 2])
    probs = make_probs([0, 0, 1, 1, 0, 2, 2], [0.95, 0.96, 0.97, 0.98, 0.99, 0.5, 0.99])
    failures = find_high_confidence_failures(probs, labels)
    counts = confusion_matrix(failures.predicted, failures.true_labels, 3)
    assert counts.dtype == torch.int64
    assert counts.tolist() == [[0, 2, 0], [2, 0, 0], [1, 0, 0]]
    assert _most_confused_pairs(failures, CLASSES) == (
        ConfusedPair("cat", "dog", 2),  # ties on count are ordered by name
        ConfusedPair("dog", "cat", 2),
        ConfusedPair("frog", "cat", 1),
    )


def test_per_class_rate_and_summary() -> None:
    # Four classes; class 3 ("ship") has no images, so its rate is undefined.
    classes = [*CLASSES, "ship"]
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    probs = make_probs(
        [1, 2, 0, 0, 0, 1, 0, 2], [0.95, 0.92, 0.99, 0.8, 0.91, 0.99, 0.4, 0.99], num_classes=4
    )
    failures = find_high_confidence_failures(probs, labels)
    assert failures.indices.tolist() == [0, 1, 4]
    rates = _per_class_failure_rate(failures, labels, 4)
    assert rates[:3].tolist() == [0.5, 0.5, 0.0]
    assert math.isnan(rates[3])

    computed = failure_summary(probs, labels, failures, classes)
    saved = roundtrip_json(computed.to_dict())
    assert list(saved) == [
        "threshold",
        "num_images",
        "accuracy",
        "num_errors",
        "num_high_confidence",
        "share_of_errors_high_confidence",
        "per_class_failure_rate",
        "most_confused_pairs",
    ]
    assert saved["most_confused_pairs"][0] == {"true": "cat", "predicted": "dog", "count": 1}
    summary = FailureSummary.from_dict(saved)
    assert summary == computed
    assert summary.num_images == 8
    assert summary.num_errors == 4
    assert summary.accuracy == pytest.approx(0.5)
    assert summary.num_high_confidence == 3
    assert summary.share_of_errors_high_confidence == pytest.approx(0.75)
    assert summary.per_class_failure_rate == {"cat": 0.5, "dog": 0.5, "frog": 0.0, "ship": None}
    assert summary.most_confused_pairs[0] == ConfusedPair("cat", "dog", 1)


def test_confidence_histogram_bins() -> None:
    labels = torch.tensor([0, 0, 0, 0, 1])
    probs = torch.tensor(
        [[1.0, 0.0], [0.95, 0.05], [0.5, 0.5], [0.7, 0.3], [0.9, 0.1]], dtype=torch.float64
    )  # the 0.5/0.5 tie predicts class 0 (first maximum): correct
    histogram = confidence_histogram(probs, labels)
    assert len(histogram.edges) == 21
    assert histogram.edges[0] == 0.0 and histogram.edges[-1] == 1.0
    correct, wrong = histogram.correct, histogram.wrong
    assert len(correct) == len(wrong) == 20
    # 1.0 goes in the last bin, 0.95 starts the last bin, 0.5 starts bin 10, 0.7 starts bin 14.
    assert [i for i, c in enumerate(correct) for _ in range(c)] == [10, 14, 19, 19]
    assert [i for i, c in enumerate(wrong) for _ in range(c)] == [18]


# --- baseline -> augmented -----------------------------------------------------------------------------
def comparison_example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eight images whose fate under both models is known by construction."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    # baseline: high-confidence failures at 0, 2, 4, 5; image 6 wrong at low confidence.
    baseline = make_probs([1, 0, 0, 1, 0, 1, 2, 1], [0.95, 0.9, 0.92, 0.8, 0.99, 0.91, 0.6, 0.97])
    # augmented: 0 fixed; 2 same mistake at low confidence; 4 another mistake (confidently);
    # 5 same mistake; 6 (baseline low-confidence error) and 7 (baseline correct) new failures.
    augmented = make_probs([0, 0, 0, 1, 1, 1, 2, 0], [0.7, 0.9, 0.7, 0.8, 0.95, 0.97, 0.93, 0.96])
    return baseline, augmented, labels


def test_compare_partitions_baseline_failures() -> None:
    baseline, augmented, labels = comparison_example()
    comparison = compare_failures(baseline, augmented, labels)
    assert comparison.fixed.tolist() == [0]
    assert comparison.kept_same.tolist() == [2, 5]
    assert comparison.kept_different.tolist() == [4]
    assert comparison.new.tolist() == [6, 7]

    base = set(comparison.baseline_failures.indices.tolist())
    groups = [set(g.tolist()) for g in (comparison.fixed, comparison.kept_same, comparison.kept_different)]
    assert set.union(*groups) == base
    assert sum(len(g) for g in groups) == len(base)  # pairwise disjoint
    assert not set(comparison.new.tolist()) & base
    assert set(comparison.new.tolist()) <= set(comparison.augmented_failures.indices.tolist())
    for group in (comparison.fixed, comparison.kept_same, comparison.kept_different, comparison.new):
        assert group.dtype == torch.int64 and torch.equal(group, group.sort().values)

    assert comparison.counts() == {
        "baseline_failures": 4,
        "augmented_failures": 4,
        "fixed": 1,
        "kept_same": 2,
        "kept_different": 1,
        "new": 2,
    }
    table = comparison.table(CLASSES)
    assert [(row["index"], row["status"]) for row in table] == [
        (4, "kept (different)"),
        (0, "fixed"),
        (2, "kept (same)"),
        (5, "kept (same)"),
    ]
    assert table[0] == {
        "index": 4,
        "true": "frog",
        "baseline_predicted": "cat",
        "baseline_confidence": pytest.approx(0.99),
        "augmented_predicted": "dog",
        "augmented_confidence": pytest.approx(0.95),
        "status": "kept (different)",
    }


def test_compare_accuracies_gaps_and_saved_layout() -> None:
    baseline, augmented, labels = comparison_example()
    comparison = compare_failures(
        baseline, augmented, labels, baseline_train_accuracy=1.0, augmented_train_accuracy=0.9
    )
    assert comparison.baseline_accuracy == pytest.approx(3 / 8)  # images 1, 3, 7
    assert comparison.augmented_accuracy == pytest.approx(3 / 8)  # images 0, 1, 3
    assert comparison.baseline_gap == pytest.approx(1.0 - 3 / 8)
    assert comparison.augmented_gap == pytest.approx(0.9 - 3 / 8)
    assert compare_failures(baseline, augmented, labels).baseline_gap is None

    data = roundtrip_json(comparison.to_dict())
    assert list(data) == [
        "threshold",
        "counts",
        "baseline_accuracy",
        "augmented_accuracy",
        "baseline_gap",
        "augmented_gap",
        "fixed",
        "kept_same",
        "kept_different",
        "new",
        "augmented_predicted",
        "augmented_confidence",
        "baseline_failures",
        "augmented_failures",
    ]
    assert data["counts"] == comparison.counts() and data["counts"]["fixed"] == 1
    assert data["baseline_gap"] == comparison.baseline_gap
    assert data["augmented_gap"] == comparison.augmented_gap
    assert FailureSet.from_dict(data["baseline_failures"]).indices.tolist() == [4, 0, 2, 5]

    with pytest.raises(ValueError, match="baseline_train_accuracy"):
        compare_failures(baseline, augmented, labels, baseline_train_accuracy=95.0)
    with pytest.raises(ValueError, match="same shape"):
        compare_failures(baseline, make_probs([0] * 8, [0.9] * 8, num_classes=4), labels)


def test_restricted_to_keeps_rank_order_and_only_the_given_images():
    probs = torch.tensor([[0.05, 0.95], [0.02, 0.98], [0.97, 0.03], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 1, 0])
    failures = find_high_confidence_failures(probs, labels, 0.9)
    assert failures.indices.tolist() == [1, 2, 0]
    subset = failures.restricted_to(torch.tensor([0, 1]))
    assert subset.indices.tolist() == [1, 0]
    assert subset.confidence.tolist() == pytest.approx([0.98, 0.95])
    assert len(failures.restricted_to(torch.tensor([], dtype=torch.int64))) == 0
