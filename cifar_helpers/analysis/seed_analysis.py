"""What seed replicates say: error bars on accuracy, the reseed noise floor, and failure stability.

These functions take the results of a replicate run (:mod:`cifar_helpers.workflow.replicates`) and
return JSON-ready dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from scipy import stats
from torch import Tensor

from cifar_helpers.analysis.failures import FailureSet, compare_failures, find_high_confidence_failures
from cifar_helpers.core.evaluation import Predictions
from cifar_helpers.rundir.artifacts import RunDir, load_json

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
    config = load_json(run.require("setup", "config.json")[0])
    if config.get("seed") != seed:
        raise ValueError(f"{run.root} holds a run with seed {config.get('seed')!r}, not {seed}")
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
    subset = config.get("test_per_class")
    data_seed = config.get("data_seed") if config.get("data_seed") is not None else seed
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


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and a Student-t ``confidence`` interval of ``values``.

    With one value the spread and interval are None (a single seed says nothing about seed noise).
    """
    x = torch.tensor([float(v) for v in values], dtype=torch.float64)
    n = len(x)
    if n == 0:
        raise ValueError("values must hold at least one number")
    mean = float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "sd": None, "low": None, "high": None, "confidence": confidence}
    sd = float(x.std(unbiased=True))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "confidence": confidence}


def paired_difference(
    baseline: Sequence[float], augmented: Sequence[float], confidence: float = 0.95
) -> dict[str, Any]:
    """Per-seed ``augmented - baseline``: its mean, interval and a paired t-test (two-sided p-value).

    The pairing removes what a seed does to both models alike.
    """
    if len(baseline) != len(augmented):
        raise ValueError(
            f"baseline ({len(baseline)}) and augmented ({len(augmented)}) need one value per seed"
        )
    differences = [float(a) - float(b) for b, a in zip(baseline, augmented, strict=True)]
    result = mean_interval(differences, confidence)
    result["differences"] = differences
    result["t"] = result["p_value"] = None
    if len(differences) >= 2 and result["sd"]:
        test = stats.ttest_rel(augmented, baseline)
        result["t"], result["p_value"] = float(test.statistic), float(test.pvalue)
    return result


def accuracy_over_seeds(results: Sequence[SeedResults], confidence: float = 0.95) -> dict[str, Any]:
    """Both models' test accuracy over seeds, and their paired difference."""
    per_seed = {m: [r.test_accuracy[m] for r in results] for m in MODELS}
    return {
        "seeds": [r.seed for r in results],
        "per_seed": per_seed,
        **{m: mean_interval(per_seed[m], confidence) for m in MODELS},
        "difference": paired_difference(per_seed["baseline"], per_seed["augmented"], confidence),
    }


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


def noise_floor(results: Sequence[SeedResults]) -> dict[str, Any]:
    """fixed / kept / new between two baseline seeds, beside baseline -> augmented of the same seed.

    Returns ``{"reseed": [...], "augmentation": [...], "mean": {"reseed": {...}, "augmentation": {...}},
    "excess": {...}}``: counts per comparison, their means and augmentation's excess over the reseed's.
    """
    by_seed = {r.seed: r for r in results}
    rows = {
        "reseed": [_counts(by_seed[a], "baseline", by_seed[b]) for a, b in reseed_pairs(list(by_seed))],
        "augmentation": [_counts(r, "augmented", r) for r in results],
    }
    mean = {
        kind: {key: sum(row[key] for row in kind_rows) / len(kind_rows) for key in COUNT_KEYS}
        for kind, kind_rows in rows.items()
        if kind_rows
    }
    excess = (
        {key: mean["augmentation"][key] - mean["reseed"][key] for key in COUNT_KEYS}
        if "reseed" in mean
        else {}
    )
    return {**rows, "mean": mean, "excess": excess}


def _counts(first: SeedResults, model: str, second: SeedResults) -> dict[str, Any]:
    """fixed / kept / new counts from ``first``'s baseline to ``second``'s ``model``, in a labelled row."""
    comparison = compare_failures(first.probs["baseline"], second.probs[model], first.labels, first.threshold)
    return {"from": f"baseline seed {first.seed}", "to": f"{model} seed {second.seed}", **comparison.counts()}


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


def failure_stability(results: Sequence[SeedResults], model: str = "baseline") -> dict[str, Any]:
    """Per-image failure counts of ``model`` over seeds, their histogram, the Jaccard matrix and the
    consistent failures (JSON-ready)."""
    sets = [find_high_confidence_failures(r.probs[model], r.labels, r.threshold) for r in results]
    num_seeds = len(results)
    counts = failure_counts(sets, len(results[0].labels))
    matrix = jaccard_matrix(sets)
    off_diagonal = [float(matrix[i, j]) for i in range(num_seeds) for j in range(num_seeds) if i < j]
    consistent = consistent_indices(counts, num_seeds)
    return {
        "model": model,
        "seeds": [r.seed for r in results],
        "failures_per_seed": [len(s) for s in sets],
        "images_failing_in_k_seeds": {k: int((counts == k).sum()) for k in range(1, num_seeds + 1)},
        "ever_failing": int((counts > 0).sum()),
        "jaccard": matrix.tolist(),
        "mean_jaccard": sum(off_diagonal) / len(off_diagonal) if off_diagonal else None,
        "consistent_share": CONSISTENT_SHARE,
        "consistent_min_seeds": consistent_min_seeds(num_seeds),
        "consistent": consistent.tolist(),
        "consistent_counts": counts[consistent].tolist(),
        "one_seed": torch.nonzero(counts == 1).flatten().tolist(),
        "counts": counts.tolist(),
    }


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


def replicate_summary(
    accuracy: Mapping[str, Any], floor: Mapping[str, Any], stability: Mapping[str, Any]
) -> dict[str, Any]:
    """The headline numbers of a replicate analysis (``replicates/summary.json``, the run summary)."""
    return {
        "seeds": accuracy["seeds"],
        "baseline": {k: accuracy["baseline"][k] for k in ("mean", "sd", "low", "high")},
        "augmented": {k: accuracy["augmented"][k] for k in ("mean", "sd", "low", "high")},
        "difference": {k: accuracy["difference"][k] for k in ("mean", "sd", "low", "high", "t", "p_value")},
        "noise_floor": floor["mean"],
        "excess_over_reseed": floor["excess"],
        "mean_jaccard": stability["mean_jaccard"],
        "consistent_failures": len(stability["consistent"]),
        "ever_failing": stability["ever_failing"],
    }
