"""Figures of the human-label analysis: failure categories against their base rates, human votes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cifar_helpers.analysis.human_labels import (
    AGREED,
    CATEGORIES,
    MODEL_ERROR,
    HumanFailureReport,
    NotApplicable,
)

from .common import CORRECT_COLOR, MODEL_COLORS, NEUTRAL_COLOR, WRONG_COLOR, class_bars, new_figure, styled


@styled
def plot_failure_categories(reports: Mapping[str, HumanFailureReport | NotApplicable]) -> Figure:
    """Each category's share among each model's confident failures (``{model: human_failure_report(...)}``,
    all applying) against its share of the test set, on a log scale, annotated with the enrichment."""
    missing = [name for name, r in reports.items() if isinstance(r, NotApplicable)]
    if not reports or missing:
        raise ValueError(f"reports must all apply (human labels present); not for: {', '.join(missing)}")
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    first = next(iter(reports.values()))
    bars = {"test set": list(first.base_shares().values())}
    for name, report in reports.items():
        n = max(report.num_failures, 1)
        bars[f"{name} failures"] = [report.counts[c] / n for c in CATEGORIES]
    x = np.arange(len(CATEGORIES))
    width = 0.8 / len(bars)
    colors = [NEUTRAL_COLOR, *MODEL_COLORS]
    for k, (label, values) in enumerate(bars.items()):
        positions = x + (k - (len(bars) - 1) / 2) * width
        ax.bar(positions, np.maximum(values, 1e-4), width, label=label, color=colors[k % len(colors)])
        if k == 0:
            continue
        report = list(reports.values())[k - 1]
        for xi, c in zip(positions, CATEGORIES, strict=True):
            factor = report.enrichment[c]
            if factor is not None and report.counts[c]:
                ax.text(xi, values[CATEGORIES.index(c)] * 1.15, f"x{factor:.1f}", ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 2)
    ax.set_xticks(x, [f"{c}\n(test set: {AGREED})" if c == MODEL_ERROR else c for c in CATEGORIES])
    ax.set_ylabel("share")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title("Confident failures by category against the test set (x: enrichment)", fontsize=9)
    return fig


def human_votes_panel(
    ax: Axes, shares: np.ndarray, given: int, predicted: int, classes: Sequence[str], title: str
) -> None:
    """The five classes most voted by humans (CIFAR-10H shares, (C,)) as bars: given label green, the
    model's prediction red, beside the model's own top-5 panel of the failure browser."""

    def color_of(c: int, _rank: int) -> str:
        return CORRECT_COLOR if c == given else WRONG_COLOR if c == predicted else NEUTRAL_COLOR

    order = class_bars(ax, shares, classes, color_of, lambda share: f"{100 * share:.0f}%", title)
    if predicted not in order:
        ax.set_xlabel(f"humans for '{classes[predicted]}': {100 * shares[predicted]:.0f}%", color=WRONG_COLOR)
