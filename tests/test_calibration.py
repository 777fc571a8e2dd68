"""Calibration: ECE, NLL, temperature scaling, and that the temperature never sees test data."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cifar_helpers.analysis import calibration
from cifar_helpers.analysis.calibration import (
    TEMPERATURE_BOUNDS,
    _calibration_report,
    _fit_temperature,
    _negative_log_likelihood,
    _reliability_bins,
)


def _calibrated(n: int, seed: int, num_classes: int = 10, scale: float = 2.0):
    """Logits and labels drawn from softmax(logits): a perfectly calibrated predictor by construction."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, num_classes, generator=generator) * scale
    labels = torch.multinomial(logits.softmax(dim=1), 1, generator=generator).squeeze(1)
    return logits, labels


def test_ece_of_calibrated_predictor_is_near_zero() -> None:
    logits, labels = _calibrated(20000, seed=0)
    assert _reliability_bins(logits.softmax(dim=1), labels).ece < 0.02


def test_ece_of_overconfident_predictor_is_large() -> None:
    logits, labels = _calibrated(20000, seed=1)
    # The same labels with logits three times as large: confidences far above the true hit rates.
    assert _reliability_bins((3 * logits).softmax(dim=1), labels).ece > 0.15


def test_ece_matches_a_hand_computed_example() -> None:
    # Confidences 0.92, 0.83, 0.74, 0.65 (none on a bin edge), correct 1, 0, 1, 1.
    probs = torch.tensor([[0.92, 0.08], [0.83, 0.17], [0.26, 0.74], [0.35, 0.65]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    # Two bins: all four in (0.5, 1], accuracy 0.75 against mean confidence 0.785.
    assert _reliability_bins(probs, labels, n_bins=2).ece == pytest.approx(0.035)
    # Ten bins: each prediction alone in its bin.
    assert _reliability_bins(probs, labels, n_bins=10).ece == pytest.approx((0.08 + 0.83 + 0.26 + 0.35) / 4)


def test_reliability_bins_are_consistent() -> None:
    logits, labels = _calibrated(3000, seed=2)
    bins = _reliability_bins(logits.softmax(dim=1), labels, n_bins=15)
    assert len(bins.edges) == 16 and len(bins.counts) == 15
    assert sum(bins.counts) == 3000
    for count, acc, conf, lo, hi in zip(
        bins.counts,
        bins.accuracy,
        bins.confidence,
        bins.edges[:-1],
        bins.edges[1:],
        strict=True,
    ):
        if count == 0:
            assert acc is None and conf is None
        else:
            assert 0.0 <= acc <= 1.0
            assert lo - 1e-12 <= conf <= hi + 1e-12
    # The ECE is the bins' gaps weighted by their share of the predictions.
    rows = zip(bins.counts, bins.accuracy, bins.confidence, strict=True)
    gaps = [n * abs(a - c) for n, a, c in rows if n]
    assert bins.ece == pytest.approx(sum(gaps) / 3000)


def test_nll_is_the_cross_entropy_of_the_logits() -> None:
    logits, labels = _calibrated(500, seed=3)
    from_logits = _negative_log_likelihood(logits, labels)
    from_probs = -logits.softmax(dim=1).gather(1, labels.view(-1, 1)).log().mean().item()
    assert from_logits == pytest.approx(from_probs, rel=1e-5)
    uniform = torch.zeros(4, 10)
    assert _negative_log_likelihood(uniform, torch.tensor([0, 1, 2, 3])) == pytest.approx(math.log(10))


def test_fitted_temperature_recovers_the_overconfidence_factor() -> None:
    logits, labels = _calibrated(20000, seed=4)
    assert _fit_temperature(3 * logits, labels) == pytest.approx(3.0, rel=0.05)
    assert _fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.05)
    assert _fit_temperature(logits / 2, labels) == pytest.approx(0.5, rel=0.05)


def test_fit_temperature_is_deterministic() -> None:
    logits, labels = _calibrated(2000, seed=5)
    assert _fit_temperature(2 * logits, labels) == _fit_temperature(2 * logits.clone(), labels.clone())


def test_temperature_goes_to_the_lower_bound_without_errors() -> None:
    # Every hold-out prediction right: sharper is always better, so T is the smallest allowed value.
    logits = torch.eye(5) * 3.0
    assert _fit_temperature(logits, torch.arange(5)) == pytest.approx(TEMPERATURE_BOUNDS[0])


def test_calibration_report_improves_overconfident_model() -> None:
    logits, labels = _calibrated(8000, seed=6)
    test_logits, test_labels = 3 * logits[:4000], labels[:4000]
    holdout_logits, holdout_labels = 3 * logits[4000:], labels[4000:]
    report = _calibration_report(test_logits, test_labels, holdout_logits, holdout_labels, threshold=0.9)
    assert report.temperature > 2.0
    assert report.after.ece < report.before.ece / 3
    assert report.after.nll < report.before.nll
    # Temperature scaling never changes a predicted class.
    assert report.after.accuracy == report.before.accuracy
    failures = report.high_confidence_failures
    assert failures.before > 0
    assert failures.still_above_after < failures.before
    assert failures.still_above_after <= failures.after
    assert report.num_test == 4000 and report.num_holdout == 4000


def test_temperature_never_sees_test_data(monkeypatch: pytest.MonkeyPatch) -> None:
    logits, labels = _calibrated(4000, seed=7)
    test_logits, test_labels = 2 * logits[:2000], labels[:2000]
    holdout_logits, holdout_labels = 2 * logits[2000:], labels[2000:]

    seen: list[tuple[torch.Tensor, ...]] = []
    real_fit = calibration._fit_temperature

    def spy(*args: torch.Tensor) -> float:
        seen.append(args)
        return real_fit(*args)

    monkeypatch.setattr(calibration, "_fit_temperature", spy)
    report = _calibration_report(test_logits, test_labels, holdout_logits, holdout_labels)
    assert len(seen) == 1
    assert seen[0][0] is holdout_logits and seen[0][1] is holdout_labels

    # Whatever the test split holds, the temperature is the same: scrambled labels, other logits.
    scrambled = _calibration_report(
        torch.randn(2000, 10, generator=torch.Generator().manual_seed(8)) * 7,
        torch.flip(test_labels, dims=[0]),
        holdout_logits,
        holdout_labels,
    )
    assert scrambled.temperature == report.temperature
    # ...while a change of the hold-out split does change it.
    other = _calibration_report(test_logits, test_labels, holdout_logits * 1.5, holdout_labels)
    assert other.temperature != pytest.approx(report.temperature, rel=1e-3)


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (torch.rand(4, 3), torch.tensor([0, 1, 2, 0]), "softmax probabilities"),
        (torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2, 3]), "class indices"),
        (torch.full((4, 3), 1 / 3), torch.tensor([0, 1, 2]), "labels must have shape"),
        (torch.full((4,), 0.5), torch.tensor([0, 1, 1, 0]), "shape \\(N, C\\)"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(probs, labels, message) -> None:
    with pytest.raises(ValueError, match=message):
        _reliability_bins(probs, labels)


def test_bad_arguments_are_refused() -> None:
    logits, labels = _calibrated(10, seed=9)
    with pytest.raises(ValueError, match="n_bins"):
        _reliability_bins(logits.softmax(dim=1), labels, n_bins=0)
    with pytest.raises(ValueError, match="threshold"):
        _calibration_report(logits, labels, logits, labels, threshold=1.5)


def test_reliability_diagram_figure() -> None:
    from cifar_helpers.views.plotting.stress import plot_reliability_diagram

    logits, labels = _calibrated(2000, seed=10)
    reports = {
        name: _calibration_report(scale * logits[:1000], labels[:1000], scale * logits[1000:], labels[1000:])
        for name, scale in (("baseline", 3.0), ("augmented", 1.0))
    }
    fig = plot_reliability_diagram(calibration.Calibration(reports))
    assert len(fig.axes) == 4  # reliability and bin counts, per model
    assert [ax.get_title() for ax in fig.axes[:2]] == ["baseline", "augmented"]
    legend = " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    assert f"ECE {reports['baseline'].before.ece:.3f}" in legend
    assert fig._repr_png_().startswith(b"\x89PNG")
    with pytest.raises(TypeError, match="calibrate_models' result"):
        plot_reliability_diagram(reports["baseline"])
    with pytest.raises(TypeError, match="at least one model"):
        plot_reliability_diagram(calibration.Calibration({}, "no hold-out split"))


def test_calibrate_models_fits_each_model_on_its_holdout_predictions():
    from cifar_helpers.core.data import make_synthetic_cifar
    from cifar_helpers.core.evaluation import predict
    from cifar_helpers.core.models import resnet18

    data = make_synthetic_cifar(2, 6, holdout_per_class=4, seed=3)
    torch.manual_seed(0)
    models = {"a": resnet18(width=4).eval(), "b": resnet18(width=4).eval()}
    test_set, holdout_set = (data.test_images, data.test_labels), (data.holdout_images, data.holdout_labels)
    reports = calibration.calibrate_models(models, *test_set, *holdout_set, 0.5, batch_size=7)
    assert set(reports.models) == {"a", "b"}
    for name, model in models.items():
        test = predict(model, *test_set, batch_size=7)
        holdout = predict(model, *holdout_set, batch_size=7)
        expected = calibration._calibration_report(
            test.logits, test.labels, holdout.logits, holdout.labels, 0.5
        )
        assert reports.models[name] == expected
        assert reports.models[name].num_holdout == 40 and reports.models[name].num_test == 60
    assert calibration.Calibration.from_dict(json.loads(json.dumps(reports.to_dict()))) == reports
    no_holdout = (data.holdout_images[:0], data.holdout_labels[:0])
    skipped = calibration.calibrate_models(models, *test_set, *no_holdout)
    assert skipped.to_dict() == {"skipped": "the run has no hold-out split (holdout_per_class=0)"}
    assert calibration.Calibration.from_dict(skipped.to_dict()) == skipped
