"""What seed replicates say: error bars on accuracy, the reseed noise floor, and failure stability.

Each function takes the seeds' :class:`SeedResults` and returns a record that stage 07 saves.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from torch import Tensor

from cifar_helpers.analysis.claims.rules import MeanInterval, t_interval
from cifar_helpers.analysis.failures import (
    COMPARISON_COUNTS,
    COUNT_KEYS,
    FailureSet,
    FailureSummary,
    compare_failures,
    find_high_confidence_failures,
)
from cifar_helpers.analysis.human_labels import HumanLabelResult
from cifar_helpers.core.evaluation import Predictions
from cifar_helpers.rundir.artifacts import RunDir, load_json
from cifar_helpers.rundir.config import RunConfig
from cifar_helpers.rundir.records import INLINE, Record

MODELS = ("baseline", "augmented")
# A failure is "consistent" when it is a high-confidence failure in at least this share of the seeds
# (and in two seeds at least).
CONSISTENT_SHARE = 0.5


@dataclass
class SeedResults:
    """What one seed's run directory holds that the replicate analysis needs: ``probs[model]`` float32
    (N, C) on the test set, ``labels`` int64 (N,), ``test_set`` what decides which test images the run
    used (data fingerprint, subset size and the seed that drew it)."""

    seed: int
    run_dir: Path
    probs: dict[str, Tensor]
    labels: Tensor
    test_set: dict[str, Any]
    test_accuracy: dict[str, float]
    threshold: float


def load_seed_results(run_dir: str | Path, seed: int) -> SeedResults:
    """Read one seed's predictions, metrics and failure threshold from its run directory.

    Raises :class:`rundir.artifacts.MissingStageError` naming the notebook to run when a
    stage is missing, and ValueError when the directory was set up with another seed.
    """
    run = RunDir(run_dir)
    config = RunConfig.load(run.require("setup", "config.json")[0])
    if config.seed != seed:
        raise ValueError(f"{run.root} holds a run with seed {config.seed!r}, not {seed}")
    probs, test_accuracy = {}, {}
    for model in MODELS:
        predictions_path, metrics_path = run.require(model, "predictions.pt", "metrics.json")
        predictions = Predictions.load(predictions_path)
        probs[model] = predictions.probs
        test_accuracy[model] = float(load_json(metrics_path)["test_accuracy"])
    threshold = FailureSummary.from_dict(load_json(run.require("failures", "summary.json")[0])).threshold
    fingerprint = load_json(run.require("setup", "data_summary.json")[0])["fingerprint"]
    subset = config.test_per_class
    data_seed = config.data_seed if config.data_seed is not None else seed
    test_set = {
        "fingerprint": fingerprint,
        "test_per_class": subset,
        "drawn_with": data_seed if subset else None,
    }
    # Every model's predictions hold the same test labels.
    return SeedResults(seed, run.root, probs, predictions.labels, test_set, test_accuracy, threshold)


def check_same_test_set(results: Sequence[SeedResults]) -> None:
    """Refuse seeds whose test images differ: per-image comparisons need the same images in each seed."""
    first = results[0]
    for other in results[1:]:
        if other.test_set != first.test_set or not torch.equal(first.labels, other.labels):
            raise ValueError(
                f"seed {other.seed} was tested on other images than seed {first.seed} "
                f"({other.run_dir} vs {first.run_dir}); replicate runs must share the data: "
                "run them with the same -p data_seed (run_all.py --seeds does this)"
            )
        if other.threshold != first.threshold:
            raise ValueError(
                f"seed {other.seed} used confidence threshold {other.threshold}, seed {first.seed} "
                f"{first.threshold}: rerun 02_failure_detection with the same threshold"
            )


@dataclass(frozen=True)
class PairedDifference(Record):
    """Per-seed ``augmented - baseline`` (``differences``, one per seed): their mean and t interval (saved
    as keys of its own), and a paired t-test (``t`` and its two-sided ``p_value``, None with one seed or
    when every seed gives the same difference)."""

    interval: MeanInterval = field(metadata=INLINE)
    differences: list[float]
    t: float | None
    p_value: float | None


def paired_difference(baseline: Sequence[float], augmented: Sequence[float]) -> PairedDifference:
    """Per-seed ``augmented - baseline`` (:class:`PairedDifference`): the pairing removes what a seed
    does to both models alike."""
    if len(baseline) != len(augmented):
        raise ValueError(
            f"baseline ({len(baseline)}) and augmented ({len(augmented)}) need one value per seed"
        )
    differences = [float(a) - float(b) for b, a in zip(baseline, augmented, strict=True)]
    interval = t_interval(differences)
    t = p_value = None
    if len(differences) >= 2 and interval.sd:
        test = stats.ttest_rel(augmented, baseline)
        t, p_value = float(test.statistic), float(test.pvalue)
    return PairedDifference(interval, differences, t, p_value)


@dataclass(frozen=True)
class Spread(Record):
    """Mean, sample standard deviation and interval of a quantity over seeds, as the replicate summary
    keeps them (sd, low and high None with one seed)."""

    mean: float | None
    sd: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class PairedSpread(Spread):
    """The spread of the paired difference, with the paired t-test's ``t`` and ``p_value``."""

    t: float | None
    p_value: float | None


@dataclass(frozen=True)
class AccuracySummary(Record):
    """Both models' test accuracy over ``seeds`` and their paired difference, as spreads (what
    :func:`views.tables.seed_accuracy_table` shows)."""

    seeds: list[int]
    baseline: Spread
    augmented: Spread
    difference: PairedSpread


@dataclass(frozen=True)
class AccuracyOverSeeds(Record):
    """Both models' test accuracy in each of ``seeds`` (``per_seed[model]``, fractions, seeds' order),
    its mean and t interval per model, and the paired difference (``replicates/accuracy.json``)."""

    seeds: list[int]
    per_seed: dict[str, list[float]]
    baseline: MeanInterval
    augmented: MeanInterval
    difference: PairedDifference

    def summary(self) -> AccuracySummary:
        """The spreads and the paired test, without the per-seed values (read from the saved form)."""
        return AccuracySummary(
            list(self.seeds),
            Spread.from_dict(self.baseline.to_dict()),
            Spread.from_dict(self.augmented.to_dict()),
            PairedSpread.from_dict(self.difference.to_dict()),
        )


def accuracy_over_seeds(results: Sequence[SeedResults]) -> AccuracyOverSeeds:
    """Both models' test accuracy over seeds, and their paired difference."""
    per_seed = {m: [r.test_accuracy[m] for r in results] for m in MODELS}
    return AccuracyOverSeeds(
        seeds=[r.seed for r in results],
        per_seed=per_seed,
        baseline=t_interval(per_seed["baseline"]),
        augmented=t_interval(per_seed["augmented"]),
        difference=paired_difference(per_seed["baseline"], per_seed["augmented"]),
    )


def reseed_pairs(seeds: Sequence[int]) -> list[tuple[int, int]]:
    """Pairs of seeds compared baseline -> baseline: each seed with the next (the last with the first
    when there are three or more), so every seed is used once in each role."""
    seeds = list(seeds)
    if len(seeds) < 2:
        return []
    if len(seeds) == 2:
        return [(seeds[0], seeds[1])]
    return [(seeds[i], seeds[(i + 1) % len(seeds)]) for i in range(len(seeds))]


@dataclass(frozen=True)
class FloorRow:
    """One comparison of the noise floor: ``source``'s baseline (``"baseline seed 42"``) against
    ``target`` (``"augmented seed 42"``, ``"baseline seed 43"``), with the sizes of the groups of
    :meth:`analysis.failures.FailureComparison.counts`)."""

    source: str
    target: str
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"from": source, "to": target, **counts}``."""
        return {"from": self.source, "to": self.target, **self.counts}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FloorRow:
        """Read :meth:`to_dict`'s output back; a missing key raises KeyError naming it."""
        return cls(values["from"], values["to"], {key: values[key] for key in COMPARISON_COUNTS})


@dataclass(frozen=True)
class NoiseFloor(Record):
    """fixed / kept / new between two baseline seeds (``reseed``), beside baseline -> augmented of the same
    seed (``augmentation``): one row per comparison, the mean of each of :data:`COUNT_KEYS` per kind
    (``mean[kind]``; no ``"reseed"`` entry with one seed) and augmentation's ``excess`` over the reseed
    (empty with one seed). ``replicates/noise_floor.json``."""

    reseed: list[FloorRow]
    augmentation: list[FloorRow]
    mean: dict[str, dict[str, float]]
    excess: dict[str, float]


def noise_floor(results: Sequence[SeedResults]) -> NoiseFloor:
    """The reseed noise floor beside baseline -> augmented of the same seed (:class:`NoiseFloor`)."""
    by_seed = {r.seed: r for r in results}
    rows = {
        "reseed": [_counts(by_seed[a], "baseline", by_seed[b]) for a, b in reseed_pairs(list(by_seed))],
        "augmentation": [_counts(r, "augmented", r) for r in results],
    }
    mean = {
        kind: {key: sum(row.counts[key] for row in kind_rows) / len(kind_rows) for key in COUNT_KEYS}
        for kind, kind_rows in rows.items()
        if kind_rows
    }
    excess = (
        {key: mean["augmentation"][key] - mean["reseed"][key] for key in COUNT_KEYS}
        if "reseed" in mean
        else {}
    )
    return NoiseFloor(rows["reseed"], rows["augmentation"], mean, excess)


def _counts(first: SeedResults, model: str, second: SeedResults) -> FloorRow:
    comparison = compare_failures(first.probs["baseline"], second.probs[model], first.labels, first.threshold)
    return FloorRow(f"baseline seed {first.seed}", f"{model} seed {second.seed}", comparison.counts())


def failure_counts(failures: Sequence[FailureSet], num_images: int) -> Tensor:
    """int64 (N,): in how many of the failure sets each test image appears."""
    counts = torch.zeros(num_images, dtype=torch.int64)
    for f in failures:
        counts[f.indices] += 1
    return counts


def jaccard_matrix(failures: Sequence[FailureSet]) -> Tensor:
    """float64 (S, S): ``|A ∩ B| / |A ∪ B|`` of each pair of failure sets (1 on the diagonal, and
    for two empty sets)."""
    sets = [set(f.indices.tolist()) for f in failures]
    n = len(sets)
    matrix = torch.ones((n, n), dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            union = len(sets[i] | sets[j])
            value = len(sets[i] & sets[j]) / union if union else 1.0
            matrix[i, j] = matrix[j, i] = value
    return matrix


def consistent_min_seeds(num_seeds: int) -> int:
    """Seeds an image must fail in to count as a consistent failure: :data:`CONSISTENT_SHARE` of them,
    and at least two (failing in one seed is what "not consistent" means, even with only two seeds)."""
    return max(2, math.ceil(CONSISTENT_SHARE * num_seeds))


def consistent_indices(counts: Tensor, num_seeds: int) -> Tensor:
    """int64 indices of the images failing in at least :func:`consistent_min_seeds` of ``num_seeds``
    seeds, most often failing first, then by index."""
    chosen = torch.nonzero(counts >= consistent_min_seeds(num_seeds)).flatten()
    order = sorted(chosen.tolist(), key=lambda i: (-int(counts[i]), i))
    return torch.tensor(order, dtype=torch.int64)


@dataclass(frozen=True)
class FailureStability(Record):
    """How ``model``'s confident failures hold over ``seeds`` (``replicates/stability.json``).

    ``counts[i]``: in how many seeds test image ``i`` is a confident failure (N values);
    ``images_failing_in_k_seeds[k]``: how many images fail in exactly k seeds (k = 1..S);
    ``jaccard``: the S x S overlap of the seeds' failure sets, ``mean_jaccard`` its mean off the
    diagonal (None with one seed); ``consistent``: the images failing in at least
    ``consistent_min_seeds`` seeds (``consistent_share`` of them), most often failing first, with their
    ``consistent_counts``; ``one_seed``: the images failing in one seed only.
    """

    model: str
    seeds: list[int]
    failures_per_seed: list[int]
    images_failing_in_k_seeds: dict[int, int]
    ever_failing: int
    jaccard: list[list[float]]
    mean_jaccard: float | None
    consistent_share: float
    consistent_min_seeds: int
    consistent: list[int]
    consistent_counts: list[int]
    one_seed: list[int]
    counts: list[int]


def failure_stability(results: Sequence[SeedResults], model: str = "baseline") -> FailureStability:
    """How ``model``'s confident failures hold over the seeds (:class:`FailureStability`)."""
    sets = [find_high_confidence_failures(r.probs[model], r.labels, r.threshold) for r in results]
    num_seeds = len(results)
    counts = failure_counts(sets, len(results[0].labels))
    matrix = jaccard_matrix(sets)
    off_diagonal = [float(matrix[i, j]) for i in range(num_seeds) for j in range(num_seeds) if i < j]
    consistent = consistent_indices(counts, num_seeds)
    return FailureStability(
        model=model,
        seeds=[r.seed for r in results],
        failures_per_seed=[len(s) for s in sets],
        images_failing_in_k_seeds={k: int((counts == k).sum()) for k in range(1, num_seeds + 1)},
        ever_failing=int((counts > 0).sum()),
        jaccard=matrix.tolist(),
        mean_jaccard=sum(off_diagonal) / len(off_diagonal) if off_diagonal else None,
        consistent_share=CONSISTENT_SHARE,
        consistent_min_seeds=consistent_min_seeds(num_seeds),
        consistent=consistent.tolist(),
        consistent_counts=counts[consistent].tolist(),
        one_seed=torch.nonzero(counts == 1).flatten().tolist(),
        counts=counts.tolist(),
    )


@dataclass(frozen=True)
class CategoryMix(HumanLabelResult):
    """How the consistent and the one-seed failures split over the human-label categories found with
    ``ambiguity_threshold`` (``replicates/category_mix.json``): ``{category: n}``, sorted by category,
    listing only the categories present."""

    ambiguity_threshold: float
    consistent: dict[str, int]
    one_seed: dict[str, int]


def category_mix(
    categories: Sequence[str], consistent: Sequence[int], one_seed: Sequence[int], ambiguity_threshold: float
) -> CategoryMix:
    """The :class:`CategoryMix` of the consistent and the one-seed failures: ``categories[i]`` is test
    image ``i``'s (:func:`analysis.human_labels.failure_categories` with ``ambiguity_threshold``)."""

    def tally(indices: Sequence[int]) -> dict[str, int]:
        return dict(sorted(Counter(categories[i] for i in indices).items()))

    return CategoryMix(ambiguity_threshold, tally(consistent), tally(one_seed))


@dataclass(frozen=True)
class ReplicateSummary(Record):
    """The headline numbers of a replicate analysis (``replicates/summary.json``, the replicate run's
    ``summary.json``): accuracy over seeds (its keys at the top level), the noise floor's means
    (:attr:`NoiseFloor.mean`) and augmentation's excess over the reseed, how the failure sets overlap."""

    accuracy: AccuracySummary = field(metadata=INLINE)
    noise_floor: dict[str, dict[str, float]]
    excess_over_reseed: dict[str, float]
    mean_jaccard: float | None
    consistent_failures: int
    ever_failing: int


def replicate_summary(
    accuracy: AccuracyOverSeeds, floor: NoiseFloor, stability: FailureStability
) -> ReplicateSummary:
    """The :class:`ReplicateSummary` of stage 07's results."""
    return ReplicateSummary(
        accuracy=accuracy.summary(),
        noise_floor=floor.mean,
        excess_over_reseed=floor.excess,
        mean_jaccard=stability.mean_jaccard,
        consistent_failures=len(stability.consistent),
        ever_failing=stability.ever_failing,
    )
