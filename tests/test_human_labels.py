"""Human labels: loading and download checks, the order check, categories and their statistics."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_helpers.analysis import human_labels as hl
from cifar_helpers.analysis.failures import FailureSet, compare_failures, find_high_confidence_failures
from cifar_helpers.core.data import make_synthetic_cifar
from cifar_helpers.rundir.config import make_config
from cifar_helpers.views.tables import human_comparison_tables, text


# --------------------------------------------------------------------------------------------------
# Loading and downloading
# --------------------------------------------------------------------------------------------------
def test_the_shared_files_load_with_the_published_numbers(human_labels_root: Path) -> None:
    human = hl.load_human_labels(human_labels_root)
    assert human.counts.shape == (10_000, 10) and human.original_labels.shape == (10_000,)
    assert int(human.verified_errors.sum()) == 54
    given = human.given_share()
    assert int((given < 0.5).sum()) == 122 and int((given < 0.8).sum()) == 609
    status = human.label_status(0.8)
    assert [int((status == i).sum()) for i in range(3)] == [54, 570, 9376]


def test_an_edited_copy_is_refused(human_labels_root: Path, tmp_path: Path) -> None:
    for item in hl.PUBLIC_FILES:
        shutil.copy(human_labels_root / item.name, tmp_path / item.name)
    counts = np.load(tmp_path / hl.COUNTS_FILE)
    counts[0, 0] += 1
    np.save(tmp_path / hl.COUNTS_FILE, counts)
    with pytest.raises(hl.HumanLabelError, match="differs from the published file"):
        hl.load_human_labels(tmp_path)
    shutil.copy(human_labels_root / hl.COUNTS_FILE, tmp_path / hl.COUNTS_FILE)
    (tmp_path / hl.MTURK_FILE).unlink()
    with pytest.raises(hl.HumanLabelError, match=r"cifar10_mturk\.json is missing"):
        hl.load_human_labels(tmp_path)


class _FakeResponse(io.BytesIO):
    def __enter__(self) -> _FakeResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(files: dict[str, bytes], calls: list[str]):
    def fake_urlopen(url: str, timeout: float = 0) -> _FakeResponse:
        calls.append(url)
        return _FakeResponse(files[url])

    return fake_urlopen


def test_download_writes_the_verified_files(human_labels_root, tmp_path, monkeypatch) -> None:
    files = {item.url: (human_labels_root / item.name).read_bytes() for item in hl.PUBLIC_FILES}
    calls: list[str] = []
    monkeypatch.setattr(hl, "urlopen", _serve(files, calls))
    folder = tmp_path / "human-labels"
    hl.download_human_labels(folder)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f.name for f in hl.PUBLIC_FILES)
    assert len(calls) == 3 and all(url.startswith("https://raw.githubusercontent.com/") for url in calls)
    assert hl.load_human_labels(folder).counts.shape == (10_000, 10)
    hl.download_human_labels(folder)  # everything there: nothing fetched again
    assert len(calls) == 3


def test_a_download_with_the_wrong_checksum_is_refused_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    files = {item.url: b"not the published file" for item in hl.PUBLIC_FILES}
    monkeypatch.setattr(hl, "urlopen", _serve(files, []))
    folder = tmp_path / "human-labels"
    with pytest.raises(hl.HumanLabelError, match=r"refused .*SHA-256"):
        hl.download_human_labels(folder)
    assert not folder.exists() or list(folder.iterdir()) == []
    # Inside a run the refusal is the one line saying why no human labels apply; nothing is written.
    monkeypatch.setenv(hl.HUMAN_LABELS_ENV, str(folder))
    data = _cifar_like_data(torch.arange(10).repeat(1000), torch.zeros(10_000, 3, 32, 32, dtype=torch.uint8))
    result = hl.human_labels_for_run(make_config("smoke"), data)
    assert isinstance(result, hl.NotApplicable) and result.reason.startswith("refused https://")
    assert not folder.exists() or list(folder.iterdir()) == []


def _cifar_like_data(test_labels: torch.Tensor, test_images: torch.Tensor):
    data = make_synthetic_cifar(train_per_class=1, test_per_class=1, seed=0)
    data.source, data.classes = "cifar10", list(hl.CIFAR10_CLASSES)
    data.test_labels, data.test_images = test_labels, test_images
    data.test_index = torch.arange(len(test_labels))
    return data


def test_offline_the_run_goes_on_without_human_labels(tmp_path, monkeypatch) -> None:
    def offline(url: str, timeout: float = 0) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(hl, "urlopen", offline)
    monkeypatch.setenv(hl.HUMAN_LABELS_ENV, str(tmp_path / "empty"))
    labels = torch.arange(10).repeat(1000)
    data = _cifar_like_data(labels, torch.zeros(10_000, 3, 32, 32, dtype=torch.uint8))
    result = hl.human_labels_for_run(make_config("smoke"), data)
    assert isinstance(result, hl.NotApplicable)
    assert "could not be downloaded" in result.reason and "no network" in result.reason
    assert str(result).startswith("no human labels apply: ") and "\n" not in str(result)
    assert hl.human_failure_report(torch.rand(3, 10), torch.zeros(3), None, result, 0.8) is result
    assert result.to_dict() == {"applies": False, "reason": result.reason}


# --------------------------------------------------------------------------------------------------
# Where they apply
# --------------------------------------------------------------------------------------------------
def _shuffled_within_classes(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    order = torch.arange(len(labels))
    for c in labels.unique():
        where = torch.nonzero(labels == c).flatten()
        order[where] = where[torch.randperm(len(where), generator=generator)]
    return order


def test_the_order_check_refuses_the_same_images_shuffled_within_each_class() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (2000,), generator=generator)
    images = torch.randint(0, 256, (2000, 3, 32, 32), generator=generator, dtype=torch.uint8)
    # A reference made from the same pixels, as CIFAR-10's is; re-encoding noise must still pass.
    reference = images.reshape(2000, -1).double().mean(dim=1).round().to(torch.uint8).numpy()
    assert hl.check_test_order(labels, images, labels, reference) is None
    noisy = (images.short() + torch.randint(-3, 4, images.shape, generator=generator)).clamp(0, 255)
    assert hl.check_test_order(labels, noisy.to(torch.uint8), labels, reference) is None

    order = _shuffled_within_classes(labels)
    assert torch.equal(labels[order], labels)  # the label sequence alone cannot tell
    reason = hl.check_test_order(labels[order], images[order], labels, reference)
    assert reason is not None and "not in CIFAR-10's original order" in reason

    by_class = torch.argsort(labels, stable=True)  # an image-folder set: sorted by class
    reason = hl.check_test_order(labels[by_class], images[by_class], labels, reference)
    assert reason is not None and "original sequence" in reason


@pytest.mark.shared_data
def test_the_rebuilt_batches_pass_the_order_check_and_their_shuffle_fails(batches_root, human_labels_root):
    with open(batches_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="latin1")
    images = torch.from_numpy(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
    labels = torch.tensor(batch["labels"], dtype=torch.int64)
    human = hl.load_human_labels(human_labels_root)
    reference = hl.original_test_intensity()
    assert hl.check_test_order(labels, images, human.original_labels, reference) is None
    order = _shuffled_within_classes(labels)
    assert "original order" in hl.check_test_order(
        labels[order], images[order], human.original_labels, reference
    )


def test_generated_data_and_test_subsets_are_not_applicable() -> None:
    synthetic = make_synthetic_cifar(train_per_class=2, test_per_class=2, seed=0)
    assert "generated" in hl.applicability_without_files(synthetic)
    config = make_config("smoke", data_source="synthetic")
    assert isinstance(hl.human_labels_for_run(config, synthetic), hl.NotApplicable)
    subset = _cifar_like_data(torch.arange(10).repeat(50), torch.zeros(500, 3, 32, 32, dtype=torch.uint8))
    assert "subset (500 of 10000" in hl.applicability_without_files(subset)


# --------------------------------------------------------------------------------------------------
# Categories and statistics, on constructed human labels
# --------------------------------------------------------------------------------------------------
def _constructed_human() -> hl.HumanLabels:
    """10,000 images, label = index % 10; image 0 a verified error, images 1-2 split, the rest agreed."""
    labels = torch.arange(10_000) % 10
    counts = torch.zeros(10_000, 10, dtype=torch.int64)
    counts[torch.arange(10_000), labels] = 50
    counts[0] = 0
    counts[0, 0], counts[0, 3] = 10, 40  # a verified label error: humans say class 3
    counts[1] = 0
    counts[1, 1], counts[1, 2] = 30, 20  # split: given share 0.6
    counts[2] = 0
    counts[2, 2], counts[2, 5] = 25, 25  # tie between given and class 5
    given = torch.full((10_000,), -1, dtype=torch.int64)
    given[0], given[3] = 1, 4  # image 3 was a candidate the workers confirmed
    return hl.HumanLabels(counts=counts, original_labels=labels, mturk_given=given, root="constructed")


def test_categories_follow_the_verification_then_the_human_share() -> None:
    human = _constructed_human()
    assert hl.failure_categories([0, 1, 2, 3, 4], human, 0.8) == [
        hl.LABEL_ERROR,
        hl.AMBIGUOUS,
        hl.AMBIGUOUS,
        hl.MODEL_ERROR,
        hl.MODEL_ERROR,
    ]
    assert hl.failure_categories([1], human, 0.5) == [hl.MODEL_ERROR]  # 0.6 is not below 0.5
    with pytest.raises(ValueError, match="ambiguity_threshold"):
        hl.failure_categories([1], human, 1.5)


def test_the_failure_report_counts_enrichment_and_plurality_accuracy() -> None:
    human = _constructed_human()
    labels = human.original_labels
    probs = torch.full((10_000, 10), 0.001)
    probs[torch.arange(10_000), labels] = 0.991
    # Confident failures: image 0 (says 3, humans agree), 1 (says 2), 2 (says 5, tied), 4 (says 0).
    for index, predicted in ((0, 3), (1, 2), (2, 5), (4, 0)):
        probs[index] = 0.001
        probs[index, predicted] = 0.991
    failures = find_high_confidence_failures(probs, labels, 0.9)
    report = hl.human_failure_report(probs, labels, failures, human, 0.8)
    assert report.counts == {hl.LABEL_ERROR: 1, hl.AMBIGUOUS: 2, hl.MODEL_ERROR: 1}
    assert report.base_counts == {hl.LABEL_ERROR: 1, hl.AMBIGUOUS: 2, hl.AGREED: 9997}
    assert report.enrichment[hl.LABEL_ERROR] == pytest.approx((1 / 4) / (1 / 10_000))
    assert report.enrichment[hl.MODEL_ERROR] == pytest.approx((1 / 4) / (9997 / 10_000))
    assert report.accuracy == pytest.approx(9996 / 10_000)
    # Humans side with the model on image 0 and tie on image 2; image 1 (plurality: given) and 4 not.
    assert report.accuracy_vs_human_plurality == pytest.approx(9998 / 10_000)
    first = report.failures[0]
    assert first.index == 0 and first.category == hl.LABEL_ERROR
    assert first.given_share == pytest.approx(0.2) and first.human_plurality == 3
    assert report.model_errors() == [4]


def test_comparison_by_category_flags_fixed_label_errors() -> None:
    human = _constructed_human()
    labels = human.original_labels
    base = torch.full((10_000, 10), 0.001)
    base[torch.arange(10_000), labels] = 0.991
    aug = base.clone()
    for index, predicted in ((0, 3), (4, 0)):
        base[index] = 0.001
        base[index, predicted] = 0.991
    aug[4] = base[4]  # kept; image 0 fixed: the augmented model now agrees with the wrong label
    aug[5] = 0.001
    aug[5, 0] = 0.991  # new
    comparison = compare_failures(base, aug, labels, 0.9)
    result = hl.comparison_by_category(comparison, aug, human, 0.8, hl.CIFAR10_CLASSES)
    assert result.augmented.counts == {hl.LABEL_ERROR: 0, hl.AMBIGUOUS: 0, hl.MODEL_ERROR: 2}
    assert result.to_dict()["augmented_counts"] == result.augmented.counts
    assert result.augmented.num_failures == 2
    shown = "\n\n".join(map(text, human_comparison_tables(result)))
    assert "WARNING: 1 'fixed' failure(s) are verified label errors" in shown and "image 0" in shown
    assert result.by_category["fixed"] == {hl.LABEL_ERROR: 1, hl.AMBIGUOUS: 0, hl.MODEL_ERROR: 0}
    assert result.by_category["kept_same"][hl.MODEL_ERROR] == 1
    assert result.by_category["new"][hl.MODEL_ERROR] == 1
    (flag,) = result.fixed_label_errors
    assert flag.index == 0 and flag.given == "airplane" and flag.human_plurality == "cat"


def test_human_cross_entropy_is_lowest_for_the_human_distribution() -> None:
    labels = torch.arange(10_000) % 10
    counts = torch.zeros(10_000, 10, dtype=torch.int64)
    counts[torch.arange(10_000), labels] = 40
    counts[torch.arange(10_000), (labels + 1) % 10] += 10  # humans 80/20: real uncertainty
    human = hl.HumanLabels(counts, labels, torch.full((10_000,), -1), "constructed")
    human_logits = torch.log(human.shares.clamp_min(1e-12)).float()
    floor = hl.calibration_against_humans({"h": human_logits}, {"h": None}, human)
    assert floor.models["h"].before == pytest.approx(floor.human_entropy, abs=1e-4)
    assert floor.models["h"].after is None  # no temperature: not scaled
    sure = torch.nn.functional.one_hot(human.original_labels, 10).float() * 20
    result = hl.calibration_against_humans({"m": sure}, {"m": 4.0}, human)
    before, after = result.models["m"].before, result.models["m"].after
    assert before > after > floor.human_entropy  # softening a sure model moves it towards humans
    with pytest.raises(ValueError, match="temperature"):
        hl.human_cross_entropy(sure, human, 0.0)


# --------------------------------------------------------------------------------------------------
# Saved results: one type each, read back strictly, the saved layout unchanged
# --------------------------------------------------------------------------------------------------
def _computed_results() -> tuple[hl.HumanFailureReport, hl.CategoryComparison, hl.HumanCalibration]:
    """Notebook 02's, 05's and 06's results on the constructed labels: a label error fixed, a model
    error kept, one new; the calibration with a model scaled and one skipped."""
    human = _constructed_human()
    labels = human.original_labels
    base = torch.full((10_000, 10), 0.001)
    base[torch.arange(10_000), labels] = 0.991
    aug = base.clone()
    for index, predicted in ((0, 3), (1, 2), (4, 0)):
        base[index] = 0.001
        base[index, predicted] = 0.991
    aug[4] = base[4]
    aug[5] = 0.001
    aug[5, 0] = 0.991
    comparison = compare_failures(base, aug, labels, 0.9)
    report = hl.human_failure_report(base, labels, comparison.baseline_failures, human, 0.8)
    by_category = hl.comparison_by_category(comparison, aug, human, 0.8, hl.CIFAR10_CLASSES)
    logits = {"baseline": torch.log(base), "augmented": torch.log(aug)}
    calibration = hl.calibration_against_humans(logits, {"baseline": 2.0, "augmented": None}, human)
    return report, by_category, calibration


def test_every_result_round_trips_through_its_saved_dict(tmp_path: Path) -> None:
    report, by_category, calibration = _computed_results()
    assert report.failures and by_category.fixed_label_errors  # the nested records are exercised
    for result in (report, by_category, calibration):
        assert type(result).from_dict(result.to_dict()) == result
        saved = json.loads(json.dumps(result.to_dict()))  # as a stage writes and reads it
        assert hl.result_from_dict(saved, type(result)) == result
    reason = hl.NotApplicable("the run uses the generated data set, not CIFAR-10")
    assert hl.NotApplicable.from_dict(reason.to_dict()) == reason
    assert hl.result_from_dict(reason.to_dict(), hl.HumanFailureReport) == reason

    root = _write_run(tmp_path, _constructed_human())
    assert hl.load_failure_report(root) == hl.human_failure_report(
        *_run_inputs(), _constructed_human(), 0.8
    )  # a loaded report and a computed one are the same type
    summary = hl.human_labels_summary(root)
    assert summary.augmented is not None and summary.fixed_label_errors == 1
    assert hl.HumanLabelsSummary.from_dict(summary.to_dict()) == summary
    (root / "reevaluation" / hl.FAILURES_REPORT).unlink()  # stage 05 not run: its fields are None
    before_05 = hl.human_labels_summary(root)
    assert before_05.augmented is None and before_05.by_category is None
    assert hl.HumanLabelsSummary.from_dict(before_05.to_dict()) == before_05


def test_the_saved_keys_are_unchanged() -> None:
    report, by_category, calibration = _computed_results()
    saved = report.to_dict()
    assert list(saved) == [
        "applies",
        "source",
        "ambiguity_threshold",
        "num_failures",
        "counts",
        "base_counts",
        "enrichment",
        "accuracy",
        "accuracy_vs_human_plurality",
        "spearman_confidence_vs_human_share",
        "spearman_given_prob_vs_human_share",
        "failures",
    ]
    assert saved["applies"] is True and isinstance(saved["failures"], list)
    assert list(saved["failures"][0]) == [
        "index",
        "category",
        "given_share",
        "predicted_share",
        "human_plurality",
    ]
    saved = by_category.to_dict()
    assert list(saved) == [
        "applies",
        "ambiguity_threshold",
        "by_category",
        "baseline_counts",
        "augmented_counts",
        "augmented",
        "fixed_label_errors",
    ]
    assert saved["augmented"] == by_category.augmented.to_dict()
    assert list(saved["fixed_label_errors"][0]) == [
        "index",
        "given",
        "human_plurality",
        "given_share",
        "mturk_given_votes",
    ]
    assert saved["fixed_label_errors"][0]["mturk_given_votes"] == "1 of 5"
    saved = calibration.to_dict()
    assert list(saved) == ["applies", "models", "human_entropy"]
    assert {name: list(m) for name, m in saved["models"].items()} == {
        "baseline": ["temperature", "before", "after"],
        "augmented": ["temperature", "before", "after"],
    }
    assert saved["models"]["augmented"]["after"] is None
    assert list(hl.NotApplicable("why").to_dict()) == ["applies", "reason"]


def test_the_run_summary_keys_are_unchanged(tmp_path: Path) -> None:
    saved = hl.human_labels_summary(_write_run(tmp_path, _constructed_human())).to_dict()
    assert list(saved) == [
        "applies",
        "ambiguity_threshold",
        "baseline",
        "accuracy_vs_human_plurality",
        "augmented",
        "by_category",
        "fixed_label_errors",
    ]
    assert list(saved["baseline"]) == list(saved["augmented"]) == ["counts", "enrichment"]
    assert list(saved["accuracy_vs_human_plurality"]) == ["baseline", "augmented"]


def test_a_missing_key_is_named() -> None:
    report, _, calibration = _computed_results()
    saved = report.to_dict()
    del saved["failures"][0]["category"]
    with pytest.raises(KeyError, match="category"):
        hl.HumanFailureReport.from_dict(saved)
    saved = calibration.to_dict()
    del saved["human_entropy"]
    with pytest.raises(KeyError, match="human_entropy"):
        hl.result_from_dict(saved, hl.HumanCalibration)
    with pytest.raises(KeyError, match="applies"):
        hl.result_from_dict({"reason": "-"}, hl.HumanCalibration)


# --------------------------------------------------------------------------------------------------
# Run summary and report
# --------------------------------------------------------------------------------------------------
def _run_inputs() -> tuple[torch.Tensor, torch.Tensor, FailureSet]:
    """The baseline probabilities, labels and confident failures that :func:`_write_run` saves."""
    labels = torch.arange(10_000) % 10
    base = torch.full((10_000, 10), 0.001)
    base[torch.arange(10_000), labels] = 0.991
    for index, predicted in ((0, 3), (1, 2), (4, 0)):
        base[index] = 0.001
        base[index, predicted] = 0.991
    return base, labels, find_high_confidence_failures(base, labels, 0.9)


def _write_run(tmp_path: Path, human: hl.HumanLabels | hl.NotApplicable) -> Path:
    from cifar_helpers.rundir.artifacts import RunDir, save_json

    run = RunDir(tmp_path / "run")
    base, labels, _ = _run_inputs()
    aug = torch.full((10_000, 10), 0.001)
    aug[torch.arange(10_000), labels] = 0.991
    aug[4] = base[4]
    comparison = compare_failures(base, aug, labels, 0.9)
    report = hl.human_failure_report(base, labels, comparison.baseline_failures, human, 0.8)
    save_json(run.path("failures", hl.FAILURES_REPORT), report.to_dict())
    by_category = hl.comparison_by_category(comparison, aug, human, 0.8, hl.CIFAR10_CLASSES)
    save_json(run.path("reevaluation", hl.FAILURES_REPORT), by_category.to_dict())
    return run.root


def test_the_run_summary_and_report_show_the_categories(tmp_path: Path) -> None:
    from cifar_helpers.rundir.artifacts import RunDir, save_json
    from cifar_helpers.views.report import render_report
    from cifar_helpers.workflow.pipeline import format_summary, summarize_run

    root = _write_run(tmp_path, _constructed_human())
    against_humans = {"baseline": {"before": 1.9062, "temperature": 2.2, "after": 1.4251}}
    save_json(
        RunDir(root).path("stress", "human_calibration.json"),
        {"applies": True, "human_entropy": 0.154, "models": against_humans},
    )
    summary = summarize_run(RunDir(root))
    human = summary["human_labels"]
    assert human["baseline"]["counts"] == {hl.LABEL_ERROR: 1, hl.AMBIGUOUS: 1, hl.MODEL_ERROR: 1}
    assert human["augmented"]["counts"] == {hl.LABEL_ERROR: 0, hl.AMBIGUOUS: 0, hl.MODEL_ERROR: 1}
    assert human["by_category"]["fixed"] == {hl.LABEL_ERROR: 1, hl.AMBIGUOUS: 1, hl.MODEL_ERROR: 0}
    assert human["fixed_label_errors"] == 1
    text = format_summary(summary)
    assert "confident failures by category" in text
    assert "1 'fixed' failure(s) are verified label errors" in text
    page = render_report(root)
    assert "Is it the model or the label?" in page and "verified label error" in page
    assert "now agrees with a wrong label" in page
    assert (
        "cross-entropy against the CIFAR-10H vote distribution" in page
        and ">1.906<" in page
        and ">1.425<" in page
    )


def test_without_human_labels_summary_and_report_say_so_in_one_line(tmp_path: Path) -> None:
    from cifar_helpers.rundir.artifacts import RunDir
    from cifar_helpers.views.report import render_report
    from cifar_helpers.workflow.pipeline import format_summary, summarize_run

    root = _write_run(tmp_path, hl.NotApplicable("the run uses the generated data set, not CIFAR-10"))
    summary = summarize_run(RunDir(root))
    assert summary["human_labels"] == {
        "applies": False,
        "reason": "the run uses the generated data set, not CIFAR-10",
    }
    lines = [line for line in format_summary(summary).splitlines() if "human labels" in line]
    assert lines == ["no human labels apply: the run uses the generated data set, not CIFAR-10"]
    assert "no human labels apply: the run uses the generated data set" in render_report(root)
