"""Figures that explain failures: failure grids, Grad-CAM pairs, baseline-vs-augmented heatmaps, the
attention measures (periphery shares, deletion curves) and the maps' faithfulness (ROAD curves, several
maps of the same images side by side)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cifar_helpers.analysis.faithfulness import RoadTable
from cifar_helpers.analysis.gradcam import DeletionCurve
from cifar_helpers.core.checks import check_classes, check_count, check_fractions

from . import common


def _empty_figure(title: str, message: str) -> Figure:
    fig = common.new_figure(6, 1.6)
    ax = fig.subplots()
    common.message_panel(ax, message, color="black")
    fig.suptitle(title)
    return fig


def _verdict(predicted: int, true: int) -> tuple[str, str]:
    """(mark, colour) for a prediction: a green tick when right, a red cross when wrong."""
    return ("✓", common.CORRECT_COLOR) if predicted == true else ("✗", common.WRONG_COLOR)


def _failure_panel(
    ax: Axes, image: np.ndarray, names: list[str], true: int, predicted: int, confidence: float, width: int
) -> None:
    """The upscaled image, titled and framed in the verdict's colour."""
    _, color = _verdict(predicted, true)
    title = common.failure_title(names[true], names[predicted], confidence, width)
    common.show_image(ax, common.upscale_image(image), title, color)
    common.frame(ax, color)


@common.styled
def plot_failure_grid(images: Any, failures: Any, classes: Sequence[str], max_images: int = 32) -> Figure:
    """The first ``max_images`` failures, eight per row, each titled "true → predicted (confidence)" and
    framed red (green for a right prediction); uint8 (K, 3, H, W) ``images`` in the order of the
    FailureSet ``failures`` (``test_images[failures.indices]``)."""
    names = check_classes("classes", classes)
    columns = common.failure_columns(failures)
    k = len(columns.indices)
    batch = common.image_batch("images", images)
    if len(batch) != k:
        raise ValueError(
            f"images must hold one image per failure ({k}), got {len(batch)}: "
            "pass test_images[failures.indices]"
        )
    max_images = check_count("max_images", max_images)
    true = common.class_labels("failures.true_labels", columns.true_labels, k, len(names))
    predicted = common.class_labels("failures.predicted", columns.predicted, k, len(names))
    if k == 0:
        return _empty_figure("High-confidence failures", "no high-confidence failures: nothing to show")

    n = min(k, max_images)
    ncols = min(8, n)
    nrows = math.ceil(n / ncols)
    fig = common.new_figure(
        ncols * common.PANEL_INCHES * 0.85, nrows * (common.PANEL_INCHES * 0.85 + 0.45) + 0.5
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i < n:
            _failure_panel(ax, batch[i], names, true[i], predicted[i], columns.confidence[i], width=20)
        else:
            ax.set_axis_off()
    above = f" with confidence > {columns.threshold:.0%}" if columns.threshold is not None else ""
    fig.suptitle(f"The {n} most confident of {k} failures{above}: true → predicted (confidence)")
    return fig


def _gradcam_inputs(
    images: Any,
    maps: dict[str, Any],
    labels: dict[str, Any],
    confidences: dict[str, Any],
    classes: Sequence[str],
) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """The images, every map, label and confidence checked against them (by argument name), the names."""
    names = check_classes("classes", classes)
    batch = common.image_batch("images", images)
    k, _, height, width = batch.shape
    checked = {key: common.heatmaps(key, value, (k, height, width)) for key, value in maps.items()}
    checked |= {key: common.class_labels(key, value, k, len(names)) for key, value in labels.items()}
    checked |= {key: check_fractions(key, value, k) for key, value in confidences.items()}
    return batch, checked, names


def _triplet_figure(n: int, per_row: int) -> tuple[Figure, list[list[Axes]]]:
    """A figure of ``n`` (image, map, map) triplets of axes, ``per_row`` per row, a gap between them."""
    rows = math.ceil(n / per_row)
    fig = common.new_figure(
        per_row * (3 * common.PANEL_INCHES + 0.3), rows * (common.PANEL_INCHES + 0.55) + 1.0
    )
    ratios = ([1, 1, 1, 0.15] * per_row)[:-1]
    grid = fig.add_gridspec(rows, len(ratios), width_ratios=ratios)
    return fig, [
        [fig.add_subplot(grid[i // per_row, i % per_row * 4 + c]) for c in range(3)] for i in range(n)
    ]


@common.styled
def plot_gradcam_pairs(
    images: Any,
    predicted_maps: Any,
    true_maps: Any,
    true_labels: Any,
    predicted_labels: Any,
    confidences: Any,
    classes: Sequence[str],
    max_rows: int = 8,
    *,
    per_row: int = 1,
    title: str | None = None,
) -> Figure:
    """Per failure: the uint8 (K, 3, H, W) image | Grad-CAM (float (K, H, W) in [0, 1]) for the predicted
    class | for the true class, titled with int (K,) labels and float (K,) confidences; ``per_row``
    triplets per row (2: a compact overview), at most ``max_rows`` rows, and a colour bar."""
    batch, checked, names = _gradcam_inputs(
        images,
        {"predicted_maps": predicted_maps, "true_maps": true_maps},
        {"true_labels": true_labels, "predicted_labels": predicted_labels},
        {"confidences": confidences},
        classes,
    )
    max_rows = check_count("max_rows", max_rows)
    per_row = check_count("per_row", per_row)
    if len(batch) == 0:
        return _empty_figure("Grad-CAM of failures", "no failures to explain")
    n = min(len(batch), max_rows * per_row)
    fig, triplets = _triplet_figure(n, per_row)
    true, predicted = checked["true_labels"], checked["predicted_labels"]
    for i, (ax_image, ax_pred, ax_true) in enumerate(triplets):
        _failure_panel(ax_image, batch[i], names, true[i], predicted[i], checked["confidences"][i], width=22)
        predicted_map = common.overlay_heatmap(batch[i], checked["predicted_maps"][i])
        common.show_image(ax_pred, predicted_map, f"where it looked\nto say '{names[predicted[i]]}'")
        true_map = common.overlay_heatmap(batch[i], checked["true_maps"][i])
        common.show_image(ax_true, true_map, f"where the evidence\nfor '{names[true[i]]}' would be")
    common.add_heatmap_colorbar(fig, fig.axes)
    fig.suptitle(
        title or f"Grad-CAM of {n} confident failures: evidence for the wrong class vs the right one"
    )
    return fig


@common.styled
def plot_before_after_gradcam(
    images: Any,
    baseline_maps: Any,
    augmented_maps: Any,
    true_labels: Any,
    baseline_predicted: Any,
    baseline_confidence: Any,
    augmented_predicted: Any,
    augmented_confidence: Any,
    classes: Sequence[str],
    *,
    row_titles: Sequence[str] | None = None,
    max_rows: int = 8,
) -> Figure:
    """The same uint8 (K, 3, H, W) images through both models: image (titled with ``row_titles``, e.g.
    "fixed") | baseline Grad-CAM | augmented Grad-CAM (float (K, H, W) in [0, 1]), each map titled with
    that model's int (K,) prediction and float (K,) confidence, green ✓ when right, red ✗ when wrong."""
    batch, checked, names = _gradcam_inputs(
        images,
        {"baseline_maps": baseline_maps, "augmented_maps": augmented_maps},
        {
            "true_labels": true_labels,
            "baseline_predicted": baseline_predicted,
            "augmented_predicted": augmented_predicted,
        },
        {"baseline_confidence": baseline_confidence, "augmented_confidence": augmented_confidence},
        classes,
    )
    max_rows = check_count("max_rows", max_rows)
    if row_titles is not None and len(row_titles) != len(batch):
        raise ValueError(f"row_titles must have one entry per image ({len(batch)}), got {len(row_titles)}")
    if len(batch) == 0:
        return _empty_figure("Baseline vs augmented Grad-CAM", "no images to compare")
    n = min(len(batch), max_rows)
    fig, triplets = _triplet_figure(n, 1)
    true = checked["true_labels"]
    for i, (ax_image, *ax_models) in enumerate(triplets):
        prefix = f"{row_titles[i]}: " if row_titles is not None else ""
        common.show_image(ax_image, common.upscale_image(batch[i]), f"{prefix}true '{names[true[i]]}'")
        for ax, model in zip(ax_models, ("baseline", "augmented"), strict=True):
            predicted = checked[f"{model}_predicted"][i]
            mark, color = _verdict(predicted, true[i])
            confidence = common.format_confidence(checked[f"{model}_confidence"][i])
            title = f"{model}: '{names[predicted]}'\n{confidence} {mark}"
            common.show_image(ax, common.overlay_heatmap(batch[i], checked[f"{model}_maps"][i]), title, color)
            common.frame(ax, color, width=2.0)
    common.add_heatmap_colorbar(fig, fig.axes)
    fig.suptitle("Same image, two models: where baseline and augmented looked for their answer")
    return fig


@common.styled
def plot_periphery_shares(failure_shares: Any, control_shares: Any, *, uniform_share: float) -> Figure:
    """Densities of the share of Grad-CAM mass on the image border, float (K,) ``failure_shares`` against
    (M,) ``control_shares`` of correct predictions, medians dashed, and the border's area fraction
    ``uniform_share`` (what a uniform map gives) dotted."""
    # None marks an all-zero map (no share defined): left out, as in the measures.
    groups = {
        "confident failures": check_fractions("failure_shares", [v for v in failure_shares if v is not None]),
        "correct predictions": check_fractions(
            "control_shares", [v for v in control_shares if v is not None]
        ),
    }
    if any(len(values) == 0 for values in groups.values()):
        return _empty_figure(
            "Where the heatmaps sit", "no non-empty heatmaps in one of the groups: nothing to compare"
        )

    fig = common.new_figure(7.5, 4.0)
    ax = fig.subplots()
    bins, axis_x = np.linspace(0.0, 1.0, 26), ax.get_xaxis_transform()
    for (name, values), color in zip(groups.items(), (common.WRONG_COLOR, common.CORRECT_COLOR), strict=True):
        median = float(np.median(values))
        # Densities, so a group of 50 failures and one of 5,000 controls share an axis.
        ax.hist(values, bins=bins, density=True, color=color, alpha=0.35, label=f"{name} (n={len(values)})")
        ax.hist(values, bins=bins, density=True, color=color, histtype="step", lw=1.5)
        ax.axvline(median, color=color, ls="--", lw=1.8)
        ax.text(median, 0.98, f" median {median:.2f}", color=color, transform=axis_x, va="top", fontsize=8)
    label = f"uniform heatmap ({uniform_share:.2f})"
    ax.axvline(uniform_share, color=common.NEUTRAL_COLOR, ls=":", lw=1.5, label=label)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of Grad-CAM mass on the image border")
    ax.set_ylabel("density")
    ax.legend(loc="upper right")
    ax.set_title("Does the model look at the background when it is confidently wrong?")
    return fig


_CURVE_STYLES = (
    ("attended", "most attended first", {"ls": "-", "lw": 2, "marker": "o", "ms": 3}),
    ("random", "random pixels", {"ls": "--", "lw": 1.6}),
)


@common.styled
def plot_deletion_curves(curves: Mapping[str, DeletionCurve | None]) -> Figure:
    """The confidence in the original prediction as the most-attended pixels are deleted (solid) against
    random ones (dashed), AUC in the legend. ``curves``: ``{model name: curve}``, each as
    :func:`cifar_helpers.analysis.gradcam.deletion_curve` returns it, None for a model without failures."""
    if not curves:
        raise ValueError("curves is empty: pass {model name: deletion curve}")
    # A model without failures has no curve (None): say so rather than draw an empty axis.
    drawn = {name: curve for name, curve in curves.items() if curve is not None}
    if not drawn:
        return _empty_figure("Deletion test", "no failures to test: no deletion curve")
    fig = common.new_figure(7.0, 4.2)
    ax = fig.subplots()
    for i, (name, curve) in enumerate(drawn.items()):
        color = common.model_color(i)
        x = 100 * curve.fractions.numpy()
        for key, what, style in _CURVE_STYLES:
            label = f"{name}: {what} (AUC {getattr(curve, f'{key}_auc'):.3f})"
            ax.plot(x, getattr(curve, key).numpy(), color=color, label=label, **style)
        ax.fill_between(x, curve.attended.numpy(), curve.random.numpy(), color=color, alpha=0.08)
    ax.set_xlabel("pixels deleted (%)")
    ax.set_ylabel("confidence in the original prediction")
    ax.legend(loc="upper right")
    ax.set_title("Deleting the pixels Grad-CAM highlights should hurt more than deleting random ones")
    return fig


_ORDERS = (
    ("most_relevant_first", "most relevant removed first\n(faithful: falls fast)"),
    ("least_relevant_first", "least relevant removed first\n(faithful: stays flat)"),
)


@common.styled
def plot_road_curves(table: RoadTable) -> Figure:
    """ROAD curves of a :func:`cifar_helpers.analysis.faithfulness.road_table` result: the change in
    probability as pixels are removed, most and least relevant first, for every row; a row
    named ``random`` is grey and dashed, the floor a faithful map should clear."""
    fig = common.new_figure(10.0, 4.0)
    axes = fig.subplots(1, 2, sharey=True)
    x = [100 * f for f in table.fractions]
    if table.num_images == 0:
        for ax in axes:
            common.message_panel(ax, "no images to score")
        fig.suptitle("ROAD")
        return fig
    for ax, (order, label) in zip(axes, _ORDERS, strict=True):
        # Seven maps and more: the model colours, then tab10's greens and red, so no two curves match.
        colors = iter((*common.MODEL_COLORS, "#2ca02c", "#bcbd22", "#d62728") * 3)
        for name, row in table.rows.items():
            style, color = ("--", common.NEUTRAL_COLOR) if name == "random" else ("-", next(colors))
            legend = f"{name} (combined {row.combined:+.2f})"
            ax.plot(x, getattr(row, order), style, color=color, marker="o", ms=3, lw=1.6, label=legend)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_title(label)
        ax.set_xlabel("pixels removed and imputed (%)")
    axes[0].set_ylabel("change in the explained class's probability")
    axes[1].legend(loc="lower left", fontsize="small")
    fig.suptitle(f"ROAD on {table.num_images} images (higher combined = more faithful)")
    return fig


@common.styled
def plot_map_columns(
    images: Any,
    maps: Mapping[str, Any],
    *,
    row_titles: Sequence[str] | None = None,
    max_rows: int = 6,
    title: str | None = None,
) -> Figure:
    """The first ``max_rows`` uint8 (K, 3, H, W) images, one per row, titled ``row_titles``, under each map
    of ``{column title: float (K, H, W) in [0, 1]}``, one per column."""
    batch = common.image_batch("images", images)
    if not maps:
        raise ValueError("maps is empty: pass {column title: maps (K, H, W)}")
    columns = {
        name: common.heatmaps(f"maps[{name!r}]", m, batch.shape[:1] + batch.shape[2:])
        for name, m in maps.items()
    }
    if row_titles is not None and len(row_titles) != len(batch):
        raise ValueError(f"row_titles must have one title per image ({len(batch)}), got {len(row_titles)}")
    # Each map over its own [min, max]: explainers scale differently and ROAD uses only the ranking.
    for name, column in columns.items():
        low = column.min(axis=(1, 2), keepdims=True)
        columns[name] = (column - low) / np.maximum(column.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    n = min(len(batch), max_rows)
    fig = common.new_figure(
        (len(columns) + 1) * common.PANEL_INCHES, max(n, 1) * (common.PANEL_INCHES + 0.35) + 0.8
    )
    if n == 0:
        common.message_panel(fig.subplots(), "no images")
        return fig
    axes = fig.subplots(n, len(columns) + 1, squeeze=False)
    for i in range(n):
        common.show_image(
            axes[i][0], common.upscale_image(batch[i]), None if row_titles is None else row_titles[i]
        )
        for j, (name, column) in enumerate(columns.items(), start=1):
            common.show_image(
                axes[i][j], common.overlay_heatmap(batch[i], column[i]), name if i == 0 else None
            )
    common.add_heatmap_colorbar(fig, fig.axes, label="blue = no attribution, red = strongest")
    if title:
        fig.suptitle(title)
    return fig
