"""The failure browser: step through a model's confident failures, one image at a time, with its
Grad-CAM maps, top-5 classes and what every other model says about the same image. Plain ipywidgets
(no custom JavaScript), so it works in JupyterLab, Notebook and Colab.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import HTML, display
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cifar_helpers.analysis.gradcam import explain_images
from cifar_helpers.analysis.human_labels import HumanVotes
from cifar_helpers.core.checks import check_classes
from cifar_helpers.rundir.registry import HEADLESS_ENV
from cifar_helpers.views.plotting import common
from cifar_helpers.views.plotting.explanations import plot_failure_grid, plot_gradcam_pairs
from cifar_helpers.views.plotting.human_labels import human_votes_panel

_MAX_STATIC = 16  # failures in the static figure shown where widgets cannot run


@dataclass
class _ModelView:
    """Everything the browser shows for one model, as NumPy arrays: failure columns (K,), probs (N, C),
    ``{test index: (predicted-class map, true-class map)}`` (H, W) computed so far and how to compute one."""

    name: str
    failures: common.FailureColumns
    probs: np.ndarray
    maps: dict[int, tuple[np.ndarray, np.ndarray]]
    explain: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None

    def maps_for(self, index: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(predicted-class map, true-class map) of test image ``index``: precomputed, else computed with
        the model (once, then cached), else None."""
        if index not in self.maps and self.explain is not None:
            self.maps[index] = self.explain(index)
        return self.maps.get(index)  # None: no map, and no model to compute one


def _explain(
    model: Any, images: np.ndarray, probs: np.ndarray, labels: np.ndarray, layer: Any, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of test image ``index`` for its predicted and its true class, with ``model``."""
    image = torch.from_numpy(np.ascontiguousarray(images[index : index + 1])).repeat(2, 1, 1, 1)
    targets = torch.tensor([int(np.argmax(probs[index])), int(labels[index])])
    maps = explain_images(model, image, targets, layer=layer).numpy()
    return maps[0], maps[1]


def _prepare(
    images: Any,
    labels: Any,
    classes: Sequence[str],
    failures: Mapping[str, Any],
    probs: Mapping[str, Any],
    models: Mapping[str, Any] | None = None,
    layer: Any = None,
) -> tuple[np.ndarray, np.ndarray, list[str], dict[str, _ModelView]]:
    """Check the browser's inputs against each other; every error names the input at fault."""
    batch = common.image_batch("images", images)
    n = len(batch)
    names = check_classes("classes", classes)
    if len(set(names)) != len(names):
        raise ValueError(f"classes must be unique names, got {names!r}")
    true_labels = common.class_labels("labels", labels, n, len(names))
    if not isinstance(failures, Mapping) or not failures:
        raise TypeError(
            "failures must be a non-empty dict {model name: FailureSet}, e.g. {'baseline': failures}"
        )
    if not isinstance(probs, Mapping):
        raise TypeError("probs must be a dict {model name: (N, C) probabilities}")
    missing = [name for name in failures if name not in probs]
    if missing:
        raise ValueError(
            f"probs has no entry for model(s) {', '.join(map(repr, missing))}: give one per failures key"
        )
    models = models or {}
    unknown = [name for name in models if name not in failures]
    if unknown:
        raise ValueError(f"models has model(s) {', '.join(map(repr, unknown))} that are not in failures")

    views: dict[str, _ModelView] = {}
    for name, failure_set in failures.items():
        columns = common.failure_columns(failure_set, f"failures[{name!r}]")
        k = len(columns.indices)
        if k and (columns.indices.min() < 0 or columns.indices.max() >= n):
            raise ValueError(f"failures[{name!r}].indices must lie in [0, {n}) (positions in the test split)")
        common.class_labels(f"failures[{name!r}].predicted", columns.predicted, k, len(names))
        if not np.array_equal(columns.true_labels, true_labels[columns.indices]):
            raise ValueError(
                f"failures[{name!r}].true_labels disagree with labels[failures[{name!r}].indices]: "
                "were the failures found on a different split or subset?"
            )
        model_probs = common.to_numpy(probs[name], f"probs[{name!r}]").astype(np.float64)
        if model_probs.shape != (n, len(names)):
            raise ValueError(
                f"probs[{name!r}] must have shape ({n}, {len(names)}), got {tuple(model_probs.shape)}"
            )
        explain = None
        if name in models:
            explain = partial(_explain, models[name], batch, model_probs, true_labels, layer)
        views[str(name)] = _ModelView(str(name), columns, model_probs, {}, explain=explain)
    return batch, true_labels, names, views


def _check_human(
    human: HumanVotes | None, num_images: int, num_classes: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The optional human votes (N, C) and per-image failure categories (N,), checked."""
    if human is None:
        return None, None
    shares = common.to_numpy(human.shares, "human.shares").astype(np.float64)
    if shares.shape != (num_images, num_classes):
        raise ValueError(
            f"human.shares must have shape ({num_images}, {num_classes}) (one vote share per test "
            f"image and class), got {tuple(shares.shape)}"
        )
    names = np.asarray([str(c) for c in human.categories], dtype=object)
    if names.shape != (num_images,):
        raise ValueError(
            f"human.categories must hold one name per test image ({num_images}), got {len(names)}"
        )
    return shares, names


def _verdict_panel(ax: Axes, model: str, predicted: str, confidence: float, right: bool) -> None:
    """Another model's verdict on the image shown, as text: green "✓ right" or red "✗ wrong"."""
    verdict, color = ("✓ right", common.CORRECT_COLOR) if right else ("✗ wrong", common.WRONG_COLOR)
    common.message_panel(
        ax, f"{model} says\n'{predicted}' ({common.format_confidence(confidence)})\n{verdict}", color=color
    )


def _top_k_panel(ax: Axes, probs: np.ndarray, true: int, classes: list[str], title: str) -> None:
    """The TOP_K most probable classes as bars: true class green, a wrong top prediction red."""

    def color_of(c: int, rank: int) -> str:
        return (
            common.CORRECT_COLOR if c == true else common.WRONG_COLOR if rank == 0 else common.NEUTRAL_COLOR
        )

    order = common.class_bars(ax, probs, classes, color_of, common.format_confidence, title)
    if true not in order:
        rank = int((probs > probs[true]).sum()) + 1
        ax.set_xlabel(
            f"true '{classes[true]}': {common.format_confidence(probs[true])} (rank {rank})",
            color=common.CORRECT_COLOR,
        )


class FailureBrowser:
    """An ipywidgets browser over the confident failures of one or more models: a model toggle (with
    several models), true-, predicted-class and category filters and a 1-based slider over the matches.

    Args (``images`` to ``layer`` by position or name, ``human`` by name):
        images, labels: the test split, uint8 (N, 3, H, W) and int (N,).
        classes: C class names.
        failures, probs: ``{model name: FailureSet}`` (most confident first), ``{model name: float (N, C)}``.
        models: ``{model name: nn.Module}`` whose Grad-CAM maps are computed on demand (at ``layer``, None:
            layer4); a model without one shows no maps.
        human: optional CIFAR-10H vote shares (N, C), drawn beside the model's top-5, and the failure
            category of each test image, shown and offered as a filter
            (:func:`cifar_helpers.analysis.human_labels.browser_inputs`).
    """

    def __init__(self, *inputs: Any, human: HumanVotes | None = None, **named_inputs: Any) -> None:
        self._images, self._labels, self.classes, self._models = _prepare(*inputs, **named_inputs)
        self._human_shares, self._categories = _check_human(human, len(self._labels), len(self.classes))
        self.model_names = list(self._models)
        # "any" is the no-filter choice; renamed in the unlikely case that a class is called "any".
        self.any_label = "any" if "any" not in self.classes else "(any class)"

        # The label is a sibling, not the toggle's description: JupyterLab wraps a ToggleButtons
        # description onto a line of its own above the buttons.
        self.model_toggle = widgets.ToggleButtons(options=self.model_names, value=self.model_names[0])
        self.model_row = widgets.HBox([widgets.Label("Model:"), self.model_toggle])
        if len(self.model_names) == 1:
            self.model_row.layout.display = "none"

        def any_or(options: Sequence[str], description: str) -> widgets.Dropdown:
            return widgets.Dropdown(
                options=[self.any_label, *options], value=self.any_label, description=description
            )

        self.true_dropdown = any_or(self.classes, "True class:")
        self.pred_dropdown = any_or(self.classes, "Predicted:")
        present = [] if self._categories is None else sorted(set(self._categories.tolist()))
        self.category_dropdown = any_or(present, "Category:")
        if self._categories is None:
            self.category_dropdown.layout.display = "none"
        # Redraw on release only: a figure per intermediate slider position would lag. The slider
        # counts from 1, like the "k of n" label beside it.
        self.slider = widgets.IntSlider(
            value=1, min=1, max=1, description="Failure:", continuous_update=False
        )
        self.position_label = widgets.Label()
        self.output = widgets.Output()
        filters = widgets.HBox([self.true_dropdown, self.pred_dropdown, self.category_dropdown])
        slider_row = widgets.HBox([self.slider, self.position_label])
        self.widget = widgets.VBox([self.model_row, filters, slider_row, self.output])

        self._updating = False
        for control in (self.model_toggle, self.true_dropdown, self.pred_dropdown, self.category_dropdown):
            control.observe(lambda _change: self._apply_filters(), names="value")
        self.slider.observe(self._on_slider_change, names="value")
        self._apply_filters()

    @property
    def model(self) -> str:
        """Name of the model whose failures are browsed."""
        return self.model_toggle.value

    @property
    def current_index(self) -> int | None:
        """Test-split index of the failure shown, or None when no failure matches the filters."""
        if len(self._rows) == 0:
            return None
        return int(self.filtered_indices[self.slider.value - 1])

    def render_current(self) -> Figure | None:
        """The figure the browser shows for the current failure (None when nothing matches)."""
        index = self.current_index
        return None if index is None else self._figure(index)

    @common.styled
    def _figure(self, index: int) -> Figure:
        """Test image ``index`` through every model: a row per model (image or verdict | 2 heatmaps |
        top-5), and the human votes (CIFAR-10H) beside the first row's top-5 when given."""
        image, true, classes = self._images[index], int(self._labels[index]), self.classes
        current = self._models[self.model]
        models = [current, *(view for view in self._models.values() if view is not current)]
        shares = None if self._human_shares is None else self._human_shares[index]
        rows, columns = len(models), 4 if shares is None else 5
        fig = common.new_figure(
            columns * common.PANEL_INCHES + 1.2 + 0.7 * (columns - 4),
            rows * (common.PANEL_INCHES + 0.75) + 0.9,
        )
        grid = fig.add_gridspec(rows, columns, width_ratios=[1, 1, 1, 1.4, 1.4][:columns])
        true_name = classes[true]
        for row, model in enumerate(models):
            probs = model.probs[index]
            predicted = int(np.argmax(probs))
            ax_left, ax_pred, ax_true, ax_bars = (fig.add_subplot(grid[row, col]) for col in range(4))
            if row == 0:
                common.show_image(
                    ax_left, common.upscale_image(image), f"test image #{index}\ntrue class '{true_name}'"
                )
                common.frame(ax_left, common.WRONG_COLOR if predicted != true else common.CORRECT_COLOR)
                missing = "no heatmap for this failure\n(Grad-CAM was computed\nfor a subset only)"
            else:
                _verdict_panel(ax_left, model.name, classes[predicted], probs[predicted], predicted == true)
                missing = f"no {model.name} heatmap\nfor this image"
                if predicted == true:
                    missing = (
                        f"{model.name} is right here:\nits heatmaps were computed\nfor its failures only"
                    )
            maps = model.maps_for(index)
            if maps is None:
                common.message_panel(ax_pred, missing)
                ax_true.set_axis_off()
            else:
                title = f"{model.name}: where it looked\nto say '{classes[predicted]}'"
                common.show_image(ax_pred, common.overlay_heatmap(image, maps[0]), title)
                title = f"where the evidence\nfor '{true_name}' would be"
                common.show_image(ax_true, common.overlay_heatmap(image, maps[1]), title)
            _top_k_panel(
                ax_bars, probs, true, classes, f"{model.name}: top-{min(common.TOP_K, len(classes))} classes"
            )
            if shares is not None and row == 0:
                ax_votes = fig.add_subplot(grid[row, 4])
                human_votes_panel(ax_votes, shares, true, predicted, classes, "humans (CIFAR-10H)")
        if any(model.maps_for(index) is not None for model in models):
            common.add_heatmap_colorbar(fig, fig.axes)
        category = "" if self._categories is None else f"\ncategory: {self._categories[index]}"
        fig.suptitle(
            f"{current.name}: '{true_name}' taken for '{classes[int(np.argmax(current.probs[index]))]}' "
            f"({common.format_confidence(current.probs[index].max())}), "
            f"failure {self.slider.value} of {len(self._rows)}{category}"
        )
        return fig

    def _on_slider_change(self, _change: dict[str, Any]) -> None:
        if not self._updating:
            self._show()

    def _apply_filters(self) -> None:
        """Recompute the filtered failures of the chosen model and go back to the first one."""
        columns = self._models[self.model].failures
        keep = np.ones(len(columns.indices), dtype=bool)
        if self.true_dropdown.value != self.any_label:
            keep &= columns.true_labels == self.classes.index(self.true_dropdown.value)
        if self.pred_dropdown.value != self.any_label:
            keep &= columns.predicted == self.classes.index(self.pred_dropdown.value)
        if self._categories is not None and self.category_dropdown.value != self.any_label:
            keep &= self._categories[columns.indices] == self.category_dropdown.value
        self._rows = np.flatnonzero(keep)
        self.filtered_indices = torch.from_numpy(columns.indices[self._rows].copy())
        # The slider's own observer must not redraw for each of these intermediate values.
        self._updating = True
        try:
            self.slider.value = 1
            self.slider.max = max(len(self._rows), 1)
            self.slider.disabled = len(self._rows) == 0
        finally:
            self._updating = False
        self._show()

    def _show(self) -> None:
        n = len(self._rows)
        self.output.clear_output(wait=True)
        if n == 0:
            self.position_label.value = "0 of 0"
            total = len(self._models[self.model].failures.indices)
            threshold = self._models[self.model].failures.threshold
            if total == 0:
                above = f"above {threshold:g}" if threshold is not None else "above the threshold"
                self.message = (
                    f"{self.model} made no mistakes with confidence {above}. To see less confident "
                    f"ones, lower confidence_threshold (the parameters cell of 02_failure_detection.ipynb, "
                    f"or run_all.py -p confidence_threshold=0.7 --stages 2-6 --force)."
                )
            else:
                category = (
                    "" if self._categories is None else f" and category '{self.category_dropdown.value}'"
                )
                self.message = (
                    f"No failures match: {self.model} has {total} confident failures, none with true "
                    f"class '{self.true_dropdown.value}', predicted class '{self.pred_dropdown.value}'"
                    f"{category}. Set a filter back to '{self.any_label}'."
                )
            with self.output:
                display(HTML(f"<p style='font-size:1.1em'><b>{html.escape(self.message)}</b></p>"))
            return
        self.message = ""
        self.position_label.value = f"{self.slider.value} of {n} (most confident first)"
        fig = self.render_current()
        with self.output:
            display(fig)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def _static_failure_figure(*inputs: Any, **named_inputs: Any) -> Figure:
    """The first model's ``_MAX_STATIC`` most confident failures with heatmaps, as image |
    predicted-class map | true-class map, two per row (without any: a failure grid); ``inputs`` as
    :class:`FailureBrowser`."""
    batch, _, names, views = _prepare(*inputs, **named_inputs)
    model = next(iter(views.values()))
    columns = model.failures
    # Lazily, so that Grad-CAM on demand runs for the failures drawn only.
    maps = ((row, model.maps_for(index)) for row, index in enumerate(columns.indices.tolist()))
    with_maps = list(islice(((row, m) for row, m in maps if m is not None), _MAX_STATIC))
    if with_maps:
        shown = columns.rows(np.array([row for row, _ in with_maps]))
        predicted_maps, true_maps = (np.stack(m) for m in zip(*(m for _, m in with_maps), strict=True))
        return plot_gradcam_pairs(
            batch[shown.indices],
            predicted_maps,
            true_maps,
            shown.true_labels,
            shown.predicted,
            shown.confidence,
            names,
            max_rows=math.ceil(len(with_maps) / 2),
            per_row=2,
            title=f"{model.name}: the {len(with_maps)} most confident failures and their Grad-CAM",
        )
    first = columns.rows(slice(_MAX_STATIC))
    return plot_failure_grid(batch[first.indices], first, names, max_images=_MAX_STATIC)


def show_failure_browser(
    *inputs: Any,
    human: HumanVotes | None = None,
    **named_inputs: Any,
) -> FailureBrowser | Figure:
    """Display and return the :class:`FailureBrowser` (``inputs`` as there) or, where widgets cannot run
    (``CIFAR_STRESS_HEADLESS`` set, but not to "", "0", "false" or "no"), :func:`_static_failure_figure`.
    Assign the result so the cell does not show it twice."""
    if os.environ.get(HEADLESS_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        shown = _static_failure_figure(*inputs, **named_inputs)
    else:
        shown = FailureBrowser(*inputs, **named_inputs, human=human)
    display(shown)
    return shown
