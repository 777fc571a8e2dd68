"""Is Grad-CAM telling us about the model? The model-parameter randomisation test (Adebayo et al., 2018).

The layers of a copy of the trained network are re-initialised cumulatively from the top, and each
step's Grad-CAM maps are compared with the trained model's by Spearman rank correlation; maps that
depend on what was learned must decorrelate. (The positive control, a check with a planted cause, is
:mod:`cifar_helpers.analysis.positive_control`.)
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from cifar_helpers.analysis.gradcam import grad_cam
from cifar_helpers.core.checks import check_float_images, eval_mode, model_device
from cifar_helpers.rundir.records import Record

# Cascading randomisation order, top of the network first: (step name, modules re-initialised).
RANDOMISATION_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("linear", ("linear",)),
    ("layer4", ("layer4",)),
    ("layer3", ("layer3",)),
    ("layer2", ("layer2",)),
    ("layer1", ("layer1",)),
    ("conv1/bn1", ("conv1", "bn1")),
)
TRAINED_STEP = "trained"  # step 0: nothing randomised (the trained maps against themselves)


def spearman_per_image(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between two stacks of float (N, H, W) maps of the same images.

    Returns float64 (N,) in [-1, 1] (ties get average ranks); NaN where either map is constant (0
    would read "no evidence" as "unrelated evidence").
    """
    if reference.shape != other.shape or reference.ndim != 3:
        raise ValueError(
            f"maps must be two (N, H, W) tensors of the same shape, got {tuple(reference.shape)} and "
            f"{tuple(other.shape)}"
        )
    a = reference.detach().flatten(1).cpu().to(torch.float64).numpy()
    b = other.detach().flatten(1).cpu().to(torch.float64).numpy()
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[i] = spearmanr(a[i], b[i]).statistic
    return torch.from_numpy(out)


def nan_mean_std(values: torch.Tensor) -> tuple[float, float]:
    """Mean and population std (ddof 0: defined even for one image) of the non-NaN values, in float64.

    Not torch.nanmean: its summation order differs in the last bit, which would change sanity.json and
    positive_control.json.
    """
    values = values.to(torch.float64)
    valid = values[~torch.isnan(values)]
    return (float(valid.mean()), float(valid.std(unbiased=False))) if valid.numel() else (math.nan, math.nan)


def cascading_randomisation_maps(
    model: nn.Module,
    images_normalised: torch.Tensor,
    *,
    layer: str | None = None,
    seed: int = 0,
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Grad-CAM maps of the trained model and of each cumulatively randomised copy (the model itself is
    left unchanged: a deep copy is randomised; step k re-initialises under ``seed + k``).

    ``images_normalised`` float (N, 3, H, W); ``layer`` the Grad-CAM layer (None: ``layer4``). Every
    step explains the *trained* model's predictions.

    Returns:
        ``(steps, maps, targets)``: step names (``"trained"`` first, then :data:`RANDOMISATION_STEPS`),
        float32 maps (S, N, H, W) on the CPU, and the int64 (N,) target classes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    missing = [n for _, names in RANDOMISATION_STEPS for n in names if n not in dict(model.named_modules())]
    if missing:
        raise ValueError(
            f"model has no submodule(s) {', '.join(map(repr, missing))}; the randomisation test expects "
            f"the CIFAR ResNet's {', '.join(n for _, m in RANDOMISATION_STEPS for n in m)}"
        )
    images_normalised = check_float_images("images_normalised", images_normalised)
    if images_normalised.shape[0] == 0:
        raise ValueError(
            f"images_normalised must be (N, 3, H, W) with N >= 1, got {tuple(images_normalised.shape)}"
        )
    device = model_device(model)
    images = images_normalised.to(device)
    with eval_mode(model), torch.no_grad():
        target_classes = model(images).argmax(dim=1).cpu()

    steps = [TRAINED_STEP]
    maps = [grad_cam(model, images, target_classes, layer).cpu()]
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    for k, (step, names) in enumerate(RANDOMISATION_STEPS, start=1):
        # Forked so the caller's random state is left as it was; BatchNorm's reset clears its statistics.
        for name in names:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + k)
                for sub in modules[name].modules():
                    if callable(getattr(sub, "reset_parameters", None)):
                        sub.reset_parameters()
        steps.append(step)
        maps.append(grad_cam(randomised, images, target_classes, layer).cpu())
    return steps, torch.stack(maps), target_classes


@dataclass(frozen=True)
class RandomisationSummary(Record):
    """The randomisation test's result (:func:`summarise_randomisation`, saved as ``sanity.json``).

    One entry per step of ``steps`` (``"trained"`` first: the trained model against itself) in
    ``spearman_mean``, ``spearman_std`` (over the ``num_defined`` images whose two maps are both
    non-constant; NaN when none), out of ``num_images``; ``layer`` and ``seed`` as the test ran.
    """

    steps: tuple[str, ...]
    spearman_mean: tuple[float, ...]
    spearman_std: tuple[float, ...]
    num_defined: tuple[int, ...]
    num_images: int
    layer: str
    seed: int

    def __post_init__(self) -> None:
        lengths = {len(self.steps), len(self.spearman_mean), len(self.spearman_std), len(self.num_defined)}
        if len(lengths) != 1:
            raise ValueError("steps, spearman_mean, spearman_std and num_defined must have the same length")


def summarise_randomisation(
    steps: list[str], maps: torch.Tensor, *, layer: str | None = None, seed: int = 0
) -> RandomisationSummary:
    """The cascading model-parameter randomisation test of Adebayo et al. (2018) for Grad-CAM: the
    Spearman correlation of every step's maps (float (S, N, H, W), step 0 the trained model's, from
    :func:`cascading_randomisation_maps`) with the trained maps; ``layer`` (None: ``layer4``) and
    ``seed`` are recorded.
    """
    if maps.ndim != 4 or maps.shape[0] != len(steps):
        raise ValueError(f"maps must be (S, N, H, W) with S = {len(steps)} steps, got {tuple(maps.shape)}")
    rhos = [spearman_per_image(maps[0], step_maps) for step_maps in maps]
    stats = [nan_mean_std(rho) for rho in rhos]
    return RandomisationSummary(
        steps=tuple(steps),
        spearman_mean=tuple(mean for mean, _ in stats),
        spearman_std=tuple(std for _, std in stats),
        num_defined=tuple(int((~torch.isnan(rho)).sum()) for rho in rhos),
        num_images=int(maps.shape[1]),
        layer=layer if layer is not None else "layer4",
        seed=int(seed),
    )
