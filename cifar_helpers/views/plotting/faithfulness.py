"""Figures of the faithfulness measures: ROAD curves, and several maps of the same images side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .core import (
    MODEL_COLORS,
    NEUTRAL_COLOR,
    PANEL_INCHES,
    add_heatmap_colorbar,
    check_images,
    check_maps,
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
def plot_road_curves(
    table: Mapping[str, Any],
    rows: Sequence[str] | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """ROAD curves of several maps of the same images: the change in probability as pixels are removed.

    Args:
        table: a :func:`cifar_helpers.analysis.faithfulness.road_table` result (``fractions``, ``rows``).
        rows: which rows to draw, in order; None draws all. A row named ``random`` is drawn grey and
            dashed: the floor every faithful map should clear.
        title: figure title.

    Returns:
        A figure with two panels, most-relevant-first and least-relevant-first.
    """
    names = list(table["rows"]) if rows is None else list(rows)
    missing = [name for name in names if name not in table["rows"]]
    if missing:
        raise ValueError(f"rows {missing} are not in the table; it has {', '.join(table['rows'])}")
    fig = new_figure(10.0, 4.0)
    axes = fig.subplots(1, 2, sharey=True)
    x = [100 * f for f in table["fractions"]]
    if table["num_images"] == 0:
        for ax in axes:
            message_panel(ax, "no images to score")
        fig.suptitle(title or "ROAD")
        return fig
    for ax, (order, label) in zip(axes, _ORDERS, strict=True):
        # Seven maps and more: the model colours, then tab10's greens and red, so no two curves match.
        colors = iter((*MODEL_COLORS, "#2ca02c", "#bcbd22", "#d62728") * 3)
        for name in names:
            row = table["rows"][name]
            is_floor = name == "random"
            ax.plot(
                x,
                row[order],
                "--" if is_floor else "-",
                color=NEUTRAL_COLOR if is_floor else next(colors),
                marker="o",
                ms=3,
                lw=1.6,
                label=f"{name} (combined {row['combined']:+.2f})",
            )
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_title(label)
        ax.set_xlabel("pixels removed and imputed (%)")
    axes[0].set_ylabel("change in the explained class's probability")
    axes[1].legend(loc="lower left", fontsize="small")
    fig.suptitle(title or f"ROAD on {table['num_images']} images (higher combined = more faithful)")
    return fig


@styled
def plot_map_columns(
    images: Any,
    maps: Mapping[str, Any],
    *,
    row_titles: Sequence[str] | None = None,
    max_rows: int = 6,
    stretch: bool = True,
    scale: int = 4,
    alpha: float = 0.45,
    title: str | None = None,
) -> Figure:
    """The same images under several maps: one row per image, one column per map.

    Args:
        images: uint8 (K, 3, H, W).
        maps: ``{column title: float (K, H, W) in [0, 1]}``, aligned with the images.
        row_titles: a title per image (its label), drawn over the image column.
        max_rows: at most this many images.
        stretch: draw each map over its own [min, max], so maps scaled differently (Grad-CAM divides by
            the maximum, pytorch-grad-cam min-max scales) are drawn alike; ROAD uses only the ranking.
        scale, alpha: as in :func:`cifar_helpers.views.plotting.overlay_heatmap`.
        title: figure title.
    """
    batch = check_images(images)
    if not maps:
        raise ValueError("maps is empty: pass {column title: maps (K, H, W)}")
    columns = {
        name: check_maps(m, f"maps[{name!r}]", batch.shape[:1] + batch.shape[2:]) for name, m in maps.items()
    }
    if row_titles is not None and len(row_titles) != len(batch):
        raise ValueError(f"row_titles must have one title per image ({len(batch)}), got {len(row_titles)}")
    if stretch:
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
        show_image(axes[i][0], upscale_image(batch[i], scale), None if row_titles is None else row_titles[i])
        for j, (name, column) in enumerate(columns.items(), start=1):
            show_image(
                axes[i][j],
                overlay_heatmap(batch[i], column[i], scale=scale, alpha=alpha),
                name if i == 0 else None,
            )
    add_heatmap_colorbar(
        fig, [ax for row in axes for ax in row], label="blue = no attribution, red = strongest"
    )
    if title:
        fig.suptitle(title)
    return fig
