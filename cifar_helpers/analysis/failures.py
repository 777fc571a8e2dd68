"""High-confidence failures: finding them, grouping them, and comparing two models on them.

A *high-confidence failure* is a test image the model classifies wrongly with a maximum softmax
probability strictly above a threshold (0.9 by default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
from torch import Tensor

from cifar_helpers.core.checks import (
    check_class_indices,
    check_classes,
    check_fraction,
    check_probabilities,
    check_score_matrix,
)
from cifar_helpers.core.evaluation import confusion_matrix
from cifar_helpers.rundir.records import Record

# The per-failure columns of a FailureSet, each (K,).
_COLUMNS = ("indices", "true_labels", "predicted", "confidence")

# What became of the baseline's failures (and the augmented model's new ones); what counts() counts.
COUNT_KEYS = ("fixed", "kept_same", "kept_different", "new")
COMPARISON_COUNTS = ("baseline_failures", "augmented_failures", *COUNT_KEYS)

_TABLE_KEYS = ("index", "true", "baseline_predicted", "baseline_confidence", "augmented_predicted")
_TABLE_KEYS += ("augmented_confidence", "status")
# comparison.json's keys after the threshold and the counts.
_COMPARISON_KEYS = ("baseline_accuracy", "augmented_accuracy", "baseline_gap", "augmented_gap", *COUNT_KEYS)
_COMPARISON_KEYS += ("augmented_predicted", "augmented_confidence", "baseline_failures", "augmented_failures")


def _check_scores_on_cpu(scores: Tensor, labels: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Float (N, C) scores (logits or probabilities) and their (N,) class indices, checked, on the CPU
    (also calibration's check)."""
    num_images, num_classes = check_score_matrix(name, scores).shape
    labels = check_class_indices("labels", labels, num_images, num_classes, rows_name=name)
    return scores.detach().cpu(), labels


def _check_probs(probs: Tensor, labels: Tensor, name: str = "probs") -> tuple[Tensor, Tensor]:
    """:func:`_check_scores_on_cpu` for softmax probabilities, kept in float64 when given so."""
    probs, labels = _check_scores_on_cpu(probs, labels, name)
    if probs.dtype != torch.float64:
        probs = probs.float()
    return check_probabilities(name, probs), labels


def _accuracy(probs: Tensor, labels: Tensor) -> float:
    return float((probs.argmax(dim=1) == labels).double().mean())


_int64 = partial(torch.tensor, dtype=torch.int64)
_float32 = partial(torch.tensor, dtype=torch.float32)


def _to_json(value: Any) -> Any:
    """Tensors as lists (float32 -> Python float is exact, so the JSON roundtrip loses nothing)."""
    if isinstance(value, Tensor):
        return value.tolist()
    return value.to_dict() if isinstance(value, FailureSet) else value


@dataclass
class FailureSet:
    """High-confidence failures of one model on one split, ranked by confidence (highest first, ties by
    lower index): ``indices`` int64 (K,) positions in the evaluated split, ``true_labels`` and
    ``predicted`` int64 (K,), ``confidence`` float32 (K,) the maximum softmax probability (all strictly
    above ``threshold``). ``num_images`` (N) and ``num_errors`` (all wrong predictions, whatever their
    confidence) describe the evaluated split, so :meth:`restricted_to` keeps them."""

    indices: Tensor
    true_labels: Tensor
    predicted: Tensor
    confidence: Tensor
    threshold: float
    num_images: int
    num_errors: int

    def __post_init__(self) -> None:
        k = len(self.indices)
        for name in _COLUMNS:
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.ndim != 1 or len(value) != k:
                raise ValueError(f"FailureSet.{name} must be a 1-D tensor of length {k} (as indices)")
        if k and (self.indices.min() < 0 or self.indices.max() >= self.num_images):
            raise ValueError(f"FailureSet.indices must lie in [0, num_images={self.num_images})")
        if not 0 <= k <= self.num_errors <= self.num_images:
            raise ValueError(
                f"FailureSet needs len <= num_errors <= num_images, got {k}, {self.num_errors}, "
                f"{self.num_images}"
            )

    def __len__(self) -> int:
        return len(self.indices)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists and numbers); :meth:`from_dict` restores it bit for bit."""
        return {key: _to_json(getattr(self, key)) for key in _FAILURE_SET_JSON}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FailureSet:
        """Rebuild a :class:`FailureSet` from :meth:`to_dict`'s output (e.g. a loaded failures.json)."""
        missing = [key for key in _FAILURE_SET_JSON if key not in values]
        if missing:
            raise ValueError(f"FailureSet.from_dict: missing key(s) {', '.join(missing)}")
        return cls(**{key: convert(values[key]) for key, convert in _FAILURE_SET_JSON.items()})

    def restricted_to(self, image_indices: Tensor) -> FailureSet:
        """The failures whose image index is in ``image_indices`` (int64, any order), rank order kept."""
        keep = torch.isin(self.indices, torch.as_tensor(image_indices, dtype=torch.int64))
        columns = ("indices", "true_labels", "predicted", "confidence")
        return replace(self, **{name: getattr(self, name)[keep] for name in columns})


_FAILURE_SET_JSON: dict[str, Callable[[Any], Any]] = {
    "threshold": float,
    "num_images": int,
    "num_errors": int,
    "indices": _int64,
    "true_labels": _int64,
    "predicted": _int64,
    "confidence": _float32,
}


def find_high_confidence_failures(probs: Tensor, labels: Tensor, threshold: float = 0.9) -> FailureSet:
    """The wrongly classified images whose maximum softmax probability is strictly above ``threshold``.

    ``probs`` float (N, C) softmax probabilities on any device, ``labels`` int64 (N,), ``threshold`` in
    (0, 1), compared in the precision of ``probs``. Returns a possibly empty :class:`FailureSet` on the
    CPU.
    """
    threshold = check_fraction("threshold", threshold, closed=(False, False))
    probs, labels = _check_probs(probs, labels)
    confidence = probs.max(dim=1).values
    # argmax documents returning the first maximal column, which keeps tied predictions deterministic.
    predicted = probs.argmax(dim=1)
    wrong = predicted != labels
    selected = torch.nonzero(wrong & (confidence > threshold)).flatten()
    # A stable sort keeps ascending index order among equal confidences.
    order = torch.sort(confidence[selected], descending=True, stable=True).indices
    selected = selected[order]
    return FailureSet(
        indices=selected,
        true_labels=labels[selected],
        predicted=predicted[selected],
        confidence=confidence[selected].float(),
        threshold=threshold,
        num_images=int(probs.shape[0]),
        num_errors=int(wrong.sum()),
    )


@dataclass(frozen=True)
class ConfusedPair(Record):
    """How many confident failures of true class ``true`` (a name) were predicted ``predicted``."""

    true: str
    predicted: str
    count: int


def _most_confused_pairs(failures: FailureSet, classes: Sequence[str]) -> tuple[ConfusedPair, ...]:
    """The 10 most frequent (true, predicted) pairs among the failures, ties by name."""
    counts = confusion_matrix(failures.predicted, failures.true_labels, len(classes))  # (true, predicted)
    pairs = [
        ConfusedPair(classes[t], classes[p], int(counts[t, p])) for t, p in torch.nonzero(counts).tolist()
    ]
    pairs.sort(key=lambda pair: (-pair.count, pair.true, pair.predicted))
    return tuple(pairs[:10])


def _per_class_failure_rate(failures: FailureSet, labels: Tensor, num_classes: int) -> Tensor:
    """float64 (C,): high-confidence failures of true class c / images of class c in ``labels`` (N,), the
    labels of the evaluated split. A class with no images gets NaN (the rate is undefined, and 0 would
    claim the model never fails on it)."""
    images = torch.bincount(labels, minlength=num_classes).double()
    failed = torch.bincount(failures.true_labels, minlength=num_classes)[:num_classes].double()
    return torch.where(images > 0, failed / images.clamp_min(1), torch.full_like(images, math.nan))


@dataclass(frozen=True)
class FailureSummary(Record):
    """The failures of one model on one split, in numbers (``failures/summary.json``):
    ``share_of_errors_high_confidence`` is None when there are no errors, a class's
    ``per_class_failure_rate`` None when it has no images; the 10 ``most_confused_pairs``."""

    threshold: float
    num_images: int
    accuracy: float
    num_errors: int
    num_high_confidence: int
    share_of_errors_high_confidence: float | None
    per_class_failure_rate: dict[str, float | None]
    most_confused_pairs: tuple[ConfusedPair, ...]


def failure_summary(
    probs: Tensor, labels: Tensor, failures: FailureSet, classes: Sequence[str]
) -> FailureSummary:
    """The :class:`FailureSummary` of ``failures``, found in ``probs`` float (N, C) against ``labels``
    int64 (N,)."""
    probs, labels = _check_probs(probs, labels)
    names = check_classes("classes", classes, probs.shape[1])[: probs.shape[1]]
    if failures.num_images != len(labels):
        raise ValueError(
            f"failures were found on {failures.num_images} images but probs/labels hold {len(labels)}"
        )
    num_errors = int((probs.argmax(dim=1) != labels).sum())
    rates = _per_class_failure_rate(failures, labels, probs.shape[1])
    return FailureSummary(
        threshold=failures.threshold,
        num_images=len(labels),
        accuracy=_accuracy(probs, labels),
        num_errors=num_errors,
        num_high_confidence=len(failures),
        share_of_errors_high_confidence=len(failures) / num_errors if num_errors else None,
        per_class_failure_rate={
            name: None if math.isnan(rate) else rate for name, rate in zip(names, rates.tolist(), strict=True)
        },
        most_confused_pairs=_most_confused_pairs(failures, names),
    )


@dataclass(frozen=True)
class ConfidenceHistogram:
    """Counts of the maximum softmax probability in the bins between ``edges`` (B + 1 floats over
    [0, 1]), for the ``correct`` and the ``wrong`` predictions (B each). Never saved, so no dict form."""

    edges: tuple[float, ...]
    correct: tuple[int, ...]
    wrong: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or not len(self.correct) == len(self.wrong) == len(self.edges) - 1:
            raise ValueError(
                "a histogram has B+1 edges and B counts per group, got "
                f"{len(self.edges)}, {len(self.correct)}, {len(self.wrong)}"
            )


def confidence_histogram(probs: Tensor, labels: Tensor) -> ConfidenceHistogram:
    """Histogram of the maximum softmax probability, separately for correct and wrong predictions: 20
    bins over [0, 1], half-open ``[lo, hi)`` except the last, which includes 1."""
    bins = 20  # 5 points of confidence each
    probs, labels = _check_probs(probs, labels)
    confidence = probs.max(dim=1).values.double()
    edges = torch.arange(bins + 1, dtype=torch.float64) / bins
    # bucketize against the edges themselves (not floor(conf * bins)) so a value lands in the bin
    # its printed edges say it does, with no rounding from the multiplication.
    bin_index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, bins - 1)
    correct = probs.argmax(dim=1) == labels
    return ConfidenceHistogram(
        edges=tuple(edges.tolist()),
        correct=tuple(torch.bincount(bin_index[correct], minlength=bins).tolist()),
        wrong=tuple(torch.bincount(bin_index[~correct], minlength=bins).tolist()),
    )


@dataclass
class FailureComparison:
    """How the baseline's high-confidence failures fare under the augmented model.

    ``fixed``, ``kept_same`` and ``kept_different`` partition the baseline failures; ``new`` holds the
    augmented model's high-confidence failures that were not baseline ones; all four are int64 index
    tensors into the test split, sorted ascending. ``augmented_predicted`` int64 (K,) and
    ``augmented_confidence`` float32 (K,) are the augmented model's prediction and max probability on
    each baseline failure, in ``baseline_failures``' rank order.
    """

    fixed: Tensor
    kept_same: Tensor
    kept_different: Tensor
    new: Tensor
    baseline_failures: FailureSet
    augmented_failures: FailureSet
    augmented_predicted: Tensor
    augmented_confidence: Tensor
    baseline_accuracy: float
    augmented_accuracy: float
    baseline_gap: float | None = None
    augmented_gap: float | None = None

    def counts(self) -> dict[str, int]:
        """Sizes of each group, plus the two failure sets' (:data:`COMPARISON_COUNTS`)."""
        return {group: len(getattr(self, group)) for group in COMPARISON_COUNTS}

    def status(self) -> list[str]:
        """Status of each baseline failure, in its rank order: "fixed", "kept (same)", "kept (different)"."""
        true, base = self.baseline_failures.true_labels, self.baseline_failures.predicted
        return [
            "fixed" if aug == t else "kept (same)" if aug == b else "kept (different)"
            for t, b, aug in zip(true.tolist(), base.tolist(), self.augmented_predicted.tolist(), strict=True)
        ]

    def table(self, classes: Sequence[str]) -> list[dict[str, Any]]:
        """One row per baseline failure (baseline rank order) with both models' predictions and status."""
        base = self.baseline_failures
        labels = torch.cat([base.true_labels, base.predicted, self.augmented_predicted])
        names = check_classes("classes", classes, int(labels.max()) + 1 if len(labels) else 0)
        columns = (
            base.indices.tolist(),
            [names[c] for c in base.true_labels.tolist()],
            [names[c] for c in base.predicted.tolist()],
            base.confidence.tolist(),
            [names[c] for c in self.augmented_predicted.tolist()],
            self.augmented_confidence.tolist(),
            self.status(),
        )
        return [dict(zip(_TABLE_KEYS, row, strict=True)) for row in zip(*columns, strict=True)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, saved as ``reevaluation/comparison.json``."""
        return {
            "threshold": self.baseline_failures.threshold,
            "counts": self.counts(),
            **{key: _to_json(getattr(self, key)) for key in _COMPARISON_KEYS},
        }


def compare_failures(
    baseline_probs: Tensor,
    augmented_probs: Tensor,
    labels: Tensor,
    threshold: float = 0.9,
    *,
    baseline_train_accuracy: float | None = None,
    augmented_train_accuracy: float | None = None,
) -> FailureComparison:
    """Compare two models' predictions (float (N, C) softmax probabilities) on the same test images.

    Returns a :class:`FailureComparison`; each training accuracy given (in [0, 1]) yields a
    generalisation gap (train accuracy - test accuracy).
    """
    base_probs, labels = _check_probs(baseline_probs, labels, name="baseline_probs")
    aug_probs, _ = _check_probs(augmented_probs, labels, name="augmented_probs")
    if base_probs.shape != aug_probs.shape:
        raise ValueError(
            f"baseline_probs {tuple(base_probs.shape)} and augmented_probs {tuple(aug_probs.shape)} "
            "must have the same shape (the same test images and classes)"
        )
    baseline = find_high_confidence_failures(base_probs, labels, threshold)
    augmented = find_high_confidence_failures(aug_probs, labels, threshold)
    if baseline_train_accuracy is not None:
        baseline_train_accuracy = check_fraction("baseline_train_accuracy", baseline_train_accuracy)
    if augmented_train_accuracy is not None:
        augmented_train_accuracy = check_fraction("augmented_train_accuracy", augmented_train_accuracy)

    aug_conf = aug_probs.max(dim=1).values.float()
    aug_pred = aug_probs.argmax(dim=1)
    at_base = baseline.indices
    pred_then, pred_now, truth = baseline.predicted, aug_pred[at_base], labels[at_base]
    fixed = pred_now == truth
    kept_same = pred_now == pred_then
    kept_different = ~fixed & ~kept_same
    new = augmented.indices[~torch.isin(augmented.indices, at_base)]

    base_acc, aug_acc = _accuracy(base_probs, labels), _accuracy(aug_probs, labels)
    return FailureComparison(
        fixed=at_base[fixed].sort().values,
        kept_same=at_base[kept_same].sort().values,
        kept_different=at_base[kept_different].sort().values,
        new=new.sort().values,
        baseline_failures=baseline,
        augmented_failures=augmented,
        augmented_predicted=pred_now,
        augmented_confidence=aug_conf[at_base],
        baseline_accuracy=base_acc,
        augmented_accuracy=aug_acc,
        baseline_gap=None if baseline_train_accuracy is None else baseline_train_accuracy - base_acc,
        augmented_gap=None if augmented_train_accuracy is None else augmented_train_accuracy - aug_acc,
    )
