"""Figures of numbers: training curves, confusion matrix, per-class accuracy, confidence histogram,
most confused pairs and the baseline -> augmented failure comparison."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from cifar_helpers.analysis.failures import ConfidenceHistogram, ConfusedPair
from cifar_helpers.core.checks import check_classes, check_count, check_fraction, check_fractions

from .common import (
    CORRECT_COLOR,
    NEUTRAL_COLOR,
    WRONG_COLOR,
    model_color,
    new_figure,
    styled,
    to_numpy,
)

_HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")
# One style per curve, for the curves and for their legend entries alike.
_TRAIN_STYLE: dict[str, Any] = {"ls": "--", "lw": 1.6}
_TEST_STYLE: dict[str, Any] = {"ls": "-", "lw": 2.0, "marker": "o", "ms": 3}


def _history_columns(name: str, history: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    if isinstance(history, Mapping) or not isinstance(history, Sequence) or len(history) == 0:
        raise ValueError(f"history of {name!r} must be a non-empty list of per-epoch dicts")
    for i, row in enumerate(history):
        missing = [key for key in _HISTORY_KEYS if key not in row]
        if missing:
            raise ValueError(f"history of {name!r}, entry {i}: missing key(s) {', '.join(missing)}")
    columns = {key: np.array([float(row[key]) for row in history]) for key in _HISTORY_KEYS}
    for key in ("train_acc", "test_acc"):
        check_fractions(f"history of {name!r}: {key}", columns[key])
    return columns


@styled
def plot_training_curves(
    histories: Mapping[str, Sequence[Mapping[str, Any]]],
    final_train_accuracy: Mapping[str, float] | None = None,
) -> Figure:
    """Accuracy and loss per epoch of ``{model name: history}`` (per-epoch dicts, as ``train_model``
    records them), train (dashed) against test (solid), one colour per model, and each model's final
    train - test gap as a bar at its last epoch, in points in the legend. The gap uses
    ``final_train_accuracy`` (``metrics.json``'s ``train_accuracy``, drawn as a diamond) where given,
    else the last epoch's running train accuracy."""
    if not histories:
        raise ValueError("histories is empty: pass {model name: history}")
    columns = {name: _history_columns(name, history) for name, history in histories.items()}
    evaluated = {}
    for name, value in (final_train_accuracy or {}).items():
        if name not in columns:
            raise ValueError(f"final_train_accuracy names {name!r}, which has no history")
        evaluated[name] = 100 * check_fraction(f"final_train_accuracy[{name!r}]", value)

    fig = new_figure(11, 4.2)
    ax_acc, ax_loss = fig.subplots(1, 2)
    # Gap bars of models that end on the same epoch are shifted apart so that they do not hide each other.
    epochs = np.concatenate([cols["epoch"] for cols in columns.values()])
    shift = 0.02 * max(np.ptp(epochs), 1.0)
    handles = []
    for i, (name, cols) in enumerate(columns.items()):
        color, last = model_color(i), cols["epoch"][-1] + shift * i
        for ax, key, factor in ((ax_acc, "acc", 100), (ax_loss, "loss", 1)):
            ax.plot(cols["epoch"], factor * cols[f"train_{key}"], color=color, **_TRAIN_STYLE)
            ax.plot(cols["epoch"], factor * cols[f"test_{key}"], color=color, **_TEST_STYLE)
        test_final = 100 * cols["test_acc"][-1]
        if name in evaluated:
            train_final, what = evaluated[name], "gap"
            ax_acc.plot([last], [train_final], "D", color=color, ms=5, mec="black", mew=0.6)
        else:
            train_final, what = 100 * cols["train_acc"][-1], "running train - test"
        ax_acc.vlines(last, test_final, train_final, color=color, lw=4, alpha=0.4)
        handles.append(
            Line2D([], [], color=color, lw=2.5, label=f"{name}: {what} {train_final - test_final:+.1f} pts")
        )
    handles += [
        Line2D([], [], color="black", label="train (running, during the epoch)", **_TRAIN_STYLE),
        Line2D([], [], color="black", label="test", **_TEST_STYLE),
    ]
    if evaluated:
        handles.append(
            Line2D([], [], color="black", ls="", marker="D", ms=5, label="train, evaluated like test")
        )
        fig.supxlabel(
            "gap = accuracy on the training images evaluated like the test set (eval mode, no "
            "augmentation) minus test accuracy, as in metrics.json",
            fontsize=7,
            color="0.35",
        )
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_loss.legend(handles=handles, loc="upper right")
    fig.suptitle("Training curves: how far the training accuracy runs ahead of the test accuracy")
    return fig


@styled
def plot_confusion_matrix(
    cm: Any,
    classes: Sequence[str],
    title: str = "Confusion matrix: off-diagonal (red) cells are the mistakes",
) -> Figure:
    """(C, C) counts ``cm`` (rows: true class, columns: predicted) of the C ``classes``, each cell a percent
    of its row; mistakes get their own colour scale so small confusions are not washed out."""
    names = check_classes("classes", classes)
    counts = to_numpy(cm, "cm").astype(np.float64)
    c = len(names)
    if counts.shape != (c, c):
        raise ValueError(f"cm must have shape ({c}, {c}) to match classes, got {tuple(counts.shape)}")
    if (counts < 0).any() or not np.isfinite(counts).all():
        raise ValueError("cm must hold non-negative counts")
    row_totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(row_totals > 0, counts / row_totals, np.nan)

    size = max(4.5, 0.62 * c + 1.8)
    fig = new_figure(size, size * 0.92)
    ax = fig.subplots()
    diagonal = np.eye(c, dtype=bool)
    off = np.where(diagonal, np.nan, values)
    off_max = np.nanmax(off) if np.isfinite(off).any() and np.nanmax(off) > 0 else 1.0
    ax.imshow(np.where(diagonal, values, np.nan), cmap="Greens", vmin=0, vmax=1.0)
    ax.imshow(off, cmap="Reds", vmin=0, vmax=off_max)
    for t in range(c):
        for p in range(c):
            value = values[t, p]
            level = value if t == p else value / off_max
            text_color = "white" if np.isfinite(level) and level > 0.6 else "black"
            label = f"{value:.0%}\n({int(counts[t, p])})" if counts[t, p] else "·"
            label = label if np.isfinite(value) else "–"
            ax.text(p, t, label, ha="center", va="center", fontsize=7, color=text_color)
    ax.set_xticks(range(c), names, rotation=45, ha="right")
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (each row sums to 100%)")
    ax.grid(False)
    ax.set_title(title, fontsize=10)
    return fig


def _per_class_table(per_class: Mapping[str, Mapping[str, float]], names: list[str]) -> dict[str, np.ndarray]:
    if not per_class:
        raise ValueError("per_class is empty: pass {model name: accuracies}")
    table = {}
    for model, values in per_class.items():
        missing = [c for c in names if c not in values]
        if missing:
            raise ValueError(f"per_class[{model!r}] has no accuracy for class(es) {', '.join(missing)}")
        array = np.array([float(values[c]) for c in names])
        if np.nanmin(array) < 0 or np.nanmax(array) > 1:
            raise ValueError(f"per_class[{model!r}] must be accuracies in [0, 1], not percents")
        table[str(model)] = array
    return table


@styled
def plot_per_class_accuracy(per_class: Mapping[str, Mapping[str, float]], classes: Sequence[str]) -> Figure:
    """Per-class accuracy in [0, 1] as grouped bars, one colour per model: ``per_class`` is ``{model name:
    {class name: accuracy}}`` (``metrics.json``'s ``per_class_accuracy``). With two models, the change
    (second - first, in points) is printed above each class."""
    names = check_classes("classes", classes)
    table = _per_class_table(per_class, names)
    c, m = len(names), len(table)
    fig = new_figure(max(6.0, 0.75 * c + 1.5), 4.0)
    ax = fig.subplots()
    x = np.arange(c)
    width = 0.8 / m
    for i, (model, acc) in enumerate(table.items()):
        offset = (i - (m - 1) / 2) * width
        ax.bar(
            x + offset, 100 * acc, width, color=model_color(i), label=f"{model} (mean {np.nanmean(acc):.1%})"
        )
    if m == 2:
        first, second = table.values()
        for xi, delta, top in zip(x, 100 * (second - first), 100 * np.fmax(first, second), strict=True):
            color = CORRECT_COLOR if delta > 0 else WRONG_COLOR if delta < 0 else NEUTRAL_COLOR
            if np.isfinite(delta):
                ax.text(xi, top + 1.5, f"{delta:+.1f}", ha="center", fontsize=7, color=color)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    # Headroom above 100% keeps the legend off the bars.
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(loc="upper center", ncols=min(m, 3))
    ax.set_title(
        "Test accuracy per class: which classes lag behind"
        + (" (numbers: change in points)" if m == 2 else "")
    )
    return fig


@styled
def plot_confidence_histogram(hist: ConfidenceHistogram, threshold: float) -> Figure:
    """How confident the model is when right and when wrong, on a log count axis, with the ``threshold``
    of high confidence drawn as a line; ``hist`` from :func:`analysis.failures.confidence_histogram`."""
    edges, correct, wrong = (
        np.asarray(values, dtype=np.float64) for values in (hist.edges, hist.correct, hist.wrong)
    )
    threshold = check_fraction("threshold", threshold)

    fig = new_figure(7.5, 4.0)
    ax = fig.subplots()
    # Side by side within each bin: overlaid bars would hide whichever group is smaller.
    half = np.diff(edges) / 2
    ax.bar(edges[:-1], correct, half, align="edge", color=CORRECT_COLOR, alpha=0.8, label="correct", log=True)
    ax.bar(
        edges[:-1] + half, wrong, half, align="edge", color=WRONG_COLOR, alpha=0.9, label="wrong", log=True
    )
    ax.axvline(threshold, color="black", ls="--", lw=1.2)
    confident_wrong = int(wrong[edges[:-1] >= threshold - 1e-9].sum())
    ax.axvspan(threshold, edges[-1], color=WRONG_COLOR, alpha=0.06)
    note = f" threshold {threshold:.2f}\n {confident_wrong} of {int(wrong.sum())} wrong predictions\n"
    note += " in bins at or above it"
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85}
    ha, on_x = "right" if threshold > 0.6 else "left", ax.get_xaxis_transform()
    ax.text(threshold, 0.97, note, transform=on_x, va="top", ha=ha, fontsize=8, bbox=box)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("confidence (maximum softmax probability)")
    ax.set_ylabel("images (log scale)")
    ax.legend(loc="upper left")
    ax.set_title(
        "Confidence of right and wrong predictions: red bars right of the line are confident failures"
    )
    return fig


@styled
def plot_confused_pairs(pairs: Sequence[ConfusedPair]) -> Figure:
    """The (true → predicted) ``pairs`` (the ``most_confused_pairs`` of
    :func:`cifar_helpers.analysis.failures.failure_summary`) as bars, the most frequent on top."""
    rows = sorted(((f"{p.true} → {p.predicted}", p.count) for p in pairs), key=lambda row: -row[1])

    fig = new_figure(6.5, 0.38 * max(len(rows), 3) + 1.2)
    ax = fig.subplots()
    ax.set_title("Most frequent confident mistakes (true → predicted)")
    if not rows:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no confident mistakes to show", ha="center", va="center", transform=ax.transAxes)
        return fig
    labels, counts = zip(*rows, strict=True)
    y = np.arange(len(rows))[::-1]
    ax.barh(y, counts, color=WRONG_COLOR, alpha=0.85)
    for yi, count in zip(y, counts, strict=True):
        ax.text(count, yi, f" {count}", va="center", fontsize=8)
    ax.set_yticks(y, labels)
    ax.set_xlabel("number of high-confidence failures")
    ax.grid(axis="y", visible=False)
    ax.margins(x=0.12)
    return fig


_COMPARISON_GROUPS = (
    ("fixed", "fixed\n(right now)", CORRECT_COLOR),
    ("kept_same", "kept\n(same mistake)", "#fdae61"),
    ("kept_different", "kept\n(other wrong class)", "#f46d43"),
    ("new", "new\n(augmented only)", WRONG_COLOR),
)


@styled
def plot_failure_comparison(
    counts: Mapping[str, int],
    baseline_accuracy: float,
    augmented_accuracy: float,
    baseline_gap: float | None = None,
    augmented_gap: float | None = None,
) -> Figure:
    """What retraining with augmentation did to the baseline's confident failures: the four groups of
    ``counts`` (:meth:`cifar_helpers.analysis.failures.FailureComparison.counts`), test accuracies in [0, 1]
    and train - test gaps in [-1, 1] (None: unknown), one axes each."""
    missing = [key for key, _, _ in _COMPARISON_GROUPS if key not in counts]
    if missing:
        raise ValueError(f"counts is missing key(s) {', '.join(missing)}")
    values = [check_count(f"counts[{key!r}]", counts[key], low=0) for key, _, _ in _COMPARISON_GROUPS]
    accuracies = [
        check_fraction("baseline_accuracy", baseline_accuracy),
        check_fraction("augmented_accuracy", augmented_accuracy),
    ]
    gaps = [
        None if gap is None else check_fraction(name, gap, low=-1.0)
        for gap, name in ((baseline_gap, "baseline_gap"), (augmented_gap, "augmented_gap"))
    ]

    fig = new_figure(11, 4.0)
    ax_groups, ax_acc, ax_gap = fig.subplots(1, 3, width_ratios=[2.4, 1, 1])
    x = np.arange(len(values))
    ax_groups.bar(x, values, color=[color for _, _, color in _COMPARISON_GROUPS])
    for xi, n in zip(x, values, strict=True):
        ax_groups.text(xi, n, f"{n}", ha="center", va="bottom", fontsize=9, fontweight="bold")
    ax_groups.set_xticks(x, [label for _, label, _ in _COMPARISON_GROUPS])
    ax_groups.set_ylabel("high-confidence failures")
    ax_groups.margins(y=0.15)
    net = values[3] - values[0]
    before, after = sum(values[:3]), sum(values[1:])
    ax_groups.set_title(f"Failures: {before} → {after} (net {net:+d})")

    models, colors = ("baseline", "augmented"), [model_color(0), model_color(1)]
    ax_acc.bar([0, 1], [100 * a for a in accuracies], color=colors)
    for xi, a in enumerate(accuracies):
        ax_acc.text(xi, 100 * a, f"{a:.1%}", ha="center", va="bottom", fontsize=9)
    ax_acc.set_xticks([0, 1], models)
    ax_acc.set_ylim(0, 110)
    ax_acc.set_title("Test accuracy (%)")

    for xi, gap in enumerate(gaps):
        if gap is None:
            ax_gap.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=9, color=NEUTRAL_COLOR)
        else:
            ax_gap.bar(xi, 100 * gap, color=colors[xi])
            va = "bottom" if gap >= 0 else "top"
            ax_gap.text(xi, 100 * gap, f"{100 * gap:+.1f}", ha="center", va=va, fontsize=9)
    ax_gap.axhline(0, color="black", lw=0.8)
    ax_gap.set_xticks([0, 1], models)
    ax_gap.set_xlim(-0.6, 1.6)
    ax_gap.margins(y=0.2)
    ax_gap.set_title("Train - test gap (pts):\nsmaller = less overfitting")
    fig.suptitle("What augmentation changed: confident failures fixed, kept and newly created")
    return fig
