"""seed_analysis: intervals, the paired test, the reseed noise floor and failure stability."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from scipy import stats

from cifar_helpers.analysis.claims.rules import t_interval
from cifar_helpers.analysis.failures import (
    FailureSet,
    compare_failures,
    failure_summary,
    find_high_confidence_failures,
)
from cifar_helpers.analysis.human_labels import NotApplicable, result_from_dict
from cifar_helpers.analysis.seed_analysis import (
    AccuracyOverSeeds,
    CategoryMix,
    FailureStability,
    NoiseFloor,
    ReplicateSummary,
    SeedResults,
    accuracy_over_seeds,
    category_mix,
    check_same_test_set,
    consistent_indices,
    failure_counts,
    failure_stability,
    jaccard_matrix,
    load_seed_results,
    noise_floor,
    paired_difference,
    replicate_summary,
    reseed_pairs,
)
from cifar_helpers.views.tables import category_mix_table, describe_replicates, text


def failure_set(indices: list[int]) -> FailureSet:
    n = len(indices)
    return FailureSet(
        indices=torch.tensor(indices, dtype=torch.int64),
        true_labels=torch.zeros(n, dtype=torch.int64),
        predicted=torch.ones(n, dtype=torch.int64),
        confidence=torch.full((n,), 0.95),
        threshold=0.9,
        num_images=6,
        num_errors=n,
    )


def confident_probs(preds: list[int], num_classes: int = 3, confidence: float = 0.96) -> torch.Tensor:
    probs = torch.full((len(preds), num_classes), (1 - confidence) / (num_classes - 1))
    probs[torch.arange(len(preds)), torch.tensor(preds)] = confidence
    return probs


def seed_results(seed: int, baseline: list[int], augmented: list[int], labels: list[int]) -> SeedResults:
    label_tensor = torch.tensor(labels)
    probs = {"baseline": confident_probs(baseline), "augmented": confident_probs(augmented)}
    accuracy = {m: float((p.argmax(1) == label_tensor).float().mean()) for m, p in probs.items()}
    return SeedResults(
        seed=seed,
        run_dir=Path(f"/runs/seed-{seed}"),
        probs=probs,
        labels=label_tensor,
        test_set={"fingerprint": "f", "test_per_class": None, "drawn_with": None},
        test_accuracy=accuracy,
        threshold=0.9,
    )


LABELS = [0, 1, 2, 0, 1, 2]
RESULTS = [
    seed_results(1, baseline=[1, 1, 2, 2, 1, 2], augmented=[0, 1, 2, 2, 1, 0], labels=LABELS),
    seed_results(2, baseline=[1, 1, 2, 0, 0, 2], augmented=[0, 1, 2, 0, 0, 2], labels=LABELS),
    seed_results(3, baseline=[2, 1, 2, 0, 1, 2], augmented=[0, 1, 2, 0, 1, 2], labels=LABELS),
]


def test_the_interval_over_seeds_is_students_t():
    values = [0.80, 0.82, 0.84]
    result = t_interval(values)
    half = stats.t.ppf(0.975, df=2) * 0.02 / 3**0.5
    assert result.n == 3 and result.confidence == 0.95
    assert result.mean == pytest.approx(0.82)
    assert result.sd == pytest.approx(0.02)
    assert result.low == pytest.approx(0.82 - half) and result.high == pytest.approx(0.82 + half)
    single = t_interval([0.5])
    assert single.sd is None and single.low is None and single.mean == 0.5
    with pytest.raises(ValueError, match="at least one"):
        t_interval([])


def test_paired_difference_matches_scipy_paired_t_test():
    baseline, augmented = [0.80, 0.81, 0.79, 0.83], [0.84, 0.83, 0.82, 0.88]
    result = paired_difference(baseline, augmented)
    expected = stats.ttest_rel(augmented, baseline)
    assert result.t == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue)
    assert result.differences == pytest.approx([0.04, 0.02, 0.03, 0.05])
    assert result.interval.low > 0  # consistently better in every seed
    same = paired_difference([0.80, 0.81], [0.82, 0.83])  # no spread in the differences: no t-test
    assert same.interval.sd == 0 and same.t is None and same.p_value is None
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([0.1], [0.1, 0.2])


def test_accuracy_over_seeds_pairs_the_seeds():
    accuracy = accuracy_over_seeds(RESULTS)
    assert accuracy.seeds == [1, 2, 3]
    assert accuracy.per_seed["baseline"] == [r.test_accuracy["baseline"] for r in RESULTS]
    differences = [r.test_accuracy["augmented"] - r.test_accuracy["baseline"] for r in RESULTS]
    assert accuracy.difference.differences == pytest.approx(differences)


def test_reseed_pairs_use_every_seed_in_both_roles():
    assert reseed_pairs([5]) == []
    assert reseed_pairs([5, 6]) == [(5, 6)]
    assert reseed_pairs([5, 6, 7]) == [(5, 6), (6, 7), (7, 5)]


def test_noise_floor_is_the_comparison_between_baseline_seeds():
    floor = noise_floor(RESULTS)
    assert len(floor.reseed) == 3 and len(floor.augmentation) == 3
    expected = compare_failures(
        RESULTS[0].probs["baseline"], RESULTS[1].probs["baseline"], RESULTS[0].labels, 0.9
    ).counts()
    first = floor.reseed[0]
    assert (first.source, first.target) == ("baseline seed 1", "baseline seed 2")
    assert first.counts == expected
    last = RESULTS[2]
    aug = compare_failures(last.probs["baseline"], last.probs["augmented"], last.labels, 0.9)
    assert floor.augmentation[2].counts["fixed"] == aug.counts()["fixed"]
    mean_fixed = sum(row.counts["fixed"] for row in floor.reseed) / 3
    assert floor.mean["reseed"]["fixed"] == pytest.approx(mean_fixed)
    assert floor.excess["fixed"] == pytest.approx(floor.mean["augmentation"]["fixed"] - mean_fixed)


def test_failure_counts_jaccard_and_consistent_failures():
    sets = [failure_set([0, 3, 4]), failure_set([0, 3]), failure_set([0, 5])]
    counts = failure_counts(sets, 6)
    assert counts.tolist() == [3, 0, 0, 2, 1, 1]
    matrix = jaccard_matrix(sets)
    assert matrix[0, 1] == pytest.approx(2 / 3) and matrix[1, 2] == pytest.approx(1 / 3)
    assert torch.equal(matrix, matrix.T) and torch.all(matrix.diagonal() == 1)
    assert consistent_indices(counts, 3).tolist() == [0, 3]  # at least 2 of 3, most often first
    assert consistent_indices(counts, 4).tolist() == [0, 3]
    assert consistent_indices(counts, 2).tolist() == [0, 3]  # two seeds: failing in both
    assert consistent_indices(counts, 5).tolist() == [0]  # at least 3 of 5
    assert jaccard_matrix([failure_set([]), failure_set([])])[0, 1] == 1.0


def test_failure_stability_of_the_baseline():
    stability = failure_stability(RESULTS)
    # baseline confident failures: seed 1 {0, 3}, seed 2 {0, 4}, seed 3 {0}
    assert stability.failures_per_seed == [2, 2, 1]
    assert stability.counts == [3, 0, 0, 1, 1, 0]
    assert stability.consistent == [0]
    assert sorted(stability.one_seed) == [3, 4]
    assert stability.images_failing_in_k_seeds == {1: 2, 2: 0, 3: 1}
    summary = replicate_summary(accuracy_over_seeds(RESULTS), noise_floor(RESULTS), stability)
    text = describe_replicates(summary)
    assert "over seeds 1, 2, 3" in text and "1 of 3 ever-failing images" in text


# The keys each file of stage 07 held before its results were dataclasses: to_dict must keep them.
SAVED_KEYS = {
    "accuracy.json": {
        "": ["seeds", "per_seed", "baseline", "augmented", "difference"],
        "baseline": ["n", "mean", "sd", "low", "high", "confidence"],
        "difference": ["n", "mean", "sd", "low", "high", "confidence", "differences", "t", "p_value"],
    },
    "noise_floor.json": {
        "": ["reseed", "augmentation", "mean", "excess"],
        "row": [
            "from",
            "to",
            "baseline_failures",
            "augmented_failures",
            "fixed",
            "kept_same",
            "kept_different",
            "new",
        ],
    },
    "stability.json": {
        "": [
            "model",
            "seeds",
            "failures_per_seed",
            "images_failing_in_k_seeds",
            "ever_failing",
            "jaccard",
            "mean_jaccard",
            "consistent_share",
            "consistent_min_seeds",
            "consistent",
            "consistent_counts",
            "one_seed",
            "counts",
        ],
    },
    "summary.json": {
        "": [
            "seeds",
            "baseline",
            "augmented",
            "difference",
            "noise_floor",
            "excess_over_reseed",
            "mean_jaccard",
            "consistent_failures",
            "ever_failing",
        ],
        "baseline": ["mean", "sd", "low", "high"],
        "difference": ["mean", "sd", "low", "high", "t", "p_value"],
    },
}


@pytest.mark.parametrize("results", [RESULTS, RESULTS[:2], RESULTS[:1]], ids=["3 seeds", "2 seeds", "1 seed"])
def test_the_saved_results_keep_their_keys_and_read_back(results):
    accuracy, floor = accuracy_over_seeds(results), noise_floor(results)
    stability = failure_stability(results)
    summary = replicate_summary(accuracy, floor, stability)
    saved = {
        "accuracy.json": accuracy.to_dict(),
        "noise_floor.json": floor.to_dict(),
        "stability.json": stability.to_dict(),
        "summary.json": summary.to_dict(),
    }
    for name, keys in SAVED_KEYS.items():
        assert list(saved[name]) == keys[""], name
        for part in ("baseline", "augmented", "difference"):
            if part in keys:
                assert list(saved[name][part]) == keys[part], (name, part)
        if name == "accuracy.json":
            assert list(saved[name]["augmented"]) == keys["baseline"]
    for row in floor.reseed + floor.augmentation:
        assert list(row.to_dict()) == SAVED_KEYS["noise_floor.json"]["row"]
    for cls, result in (
        (AccuracyOverSeeds, accuracy),
        (NoiseFloor, floor),
        (FailureStability, stability),
        (ReplicateSummary, summary),
    ):
        assert cls.from_dict(result.to_dict()) == result
        assert cls.from_dict(json.loads(json.dumps(result.to_dict()))) == result  # as the file holds it
    assert ReplicateSummary.from_dict(saved["summary.json"]).accuracy == accuracy.summary()


def test_a_saved_result_missing_a_key_is_refused_naming_it():
    saved = failure_stability(RESULTS).to_dict()
    del saved["one_seed"]
    with pytest.raises(KeyError, match="one_seed"):
        FailureStability.from_dict(saved)
    floor = noise_floor(RESULTS).to_dict()
    del floor["reseed"][0]["kept_same"]
    with pytest.raises(KeyError, match="kept_same"):
        NoiseFloor.from_dict(floor)
    accuracy = accuracy_over_seeds(RESULTS).to_dict()
    del accuracy["difference"]["p_value"]
    with pytest.raises(KeyError, match="p_value"):
        AccuracyOverSeeds.from_dict(accuracy)


def test_category_mix_splits_consistent_and_one_seed_failures():
    categories = ["clear", "ambiguous", "clear", "mislabelled", "clear", "ambiguous"]
    mix = category_mix(categories, consistent=[0, 3], one_seed=[1, 4, 5], ambiguity_threshold=0.8)
    assert mix == CategoryMix(0.8, {"clear": 1, "mislabelled": 1}, {"ambiguous": 2, "clear": 1})
    assert list(mix.to_dict()) == ["applies", "ambiguity_threshold", "consistent", "one_seed"]
    assert result_from_dict(json.loads(json.dumps(mix.to_dict())), CategoryMix) == mix


def test_a_seed_run_is_read_through_its_typed_configuration(tmp_path):
    from cifar_helpers.core.evaluation import Predictions
    from cifar_helpers.rundir.artifacts import RunDir, save_json
    from cifar_helpers.rundir.config import make_config

    run = RunDir(tmp_path / "seed-43")
    make_config("smoke", seed=43, data_seed=42).save(run.config_path)
    save_json(run.path("setup", "data_summary.json"), {"fingerprint": "f"})
    labels = torch.tensor(LABELS)
    for model, accuracy in (("baseline", 0.5), ("augmented", 0.75)):
        Predictions(torch.eye(3)[labels], labels).save(run.path(model, "predictions.pt"))
        save_json(run.path(model, "metrics.json"), {"test_accuracy": accuracy, "train_accuracy": 0.9})
    probs = torch.eye(3)[labels]
    failures = find_high_confidence_failures(probs, labels, 0.9)
    save_json(
        run.path("failures", "summary.json"),
        failure_summary(probs, labels, failures, ["a", "b", "c"]).to_dict(),
    )
    result = load_seed_results(run.root, 43)
    assert result.test_set == {"fingerprint": "f", "test_per_class": 50, "drawn_with": 42}  # smoke: a subset
    assert result.test_accuracy == {"baseline": 0.5, "augmented": 0.75} and result.threshold == 0.9
    with pytest.raises(ValueError, match="seed 43, not 44"):
        load_seed_results(run.root, 44)


def test_seeds_tested_on_other_images_are_refused():
    other = seed_results(9, [0] * 6, [0] * 6, LABELS)
    other.test_set = {"fingerprint": "f", "test_per_class": 50, "drawn_with": 9}
    with pytest.raises(ValueError, match="data_seed"):
        check_same_test_set([RESULTS[0], other])
    check_same_test_set(RESULTS)


def test_category_mix_table_shows_counts_and_shares_or_why_none_apply():
    mix = CategoryMix(
        0.8,
        consistent={"ambiguous": 3, "model error": 1},
        one_seed={"model error": 8, "verified label error": 2},
    )
    frame = category_mix_table(mix)
    assert frame.loc[0].tolist() == ["ambiguous", 3, 0.75, 0, 0.0]  # numbers, shares as fractions
    lines = text(frame).splitlines()
    assert [c.strip() for c in lines[0].split("  ") if c] == [*frame.columns]
    assert lines[1].split() == ["ambiguous", "3", "75%", "0", "0%"]
    assert lines[2].split() == ["model", "error", "1", "25%", "8", "80%"]
    assert lines[-1].split() == ["all", "4", "-", "10", "-"]
    reason = NotApplicable("the test set is a subset")
    assert text(category_mix_table(reason)) == "no human labels apply: the test set is a subset"


@pytest.mark.shared_data
def test_human_label_mix_categorises_the_replicates_failures(tmp_path, batches_root, human_labels_root):
    """On the whole CIFAR-10 test set in its order, consistent and one-seed failures get the categories
    of the human labels; on a test subset none apply."""
    from cifar_helpers.analysis.human_labels import failure_categories, load_human_labels
    from cifar_helpers.rundir.config import make_config
    from cifar_helpers.workflow.stages import Replicates

    human = load_human_labels(human_labels_root)
    errors = torch.nonzero(human.verified_errors)[:3, 0].tolist()
    ambiguous = torch.nonzero((human.given_share() < 0.5) & ~human.verified_errors)[:2, 0].tolist()
    clear = torch.nonzero(human.given_share() == 1)[:4, 0].tolist()
    stability = replace(
        failure_stability(RESULTS),
        consistent=errors + ambiguous[:1] + clear[:1],
        one_seed=ambiguous[1:] + clear[1:],
    )

    def replicates(**overrides: object) -> Replicates:
        run = tmp_path / f"seed-{len(overrides)}"
        run.mkdir()
        config = make_config(
            "smoke", data_dir=str(batches_root), human_labels_dir=str(human_labels_root), **overrides
        )
        config.save(run / "config.json")
        result = seed_results(42, [0] * 6, [0] * 6, LABELS)
        result.run_dir = run
        return Replicates(tmp_path, "smoke", [result], explain_seed=42)

    mix = replicates(test_per_class=None).human_label_mix(stability)
    assert isinstance(mix, CategoryMix) and mix.ambiguity_threshold == 0.8
    assert mix.consistent == {"ambiguous": 1, "model error": 1, "verified label error": 3}
    assert mix.one_seed == {"ambiguous": 1, "model error": 3}
    expected = failure_categories(stability.one_seed, human, 0.8)
    assert sum(mix.one_seed.values()) == len(expected)
    subset = replicates().human_label_mix(stability)  # the smoke profile's 50 test images per class
    assert isinstance(subset, NotApplicable) and subset.reason
