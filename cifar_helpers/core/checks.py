"""Input checks shared by the library's entry points: one definition per kind of input.

Every check takes the argument's name first and says in its message what is accepted. A non-tensor
raises ``TypeError``; a wrong dtype, shape or value ``ValueError``, except a score matrix or class indices
of the wrong kind of dtype: ``TypeError``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

# Loose enough for float32 softmax rows, tight enough to reject logits passed by mistake.
_ROW_SUM_TOLERANCE = 1e-3


def model_device(model: nn.Module, default: torch.device | None = None) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer, else ``default`` (or CPU)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu") if default is None else default


def check_images(name: str, images: Any) -> Tensor:
    """``images`` unchanged if it is an image batch as the project stores them: uint8 (N, 3, H, W), RGB."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of uint8 (N, 3, H, W), got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(
            f"{name} must be a uint8 tensor of RGB images (dtype uint8 with shape (N, 3, H, W)), "
            f"got dtype {images.dtype} and shape {tuple(images.shape)}"
        )
    return images


def check_labels(
    name: str, labels: Any, num_images: int, num_classes: int | None = None, *, images_name: str = "images"
) -> Tensor:
    """``labels`` unchanged if they are the labels of ``num_images`` images as stored: int64 (N,), and
    with ``num_classes`` given, each in [0, num_classes)."""
    if not isinstance(labels, Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of int64 ({num_images},), got {type(labels).__name__}"
        )
    if labels.dtype != torch.int64 or labels.shape != (num_images,):
        raise ValueError(
            f"{name} must be int64 ({num_images},) to match {images_name}, "
            f"got {labels.dtype} {tuple(labels.shape)}"
        )
    if num_classes is None or not labels.numel():
        return labels
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def check_images_and_labels(
    images: Any, labels: Any, num_classes: int | None = None, *, prefix: str = ""
) -> tuple[Tensor, Tensor]:
    """:func:`check_images` and :func:`check_labels` on uint8 (N, 3, H, W) images and int64 (N,) labels,
    returned unchanged; ``prefix`` (e.g. ``"train"``) names them ``{prefix}_images`` in messages."""
    images_name, labels_name = (f"{prefix}_images", f"{prefix}_labels") if prefix else ("images", "labels")
    images = check_images(images_name, images)
    labels = check_labels(labels_name, labels, images.shape[0], num_classes, images_name=images_name)
    return images, labels


def check_score_matrix(name: str, scores: Any) -> Tensor:
    """``scores`` unchanged if it is a per-class score matrix (logits or probabilities): float (N, C),
    N >= 1, C >= 2. Only type and shape are checked; :func:`check_probabilities` checks values too."""
    if not isinstance(scores, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, C), got {type(scores).__name__}")
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(
            f"{name} must be 2-D, shape (N, C) with C >= 2 classes, got shape {tuple(scores.shape)}"
        )
    if not scores.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got dtype {scores.dtype}")
    if scores.shape[0] == 0:
        raise ValueError(f"{name} holds no rows (shape {tuple(scores.shape)}); at least one is needed")
    return scores


def check_probabilities(name: str, probs: Any) -> Tensor:
    """``probs`` unchanged if it holds softmax probabilities: float (N, C), finite, in [0, 1], each row
    summing to 1 within 1e-3 (the usual mistake: logits passed instead of their softmax)."""
    probs = check_score_matrix(name, probs)
    if not torch.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ValueError(
            f"{name} must hold probabilities in [0, 1] (softmax probabilities: pass logits.softmax(dim=1))"
        )
    row_sums = probs.sum(dim=1, dtype=torch.float64)
    if ((row_sums - 1.0).abs() > _ROW_SUM_TOLERANCE).any():
        raise ValueError(
            f"every row of {name} must sum to 1 (softmax probabilities: pass logits.softmax(dim=1)); "
            f"row sums range from {float(row_sums.min()):.6g} to {float(row_sums.max()):.6g}"
        )
    return probs


def check_class_indices(name: str, labels: Any, num_rows: int, num_classes: int, *, rows_name: str) -> Tensor:
    """The true classes next to an (N, C) score matrix (``rows_name``), of any integer dtype, each in
    [0, C), returned as int64 (N,) on the CPU."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D ({num_rows},), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class indices (int64), got dtype {labels.dtype}")
    if labels.shape[0] != num_rows:
        raise ValueError(
            f"{name} must have shape ({num_rows},) to match {rows_name} ({num_rows} rows), "
            f"but {name} has {labels.shape[0]} entries"
        )
    labels = labels.detach().cpu().long()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} must be class indices in [0, {num_classes}) to match {rows_name}'s {num_classes} "
            f"columns, got values in [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels


def check_target_classes(name: str, target_classes: Any, n: int) -> Tensor:
    """The class to explain for each of ``n`` images, one int for all or an integer (n,) tensor, as
    int64 (n,) on the CPU."""
    if isinstance(target_classes, bool):
        raise TypeError(f"{name} must be an int or an int64 tensor (N,), got a bool")
    if isinstance(target_classes, int):
        targets = torch.full((n,), target_classes, dtype=torch.int64)
    elif isinstance(target_classes, Tensor):
        if target_classes.dtype.is_floating_point or target_classes.dtype == torch.bool:
            raise TypeError(f"{name} must hold integer class indices, got dtype {target_classes.dtype}")
        if target_classes.ndim != 1 or len(target_classes) != n:
            raise ValueError(
                f"{name} must have shape ({n},) to match the images, got {tuple(target_classes.shape)}"
            )
        targets = target_classes.detach().cpu().long()
    else:
        raise TypeError(f"{name} must be an int or an int64 tensor (N,), got {type(target_classes).__name__}")
    if n and targets.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices, got {int(targets.min())}")
    return targets


def check_classes(name: str, classes: Any, num_classes: int = 0) -> list[str]:
    """Class names as a non-empty list of strings, at least ``num_classes`` of them (one per class index
    in use)."""
    if isinstance(classes, str) or not isinstance(classes, Sequence) or len(classes) == 0:
        raise TypeError(f"{name} must be a non-empty list of class names, got {classes!r}")
    names = list(classes)
    if not all(isinstance(c, str) for c in names):
        raise TypeError(f"{name} must contain strings only, got {names!r}")
    if len(names) < num_classes:
        raise ValueError(f"{name} has {len(names)} names but class indices go up to {num_classes - 1}")
    return names


def check_count(name: str, value: Any, low: int = 1, high: int | None = None) -> int:
    """An integer (a count, a size, a scale factor), not a bool, in [low, high] (``high`` None: no
    upper bound) as ``int``; by default a positive one."""
    is_integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not is_integer or value < low or (high is not None and value > high):
        accepted = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an integer {accepted}, got {value!r}")
    return int(value)


def check_fraction(
    name: str, value: Any, low: float = 0.0, *, closed: tuple[bool, bool] = (True, True)
) -> float:
    """A number in [low, 1] (an accuracy, a threshold; ``low=-1`` for a difference of two) as ``float``;
    ``closed`` says whether each end belongs to the interval (``(False, True)``: (low, 1])."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    above = low <= number if closed[0] else low < number
    below = number <= 1.0 if closed[1] else number < 1.0
    if not (above and below):
        interval = f"{'[' if closed[0] else '('}{low:g}, 1{']' if closed[1] else ')'}"
        raise ValueError(f"{name} must be a fraction in {interval} (not a percent), got {value!r}")
    return number


def check_fractions(
    name: str, values: Any, length: int | None = None, *, increasing: bool = False
) -> np.ndarray:
    """Fractions (confidences, shares) as float64 NumPy (N,), or (length,) with ``length`` given, each in
    [0, 1]; with ``increasing`` (ROAD's removal fractions) a non-empty, strictly increasing sequence
    inside (0, 1)."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().double()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or (length is not None and len(array) != length):
        expected = f"({length},)" if length is not None else "(N,)"
        raise ValueError(f"{name} must have shape {expected}, got {tuple(array.shape)}")
    if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 1):
        raise ValueError(f"{name} must be fractions in [0, 1] (not percents)")
    if increasing and (not array.size or array[0] == 0 or array[-1] == 1 or (np.diff(array) <= 0).any()):
        raise ValueError(
            f"{name} must be a non-empty, strictly increasing list of fractions in (0, 1), got {values!r}"
        )
    return array


def check_batch_size(name: str, value: Any, n: int) -> int:
    """A positive batch size, or None for one batch of all ``n`` items."""
    if value is None:
        return max(n, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    return value


def check_float_images(name: str, images: Any) -> Tensor:
    """Normalised float images (N, 3, H, W), detached."""
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, 3, H, W), got shape {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be normalised floats (use cifar_helpers.core.normalization.normalize on uint8 "
            f"images), got dtype {images.dtype}"
        )
    return images.detach()


def check_maps(
    name: str,
    maps: Any,
    shape: Sequence[int] | None = None,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    tolerance: float = 0.0,
) -> Tensor:
    """Float heatmaps (Grad-CAM maps: (N, H, W)), detached: a tensor of exactly ``shape`` (None: any
    3-D one), finite, each value in [low, high] give or take ``tolerance`` (float error from
    normalisation)."""
    expected = "(N, H, W)" if shape is None else str(tuple(shape))
    if not isinstance(maps, Tensor) or not maps.dtype.is_floating_point:
        raise TypeError(f"{name} must be a float tensor {expected}, got {getattr(maps, 'dtype', type(maps))}")
    wrong_shape = (maps.ndim != 3) if shape is None else (tuple(maps.shape) != tuple(shape))
    if wrong_shape:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(maps.shape)}")
    if not maps.numel():
        return maps.detach()
    if not torch.isfinite(maps).all():
        raise ValueError(f"{name} must be finite, got NaN or infinite values")
    smallest, largest = float(maps.min()), float(maps.max())
    if smallest < low - tolerance or largest > high + tolerance:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got [{smallest:.3g}, {largest:.3g}]")
    return maps.detach()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode inside the block; afterwards every module's own mode is restored (not
    just the root's: a caller may have put some submodules in eval on purpose)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
