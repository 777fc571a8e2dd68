"""Corruption stress test: CIFAR-10-C-style corruptions generated on the fly, and accuracy under them.

The corruptions of Hendrycks & Dietterich (2019) are computed from the run's own uint8 test images, with
the per-severity parameters of their ``make_cifar_c.py`` (severity 0 is the identity), so any test subset
can be stressed without a download and a seed always gives the same pixels. Deliberate differences from
the reference: results are rounded, not truncated (truncation darkens by half a grey level); the blur
kernel is truncated at 4 sigma as in ``skimage.filters.gaussian``; brightness scales R, G, B by V'/V
instead of an HSV round trip (the same result); pixelate reproduces PIL's box resampling as two small
matrices (OpenCV's INTER_AREA / INTER_NEAREST would change the meaning of the published severities);
JPEG uses ``cv2.imencode`` (4:2:0 chroma, like PIL's default).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cifar_helpers.core.checks import check_count, check_images, check_labels
from cifar_helpers.core.evaluation import accuracy, predict
from cifar_helpers.rundir.records import INLINE, Record

# Per-severity parameters (severity 1..5 -> index 0..4), from CIFAR-10-C's generator; x in [0, 1].
CORRUPTION_PARAMETERS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),  # sigma: x + N(0, sigma^2) per pixel, clipped
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),  # sigma (px) of a Gaussian filter, edge pixels replicated
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),  # c: (x - m) * c + m, m the per-image, per-channel mean
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),  # c: HSV's value channel V + c, clipped to [0, 1]
    "jpeg": (80, 65, 58, 50, 40),  # quality of a JPEG re-compression (cv2.imencode)
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),  # s: box-resize to s * 32 px and back to 32 px
}

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32) / 255.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    # Round instead of truncating (see the module docstring); clamp first so noise cannot wrap around.
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def _gaussian_noise(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU from the caller's generator: identical noise whatever device the images are on.
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    return _to_uint8(_to_unit(images) + sigma * noise)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = int(4.0 * sigma + 0.5)  # skimage.filters.gaussian's default truncate=4.0
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).to(torch.float32)


def _gaussian_blur(images: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    kernel = _gaussian_kernel(sigma)
    radius = (kernel.numel() - 1) // 2
    x = _to_unit(images)
    channels = x.shape[1]
    # Separable filter, one group per channel; replicate padding matches skimage's mode="nearest".
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), horizontal, groups=channels)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), vertical, groups=channels)
    return _to_uint8(x)


def _contrast(images: torch.Tensor, factor: float, generator: torch.Generator) -> torch.Tensor:
    x = _to_unit(images)
    means = x.mean(dim=(2, 3), keepdim=True)
    return _to_uint8((x - means) * factor + means)


def _brightness(images: torch.Tensor, shift: float, generator: torch.Generator) -> torch.Tensor:
    x = _to_unit(images)
    value = x.amax(dim=1, keepdim=True)  # HSV's V
    new_value = (value + shift).clamp(max=1.0)
    # Same H and S with a new V scales every channel by V'/V; a black pixel (V = 0, no hue) becomes grey V'.
    scaled = torch.where(value > 0, x * (new_value / value.clamp(min=1e-12)), new_value.expand_as(x))
    return _to_uint8(scaled)


def _jpeg(images: torch.Tensor, quality: float, generator: torch.Generator) -> torch.Tensor:
    quality = int(quality)
    hwc = images.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty_like(hwc)
    params = [int(cv2.IMWRITE_JPEG_QUALITY), quality]
    for i, image in enumerate(hwc):
        # OpenCV encodes BGR; reversing the channels keeps the YCbCr conversion (and chroma loss) right.
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), params)
        if not ok:
            raise RuntimeError(f"cv2.imencode failed to JPEG-encode image {i} at quality {quality}")
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        out[i] = decoded[:, :, ::-1]
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _box_resize_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """PIL's BOX resampling along one axis as a matrix: float32 (size_out, size_in), rows summing to 1.

    Follows Pillow's ``precompute_coeffs``: output pixel i averages the input pixels whose centres fall
    in a box of width max(scale, 1) centred at (i + 0.5) * scale.
    """
    scale = size_in / size_out
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    for i in range(size_out):
        centre = (i + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), size_in)
        for j in range(low, high):
            offset = (j - centre + 0.5) / filter_scale
            if -0.5 < offset <= 0.5:
                weights[i, j] = 1.0
        weights[i] /= weights[i].sum()
    return weights.to(torch.float32)


def _box_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL's BOX resize of float (N, C, H, W) whole grey levels -> float (N, C, height, width), rounded.

    Not Pillow itself: its fixed point puts some pixels one grey level away from these, and switching
    would change every saved stress result for no gain.
    """
    rows = _box_resize_matrix(x.shape[2], height)
    cols = _box_resize_matrix(x.shape[3], width)
    # Rounded to whole grey levels, as PIL's uint8 image is between the two resizes.
    return (rows @ x @ cols.T).round()


def _pixelate(images: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    height, width = images.shape[2], images.shape[3]
    small = _box_resize(images.to(torch.float32), max(1, int(height * scale)), max(1, int(width * scale)))
    return _box_resize(small, height, width).clamp(0, 255).to(torch.uint8)


# (uint8 images on the CPU, the severity's parameter, generator) -> uint8 images
CORRUPTIONS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "jpeg": _jpeg,
    "pixelate": _pixelate,
}


def corruption_seed(seed: int, name: str, severity: int) -> int:
    """The seed of one (corruption, severity) cell, derived from the run's ``seed``.

    Independent of the other cells evaluated, so a cell can be recomputed alone; stable across Python
    processes (CRC32, not ``hash``).
    """
    state = np.random.SeedSequence([int(seed), zlib.crc32(name.encode("utf-8")), int(severity)])
    return int(state.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


def corrupt(
    images: torch.Tensor, name: str, severity: int, generator: torch.Generator | int | None = None
) -> torch.Tensor:
    """Apply corruption ``name`` (a key of :data:`CORRUPTIONS`) at ``severity`` (0: an unchanged copy,
    to 5) to uint8 (N, 3, H, W) RGB images on any device (processed on the CPU, returned on theirs).

    ``generator``: a CPU ``torch.Generator`` or an integer seed (None: 0), used by ``gaussian_noise``.
    """
    images = check_images("images", images)
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known corruptions: {', '.join(CORRUPTIONS)}")
    severity = check_count("severity", severity, low=0, high=SEVERITIES[-1])
    if generator is None or isinstance(generator, (int, np.integer)):
        seed = 0 if generator is None else int(generator)
        generator = torch.Generator().manual_seed(seed)
    elif not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}"
        )
    if severity == 0:
        return images.clone()
    device = images.device
    out = CORRUPTIONS[name](images.detach().cpu(), CORRUPTION_PARAMETERS[name][severity - 1], generator)
    return out.to(device)


def stratified_subset(labels: torch.Tensor, n_images: int, seed: int) -> torch.Tensor:
    """Sorted int64 indices of at most ``n_images`` images (all N when ``n_images >= N``) with the
    classes of int64 (N,) ``labels`` as equally represented as possible, chosen within each class
    under ``seed`` (e.g. for ``config.stress_images``)."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images!r}")
    labels = torch.as_tensor(labels).cpu()
    if n_images >= labels.numel():
        return torch.arange(labels.numel())
    generator = torch.Generator().manual_seed(int(seed))
    per_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
    per_class = [idx[torch.randperm(idx.numel(), generator=generator)] for idx in per_class]
    # Round-robin over classes: every class gets floor or ceil of its share, small classes are used up.
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n_images:
        for idx in per_class:
            if depth < idx.numel() and len(chosen) < n_images:
                chosen.append(int(idx[depth]))
        depth += 1
    return torch.tensor(sorted(chosen), dtype=torch.int64)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else math.nan


@dataclass(frozen=True)
class StressSetup(Record):
    """What every model of a stress test saw: the corruptions and severities, each corruption's
    parameters per severity, the number of images and the ``seed`` of the noise."""

    corruption_names: tuple[str, ...]
    severities: tuple[int, ...]
    parameters: dict[str, tuple[float, ...]]
    num_images: int
    seed: int


@dataclass(frozen=True)
class CorruptionResult(Record):
    """One model under one corruption: ``accuracy`` and ``mean_confidence`` per severity, the mean
    accuracy over the severities and its drop from the clean accuracy (absolute, and relative to it)."""

    accuracy: tuple[float, ...]
    mean_confidence: tuple[float, ...]
    mean_accuracy: float
    absolute_drop: float
    relative_drop: float


@dataclass(frozen=True)
class ModelStress(Record):
    """One model's stress test: clean accuracy and mean confidence, each corruption's result, the mean
    accuracy over every corruption x severity and its drop from the clean accuracy; saved with the
    ``setup``'s keys, so that an entry is complete on its own."""

    clean_accuracy: float
    clean_mean_confidence: float
    corruptions: dict[str, CorruptionResult]
    mean_corruption_accuracy: float
    absolute_drop: float
    relative_drop: float
    setup: StressSetup = field(metadata=INLINE)


@dataclass(frozen=True)
class StressResult(Record):
    """:func:`run_stress_test`'s result (``stress/corruptions.json``): the ``setup``'s keys, then
    ``models`` ``{name: ModelStress}``."""

    setup: StressSetup = field(metadata=INLINE)
    models: dict[str, ModelStress]


def run_stress_test(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seed: int = 0,
    **predict_options: Any,
) -> StressResult:
    """Accuracy of every model on the clean images and on every corruption (:data:`CORRUPTIONS`) x
    severity (:data:`SEVERITIES`).

    Every model sees the same corrupted pixels, a cell's noise seeded by :func:`corruption_seed`.
    ``models``: name -> trained model; ``images`` uint8 (N, 3, 32, 32), ``labels`` int64 (N,);
    ``predict_options``: :func:`cifar_helpers.core.evaluation.predict`'s keyword arguments.
    """
    images = check_images("images", images)
    # as_tensor keeps accepting a list or NumPy array of labels; predict needs them as int64 (N,).
    labels = check_labels("labels", torch.as_tensor(labels), images.shape[0])
    if not models:
        raise ValueError("models must name at least one model, e.g. {'baseline': model}")
    names, severities = list(CORRUPTIONS), list(SEVERITIES)

    def evaluate(model: nn.Module, batch: torch.Tensor) -> tuple[float, float]:
        predictions = predict(model, batch, labels, **predict_options)
        return accuracy(predictions), float(predictions.confidences.to(torch.float64).mean())

    clean = {model_name: evaluate(model, images) for model_name, model in models.items()}
    # cells[model][corruption]: (accuracy, mean confidence) per severity
    cells = {m: {name: ([], []) for name in names} for m in models}
    for name in names:
        for severity in severities:
            corrupted = corrupt(images, name, severity, corruption_seed(seed, name, severity))
            for model_name, model in models.items():
                acc, confidence = evaluate(model, corrupted)
                cells[model_name][name][0].append(acc)
                cells[model_name][name][1].append(confidence)
    setup = StressSetup(
        corruption_names=tuple(names),
        severities=tuple(severities),
        parameters={name: CORRUPTION_PARAMETERS[name] for name in names},
        num_images=int(images.shape[0]),
        seed=int(seed),
    )
    results = {}
    for m, (clean_accuracy, clean_confidence) in clean.items():
        corruptions = {}
        for name, (accuracies, confidences) in cells[m].items():
            mean_accuracy = _mean(accuracies)
            drops = _drops(clean_accuracy, mean_accuracy)
            corruptions[name] = CorruptionResult(tuple(accuracies), tuple(confidences), mean_accuracy, *drops)
        mean = _mean([accuracy for accuracies, _ in cells[m].values() for accuracy in accuracies])
        results[m] = ModelStress(
            clean_accuracy, clean_confidence, corruptions, mean, *_drops(clean_accuracy, mean), setup
        )
    return StressResult(setup, results)


def _drops(clean: float, corrupted: float) -> tuple[float, float]:
    """The accuracy lost to corruption, absolute and as a share of the clean accuracy."""
    drop = clean - corrupted
    return drop, drop / clean if clean > 0 else math.nan
