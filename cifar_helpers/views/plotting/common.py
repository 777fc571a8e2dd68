"""Building blocks shared by every figure: style, input checks, heatmap overlays and image grids.

Figures are :class:`NotebookFigure` built without ``pyplot``, so nothing piles up in pyplot's registry
when a widget redraws.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ParamSpec

import cv2
import matplotlib as mpl
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cifar_helpers.core import checks
from cifar_helpers.core.checks import check_classes, check_count

# One palette for the whole project: green always means right, red always wrong.
CORRECT_COLOR = "#1a9850"
WRONG_COLOR = "#d73027"
NEUTRAL_COLOR = "#9e9e9e"
# Per-model colours, in the order models are given (baseline first, augmented second, ...).
MODEL_COLORS = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def model_color(i: int) -> str:
    """The colour of the ``i``-th model, cycling through :data:`MODEL_COLORS`."""
    return MODEL_COLORS[i % len(MODEL_COLORS)]


# Inches per image panel: a 32x32 image needs about this much to show its content at notebook width.
PANEL_INCHES = 1.9
HEATMAP_CMAP = "jet"  # matplotlib's name for cv2.COLORMAP_JET, used for colour bars
TOP_K = 5  # classes in a bar panel of the failure browser
OVERLAY_ALPHA = 0.45  # the heatmap's weight in an overlay: the image stays readable beneath it

STYLE: dict[str, Any] = {
    # White, not transparent: transparent figures vanish on JupyterLab's dark theme.
    **dict.fromkeys(("figure.facecolor", "axes.facecolor", "savefig.facecolor"), "white"),
    **dict.fromkeys(("font.size", "axes.titlesize", "axes.labelsize"), 9),
    **dict.fromkeys(("xtick.labelsize", "ytick.labelsize", "legend.fontsize"), 8),
    "legend.frameon": False,
    "figure.titlesize": 11,
    "figure.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": ":",
    "image.interpolation": "nearest",
}

P = ParamSpec("P")


class NotebookFigure(Figure):
    """A matplotlib Figure that renders itself as PNG in IPython front ends (no pyplot needed)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        return buffer.getvalue()


def styled(fn: Callable[P, Figure]) -> Callable[P, Figure]:
    """Build the figure of ``fn`` under the project style, so every figure looks the same."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with mpl.rc_context(STYLE):
            fig = fn(*args, **kwargs)
            # Ticks are created lazily at draw time, outside this context; fix their size now.
            for ax in fig.axes:
                ax.tick_params(labelsize=STYLE["xtick.labelsize"])
        return fig

    return wrapper


def new_figure(width: float, height: float) -> NotebookFigure:
    """A white :class:`NotebookFigure` of ``width`` x ``height`` inches with constrained layout."""
    return NotebookFigure(figsize=(width, height), layout="constrained")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """``x`` (tensor on any device, array, or nested sequence) as a NumPy array; errors name ``name``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        # NumPy has no bfloat16 and OpenCV cannot resize float16; maps made under autocast may be either.
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from e


def _cpu_tensor(x: Any, name: str) -> torch.Tensor:
    try:
        return torch.from_numpy(np.ascontiguousarray(to_numpy(x, name)))
    except TypeError as e:
        raise TypeError(f"{name} must be a tensor or array, got {type(x).__name__}") from e


def image_batch(name: str, images: Any) -> np.ndarray:
    """uint8 (N, 3, H, W) images (tensor on any device, or array) checked by
    :func:`cifar_helpers.core.checks.check_images`, as a NumPy array."""
    return checks.check_images(name, _cpu_tensor(images, name)).numpy()


def single_image(name: str, image: Any) -> np.ndarray:
    """One uint8 (3, H, W) image as a NumPy array; anything else raises naming ``name``."""
    array = to_numpy(image, name)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"{name} must have shape (3, H, W), got {tuple(array.shape)}")
    return image_batch(name, array[None])[0]


def class_labels(name: str, labels: Any, length: int, num_classes: int) -> np.ndarray:
    """Class labels (length,) of any integer dtype, checked by :func:`cifar_helpers.core.checks.check_labels`
    to lie in [0, num_classes), as int64 NumPy."""
    tensor = _cpu_tensor(labels, name)
    if not (tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool):
        tensor = tensor.long()
    return checks.check_labels(name, tensor, length, num_classes).numpy()


def heatmaps(name: str, maps: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Float heatmaps (tensor on any device, or array) of exactly ``shape`` in [0, 1] give or take 1e-3,
    checked by :func:`cifar_helpers.core.checks.check_maps`, as float32 NumPy clipped to [0, 1]."""
    tensor = checks.check_maps(name, _cpu_tensor(maps, name), shape, low=0.0, high=1.0, tolerance=1e-3)
    return np.clip(tensor.numpy().astype(np.float32, copy=False), 0.0, 1.0)


@dataclass(frozen=True)
class FailureColumns:
    """A FailureSet's columns as NumPy arrays of one length K: ``indices``, ``true_labels``,
    ``predicted``: int64 (K,), ``confidence``: float64 (K,); ``threshold``: the confidence they lie
    above (None: not given)."""

    indices: np.ndarray
    true_labels: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    threshold: float | None

    def rows(self, rows: Any) -> FailureColumns:
        """The failures at ``rows`` (an index array or a slice), in that order."""
        return replace(self, **{key: getattr(self, key)[rows] for key in _FAILURE_COLUMNS})


_FAILURE_COLUMNS = ("indices", "true_labels", "predicted", "confidence")


def failure_columns(failures: Any, name: str = "failures") -> FailureColumns:
    """The columns of a FailureSet-like object (``indices``, ``true_labels``, ``predicted``: int (K,),
    ``confidence``: float (K,), ``threshold`` optional); their equal length is FailureSet's check."""
    columns = {}
    for key in _FAILURE_COLUMNS:
        if not hasattr(failures, key):
            raise TypeError(f"{name} must be a FailureSet (or have .{key}), got {type(failures).__name__}")
        columns[key] = to_numpy(getattr(failures, key), f"{name}.{key}")
    for key in ("indices", "true_labels", "predicted"):
        if columns[key].size and not np.issubdtype(columns[key].dtype, np.integer):
            raise TypeError(f"{name}.{key} must hold integers, got {columns[key].dtype}")
        columns[key] = columns[key].astype(np.int64, copy=False)
    columns["confidence"] = columns["confidence"].astype(np.float64, copy=False)
    # Optional by design: a FailureSet has a threshold, a stand-in with only the columns need not.
    return FailureColumns(**columns, threshold=getattr(failures, "threshold", None))


def class_bars(
    ax: Axes,
    values: np.ndarray,
    classes: Sequence[str],
    color_of: Callable[[int, int], str],
    value_text: Callable[[float], str],
    title: str,
) -> np.ndarray:
    """The :data:`TOP_K` largest of (C,) ``values`` in [0, 1] (probabilities, vote shares) as bars, the
    largest on top, coloured ``color_of(class, rank)``, named by class and labelled ``value_text(value)``
    (the x axis runs to 130 % to leave room); returns the classes shown, (TOP_K,)."""
    order = np.argsort(-values, kind="stable")[: min(TOP_K, len(classes))]
    y = np.arange(len(order))[::-1]
    ax.barh(y, values[order], color=[color_of(c, rank) for rank, c in enumerate(order)])
    for yi, c in zip(y, order, strict=True):
        ax.text(values[c], yi, f" {value_text(values[c])}", va="center", fontsize=7)
    ax.set_yticks(y, [classes[c] for c in order])
    ax.set_xlim(0, 1.3)
    ax.set_xticks([0, 0.5, 1.0], ["0", "50%", "100%"])
    ax.grid(axis="y", visible=False)
    ax.set_title(title, fontsize=8)
    return order


def format_confidence(p: float) -> str:
    """A probability as a percent that never rounds a 99.96% mistake up to "100%" (nor 0.3% to "0%")."""
    if p >= 1.0:
        return "100%"
    if 0.0 < p < 0.005:
        return "<1%"
    if round(p * 100) >= 100:
        return f"{math.floor(p * 1000) / 10:.1f}%"
    return f"{p:.0%}"


def failure_title(true_name: str, predicted_name: str, confidence: float, width: int = 22) -> str:
    """ "true → predicted (97%)", broken after the arrow when it would not fit a panel."""
    text = f"{true_name} → {predicted_name} ({format_confidence(confidence)})"
    return text if len(text) <= width else text.replace(" → ", " →\n", 1)


def upscale_image(image: Any, scale: int = 4) -> np.ndarray:
    """uint8 (3, H, W) -> uint8 (H*scale, W*scale, 3) RGB, bicubic (smooth enough to read at 32x32)."""
    scale = check_count("scale", scale)
    hwc = np.ascontiguousarray(single_image("image", image).transpose(1, 2, 0))
    height, width = hwc.shape[:2]
    return cv2.resize(hwc, (width * scale, height * scale), interpolation=cv2.INTER_CUBIC)


def overlay_heatmap(image: Any, heatmap: Any, *, scale: int = 4) -> np.ndarray:
    """uint8 (3, H, W) image and float (H, W) heatmap in [0, 1] -> uint8 (H*scale, W*scale, 3) RGB: the
    JET-coloured map blended with weight :data:`OVERLAY_ALPHA` onto the image, both upscaled (image
    bicubic, map bilinear, so a smooth map stays smooth and in [0, 1])."""
    rgb = upscale_image(image, scale)
    height, width = rgb.shape[0] // int(scale), rgb.shape[1] // int(scale)
    heat = heatmaps("heatmap", heatmap, (height, width))
    heat = cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    heat_u8 = np.clip(np.rint(heat * 255.0), 0, 255).astype(np.uint8)
    # OpenCV colormaps produce BGR; the rest of the project (and matplotlib) is RGB.
    colored = cv2.cvtColor(cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blended = (1.0 - OVERLAY_ALPHA) * rgb.astype(np.float32) + OVERLAY_ALPHA * colored.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def show_image(ax: Axes, image: np.ndarray, title: str | None = None, color: str | None = None) -> None:
    """Draw an RGB (H, W, 3) array on ``ax`` without ticks or grid, with an optional coloured title."""
    ax.imshow(image, interpolation="nearest")
    ax.set(xticks=[], yticks=[])
    ax.grid(False)
    ax.spines[:].set_visible(False)
    if title is not None:
        ax.set_title(title, color=color or "black", fontsize=8)


def frame(ax: Axes, color: str, width: float = 2.5) -> None:
    """Draw a coloured border around an image panel (green = right, red = wrong)."""
    ax.spines[:].set_visible(True)
    ax.spines[:].set_edgecolor(color)
    ax.spines[:].set_linewidth(width)


def message_panel(ax: Axes, text: str, color: str = "dimgray") -> None:
    """Turn ``ax`` into a centred text note (e.g. "no heatmap for this image")."""
    ax.set_axis_off()
    ax.text(
        0.5, 0.5, text, ha="center", va="center", fontsize=8, color=color, wrap=True, transform=ax.transAxes
    )


def add_heatmap_colorbar(fig: Figure, axes: Any, label: str | None = None) -> None:
    """A horizontal JET colour bar under ``axes`` saying what the overlay colours mean."""
    mappable = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(0, 1), cmap=HEATMAP_CMAP)
    bar = fig.colorbar(
        mappable, ax=axes, orientation="horizontal", fraction=0.04, pad=0.02, aspect=50, shrink=0.6
    )
    bar.set_label(label or "Grad-CAM: blue = no evidence for the class, red = strongest evidence", fontsize=8)
    bar.ax.grid(False)


def plot_class_samples(images: Any, labels: Any, classes: Sequence[str], per_class: int = 8) -> Figure:
    """The first ``per_class`` of uint8 (N, 3, H, W) ``images`` of every class (int (N,) ``labels``), a row
    per class name in ``classes``, an inch per image; a class with fewer images leaves its row short."""
    batch = image_batch("images", images)
    names = check_classes("classes", classes)
    label_array = class_labels("labels", labels, len(batch), len(names))
    per_class = check_count("per_class", per_class)
    fig = new_figure(per_class + 1.2, len(names) + 0.5)
    axes = fig.subplots(len(names), per_class, squeeze=False)
    for c, name in enumerate(names):
        members = np.flatnonzero(label_array == c)[:per_class]
        for j, ax in enumerate(axes[c]):
            if j < len(members):
                show_image(ax, batch[members[j]].transpose(1, 2, 0))
            elif j > 0:  # the first panel keeps its axis, to name the class even when it has no image
                ax.set_axis_off()
        axes[c, 0].set_xticks([])
        axes[c, 0].set_yticks([])
        axes[c, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{per_class} training images per class")
    return fig
