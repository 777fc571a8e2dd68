"""Tests of cifar_helpers.views.plotting: what each figure shows, the heatmap overlays, and input checks."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text

from cifar_helpers.analysis.failures import ConfidenceHistogram, ConfusedPair
from cifar_helpers.analysis.gradcam import DeletionCurve
from cifar_helpers.views import plotting
from cifar_helpers.views.plotting import common

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class StandInFailureSet:
    """The fields of cifar_helpers.analysis.failures.FailureSet that plotting reads."""

    indices: torch.Tensor
    true_labels: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    threshold: float = 0.9


def texts(fig: Figure) -> list[str]:
    """Every piece of text drawn in the figure (titles, labels, annotations)."""
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def image_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.images and ax.get_visible() and ax.axison is not False]


@pytest.fixture(autouse=True)
def no_figure_leaks():
    """Plot functions must not register figures with pyplot (they would pile up and be re-shown)."""
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before
    plt.close("all")


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randint(
        0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


@pytest.fixture
def maps() -> torch.Tensor:
    return torch.rand(6, 32, 32, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------------------------------
# Overlays
# --------------------------------------------------------------------------------------------------
def test_overlay_heatmap_shape_dtype_and_hot_region_is_red():
    image = np.full((3, 32, 32), 128, dtype=np.uint8)
    heatmap = np.zeros((32, 32), dtype=np.float32)
    heatmap[:16, :16] = 1.0  # hot top-left quadrant, cold elsewhere
    out = common.overlay_heatmap(image, heatmap, scale=4)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    hot, cold = out[8:56, 8:56], out[72:120, 72:120]
    # JET: 1 is red, 0 is blue. In RGB order the red channel must dominate where the map is hot.
    assert hot[..., 0].mean() > cold[..., 0].mean() + 50
    assert cold[..., 2].mean() > hot[..., 2].mean() + 50


def test_upscale_image_is_the_cubic_upscaled_image(images):
    expected = cv2.resize(images[0].permute(1, 2, 0).numpy(), (96, 96), interpolation=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(common.upscale_image(images[0], 3), expected)


@pytest.mark.parametrize(
    ("image", "heatmap", "error", "match"),
    [
        (np.zeros((3, 32, 32), np.uint8), np.zeros((4, 4), np.float32), ValueError, "heatmap"),
        (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.float32), ValueError, "image"),
        (np.zeros((3, 32, 32), np.float32), np.zeros((32, 32), np.float32), ValueError, "uint8"),
        (np.zeros((3, 32, 32), np.uint8), np.full((32, 32), 2.0, np.float32), ValueError, r"\[0, 1\]"),
        (np.zeros((3, 32, 32), np.uint8), np.full((32, 32), np.nan, np.float32), ValueError, "NaN"),
    ],
)
def test_overlay_heatmap_rejects_bad_inputs(image, heatmap, error, match):
    with pytest.raises(error, match=match):
        common.overlay_heatmap(image, heatmap)


def test_overlay_heatmap_rejects_a_bad_scale(images):
    with pytest.raises(ValueError, match="scale"):
        common.overlay_heatmap(images[0], torch.rand(32, 32), scale=0)


def test_overlay_heatmap_accepts_reduced_precision_maps(images):
    heatmap = torch.rand(32, 32)
    expected = common.overlay_heatmap(images[0], heatmap.bfloat16().float())
    np.testing.assert_array_equal(common.overlay_heatmap(images[0], heatmap.bfloat16()), expected)


# --------------------------------------------------------------------------------------------------
# Curves, matrices, bars
# --------------------------------------------------------------------------------------------------
def history(final_train: float, final_test: float, epochs: int = 4) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 1.0 / e,
            "train_acc": final_train * e / epochs,
            "test_loss": 1.2 / e,
            "test_acc": final_test * e / epochs,
            "lr": 0.1,
            "seconds": 1.0,
        }
        for e in range(1, epochs + 1)
    ]


def test_training_curves_annotate_the_final_gap_per_model():
    fig = plotting.plot_training_curves({"baseline": history(0.95, 0.80), "augmented": history(0.90, 0.85)})
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["Accuracy", "Loss"]
    all_text = texts(fig)
    # without the evaluated train accuracy, the bracket says it is the running-accuracy difference
    assert "baseline: running train - test +15.0 pts" in all_text
    assert "augmented: running train - test +5.0 pts" in all_text
    assert "baseline: gap" not in all_text
    # train dashed and test solid, one colour per model
    lines = {
        (line.get_color(), line.get_linestyle()): line.get_ydata()[-1] for line in fig.axes[0].get_lines()
    }
    baseline, augmented = common.MODEL_COLORS[:2]
    assert lines == pytest.approx(
        {(baseline, "--"): 95.0, (baseline, "-"): 80.0, (augmented, "--"): 90.0, (augmented, "-"): 85.0}
    )


def test_training_curves_gap_is_the_evaluated_gap_of_metrics_json():
    # One definition: metrics.json's train_test_gap = train accuracy (eval mode, un-augmented) - test.
    histories = {"baseline": history(0.95, 0.80), "augmented": history(0.90, 0.85)}
    fig = plotting.plot_training_curves(histories, final_train_accuracy={"baseline": 0.97, "augmented": 0.93})
    all_text = texts(fig)
    assert "baseline: gap +17.0 pts" in all_text and "augmented: gap +8.0 pts" in all_text
    assert not any("running train -" in text for text in all_text)
    assert any("evaluated like the test set (eval mode, no augmentation)" in text for text in all_text)
    diamonds = [line for line in fig.axes[0].get_lines() if line.get_marker() == "D"]
    assert sorted(line.get_ydata()[0] for line in diamonds) == pytest.approx([93.0, 97.0])
    with pytest.raises(ValueError, match="no history"):
        plotting.plot_training_curves(histories, final_train_accuracy={"other": 0.5})
    with pytest.raises(ValueError, match="fraction"):
        plotting.plot_training_curves(histories, final_train_accuracy={"baseline": 97.0})


def test_training_curves_reject_bad_histories():
    fig = plotting.plot_training_curves({"model": history(0.9, 0.7)})
    assert "model: running train - test +20.0 pts" in texts(fig)
    broken = history(0.9, 0.7)
    del broken[2]["test_acc"]
    with pytest.raises(ValueError, match=r"entry 2: missing key.*test_acc"):
        plotting.plot_training_curves({"baseline": broken})
    percents = [{**row, "test_acc": 100 * row["test_acc"]} for row in history(0.9, 0.7)]
    with pytest.raises(ValueError, match="test_acc must be fractions"):
        plotting.plot_training_curves({"model": percents})
    with pytest.raises(ValueError, match="non-empty"):
        plotting.plot_training_curves({"baseline": []})


def test_confusion_matrix_shows_row_percent_and_counts():
    cm = torch.tensor([[8, 2, 0], [1, 9, 0], [0, 5, 5]])
    fig = plotting.plot_confusion_matrix(cm, ["cat", "dog", "ship"])
    assert len(fig.axes) == 1
    cells = texts(fig)
    assert "80%\n(8)" in cells and "20%\n(2)" in cells and "50%\n(5)" in cells
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["cat", "dog", "ship"]
    with pytest.raises(ValueError, match=r"cm must have shape \(2, 2\)"):
        plotting.plot_confusion_matrix(cm, ["cat", "dog"])


def test_per_class_accuracy_compares_two_models():
    classes = ["cat", "dog", "ship"]
    fig = plotting.plot_per_class_accuracy(
        {
            "baseline": {"cat": 0.5, "dog": 0.8, "ship": 0.9},
            "augmented": {"cat": 0.6, "dog": 0.7, "ship": 0.9},
        },
        classes,
    )
    ax = fig.axes[0]
    assert len(ax.patches) == 6
    assert [p.get_height() for p in ax.patches] == pytest.approx([50.0, 80.0, 90.0, 60.0, 70.0, 90.0])
    assert {"+10.0", "-10.0", "+0.0"} <= set(texts(fig))
    with pytest.raises(ValueError, match=r"'augmented'.*no accuracy for class.*ship"):
        plotting.plot_per_class_accuracy({"augmented": {"cat": 0.6, "dog": 0.7}}, classes)
    with pytest.raises(ValueError, match="not percents"):
        plotting.plot_per_class_accuracy({"model": {"cat": 50.0, "dog": 80.0, "ship": 90.0}}, classes)


def test_confidence_histogram_counts_wrong_predictions_above_threshold():
    hist = ConfidenceHistogram(edges=(0.0, 0.25, 0.5, 0.75, 1.0), correct=(0, 5, 20, 300), wrong=(0, 7, 4, 9))
    fig = plotting.plot_confidence_histogram(hist, threshold=0.75)
    assert any("9 of 20 wrong predictions" in t for t in texts(fig))
    correct_bars, wrong_bars = fig.axes[0].containers
    assert [bar.get_height() for bar in wrong_bars] == [0, 7, 4, 9]
    assert [bar.get_height() for bar in correct_bars] == [0, 5, 20, 300]
    with pytest.raises(ValueError, match=r"B\+1 edges"):
        plotting.plot_confidence_histogram(replace(hist, wrong=(1, 2)), 0.75)
    with pytest.raises(ValueError, match="threshold"):
        plotting.plot_confidence_histogram(hist, threshold=90)


def test_confused_pairs_largest_on_top():
    pairs = [
        ConfusedPair("cat", "dog", 3),
        ConfusedPair("truck", "automobile", 7),
        ConfusedPair("bird", "plane", 1),
    ]
    fig = plotting.plot_confused_pairs(pairs)
    ax = fig.axes[0]
    assert len(ax.patches) == 3
    by_height = sorted(zip(ax.get_yticks(), (t.get_text() for t in ax.get_yticklabels()), strict=True))
    # the most frequent pair is drawn on top
    assert [label for _, label in by_height] == ["bird → plane", "cat → dog", "truck → automobile"]
    assert "no confident mistakes to show" in texts(plotting.plot_confused_pairs([]))


def test_failure_comparison_bars_and_missing_gap():
    counts = {"fixed": 12, "kept_same": 5, "kept_different": 2, "new": 4, "baseline_failures": 19}
    fig = plotting.plot_failure_comparison(counts, 0.81, 0.86, 0.12, None)
    assert len(fig.axes) == 3
    assert [p.get_height() for p in fig.axes[0].patches] == [12, 5, 2, 4]
    all_text = texts(fig)
    assert "Failures: 19 → 11 (net -8)" in all_text
    assert "81.0%" in all_text and "86.0%" in all_text and "+12.0" in all_text and "n/a" in all_text
    with pytest.raises(ValueError, match=r"missing key.*new"):
        plotting.plot_failure_comparison({"fixed": 1, "kept_same": 1, "kept_different": 1}, 0.8, 0.8)
    with pytest.raises(ValueError, match=r"baseline_accuracy.*not a percent"):
        plotting.plot_failure_comparison(counts, 81.0, 0.86)


def test_deletion_curves_without_any_curve_say_so():
    fig = plotting.plot_deletion_curves({"baseline": None})
    assert any("no deletion curve" in t for t in texts(fig))


def test_periphery_shares_marks_both_medians():
    fig = plotting.plot_periphery_shares(
        torch.tensor([0.5, 0.6, 0.7]), np.array([0.1, 0.2, 0.3, 0.4]), uniform_share=0.44
    )
    all_text = texts(fig)
    assert " median 0.60" in all_text and " median 0.25" in all_text
    assert any("confident failures (n=3)" in t for t in all_text)
    empty = plotting.plot_periphery_shares(
        [0.5], [], uniform_share=0.44
    )  # e.g. no failures: a message, not an error
    assert any("nothing to compare" in t for t in texts(empty))
    with_none = plotting.plot_periphery_shares(
        [0.5, None], [0.1, 0.3], uniform_share=0.44
    )  # None: an all-zero map
    assert any("confident failures (n=1)" in t for t in texts(with_none))
    with pytest.raises(ValueError, match="failure_shares"):
        plotting.plot_periphery_shares([1.5], [0.2], uniform_share=0.44)


def test_deletion_curves_report_their_auc():
    fractions = torch.linspace(0, 1, 5, dtype=torch.float64)
    curves = {
        "baseline": DeletionCurve(fractions, 1 - fractions, torch.ones(5, dtype=torch.float64), 0.5, 1.0),
        "augmented": DeletionCurve(fractions, 1 - fractions, torch.ones(5, dtype=torch.float64), 0.123, 0.9),
    }
    fig = plotting.plot_deletion_curves(curves)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "baseline: most attended first (AUC 0.500)" in labels
    assert "baseline: random pixels (AUC 1.000)" in labels
    assert "augmented: most attended first (AUC 0.123)" in labels


# --------------------------------------------------------------------------------------------------
# Image figures
# --------------------------------------------------------------------------------------------------
def test_failure_grid_titles_say_true_predicted_and_confidence(images):
    failures = StandInFailureSet(
        indices=torch.tensor([40, 7, 3]),
        true_labels=torch.tensor([3, 1, 8]),
        predicted=torch.tensor([5, 9, 0]),
        confidence=torch.tensor([0.97, 0.9996, 0.93]),
    )
    fig = plotting.plot_failure_grid(images[:3], failures, CLASSES)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "cat → dog (97%)"
    # never rounded up to a confident-sounding "100%"; long names wrap after the arrow
    assert titles[1] == "automobile →\ntruck (99.9%)"
    assert all(ax.title.get_color() == common.WRONG_COLOR for ax in fig.axes)
    assert "3 most confident of 3 failures with confidence > 90%" in fig.get_suptitle()

    limited = plotting.plot_failure_grid(images[:3], failures, CLASSES, max_images=2)
    assert len(image_axes(limited)) == 2
    with pytest.raises(ValueError, match=r"test_images\[failures.indices\]"):
        plotting.plot_failure_grid(images, failures, CLASSES)


def test_failure_grid_with_no_failures_says_so(images):
    empty = StandInFailureSet(*(torch.zeros(0, dtype=torch.int64) for _ in range(3)), torch.zeros(0))
    fig = plotting.plot_failure_grid(images[:0], empty, CLASSES)
    assert any("no high-confidence failures" in t for t in texts(fig))


def test_gradcam_pairs_rows_and_titles(images, maps):
    true, predicted = torch.tensor([3, 0, 8]), torch.tensor([5, 9, 1])
    fig = plotting.plot_gradcam_pairs(
        images[:3], maps[:3], maps[:3].flip(1), true, predicted, torch.tensor([0.97, 0.95, 0.91]), CLASSES
    )
    assert len(image_axes(fig)) == 9
    assert len(fig.axes) == 10  # plus the colour bar
    titles = [ax.get_title() for ax in fig.axes[:3]]
    assert titles == [
        "cat → dog (97%)",
        "where it looked\nto say 'dog'",
        "where the evidence\nfor 'cat' would be",
    ]
    assert fig.axes[3].get_title() == "airplane → truck (95%)"

    zeros, ones = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    compact = plotting.plot_gradcam_pairs(
        images, maps, maps, zeros, ones, torch.full((6,), 0.95), CLASSES, max_rows=2, per_row=2
    )
    assert len(image_axes(compact)) == 12  # 2 rows x 2 triplets x 3 panels


def test_gradcam_pairs_reject_mismatched_maps(images, maps):
    with pytest.raises(ValueError, match=r"true_maps must have shape \(3, 32, 32\)"):
        plotting.plot_gradcam_pairs(
            images[:3],
            maps[:3],
            maps[:2],
            torch.tensor([0, 1, 2]),
            torch.tensor([1, 2, 3]),
            torch.full((3,), 0.9),
            CLASSES,
        )
    with pytest.raises(ValueError, match="true_labels must lie in"):
        plotting.plot_gradcam_pairs(
            images[:3],
            maps[:3],
            maps[:3],
            torch.tensor([0, 1, 12]),
            torch.tensor([1, 2, 3]),
            torch.full((3,), 0.9),
            CLASSES,
        )


def test_before_after_gradcam_shows_both_verdicts(images, maps):
    fig = plotting.plot_before_after_gradcam(
        images[:2],
        maps[:2],
        maps[:2],
        torch.tensor([3, 5]),
        torch.tensor([5, 3]),
        torch.tensor([0.98, 0.95]),
        torch.tensor([3, 1]),
        torch.tensor([0.7, 0.92]),
        CLASSES,
        row_titles=["fixed", "kept (different)"],
    )
    assert len(image_axes(fig)) == 6
    row0 = fig.axes[:3]
    assert row0[0].get_title() == "fixed: true 'cat'"
    assert row0[1].get_title() == "baseline: 'dog'\n98% ✗"
    assert row0[2].get_title() == "augmented: 'cat'\n70% ✓"
    assert row0[1].title.get_color() == common.WRONG_COLOR
    assert row0[2].title.get_color() == common.CORRECT_COLOR
    assert fig.axes[3].get_title() == "kept (different): true 'dog'"


# --------------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------------
def test_figures_render_to_png_without_pyplot(images):
    fig = plotting.plot_class_samples(images[:2], torch.tensor([0, 1]), ["a", "b"], per_class=1)
    assert isinstance(fig, common.NotebookFigure)
    assert fig._repr_png_().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    ("p", "text"),
    [(0.97, "97%"), (0.9996, "99.9%"), (0.995, "99.5%"), (1.0, "100%"), (0.003, "<1%"), (0.0, "0%")],
)
def test_format_confidence(p, text):
    assert common.format_confidence(p) == text


def test_plot_class_samples_draws_a_row_per_class_with_its_own_images():
    images = torch.zeros((12, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2] * 4)
    images[labels == 1] = 255  # class "b" is white, so its row must be white
    fig = plotting.plot_class_samples(images, labels, ["a", "b", "c"], per_class=3)
    axes = fig.axes
    assert len(axes) == 9
    assert [axes[r * 3].get_ylabel() for r in range(3)] == ["a", "b", "c"]
    row_b = [ax.images[0].get_array() for ax in axes[3:6]]
    assert all(int(np.asarray(a).min()) == 255 for a in row_b)
    assert int(np.asarray(axes[0].images[0].get_array()).max()) == 0
    with pytest.raises(ValueError, match="per_class"):
        plotting.plot_class_samples(images, labels, ["a", "b", "c"], per_class=0)
    # NumPy arrays and any integer dtype of labels are accepted, checked by core.checks all the same
    same = plotting.plot_class_samples(images.numpy(), labels.numpy().astype(np.int32), ["a", "b", "c"], 3)
    assert [ax.get_ylabel() for ax in same.axes[::3]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        plotting.plot_class_samples(images, labels, ["a", "b"])
