"""Figures of the stress stage: corruption curves, a severity grid, reliability diagrams, the Grad-CAM
randomisation test and the background positive control, from the results of
:mod:`cifar_helpers.analysis` ``calibration``, ``stress``, ``sanity`` and ``positive_control``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cifar_helpers.analysis.calibration import Calibration, ReliabilityBins
from cifar_helpers.analysis.positive_control import ControlExamples, PositiveControl
from cifar_helpers.analysis.sanity import RandomisationSummary
from cifar_helpers.analysis.stress import (
    CORRUPTION_PARAMETERS,
    CORRUPTIONS,
    StressResult,
    corrupt,
    corruption_seed,
)

from . import common


def _summary_and_panels(
    fig: Figure, rows: int, cols: int, height_ratios: tuple[float, float]
) -> tuple[Axes, list[list[Axes]]]:
    """A summary axes across the top of ``fig`` and, below it, ``rows`` x ``cols`` heatmap panels with
    their colour bar, heights as ``height_ratios`` (summary, one row); no panels when ``rows`` is 0."""
    if not rows:
        return fig.subplots(), []
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=(height_ratios[0], *[height_ratios[1]] * rows))
    summary = fig.add_subplot(grid[0, :])
    panels = [[fig.add_subplot(grid[1 + row, col]) for col in range(cols)] for row in range(rows)]
    common.add_heatmap_colorbar(fig, fig.axes[1:])
    return summary, panels


@common.styled
def plot_corruption_curves(result: StressResult) -> Figure:
    """Accuracy against severity (0 = clean, also dashed), a panel per corruption, a line per model, from
    :func:`analysis.stress.run_stress_test`'s ``result``."""
    names, severities = result.setup.corruption_names, result.setup.severities
    if not names:
        raise ValueError("result holds no corruption: run run_stress_test with at least one corruption")
    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = common.new_figure(3.2 * cols, 2.6 * rows + 0.6)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax, corruption in zip(axes, names, strict=False):
        for i, (model, stressed) in enumerate(result.models.items()):
            clean, accuracy = stressed.clean_accuracy, stressed.corruptions[corruption].accuracy
            color = common.model_color(i)
            ax.plot([0, *severities], [clean, *accuracy], "o-", color=color, lw=1.8, ms=4, label=model)
            ax.axhline(clean, color=color, ls="--", lw=1.0, alpha=0.7)
        ax.set_title(corruption.replace("_", " "))
        ax.set_xticks(range(0, 6))
        ax.set_xlabel("severity (0 = clean)")
        ax.set_ylim(0, 1.02)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    for ax in axes[::cols]:
        ax.set_ylabel("accuracy")
    summary = ", ".join(
        f"{model}: clean {r.clean_accuracy:.1%}, corrupted {r.mean_corruption_accuracy:.1%}"
        for model, r in result.models.items()
    )
    axes[0].legend(loc="lower left")
    fig.suptitle(f"Accuracy under corruption ({summary})")
    return fig


@common.styled
def plot_severity_grid(image: Any, seed: int = 0) -> Figure:
    """One uint8 (3, H, W) image under every corruption of :data:`cifar_helpers.analysis.stress.CORRUPTIONS`
    (rows) at severity 0..5 (columns), the noise drawn with ``seed``."""
    batch = torch.from_numpy(np.ascontiguousarray(common.single_image("image", image)))[None]
    fig = common.new_figure(1.45 * 6 + 0.8, 1.45 * len(CORRUPTIONS) + 0.6)
    axes = fig.subplots(len(CORRUPTIONS), 6, squeeze=False)
    for row, name in enumerate(CORRUPTIONS):
        for severity in range(6):
            out = corrupt(batch, name, severity, corruption_seed(seed, name, max(severity, 1)))[0]
            ax = axes[row, severity]
            label = "clean" if severity == 0 else f"{severity}: {CORRUPTION_PARAMETERS[name][severity - 1]:g}"
            common.show_image(ax, out.permute(1, 2, 0).numpy(), title=label)
        axes[row, 0].set_ylabel(name.replace("_", " "), fontsize=9)
    fig.suptitle("Corruptions at severity 0 (clean) to 5, with each severity's parameter")
    return fig


def _bins(reliability: ReliabilityBins) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges, counts, accuracy and confidence as float64 arrays (NumPy reads an empty bin's None as NaN)."""
    fields = (reliability.edges, reliability.counts, reliability.accuracy, reliability.confidence)
    edges, counts, accuracy, confidence = (np.asarray(values, dtype=np.float64) for values in fields)
    return edges, counts, accuracy, confidence


@common.styled
def plot_reliability_diagram(calibration: Calibration) -> Figure:
    """Reliability diagrams of :func:`analysis.calibration.calibrate_models`' result, a column per model:
    accuracy per confidence bin before (bars) and after (line) temperature scaling against the
    diagonal, and below, the share of predictions per bin."""
    if not isinstance(calibration, Calibration) or not calibration.models:
        raise TypeError(
            "calibration must be calibrate_models' result with at least one model (not skipped), got "
            f"{calibration!r:.80}"
        )
    models = calibration.models
    fig = common.new_figure(3.6 * len(models), 5.4)
    axes = fig.subplots(2, len(models), squeeze=False, height_ratios=(2.2, 1.0), sharex=True)
    for col, (model, report) in enumerate(models.items()):
        before, after = _bins(report.before.reliability), _bins(report.after.reliability)
        edges = before[0]
        centres, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
        top, bottom, color = axes[0, col], axes[1, col], common.model_color(col)
        top.plot([0, 1], [0, 1], color=common.NEUTRAL_COLOR, ls="--", lw=1, label="perfect calibration")
        label = f"before (ECE {report.before.ece:.3f})"
        top.bar(
            centres, np.nan_to_num(before[2]), width=widths, color=color, alpha=0.45, ec="white", label=label
        )
        label = f"after T = {report.temperature:.2f} (ECE {report.after.ece:.3f})"
        top.plot(after[3], after[2], "o-", color=common.WRONG_COLOR, ms=3.5, lw=1.5, label=label)
        top.set_xlim(0, 1)
        top.set_ylim(0, 1)
        top.set_ylabel("accuracy in bin")
        top.set_title(model)
        top.legend(loc="upper left")
        for side, counts, tint, label in (
            (-1, before[1], color, "before"),
            (1, after[1], common.WRONG_COLOR, "after"),
        ):
            share = counts / max(counts.sum(), 1.0)
            bottom.bar(
                centres + side * widths / 4, share, width=widths / 2, color=tint, alpha=0.6, label=label
            )
        bottom.set_xlabel("confidence (maximum softmax probability)")
        bottom.set_ylabel("share of predictions")
        bottom.legend(loc="upper left")
    fig.suptitle("Reliability before and after temperature scaling (fitted on the hold-out split)")
    return fig


@common.styled
def plot_randomisation_test(
    result: RandomisationSummary,
    maps: Any = None,
    images: Any = None,
    num_examples: int = 4,
) -> Figure:
    """The cascading randomisation test (``sanity.json``): correlation per step; with float (S, N, H, W)
    ``maps`` of the S steps and their uint8 (N, 3, H, W) ``images``, the maps of ``num_examples`` images."""
    if not isinstance(result, RandomisationSummary):
        raise TypeError(
            "result must be a RandomisationSummary (summarise_randomisation's result, or "
            f"RandomisationSummary.from_dict of sanity.json), got {type(result).__name__}"
        )
    steps = list(result.steps)
    means = np.asarray(result.spearman_mean, dtype=np.float64)
    stds = np.asarray(result.spearman_std, dtype=np.float64)
    n_show = 0
    if maps is not None:
        if images is None:
            raise ValueError("images are needed with maps (the images the maps explain)")
        image_array = common.image_batch("images", images)
        n, _, height, width = image_array.shape
        map_array = common.heatmaps("maps", maps, (len(steps), n, height, width))
        n_show = min(int(num_examples), n)
    fig = common.new_figure(max(7.0, 1.35 * len(steps) + 1.0), 3.2 + 1.45 * n_show)
    ax, panels = _summary_and_panels(fig, n_show, len(steps), (2.2, 1.0))
    x, color = np.arange(len(steps)), common.model_color(0)
    ax.fill_between(x, means - stds, means + stds, color=color, alpha=0.2, label="± 1 std over images")
    ax.plot(x, means, "o-", color=color, lw=2, label="mean Spearman correlation with the trained maps")
    ax.axhline(0, color=common.NEUTRAL_COLOR, lw=1)
    ax.set_xticks(x, [s if i == 0 else f"+ {s}" for i, s in enumerate(steps)])
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("layers re-initialised, cumulatively from the top")
    ax.set_ylabel("rank correlation")
    ax.legend(loc="upper right")
    for row, row_panels in enumerate(panels):
        for col, panel in enumerate(row_panels):
            common.show_image(panel, common.overlay_heatmap(image_array[row], map_array[col, row], scale=3))
            if row == 0:
                panel.set_title(steps[col], fontsize=8)
    fig.suptitle("Grad-CAM sanity check: maps must change when the learned weights are destroyed")
    return fig


@common.styled
def plot_positive_control(
    result: PositiveControl, examples: ControlExamples | None = None, num_examples: int = 6
) -> Figure:
    """Where Grad-CAM looks for the background-tied and the untied model's confident failures
    (``positive_control.json``); with the :class:`~cifar_helpers.analysis.positive_control.ControlExamples`
    of :func:`cifar_helpers.analysis.positive_control.load_positive_control_examples`, ``num_examples``
    failures per model, map overlaid and object outlined in white."""
    if not isinstance(result, PositiveControl):
        raise TypeError(
            "result must be a PositiveControl (background_positive_control's result, or "
            f"PositiveControl.from_dict of positive_control.json), got {type(result).__name__}"
        )
    rows_of_examples = list(examples.models.items()) if examples is not None else []
    n_cols = max(3, num_examples)
    fig = common.new_figure(1.6 * n_cols + 0.6, 3.3 + 1.9 * len(rows_of_examples))
    ax, panels = _summary_and_panels(fig, len(rows_of_examples), n_cols, (2.0, 1.2))

    measures = (
        ("mask_share", "mask share\n(failures)"),
        ("mask_share_all", "mask share\n(all test images)"),
        ("pointing_game", "pointing game\n(failures)"),
        ("pointing_game_all", "pointing game\n(all test images)"),
    )
    x = np.arange(len(measures))
    colours = (common.WRONG_COLOR, common.CORRECT_COLOR)
    for i, ((model, entry), colour) in enumerate(zip(result.models.items(), colours, strict=True)):
        values = [float(getattr(entry, key)) for key, _ in measures]
        label = f"{model} backgrounds: accuracy {entry.test_accuracy:.0%}, {entry.num_failures} failures"
        bars = ax.bar(
            x + (i - 0.5) * 0.38, np.nan_to_num(values), width=0.36, color=colour, alpha=0.8, label=label
        )
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
    area = result.object_area_fraction
    label = f"object area ({area:.2f}): uniform map"
    ax.axhline(area, color=common.NEUTRAL_COLOR, ls="--", lw=1.2, label=label)
    ax.set_xticks(x, [label for _, label in measures])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("share / hit rate")
    ax.legend(loc="upper left")
    ax.set_title(
        f"confidence > {result.threshold:g}; mask-share gap (untied - tied) {result.mask_share_gap:+.3f}"
    )

    scale = 3
    for (model, entry), row_panels in zip(rows_of_examples, panels, strict=True):
        images = common.image_batch(f"examples.{model}.images", entry.images)
        k = min(len(images), num_examples)
        maps = common.heatmaps(f"examples.{model}.maps", entry.maps, (len(images), *images.shape[2:]))
        masks = common.to_numpy(entry.masks, f"examples.{model}.masks").astype(bool)
        true, predicted, confidence = (
            common.to_numpy(getattr(entry, key), key) for key in ("true_labels", "predicted", "confidence")
        )
        for col, panel in enumerate(row_panels):
            if col >= k:
                common.message_panel(panel, "no more failures" if col == k else "")
                continue
            common.show_image(panel, common.overlay_heatmap(images[col], maps[col], scale=scale))
            # The object's outline, so "on the object or not" can be judged at a glance.
            outline = np.kron(masks[col].astype(np.float32), np.ones((scale, scale), dtype=np.float32))
            panel.contour(outline, levels=[0.5], colors="white", linewidths=1.0)
            title = common.failure_title(
                examples.classes[true[col]], examples.classes[predicted[col]], float(confidence[col])
            )
            panel.set_title(title, fontsize=7)
            if col == 0:
                panel.set_ylabel(f"{model}", fontsize=9)
    fig.suptitle("Positive control: a model that learned the background looks at the background")
    return fig
