"""Figures of the faithfulness measures: ROAD curves, and several maps of the same images side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from cifar_helpers.analysis.faithfulness import RoadTable

from .common import (
    MODEL_COLORS,
    NEUTRAL_COLOR,
    PANEL_INCHES,
    add_heatmap_colorbar,
    check_maps,
    image_batch,
    message_panel,
    new_figure,
    overlay_heatmap,
    show_image,
    styled,
    upscale_image,
)

_ORDERS = (
    ("most_relevant_first", "most relevant removed first\n(faithful: falls fast)"),
    ("least_relevant_first", "least relevant removed first\n(faithful: stays flat)"),
)


@styled
def plot_road_curves(table: RoadTable) -> Figure:
    """ROAD curves of a :func:`cifar_helpers.analysis.faithfulness.road_table` result: the change in
    probability as pixels are removed, most and least relevant first, for every row; a row
    named ``random`` is grey and dashed, the floor a faithful map should clear."""
    fig = new_figure(10.0, 4.0)
    axes = fig.subplots(1, 2, sharey=True)
    x = [100 * f for f in table.fractions]
    if table.num_images == 0:
        for ax in axes:
            message_panel(ax, "no images to score")
        fig.suptitle("ROAD")
        return fig
    for ax, (order, label) in zip(axes, _ORDERS, strict=True):
        # Seven maps and more: the model colours, then tab10's greens and red, so no two curves match.
        colors = iter((*MODEL_COLORS, "#2ca02c", "#bcbd22", "#d62728") * 3)
        for name, row in table.rows.items():
            style, color = ("--", NEUTRAL_COLOR) if name == "random" else ("-", next(colors))
            legend = f"{name} (combined {row.combined:+.2f})"
            ax.plot(x, getattr(row, order), style, color=color, marker="o", ms=3, lw=1.6, label=legend)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_title(label)
        ax.set_xlabel("pixels removed and imputed (%)")
    axes[0].set_ylabel("change in the explained class's probability")
    axes[1].legend(loc="lower left", fontsize="small")
    fig.suptitle(f"ROAD on {table.num_images} images (higher combined = more faithful)")
    return fig


@styled
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
    batch = image_batch("images", images)
    if not maps:
        raise ValueError("maps is empty: pass {column title: maps (K, H, W)}")
    columns = {
        name: check_maps(m, f"maps[{name!r}]", batch.shape[:1] + batch.shape[2:]) for name, m in maps.items()
    }
    if row_titles is not None and len(row_titles) != len(batch):
        raise ValueError(f"row_titles must have one title per image ({len(batch)}), got {len(row_titles)}")
    # Each map over its own [min, max]: explainers scale differently and ROAD uses only the ranking.
    for name, column in columns.items():
        low = column.min(axis=(1, 2), keepdims=True)
        columns[name] = (column - low) / np.maximum(column.max(axis=(1, 2), keepdims=True) - low, 1e-12)
    n = min(len(batch), max_rows)
    fig = new_figure((len(columns) + 1) * PANEL_INCHES, max(n, 1) * (PANEL_INCHES + 0.35) + 0.8)
    if n == 0:
        message_panel(fig.subplots(), "no images")
        return fig
    axes = fig.subplots(n, len(columns) + 1, squeeze=False)
    for i in range(n):
        show_image(axes[i][0], upscale_image(batch[i]), None if row_titles is None else row_titles[i])
        for j, (name, column) in enumerate(columns.items(), start=1):
            show_image(axes[i][j], overlay_heatmap(batch[i], column[i]), name if i == 0 else None)
    add_heatmap_colorbar(
        fig, [ax for row in axes for ax in row], label="blue = no attribution, red = strongest"
    )
    if title:
        fig.suptitle(title)
    return fig
