"""Calibration: does a confidence of 0.95 mean "right 95 % of the time"? And temperature scaling.

Expected calibration error (Guo et al., 2017) over equal-width confidence bins; temperature scaling
divides the logits by one T > 0 fitted on the *hold-out* split, never the test split.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from scipy.optimize import minimize_scalar
from torch import nn

from cifar_helpers.analysis.failures import _check_scores_on_cpu
from cifar_helpers.core.checks import check_count, check_fraction, check_probabilities
from cifar_helpers.core.evaluation import predict
from cifar_helpers.rundir.records import Record

# Search interval of T; an optimum at a bound means the hold-out set cannot pin T down (e.g. no errors).
TEMPERATURE_BOUNDS: tuple[float, float] = (0.05, 20.0)


@dataclass(frozen=True)
class ReliabilityBins(Record):
    """The reliability diagram's data: ``edges`` the n_bins + 1 bounds of equal-width intervals
    ``(lo, hi]`` of the maximum probability (the first also takes 0); per bin, how many predictions,
    their accuracy and mean confidence (None for an empty bin); the ECE over all ``num_samples``."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    accuracy: tuple[float | None, ...]
    confidence: tuple[float | None, ...]
    ece: float
    num_samples: int


@dataclass(frozen=True)
class CalibrationSummary(Record):
    """One model's calibration on the test split at one temperature (NLL in nats)."""

    ece: float
    nll: float
    accuracy: float
    mean_confidence: float
    reliability: ReliabilityBins


@dataclass(frozen=True)
class ConfidentFailures(Record):
    """Failures above the confidence threshold before scaling, those of them still above it after, and
    all failures above it after (scaling keeps every prediction's class)."""

    before: int
    still_above_after: int
    after: int


@dataclass(frozen=True)
class ModelCalibration(Record):
    """One model's calibration on the test split before and after temperature scaling
    (:func:`_calibration_report`); ``n_bins`` the ECE's bins; the hold-out NLLs in nats."""

    temperature: float
    threshold: float
    n_bins: int
    num_test: int
    num_holdout: int
    holdout_nll_before: float
    holdout_nll_after: float
    before: CalibrationSummary
    after: CalibrationSummary
    high_confidence_failures: ConfidentFailures


@dataclass(frozen=True)
class Calibration:
    """:func:`calibrate_models`' result, saved as ``stress/calibration.json``: ``{model:
    ModelCalibration}``, or ``skipped`` (the reason, no models) when the run has no hold-out split."""

    models: dict[str, ModelCalibration]
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The saved layout: ``{model: its dict}``, or ``{"skipped": reason}``."""
        if self.skipped is not None:
            return {"skipped": self.skipped}
        return {name: report.to_dict() for name, report in self.models.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_dict`'s output; a missing key raises a KeyError naming it."""
        if "skipped" in values:  # optional by design: a run without a hold-out split
            return cls({}, values["skipped"])
        return cls({name: ModelCalibration.from_dict(report) for name, report in values.items()})


def _check_scores(scores: Any, labels: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float scores and (N,) int labels, validated, as float64 and int64 on the CPU."""
    scores, labels = _check_scores_on_cpu(scores, labels, name)
    scores = scores.to(torch.float64)
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return scores, labels


def _reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> ReliabilityBins:
    """The reliability diagram's data of float (N, C) softmax ``probs`` and int64 (N,) ``labels`` in
    ``n_bins`` confidence bins."""
    n_bins = check_count("n_bins", n_bins)
    probs, labels = _check_scores(probs, labels, "probs")
    probs = check_probabilities("probs", probs)
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).to(torch.float64)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    # right=False on the inner edges puts a confidence equal to an edge in the bin that edge closes.
    index = torch.bucketize(confidence, edges[1:-1], right=False)
    counts = torch.bincount(index, minlength=n_bins)
    correct_sum = torch.bincount(index, weights=correct, minlength=n_bins)
    confidence_sum = torch.bincount(index, weights=confidence, minlength=n_bins)
    nonempty = counts > 0
    accuracy = torch.where(nonempty, correct_sum / counts.clamp(min=1), torch.nan)
    mean_confidence = torch.where(nonempty, confidence_sum / counts.clamp(min=1), torch.nan)
    gaps = (accuracy - mean_confidence).abs()
    ece = float((gaps[nonempty] * counts[nonempty]).sum() / counts.sum())
    return ReliabilityBins(
        edges=tuple(edges.tolist()),
        counts=tuple(counts.tolist()),
        # An empty bin's NaN (and only an empty bin's) becomes None.
        accuracy=tuple(None if math.isnan(a) else a for a in accuracy.tolist()),
        confidence=tuple(None if math.isnan(c) else c for c in mean_confidence.tolist()),
        ece=ece,
        num_samples=int(labels.numel()),
    )


def _negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean -log p(true class) under the softmax of ``logits`` float (N, C), ``labels`` int64 (N,), in
    nats, computed in float64."""
    logits, labels = _check_scores(logits, labels, "logits")
    log_probs = torch.log_softmax(logits, dim=1)
    return float(-log_probs.gather(1, labels.view(-1, 1)).mean())


def _fit_temperature(holdout_logits: torch.Tensor, holdout_labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the hold-out NLL of ``softmax(logits / T)`` (Guo et al., 2017).

    Only hold-out data goes in (float (H, C) logits, int64 (H,) labels). The NLL is unimodal in log T,
    so a bounded Brent search on log T within :data:`TEMPERATURE_BOUNDS` finds the global minimum; T at
    a bound means the hold-out set could not determine it; T > 1 softens over-confident predictions.
    """
    logits, labels = _check_scores(holdout_logits, holdout_labels, "holdout_logits")
    true_logit = logits.gather(1, labels.view(-1, 1)).squeeze(1)

    def nll(log_t: float) -> float:
        scaled = logits / math.exp(log_t)
        return float((torch.logsumexp(scaled, dim=1) - true_logit / math.exp(log_t)).mean())

    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    log_t = float(result.x)
    # Brent's bounded method never evaluates the bounds themselves; check them so that a monotone
    # objective (e.g. a hold-out set without any error) returns the bound rather than a point near it.
    best = min((nll(x), x) for x in (log_t, low, high))
    return math.exp(best[1])


def _summary(logits: torch.Tensor, labels: torch.Tensor) -> CalibrationSummary:
    probs = torch.softmax(logits, dim=1)
    bins = _reliability_bins(probs, labels)
    return CalibrationSummary(
        ece=bins.ece,
        nll=_negative_log_likelihood(logits, labels),
        accuracy=float((probs.argmax(dim=1) == labels).to(torch.float64).mean()),
        mean_confidence=float(probs.max(dim=1).values.mean()),
        reliability=bins,
    )


def _calibration_report(
    test_logits: torch.Tensor,
    test_labels: torch.Tensor,
    holdout_logits: torch.Tensor,
    holdout_labels: torch.Tensor,
    threshold: float = 0.9,
) -> ModelCalibration:
    """Calibration of one model on the test split (logits float (N, C), labels int64 (N,)), before and
    after the temperature fitted on the hold-out logits float (H, C) / labels int64 (H,); ``threshold``
    the high-confidence threshold."""
    threshold = check_fraction("threshold", threshold, closed=(False, False))
    test_logits, test_labels = _check_scores(test_logits, test_labels, "test_logits")
    holdout_logits_64, holdout_labels_64 = _check_scores(holdout_logits, holdout_labels, "holdout_logits")
    temperature = _fit_temperature(holdout_logits, holdout_labels)

    scaled = test_logits / temperature
    before_probs, after_probs = torch.softmax(test_logits, dim=1), torch.softmax(scaled, dim=1)
    wrong = before_probs.argmax(dim=1) != test_labels
    failures_before = wrong & (before_probs.max(dim=1).values > threshold)
    above_after = after_probs.max(dim=1).values > threshold
    before = _summary(test_logits, test_labels)
    return ModelCalibration(
        temperature=temperature,
        threshold=threshold,
        n_bins=len(before.reliability.counts),
        num_test=int(test_labels.numel()),
        num_holdout=int(holdout_labels_64.numel()),
        holdout_nll_before=_negative_log_likelihood(holdout_logits_64, holdout_labels_64),
        holdout_nll_after=_negative_log_likelihood(holdout_logits_64 / temperature, holdout_labels_64),
        before=before,
        after=_summary(scaled, test_labels),
        high_confidence_failures=ConfidentFailures(
            before=int(failures_before.sum()),
            still_above_after=int((failures_before & above_after).sum()),
            after=int((wrong & above_after).sum()),
        ),
    )


def calibrate_models(
    models: Mapping[str, nn.Module],
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    holdout_images: torch.Tensor,
    holdout_labels: torch.Tensor,
    threshold: float = 0.9,
    **predict_options: Any,
) -> Calibration:
    """:func:`_calibration_report` of every model in ``{name: trained network}``, each with its
    temperature fitted on the hold-out split; ``skipped`` when there is none.

    ``test_images`` uint8 (N, 3, H, W) and ``test_labels`` int64 (N,); ``holdout_images`` uint8
    (H', 3, H, W) and ``holdout_labels`` int64 (H',), training images kept out of training;
    ``predict_options``: :func:`cifar_helpers.core.evaluation.predict`'s keyword arguments.
    """
    if holdout_labels.numel() == 0:
        return Calibration({}, "the run has no hold-out split (holdout_per_class=0)")
    reports = {}
    for name, model in models.items():
        test = predict(model, test_images, test_labels, **predict_options)
        holdout = predict(model, holdout_images, holdout_labels, **predict_options)
        reports[name] = _calibration_report(
            test.logits, test.labels, holdout.logits, holdout.labels, threshold
        )
    return Calibration(reports)
