"""The claims ledger: each conclusion of the study this project grew from (:data:`CLAIMS`, drawn from
pictures) put to a test that could come out either way, with a control, an effect size with a 95 %
interval, and a verdict by a rule fixed here before any number is computed.

One function per claim returns :class:`ClaimResult` rows; claims 3-6 concern the baseline's confident
failures and take a :class:`FailureSet`, so the same test runs on the model errors alone
(:func:`model_errors_only`). Intervals are a bootstrap over test images (or failures) by default, an
exact binomial interval where one fits, and a t interval over seeds for a replicate run
(:func:`combine_seeds`). A verdict is :meth:`Rule.verdict` of the row's rule, never a judgement.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from cifar_helpers.analysis.failures import FailureSet, find_high_confidence_failures
from cifar_helpers.analysis.faithfulness import GRADCAM, RANDOM, map_key
from cifar_helpers.analysis.gradcam import matched_confidence_controls
from cifar_helpers.analysis.human_labels import MODEL_ERROR
from cifar_helpers.analysis.interventions import (
    draw_donors,
    shift_grid,
    shift_images,
    shuffle_tiles,
    surround_mask,
    swap_surround,
)
from cifar_helpers.core.data import CifarData, make_synthetic_cifar
from cifar_helpers.core.evaluation import Predictions, accuracy, predict
from cifar_helpers.core.training import load_trained_model
from cifar_helpers.rundir.artifacts import DamagedArtifactError, RunDir, load_json, rerun_hint, save_json

SUPPORTED = "supported"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

CONFIDENCE_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000  # percentile intervals (scipy.stats.bootstrap, vectorised)
# Why 20: a percentile bootstrap of a few values undercovers, and one of equal values (4 failures none
# of which any surround rescues) has zero width, which would call a claim "not supported" on a handful
# of images. Below this many values per sample the interval is undefined and the row inconclusive.
MIN_BOOTSTRAP_SAMPLE = 20

BOOTSTRAP_FAILURES = "bootstrap over test images (the failures)"
BOOTSTRAP_TRAIN_TEST = "bootstrap over test and training images"
EXACT_BINOMIAL = "Clopper-Pearson exact"
MCNEMAR_EXACT = "McNemar exact"
T_OVER_SEEDS = "t over seeds"

ALL_IMAGES = "test images"  # claims 1-2
ALL_FAILURES = "confident failures"
MODEL_ERRORS = "model errors only"  # verified label errors and ambiguous images set aside
PLANTED_CUE = "positive control, cue planted"  # a model that learned a planted background cue
NO_CUE = "positive control, no cue"  # the same recipe without the cue

CLAIMS_FILE = "claims.json"  # a stage's rows, a list of ClaimResult.to_dict()
LEDGER_STAGES = ("gradcam", "reevaluation", "stress")  # the stages that save rows, in pipeline order


@dataclass(frozen=True)
class Rule:
    """How a verdict follows from an effect and its interval, written down before the effect exists.

    A *difference* rule (``min_effect``) judges a claim that an effect is positive: **supported** when
    the interval excludes zero and the effect reaches ``min_effect``; **not supported** when the
    interval lies inside ``(-min_effect, min_effect)`` (too small to matter: an equivalence test, as in
    Lakens 2017, "Equivalence Tests") or below zero (the opposite holds); **inconclusive** otherwise.
    A *band* rule judges a claimed level: supported when the interval lies inside ``band``, not
    supported when it lies wholly outside it, inconclusive when it straddles an edge.
    """

    min_effect: float | None = None
    band: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if (self.min_effect is None) == (self.band is None):
            raise ValueError("a Rule needs exactly one of min_effect (a difference) and band (a level)")
        if self.min_effect is not None and not self.min_effect > 0:
            raise ValueError(f"min_effect must be > 0, got {self.min_effect!r}")
        if self.band is not None and not self.band[0] <= self.band[1]:
            raise ValueError(f"band must be (low, high) with low <= high, got {self.band!r}")

    def verdict(self, effect: float, ci_low: float, ci_high: float) -> str:
        """SUPPORTED, NOT_SUPPORTED or INCONCLUSIVE; an undefined effect or interval (NaN) is inconclusive."""
        if any(math.isnan(v) for v in (effect, ci_low, ci_high)):
            return INCONCLUSIVE
        if self.band is not None:
            low, high = self.band
            if low <= ci_low and ci_high <= high:
                return SUPPORTED
            return NOT_SUPPORTED if ci_high < low or ci_low > high else INCONCLUSIVE
        m = float(self.min_effect)  # type: ignore[arg-type]
        if ci_low > 0 and effect >= m:
            return SUPPORTED
        return NOT_SUPPORTED if ci_high < 0 or (-m < ci_low and ci_high < m) else INCONCLUSIVE

    def describe(self) -> str:
        """The rule in one sentence, for the notebook's markdown and the ledger."""
        if self.band is not None:
            band = " to ".join(f"{100 * v:g} %" for v in self.band)
            return f"supported if the 95 % interval lies in {band}, not supported if wholly outside it"
        m = f"{100 * self.min_effect:g} pts"
        return f"supported if >= +{m} and the 95 % interval excludes 0; not supported if inside ±{m} or < 0"


# Why 0.05 (five percentage points of a rate or a share of map mass): a cause that makes a difference
# of less than one failure in twenty against its control cannot be "where the failures come from",
# and an interval inside ±0.05 is a useful "not supported". Fixed before any run; never tuned.
CAUSE_MIN_EFFECT = 0.05
RULE_CAUSE = Rule(min_effect=CAUSE_MIN_EFFECT)  # claims 3-6
# Why one point: the study reported accuracies in whole percents, so a smaller difference is not
# one it could have seen; the same for "overfits" (train above test) and "narrows the gap".
ACCURACY_MIN_EFFECT = 0.01
RULE_ACCURACY_DIFFERENCE = Rule(min_effect=ACCURACY_MIN_EFFECT)
# "About 85 %" and "about 88-90 %" read as the claimed value(s) ± one point, the study's rounding:
# any wider and the two bands, which the study meant as different results, would overlap.
RULE_BASELINE_LEVEL = Rule(band=(0.84, 0.86))
RULE_AUGMENTED_LEVEL = Rule(band=(0.87, 0.91))

CLAIMS = {
    1: "1. the baseline reaches about 85 % and overfits",
    2: "2. augmentation raises test accuracy to about 88-90 % and narrows the train-test gap",
    3: "3. confident failures come from background confusion",
    4: "4. confident failures come from texture bias",
    5: "5. Grad-CAM shows the model looking at background in failures",
    6: "6. augmentation corrected failures on off-center objects",
}


@dataclass(frozen=True)
class ClaimResult:
    """One row of the ledger. ``effect`` and its interval are in the units ``test`` names, ``n`` counts
    the units the interval resamples (images, failures, seeds), ``details`` holds the few JSON-ready
    numbers behind the effect. ``verdict`` is not an argument: it is ``rule.verdict`` of the row, or
    INCONCLUSIVE when ``precondition`` names a check the test's instrument failed (claim 5's maps must
    beat random maps on ROAD): an effect measured with an instrument that is not shown to work says
    nothing either way.
    """

    claim: str
    test: str
    control: str
    effect: float
    ci_low: float
    ci_high: float
    method: str
    n: int
    rule: Rule
    population: str = ALL_FAILURES
    details: dict[str, Any] = field(default_factory=dict)
    precondition: str = ""  # empty: met; else the failed check, and the verdict is INCONCLUSIVE
    verdict: str = field(init=False, default=INCONCLUSIVE)

    def __post_init__(self) -> None:
        for name in ("effect", "ci_low", "ci_high"):
            object.__setattr__(self, name, float(getattr(self, name)))
        verdict = (
            INCONCLUSIVE if self.precondition else self.rule.verdict(self.effect, self.ci_low, self.ci_high)
        )
        object.__setattr__(self, "verdict", verdict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN kept, as ``rundir.artifacts.save_json`` writes it); see :meth:`from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ClaimResult:
        """Rebuild a row from :meth:`to_dict`'s output (e.g. one seed's saved ledger)."""
        rule = values["rule"]
        band = tuple(rule["band"]) if rule.get("band") is not None else None
        kept = {k: v for k, v in values.items() if k != "verdict"}
        return cls(**{**kept, "rule": Rule(rule.get("min_effect"), band)})


# --------------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------------
def bootstrap_interval(samples: Sequence[np.ndarray | Tensor], *, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (:data:`CONFIDENCE_LEVEL`, :data:`BOOTSTRAP_RESAMPLES`) of a mean.

    Args:
        samples: one 1-D sample (its mean; paired data go in as their differences) or two (the first
            one's mean minus the second's, each resampled within itself: a stratified bootstrap).
        seed: seeds the resampling.

    Returns:
        ``(low, high)``; ``(nan, nan)`` when a sample has fewer than :data:`MIN_BOOTSTRAP_SAMPLE` values.
    """
    arrays = tuple(np.asarray(s, dtype=np.float64) for s in samples)
    if any(len(a) < MIN_BOOTSTRAP_SAMPLE for a in arrays):
        return math.nan, math.nan

    def statistic(*x: np.ndarray, axis: int = -1) -> np.ndarray:
        return x[0].mean(axis=axis) - (x[1].mean(axis=axis) if len(x) > 1 else 0)

    rng = np.random.default_rng(seed)
    options = {"n_resamples": BOOTSTRAP_RESAMPLES, "confidence_level": CONFIDENCE_LEVEL, "rng": rng}
    ci = stats.bootstrap(arrays, statistic, method="percentile", **options).confidence_interval
    return float(ci.low), float(ci.high)


def t_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean of per-seed effects (NaN ones left out) and its t interval; NaN interval with fewer than 2."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if len(x) < 2:
        return (float(x[0]) if len(x) else math.nan), math.nan, math.nan
    if np.ptp(x) == 0:  # every seed agrees exactly: the interval is that one value
        return float(x[0]), float(x[0]), float(x[0])
    low, high = stats.t.interval(CONFIDENCE_LEVEL, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return float(x.mean()), float(low), float(high)


def exact_proportion(successes: int, n: int) -> tuple[float, float]:
    """The Clopper-Pearson exact interval of a proportion ``successes / n``."""
    ci = stats.binomtest(successes, n).proportion_ci(CONFIDENCE_LEVEL, method="exact")
    return float(ci.low), float(ci.high)


def mcnemar_exact(before_correct: Tensor, after_correct: Tensor) -> tuple[float, float, float, float]:
    """Paired accuracy difference (after - before) with McNemar's exact test.

    Args:
        before_correct, after_correct: bool (N,) whether each model got each image right.

    Returns:
        ``(difference, low, high, p_value)``. The interval is the exact conditional one: the
        Clopper-Pearson interval of the share of discordant images the second model gets right,
        scaled to a difference of accuracies (Agresti, "Categorical Data Analysis", 10.1).
    """
    b = int((before_correct & ~after_correct).sum())
    c = int((~before_correct & after_correct).sum())
    if b + c == 0:
        return 0.0, 0.0, 0.0, 1.0
    low, high = exact_proportion(c, b + c)
    n, p_value = len(before_correct), float(stats.binomtest(c, b + c).pvalue)
    return (c - b) / n, (b + c) / n * (2 * low - 1), (b + c) / n * (2 * high - 1), p_value


# --------------------------------------------------------------------------------------------------
# Claims 1 and 2: accuracies and gaps
# --------------------------------------------------------------------------------------------------
def accuracy_claims(
    baseline: Predictions,
    augmented: Predictions,
    baseline_train_accuracy: float,
    augmented_train_accuracy: float,
    num_train_images: int,
    *,
    seed: int = 0,
) -> list[ClaimResult]:
    """Claims 1 and 2 as five rows: each level against its claimed band, each gap, the paired gain.

    Args:
        baseline, augmented: test predictions of the two models on the same images
            (``<stage>/predictions.pt``).
        baseline_train_accuracy, augmented_train_accuracy: ``train_accuracy`` of each model's
            ``metrics.json`` (eval mode, un-augmented training images).
        num_train_images: how many training images those accuracies are over.
        seed: seeds the bootstraps.

    Returns:
        Rows 1 (level, gap) and 2 (paired gain, level, gap narrowing). A gap's interval resamples the
        test and the training images; the training images are resampled independently for the two
        models (their per-image correctness is not saved), which can only widen it.
    """
    if not torch.equal(baseline.labels, augmented.labels):
        raise ValueError("baseline and augmented predictions must be on the same test images")
    base_ok, aug_ok = baseline.preds == baseline.labels, augmented.preds == augmented.labels
    n, resamples = len(base_ok), BOOTSTRAP_RESAMPLES
    rng = np.random.default_rng(seed)
    # Resampling the test images: the counts of (baseline right?, augmented right?) are multinomial.
    cells = torch.stack([base_ok & aug_ok, base_ok & ~aug_ok, ~base_ok & aug_ok, ~base_ok & ~aug_ok])
    draws = rng.multinomial(n, (cells.sum(1).double() / n).numpy(), resamples) / n
    train_accuracies = (baseline_train_accuracy, augmented_train_accuracy)
    train_draws = rng.binomial(num_train_images, train_accuracies, (resamples, 2))
    base_gaps = train_draws[:, 0] / num_train_images - draws[:, 0] - draws[:, 1]
    aug_gaps = train_draws[:, 1] / num_train_images - draws[:, 0] - draws[:, 2]
    tails = ((1 - CONFIDENCE_LEVEL) / 2, (1 + CONFIDENCE_LEVEL) / 2)
    base_acc, aug_acc = accuracy(baseline), accuracy(augmented)
    base_gap, aug_gap = baseline_train_accuracy - base_acc, augmented_train_accuracy - aug_acc
    gain, *gain_ci, p_value = mcnemar_exact(base_ok, aug_ok)
    narrowing = base_gap - aug_gap
    b_ci, a_ci = exact_proportion(int(base_ok.sum()), n), exact_proportion(int(aug_ok.sum()), n)
    gap_ci, narrow_ci = np.quantile(base_gaps, tails), np.quantile(base_gaps - aug_gaps, tails)
    gap = {"train_accuracy": baseline_train_accuracy, "num_train_images": num_train_images}
    gaps, p = {"baseline_gap": base_gap, "augmented_gap": aug_gap}, {"p_value": p_value}
    band, diff, boot = "the claimed band", RULE_ACCURACY_DIFFERENCE, BOOTSTRAP_TRAIN_TEST
    exact, mcnemar = EXACT_BINOMIAL, MCNEMAR_EXACT
    rows = [
        (1, "baseline test accuracy", band, base_acc, b_ci, exact, RULE_BASELINE_LEVEL, {}),
        (1, "baseline train minus test accuracy", "no gap", base_gap, gap_ci, boot, diff, gap),
        (2, "augmented minus baseline accuracy, paired", "the baseline", gain, gain_ci, mcnemar, diff, p),
        (2, "augmented test accuracy", band, aug_acc, a_ci, exact, RULE_AUGMENTED_LEVEL, {}),
        (2, "baseline gap minus augmented gap", "the baseline's gap", narrowing, narrow_ci, boot, diff, gaps),
    ]
    return [ClaimResult(CLAIMS[c], t, k, e, *ci, m, n, r, ALL_IMAGES, d) for c, t, k, e, ci, m, r, d in rows]


# --------------------------------------------------------------------------------------------------
# Claims 3-6: the confident failures
# --------------------------------------------------------------------------------------------------
def model_errors_only(failures: FailureSet, human_report: Mapping[str, Any]) -> FailureSet | None:
    """The failures humans call model errors (verified label errors and ambiguous images set aside).

    Args:
        failures: the baseline's confident failures.
        human_report: ``failures/human_labels.json`` (:func:`analysis.human_labels.human_failure_report`).

    Returns:
        The restricted :class:`FailureSet`, or None when no human labels apply to the run.
    """
    if not human_report.get("applies"):
        return None
    keep = [r["index"] for r in human_report["failures"] if r["category"] == MODEL_ERROR]
    return failures.restricted_to(torch.tensor(keep, dtype=torch.int64))


def _preds(model: nn.Module, images: Tensor, eval_options: Mapping[str, Any] | None) -> Tensor:
    """Predicted classes, int64 (N,) on the CPU (empty for no images)."""
    if len(images) == 0:
        return torch.zeros(0, dtype=torch.int64)
    labels = torch.zeros(len(images), dtype=torch.int64)  # predict stores labels; these are unused
    return predict(model, images, labels, **dict(eval_options or {})).preds


def _mean(x: Tensor) -> float:
    return float(x.double().mean()) if len(x) else math.nan


def _failure_row(
    claim: int, test: str, control: str, samples: list[Tensor], population: str, seed: int, details: dict
) -> ClaimResult:
    """A row of claims 3-6: the mean of one sample of paired differences, or the difference of the
    means of two groups, with its bootstrap interval and :data:`RULE_CAUSE`."""
    effect = _mean(samples[0]) - (_mean(samples[1]) if len(samples) > 1 else 0.0)
    row = (CLAIMS[claim], test, control, effect, *bootstrap_interval(samples, seed=seed), BOOTSTRAP_FAILURES)
    return ClaimResult(*row, sum(len(x) for x in samples), RULE_CAUSE, population, details)


def background_claim(
    model: nn.Module,
    images: Tensor,
    failures: FailureSet,
    donor_images: Tensor,
    donor_labels: Tensor,
    *,
    donor_masks: Tensor | None = None,
    width: int = 4,
    donors: int = 4,
    max_failures: int = 500,
    seed: int = 0,
    population: str = ALL_FAILURES,
    eval_options: Mapping[str, Any] | None = None,
) -> ClaimResult:
    """Claim 3: does a true-class surround rescue a confident failure more often than another class's?

    Each failure's outer ring (:func:`analysis.interventions.swap_surround`) is replaced by that of
    ``donors`` random donor images of its true class, and of ``donors`` of random *other* classes (the
    control). If the failure's surround misled the model, a surround of the right class rescues it more
    often than another class's; if the surround plays no part, both arms rescue alike. This is Xiao et
    al.'s (2020) Mixed-Same against Mixed-Rand. They had foreground boxes; CIFAR-10 has none, so a
    donor's ring can hold part of its object, which favours the true-class arm for a reason other than
    the background. A thin ring keeps that rare (CIFAR centres its objects); with ``donor_masks`` only
    donors whose object stays out of the ring are used, and the test is clean.

    Args:
        model: the model the failures belong to.
        images: uint8 (N, 3, 32, 32) the split the failures index (the test set).
        failures: its confident failures (the ``max_failures`` most confident are used).
        donor_images, donor_labels: the donor pool, uint8 (D, 3, 32, 32) and int64 (D,): the training
            set, where the model learned what each class's surround looks like.
        donor_masks: optional bool (D, 32, 32) object masks of the donors (generated data has them).
        width: ring width in pixels (4: the outer 44 % of the image). donors: donors per failure and arm.
        seed: seeds the donors and the bootstrap. population: the row's population label.
        eval_options: ``config.eval_options()``, passed to :func:`core.evaluation.predict`.

    Returns:
        Effect: rescue rate with true-class surrounds minus with other-class surrounds (per failure,
        over its donors), bootstrap over failures. Details: both rescue rates, and how often the control
        arm's prediction became the donor's class, overall and by donor class (NaN: no such donor).
    """
    if donor_masks is not None:  # only donors whose ring is all background
        clean = ~(donor_masks.cpu() & surround_mask(donor_masks.shape[-1], width)).flatten(1).any(1)
        donor_images, donor_labels = donor_images[clean], donor_labels[clean]
    k = min(len(failures), max_failures)
    true = failures.true_labels[:k].repeat_interleave(donors)
    generator = torch.Generator().manual_seed(seed)
    num_classes = int(donor_labels.max()) + 1
    other = (true + torch.randint(1, num_classes, true.shape, generator=generator)) % num_classes
    centres = images[failures.indices[:k]].repeat_interleave(donors, dim=0)
    rescued, follows = [], torch.zeros(0)
    for classes in (true, other):
        donor = donor_images[draw_donors(donor_labels, classes, generator)]
        preds = _preds(model, swap_surround(centres, donor, width), eval_options)
        rescued.append((preds == true).double().view(k, donors).mean(1))
        follows = preds == classes
    details = {"rescue_true_surround": _mean(rescued[0]), "rescue_other_surround": _mean(rescued[1])}
    # The "pull" of a surround: how often another class's ring made the model say that class, by the
    # ring's class (does a sky ring pull toward airplane more than a road ring toward automobile?).
    pull = [_mean(follows[other == c]) for c in range(num_classes)]
    details.update(
        other_follows_donor=_mean(follows), follows_donor_by_class=pull, width=width, donors=donors
    )
    test = f"rescue by a true-class surround ({width}-px ring) minus by another class's"
    control = "surrounds of random other classes"
    return _failure_row(3, test, control, [rescued[0] - rescued[1]], population, seed, details)


def texture_claim(
    model: nn.Module,
    images: Tensor,
    predictions: Predictions,
    failures: FailureSet,
    classes: Sequence[str],
    *,
    tile: int = 8,
    max_failures: int = 500,
    seed: int = 0,
    population: str = ALL_FAILURES,
    eval_options: Mapping[str, Any] | None = None,
) -> ClaimResult:
    """Claim 4: is a confident failure's prediction carried by texture more than a correct one's?

    Each failure and a correctly classified image of matched confidence
    (:func:`analysis.gradcam.matched_confidence_controls`) are tile-shuffled
    (:func:`analysis.interventions.shuffle_tiles`: shape destroyed, local texture kept; the patch
    shuffling of Zhang & Zhu 2019, a texture-versus-shape probe in the spirit of Geirhos et al. 2019).
    If the failures come from texture, their wrong predictions survive shuffling more often than the
    controls' right ones; how texture-reliant the model is overall shows in both arms alike (and in
    :func:`shuffled_accuracy`).

    Args:
        model, images: the model and the split the failures index (uint8 (N, 3, 32, 32)).
        predictions: the model's predictions on the split (they choose the controls).
        failures: its confident failures (the ``max_failures`` most confident are used).
        classes: class names; with ``cat`` and ``dog`` among them, the details count cat/dog
            confusions (either way) among the failures and among all errors.
        tile: tile side in pixels. seed, population, eval_options: as for :func:`background_claim`.

    Returns:
        Effect: share of failures whose prediction survives shuffling minus the same share for their
        controls, bootstrap over (failure, control) pairs.
    """
    k = min(len(failures), max_failures)
    idx, predicted = failures.indices[:k], predictions.preds
    correct = predicted == predictions.labels
    generator = torch.Generator().manual_seed(seed)
    confidences = predictions.confidences
    controls = matched_confidence_controls(confidences, correct, confidences[idx], generator=generator)
    both = torch.cat([idx, controls])
    shuffled = shuffle_tiles(images[both], tile, generator)
    kept = (_preds(model, shuffled, eval_options) == predicted[both]).double()
    details: dict[str, Any] = {
        "tile": tile,
        "kept_failures": _mean(kept[:k]),
        "kept_controls": _mean(kept[k:]),
    }
    if {"cat", "dog"} <= set(classes):
        pair = torch.tensor([list(classes).index("cat"), list(classes).index("dog")])
        cat_dog = torch.isin(predictions.labels, pair) & torch.isin(predicted, pair) & ~correct
        details["cat_dog_failures"] = [int(cat_dog[failures.indices].sum()), len(failures)]
        details["cat_dog_errors"] = [int(cat_dog.sum()), int((~correct).sum())]
    test = f"prediction kept after shuffling {tile}-px tiles: failures minus controls"
    control = "correct images of matched confidence"
    return _failure_row(4, test, control, [kept[:k] - kept[k:]], population, seed, details)


def shuffled_accuracy(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    tiles: Sequence[int] = (16, 8, 4),
    seed: int = 0,
    eval_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Accuracy on tile-shuffled images at several tile sizes: how far a model gets on texture alone.

    Args:
        model: a classifier. images: uint8 (N, 3, 32, 32), e.g. the stress stage's subset. labels: (N,).
        tiles: tile sides (16, 8, 4 on 32-px images: Zhang & Zhu's 2×2, 4×4 and 8×8 grids).
        seed, eval_options: as for :func:`background_claim`.

    Returns:
        JSON-ready ``{"clean", "chance" (1 / C), "tiles": {tile: accuracy}, "retained": {tile:
        (accuracy - chance) / (clean - chance)}}``: retained 1 is no loss, 0 is chance.
    """
    generator = torch.Generator().manual_seed(seed)
    clean = _mean(_preds(model, images, eval_options) == labels)
    chance = 1 / (int(labels.max()) + 1)
    shuffled = {
        t: _mean(_preds(model, shuffle_tiles(images, t, generator), eval_options) == labels) for t in tiles
    }
    retained = {t: (a - chance) / (clean - chance) if clean > chance else None for t, a in shuffled.items()}
    return {"clean": clean, "chance": chance, "tiles": shuffled, "retained": retained}


def road_check(road: Mapping[str, Any], layer: str, *, seed: int = 0) -> dict[str, Any]:
    """Do Grad-CAM's maps at ``layer`` point at what the model uses? Their ROAD score (notebook 03's
    ``gradcam/road.json``, :func:`analysis.faithfulness.failure_faithfulness`) against a random map's
    on the same failures: the per-image difference of the combined scores, bootstrap over images.

    Returns:
        JSON-ready ``{"layer", "road_minus_random", "ci_low", "ci_high", "faithful"}``; faithful when
        the interval lies above zero.
    """
    rows = road["rows"]
    gradcam, random = (rows[key]["combined_per_image"] for key in (map_key(GRADCAM, layer), RANDOM))
    difference = torch.tensor(gradcam, dtype=torch.float64) - torch.tensor(random, dtype=torch.float64)
    low, high = bootstrap_interval([difference], seed=seed)
    check = {"layer": layer, "road_minus_random": _mean(difference), "ci_low": low, "ci_high": high}
    return {**check, "faithful": bool(low > 0)}


def gradcam_claim(
    measures: Mapping[str, Any],
    road: Mapping[str, Any],
    layer: str,
    *,
    seed: int = 0,
    population: str = ALL_FAILURES,
) -> ClaimResult:
    """Claim 5: do the failures' Grad-CAM maps put more mass on the periphery than matched controls'?

    Args:
        measures: :func:`analysis.gradcam.failure_attention_report`'s output (notebook 03's
            ``gradcam/measures.json``, or ``measures_model_errors.json`` for the model errors alone).
        road, layer: ``gradcam/road.json`` and the layer the maps are from; the maps must pass
            :func:`road_check`, else the row's verdict is withheld (its ``precondition``).
        seed: seeds the bootstraps. population: the row's population label.

    Returns:
        Effect: mean over (failure, control) pairs of the failure's periphery share minus its
        confidence-matched correct control's (pairs with an all-zero map left out), bootstrap over
        pairs. Details: both mean shares, the share a uniform map has, and the ROAD check.
    """
    shares = [
        [math.nan if v is None else v for v in measures[f"{arm}_periphery_shares"]]
        for arm in ("failure", "control")
    ]
    failures, controls = torch.tensor(shares, dtype=torch.float64).reshape(2, -1)
    both = ~failures.isnan() & ~controls.isnan()
    details = {
        "failure_share": _mean(failures[both]),
        "control_share": _mean(controls[both]),
        "uniform_share": 1 - (measures["center"] / 32) ** 2,
        "road": road_check(road, layer, seed=seed),
    }
    test, control = (
        "Grad-CAM periphery share: failures minus controls",
        "correct images of matched confidence",
    )
    row = _failure_row(5, test, control, [failures[both] - controls[both]], population, seed, details)
    check = details["road"]
    if check["faithful"]:
        failed = ""
    elif math.isnan(check["ci_low"]):  # too few images scored to tell either way
        failed = f"too few failures scored by ROAD to check the {layer} maps against random ones"
    else:
        failed = f"the {layer} maps do not beat random maps on ROAD"
    return replace(row, precondition=failed)


def off_center_claim(
    model: nn.Module,
    images: Tensor,
    failures: FailureSet,
    fixed: Tensor,
    *,
    max_shift: int = 4,
    step: int = 1,
    max_failures: int = 500,
    seed: int = 0,
    population: str = ALL_FAILURES,
    eval_options: Mapping[str, Any] | None = None,
) -> ClaimResult:
    """Claim 6: are the failures augmentation fixed the ones a small shift fixes?

    Each baseline failure is shifted by every (dx, dy) of :func:`analysis.interventions.shift_grid`
    (within the augmentation's ±``max_shift`` px, zero fill as its padding). A failure the baseline gets
    right at some shift is *shift-sensitive*: its object sits where the baseline does not recognise it.
    If augmentation corrected failures on off-center objects, a shift-sensitive failure is more likely
    to be among those it fixed than a failure no shift turns correct (the control).

    Args:
        model: the baseline. images: uint8 (N, 3, 32, 32) the test split.
        failures: the baseline's confident failures (the ``max_failures`` most confident are used).
        fixed: int64 indices of the failures the augmented model gets right
            (``FailureComparison.fixed``, in ``reevaluation/comparison.json``).
        max_shift, step: the shift grid. seed, population, eval_options: as for :func:`background_claim`.

    Returns:
        Effect: the risk difference P(fixed | shift-sensitive) - P(fixed | not), bootstrap over the
        failures within each group.
    """
    k = min(len(failures), max_failures)
    idx, true = failures.indices[:k], failures.true_labels[:k]
    sensitive = torch.zeros(k, dtype=torch.bool)
    shifts = shift_grid(max_shift, step)
    for dx, dy in shifts:
        sensitive |= _preds(model, shift_images(images[idx], dx, dy), eval_options) == true
    was_fixed = torch.isin(idx, torch.as_tensor(fixed, dtype=torch.int64)).double()
    a, b = was_fixed[sensitive], was_fixed[~sensitive]
    details = {"fixed_if_sensitive": _mean(a), "fixed_otherwise": _mean(b), "num_shifts": len(shifts)}
    test = f"P(fixed by augmentation | a shift within ±{max_shift} px fixes it) - P(fixed | none does)"
    return _failure_row(6, test, "failures no shift turns correct", [a, b], population, seed, details)


# --------------------------------------------------------------------------------------------------
# A stage's rows
# --------------------------------------------------------------------------------------------------
def failure_populations(failures: FailureSet, human_report: Mapping[str, Any]) -> dict[str, FailureSet]:
    """The failures claims 3-6 are tested on: all of them (:data:`ALL_FAILURES`) and, where human labels
    apply, the model errors alone (:data:`MODEL_ERRORS`, :func:`model_errors_only`)."""
    model_errors = model_errors_only(failures, human_report)
    return {ALL_FAILURES: failures} | ({} if model_errors is None else {MODEL_ERRORS: model_errors})


def gradcam_stage_claims(
    model: nn.Module,
    data: CifarData,
    predictions: Predictions,
    failures: FailureSet,
    human_report: Mapping[str, Any],
    measures: Mapping[str, Mapping[str, Any]],
    road: Mapping[str, Any],
    layer: str,
    *,
    seed: int = 0,
    eval_options: Mapping[str, Any] | None = None,
) -> list[ClaimResult]:
    """Notebook 03's rows: claims 3 (:func:`background_claim`, donors from the training set), 4
    (:func:`texture_claim`) and 5 (:func:`gradcam_claim`) on each of :func:`failure_populations`.

    Args:
        model, predictions: the baseline and its test predictions. data: the run's data.
        failures, human_report: ``failures/failures.json`` and ``failures/human_labels.json``.
        measures: ``{population: its failure_attention_report}`` for each population tested.
        road, layer: ``gradcam/road.json`` and the layer of the maps. seed, eval_options: as for
            :func:`background_claim`.
    """
    options = {"seed": seed, "eval_options": eval_options}
    donors = {
        "donor_images": data.train_images,
        "donor_labels": data.train_labels,
        "donor_masks": data.train_masks,
    }
    rows = []
    for population, chosen in failure_populations(failures, human_report).items():
        on, images = {"population": population}, data.test_images
        rows += [
            background_claim(model, images, chosen, **donors, **on, **options),
            texture_claim(model, images, predictions, chosen, data.classes, **on, **options),
            gradcam_claim(measures[population], road, layer, seed=seed, **on),
        ]
    return rows


def reevaluation_claims(
    baseline: Predictions,
    augmented: Predictions,
    train_accuracies: tuple[float, float],
    num_train_images: int,
    baseline_model: nn.Module,
    test_images: Tensor,
    failures: FailureSet,
    fixed: Tensor,
    human_report: Mapping[str, Any],
    *,
    seed: int = 0,
    eval_options: Mapping[str, Any] | None = None,
) -> list[ClaimResult]:
    """Notebook 05's rows: claims 1 and 2 (:func:`accuracy_claims`; ``train_accuracies`` of the baseline
    and the augmented model) and claim 6 (:func:`off_center_claim` of the baseline's ``failures`` and
    the ones augmentation ``fixed``) on each of :func:`failure_populations`."""
    rows = accuracy_claims(baseline, augmented, *train_accuracies, num_train_images, seed=seed)
    for population, chosen in failure_populations(failures, human_report).items():
        options = {"population": population, "seed": seed, "eval_options": eval_options}
        rows.append(off_center_claim(baseline_model, test_images, chosen, fixed, **options))
    return rows


def save_claims(path: str | os.PathLike[str], rows: Sequence[ClaimResult]) -> None:
    """Write a stage's rows to ``path`` (``<stage>/claims.json``) atomically, for :func:`read_ledger`."""
    save_json(path, [row.to_dict() for row in rows])


# --------------------------------------------------------------------------------------------------
# Replicate runs
# --------------------------------------------------------------------------------------------------
def combine_seeds(per_seed: Sequence[Sequence[ClaimResult]]) -> list[ClaimResult]:
    """A replicate run's ledger: each row's effect averaged over the seeds, with a t interval.

    Args:
        per_seed: one ledger (list of rows) per seed; rows are matched by (claim, test, population).

    Returns:
        One row per row of the first seed's ledger: the mean effect, its t interval over the seeds
        whose row measured one (:data:`T_OVER_SEEDS`; ``n`` counts them), the verdict by the same rule;
        details list each seed's effect and verdict. A seed's effect counts only with its own interval
        defined: an effect over fewer than :data:`MIN_BOOTSTRAP_SAMPLE` failures is not a measurement,
        and seeds that agree on one (no failure of a handful rescued) would give a zero-width interval.
    """
    rows = []
    for first in per_seed[0]:
        key = (first.claim, first.test, first.population)
        same = [r for ledger in per_seed for r in ledger if (r.claim, r.test, r.population) == key]
        measured = [math.nan if math.isnan(r.ci_low) else r.effect for r in same]
        effect, low, high = t_interval(measured)
        details = {"per_seed_effect": [r.effect for r in same], "per_seed_verdict": [r.verdict for r in same]}
        n = sum(not math.isnan(e) for e in measured)
        failed = [r.precondition for r in same if r.precondition]
        precondition = f"{failed[0]} (in {len(failed)} of {len(same)} seeds)" if failed else ""
        combined = {"effect": effect, "ci_low": low, "ci_high": high, "method": T_OVER_SEEDS, "n": n}
        rows.append(replace(first, **combined, details=details, precondition=precondition))
    return rows


# --------------------------------------------------------------------------------------------------
# The positive control, and the ledger of a run
# --------------------------------------------------------------------------------------------------
def positive_control_rows(
    result: Mapping[str, Any],
    control_dir: str | os.PathLike[str],
    *,
    max_failures: int = 200,
    eval_options: Mapping[str, Any] | None = None,
) -> list[ClaimResult]:
    """Claim 3's test where the answer is known: on the background positive control, whose tied
    model learned a planted background cue and whose untied model (the control) did not.

    The datasets are generated again from ``result``'s seed and sizes; donors come from the tied
    training set, only those whose object stays out of the ring (pure background), and the failures
    of both models on the shared untied test split are taken at the control's threshold.

    Args:
        result: :func:`analysis.sanity.background_positive_control`'s output (``positive_control.json``).
        control_dir: its ``out_dir``, holding ``tied/checkpoint.pt`` and ``untied/checkpoint.pt``.
        max_failures: failures tested per model. eval_options: as for :func:`background_claim`.

    Returns:
        Two rows, :data:`PLANTED_CUE` (should be supported) and :data:`NO_CUE` (should not).
    """
    seed, sizes = int(result["seed"]), (result["train_per_class"], result["test_per_class"])
    tied, untied = (
        make_synthetic_cifar(*sizes, seed=seed, background_class_correlation=p, decoy_colour_rate=0.0)
        for p in (result["correlation"], 0.0)
    )
    images, labels, options = untied.test_images, untied.test_labels, dict(eval_options or {})
    rows = []
    for name, population in (("tied", PLANTED_CUE), ("untied", NO_CUE)):
        model = load_trained_model(Path(control_dir) / name / "checkpoint.pt", device=options.get("device"))
        probs = predict(model, images, labels, **options).probs
        failures = find_high_confidence_failures(probs, labels, result["threshold"])
        donors = tied.train_images, tied.train_labels
        rows.append(
            background_claim(
                model,
                images,
                failures,
                *donors,
                donor_masks=tied.train_masks,
                max_failures=max_failures,
                seed=seed,
                population=population,
                eval_options=options,
            )
        )
    return rows


def read_ledger(run_dir: str | os.PathLike[str], stages: Sequence[str] = LEDGER_STAGES) -> list[ClaimResult]:
    """The rows ``stages`` saved in ``<stage>/claims.json`` (a stage not run yet adds none), by claim,
    the positive control's rows last."""
    run = RunDir(run_dir)
    rows = []
    for path in (run.stage_dir(stage, create=False) / CLAIMS_FILE for stage in stages):
        saved = load_json(path) if path.exists() else []
        if not isinstance(saved, list):  # {} is no ledger, not an empty one
            raise DamagedArtifactError(f"{path} is damaged (not a list of claims): {rerun_hint(path)}")
        rows += [ClaimResult.from_dict(row) for row in saved]
    return sorted(rows, key=lambda r: (r.population in (PLANTED_CUE, NO_CUE), r.claim))
