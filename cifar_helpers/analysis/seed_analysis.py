"""What seed replicates say: error bars on accuracy, the reseed noise floor, and failure stability.

These functions take the results of a replicate run (:mod:`cifar_helpers.workflow.replicates`) and
return frozen dataclasses; each one's ``to_dict`` is what stage 07 saves and its ``from_dict`` reads it
back (the report, the replicate run's summary).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from torch import Tensor

from cifar_helpers.analysis.claims.rules import CONFIDENCE_LEVEL, MeanInterval, t_interval
from cifar_helpers.analysis.failures import FailureSet, compare_failures, find_high_confidence_failures
from cifar_helpers.core.evaluation import Predictions
from cifar_helpers.rundir.artifacts import RunDir, load_json
from cifar_helpers.rundir.config import RunConfig

MODELS = ("baseline", "augmented")
# A failure is "consistent" when it is a high-confidence failure in at least this share of the seeds
# (and in two seeds at least).
CONSISTENT_SHARE = 0.5


@dataclass
class SeedResults:
    """What one seed's run directory holds that the replicate analysis needs: ``probs[model]`` float32
    (N, C) on the test set, ``labels`` int64 (N,), ``test_set`` what decides which test images the run
    used (data fingerprint, subset size and the seed that drew it), ``train_accuracy[model]`` a fraction."""

    seed: int
    run_dir: Path
    probs: dict[str, Tensor]
    labels: Tensor
    test_set: dict[str, Any]
    test_accuracy: dict[str, float]
    train_accuracy: dict[str, float | None]
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
    probs, test_accuracy, train_accuracy = {}, {}, {}
    labels = None
    for model in MODELS:
        predictions_path, metrics_path = run.require(model, "predictions.pt", "metrics.json")
        predictions = Predictions.load(predictions_path)
        metrics = load_json(metrics_path)
        probs[model] = predictions.probs
        labels = predictions.labels
        test_accuracy[model] = float(metrics["test_accuracy"])
        train_accuracy[model] = metrics.get("train_accuracy")
    threshold = float(load_json(run.require("failures", "summary.json")[0])["threshold"])
    fingerprint = load_json(run.require("setup", "data_summary.json")[0]).get("fingerprint")
    subset = config.test_per_class
    data_seed = config.data_seed if config.data_seed is not None else seed
    test_set = {
        "fingerprint": fingerprint,
        "test_per_class": subset,
        "drawn_with": data_seed if subset else None,
    }
    assert labels is not None
    return SeedResults(seed, run.root, probs, labels, test_set, test_accuracy, train_accuracy, threshold)


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


def _fields_of(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` of dataclass ``cls``'s fields, read strictly: a missing key raises KeyError naming it."""
    return {f.name: values[f.name] for f in fields(cls)}


@dataclass(frozen=True)
class PairedDifference:
    """Per-seed ``augmented - baseline`` (``differences``, one per seed): their mean and t interval, and
    a paired t-test (``t`` and its two-sided ``p_value``, None with one seed or when every seed gives the
    same difference)."""

    interval: MeanInterval
    differences: list[float]
    t: float | None
    p_value: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the interval's keys, then ``differences``, ``t`` and ``p_value``."""
        return {
            **self.interval.to_dict(),
            "differences": list(self.differences),
            "t": self.t,
            "p_value": self.p_value,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PairedDifference:
        """Read :meth:`to_dict`'s output back; a missing key raises KeyError naming it."""
        return cls(
            MeanInterval.from_dict(values), list(values["differences"]), values["t"], values["p_value"]
        )


def paired_difference(
    baseline: Sequence[float], augmented: Sequence[float], confidence: float = CONFIDENCE_LEVEL
) -> PairedDifference:
    """Per-seed ``augmented - baseline``: its mean, interval and a paired t-test (two-sided p-value).

    The pairing removes what a seed does to both models alike.
    """
    if len(baseline) != len(augmented):
        raise ValueError(
            f"baseline ({len(baseline)}) and augmented ({len(augmented)}) need one value per seed"
        )
    differences = [float(a) - float(b) for b, a in zip(baseline, augmented, strict=True)]
    interval = t_interval(differences, confidence)
    t = p_value = None
    if len(differences) >= 2 and interval.sd:
        test = stats.ttest_rel(augmented, baseline)
        t, p_value = float(test.statistic), float(test.pvalue)
    return PairedDifference(interval, differences, t, p_value)


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation and interval of a quantity over seeds, as the replicate summary
    keeps them (sd, low and high None with one seed)."""

    mean: float | None
    sd: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, interval: MeanInterval) -> Spread:
        """The spread that ``interval`` gives."""
        return cls(interval.mean, interval.sd, interval.low, interval.high)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"mean", "sd", "low", "high"}``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Spread:
        """Read :meth:`to_dict`'s output (or a larger dict holding its keys) back."""
        return cls(**_fields_of(cls, values))


@dataclass(frozen=True)
class AccuracySummary:
    """Both models' test accuracy over ``seeds`` and their paired difference, as spreads, with the paired
    t-test's ``t`` and ``p_value`` (what :func:`views.tables.seed_accuracy_table` shows)."""

    seeds: list[int]
    baseline: Spread
    augmented: Spread
    difference: Spread
    t: float | None
    p_value: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``t`` and ``p_value`` sit in ``difference``, beside its spread."""
        difference = {**self.difference.to_dict(), "t": self.t, "p_value": self.p_value}
        spreads = {"baseline": self.baseline.to_dict(), "augmented": self.augmented.to_dict()}
        return {"seeds": list(self.seeds), **spreads, "difference": difference}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AccuracySummary:
        """Read :meth:`to_dict`'s output back; a missing key raises KeyError naming it."""
        difference = values["difference"]
        return cls(
            list(values["seeds"]),
            Spread.from_dict(values["baseline"]),
            Spread.from_dict(values["augmented"]),
            Spread.from_dict(difference),
            difference["t"],
            difference["p_value"],
        )


@dataclass(frozen=True)
class AccuracyOverSeeds:
    """Both models' test accuracy in each of ``seeds`` (``per_seed[model]``, fractions, seeds' order),
    its mean and t interval per model, and the paired difference (``replicates/accuracy.json``)."""

    seeds: list[int]
    per_seed: dict[str, list[float]]
    baseline: MeanInterval
    augmented: MeanInterval
    difference: PairedDifference

    def summary(self) -> AccuracySummary:
        """The spreads and the paired test, without the per-seed values."""
        spreads = (Spread.of(self.baseline), Spread.of(self.augmented), Spread.of(self.difference.interval))
        return AccuracySummary(list(self.seeds), *spreads, self.difference.t, self.difference.p_value)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``accuracy.json`` holds it."""
        return {
            "seeds": list(self.seeds),
            "per_seed": {m: list(v) for m, v in self.per_seed.items()},
            "baseline": self.baseline.to_dict(),
            "augmented": self.augmented.to_dict(),
            "difference": self.difference.to_dict(),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> AccuracyOverSeeds:
        """Read :meth:`to_dict`'s output back; a missing key raises KeyError naming it."""
        return cls(
            list(values["seeds"]),
            {m: list(values["per_seed"][m]) for m in MODELS},
            MeanInterval.from_dict(values["baseline"]),
            MeanInterval.from_dict(values["augmented"]),
            PairedDifference.from_dict(values["difference"]),
        )


def accuracy_over_seeds(
    results: Sequence[SeedResults], confidence: float = CONFIDENCE_LEVEL
) -> AccuracyOverSeeds:
    """Both models' test accuracy over seeds, and their paired difference."""
    per_seed = {m: [r.test_accuracy[m] for r in results] for m in MODELS}
    return AccuracyOverSeeds(
        seeds=[r.seed for r in results],
        per_seed=per_seed,
        baseline=t_interval(per_seed["baseline"], confidence),
        augmented=t_interval(per_seed["augmented"], confidence),
        difference=paired_difference(per_seed["baseline"], per_seed["augmented"], confidence),
    )


COUNT_KEYS = ("fixed", "kept_same", "kept_different", "new")


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
    :meth:`analysis.failures.FailureComparison.counts` (:data:`COUNT_KEYS` among them)."""

    source: str
    target: str
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"from": source, "to": target, **counts}``."""
        return {"from": self.source, "to": self.target, **self.counts}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FloorRow:
        """Read :meth:`to_dict`'s output back; a missing key (the two ends, or one of :data:`COUNT_KEYS`)
        raises KeyError naming it."""
        counts = {k: v for k, v in values.items() if k not in ("from", "to")}
        for key in COUNT_KEYS:
            if key not in counts:
                raise KeyError(key)
        return cls(values["from"], values["to"], counts)


@dataclass(frozen=True)
class NoiseFloor:
    """fixed / kept / new between two baseline seeds (``reseed``), beside baseline -> augmented of the same
    seed (``augmentation``): one row per comparison, the mean of each of :data:`COUNT_KEYS` per kind
    (``mean[kind]``; no ``"reseed"`` entry with one seed) and augmentation's ``excess`` over the reseed
    (empty with one seed). ``replicates/noise_floor.json``."""

    reseed: list[FloorRow]
    augmentation: list[FloorRow]
    mean: dict[str, dict[str, float]]
    excess: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``noise_floor.json`` holds it."""
        return {
            "reseed": [row.to_dict() for row in self.reseed],
            "augmentation": [row.to_dict() for row in self.augmentation],
            "mean": {kind: dict(means) for kind, means in self.mean.items()},
            "excess": dict(self.excess),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NoiseFloor:
        """Read :meth:`to_dict`'s output back; a missing key raises KeyError naming it."""
        return cls(
            [FloorRow.from_dict(row) for row in values["reseed"]],
            [FloorRow.from_dict(row) for row in values["augmentation"]],
            {kind: dict(means) for kind, means in values["mean"].items()},
            dict(values["excess"]),
        )


def noise_floor(results: Sequence[SeedResults]) -> NoiseFloor:
    """fixed / kept / new between two baseline seeds, beside baseline -> augmented of the same seed:
    counts per comparison, their means and augmentation's excess over the reseed's."""
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
    """fixed / kept / new counts from ``first``'s baseline to ``second``'s ``model``, in a labelled row."""
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


def consistent_min_seeds(num_seeds: int, share: float = CONSISTENT_SHARE) -> int:
    """Seeds an image must fail in to count as a consistent failure: ``share`` of them, and at least
    two (failing in one seed is what "not consistent" means, even when there are only two seeds)."""
    return max(2, math.ceil(share * num_seeds))


def consistent_indices(counts: Tensor, num_seeds: int, share: float = CONSISTENT_SHARE) -> Tensor:
    """int64 indices of the images failing in at least :func:`consistent_min_seeds` of ``num_seeds``
    seeds, most often failing first, then by index."""
    chosen = torch.nonzero(counts >= consistent_min_seeds(num_seeds, share)).flatten()
    order = sorted(chosen.tolist(), key=lambda i: (-int(counts[i]), i))
    return torch.tensor(order, dtype=torch.int64)


@dataclass(frozen=True)
class FailureStability:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``stability.json`` holds it (JSON writes the keys of
        ``images_failing_in_k_seeds`` as strings)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FailureStability:
        """Read :meth:`to_dict`'s output, or its JSON, back; a missing key raises KeyError naming it."""
        read = _fields_of(cls, values)
        read["images_failing_in_k_seeds"] = {int(k): n for k, n in read["images_failing_in_k_seeds"].items()}
        return cls(**read)


def failure_stability(results: Sequence[SeedResults], model: str = "baseline") -> FailureStability:
    """Per-image failure counts of ``model`` over seeds, their histogram, the Jaccard matrix and the
    consistent failures."""
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


def category_mix(
    categories: Sequence[str], consistent: Sequence[int], one_seed: Sequence[int]
) -> dict[str, dict[str, int]]:
    """How the consistent failures and the one-seed failures split over per-image categories.

    ``categories[i]`` is any label of test image ``i`` (e.g. its human-label category: verified label
    error, ambiguous, model error); returns ``{"consistent": {category: n}, "one_seed": {category: n}}``.
    """

    def tally(indices: Sequence[int]) -> dict[str, int]:
        mix: dict[str, int] = {}
        for i in indices:
            mix[categories[i]] = mix.get(categories[i], 0) + 1
        return dict(sorted(mix.items()))

    return {"consistent": tally(consistent), "one_seed": tally(one_seed)}


@dataclass(frozen=True)
class ReplicateSummary:
    """The headline numbers of a replicate analysis (``replicates/summary.json``, the replicate run's
    ``summary.json``): accuracy over seeds, the noise floor's means (``noise_floor``, as
    :attr:`NoiseFloor.mean`) and augmentation's excess over the reseed, and how the failure sets overlap."""

    accuracy: AccuracySummary
    noise_floor: dict[str, dict[str, float]]
    excess_over_reseed: dict[str, float]
    mean_jaccard: float | None
    consistent_failures: int
    ever_failing: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: the accuracy summary's keys at the top level, then the rest."""
        return {
            **self.accuracy.to_dict(),
            "noise_floor": {kind: dict(means) for kind, means in self.noise_floor.items()},
            "excess_over_reseed": dict(self.excess_over_reseed),
            "mean_jaccard": self.mean_jaccard,
            "consistent_failures": self.consistent_failures,
            "ever_failing": self.ever_failing,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ReplicateSummary:
        """Read :meth:`to_dict`'s output back; a missing key raises KeyError naming it."""
        return cls(
            AccuracySummary.from_dict(values),
            {kind: dict(means) for kind, means in values["noise_floor"].items()},
            dict(values["excess_over_reseed"]),
            values["mean_jaccard"],
            values["consistent_failures"],
            values["ever_failing"],
        )


def replicate_summary(
    accuracy: AccuracyOverSeeds, floor: NoiseFloor, stability: FailureStability
) -> ReplicateSummary:
    """The headline numbers of a replicate analysis (``replicates/summary.json``, the run summary)."""
    return ReplicateSummary(
        accuracy=accuracy.summary(),
        noise_floor=floor.mean,
        excess_over_reseed=floor.excess,
        mean_jaccard=stability.mean_jaccard,
        consistent_failures=len(stability.consistent),
        ever_failing=stability.ever_failing,
    )
