"""Measures of where Grad-CAM maps put their mass (periphery, object mask, pointing game), failures
against matched controls, and the deletion test."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cifar_helpers.core.checks import (
    check_batch_size,
    check_count,
    check_float_images,
    check_maps,
    check_target_classes,
    eval_mode,
    model_device,
)
from cifar_helpers.rundir.records import Record


def _check_masks(masks: Tensor, maps: Tensor) -> Tensor:
    if not isinstance(masks, Tensor) or masks.dtype != torch.bool:
        raise TypeError(f"masks must be a bool tensor (N, H, W), got {getattr(masks, 'dtype', type(masks))}")
    if masks.shape != maps.shape:
        raise ValueError(f"masks must have the maps' shape {tuple(maps.shape)}, got {tuple(masks.shape)}")
    return masks.to(maps.device)


def _share(maps: Tensor, region: Tensor) -> Tensor:
    """Share of each map's mass inside ``region`` (bool, broadcastable to maps); NaN for an empty map."""
    total = maps.sum(dim=(1, 2), dtype=torch.float64)
    inside = (maps * region).sum(dim=(1, 2), dtype=torch.float64)
    share = torch.where(total > 0, inside / total.clamp_min(math.ulp(0.0)), math.nan)
    return share.to(maps.dtype)


def periphery_share(maps: Tensor, center: int = 16) -> Tensor:
    """Share of each non-negative float (N, H, W) map's mass outside the central ``center`` x ``center``
    square, which starts at ((H - center) // 2, (W - center) // 2): rows and columns 8..23 for 32x32.

    Returns (N,) in the maps' dtype, in [0, 1]; NaN for an all-zero map.
    """
    maps = check_maps("maps", maps, low=0.0)
    height, width = maps.shape[1:]
    center = check_count("center", center, high=min(height, width))
    top, left = (height - center) // 2, (width - center) // 2
    outside = torch.ones((height, width), dtype=torch.bool, device=maps.device)
    outside[top : top + center, left : left + center] = False
    return _share(maps, outside)


def mask_share(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of each non-negative float (N, H, W) map's mass inside its bool (N, H, W) object mask:
    (N,) in [0, 1] in the maps' dtype, NaN for an all-zero map."""
    maps = check_maps("maps", maps, low=0.0)
    return _share(maps, _check_masks(masks, maps))


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Whether each map's maximum falls inside its mask (Zhang et al., 2016), bool (N,): with several
    maximal pixels the first in row-major order counts; an all-zero map points nowhere (False)."""
    maps = check_maps("maps", maps, low=0.0)
    masks = _check_masks(masks, maps)
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1)
    hit = masks.flatten(1).gather(1, peak[:, None])[:, 0]
    return hit & (flat.amax(dim=1) > 0)


@dataclass(frozen=True, eq=False)
class DeletionCurve(Record):
    """The deletion test (:func:`deletion_curve`): float64 (S,) CPU tensors of the ``fractions`` of
    pixels blanked and the mean target probability with the most ``attended`` or ``random`` pixels
    blanked first, and the trapezoidal areas under both; the entry ``deletion`` of ``measures.json``.
    (No ``==``: tensors.)"""

    fractions: Tensor
    attended: Tensor
    random: Tensor
    attended_auc: float
    random_auc: float


def deletion_curve(
    model: nn.Module,
    images: Tensor,
    target_classes: Tensor,
    maps: Tensor,
    *,
    steps: int = 10,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> DeletionCurve:
    """Probability of the target class as the most attended pixels are blanked, versus random pixels.

    Pixels are set to 0 (normalised: the dataset mean) in ``steps`` equal steps, by decreasing map
    value (ties: row-major order) or in a random order (``generator``; None: seed 0).
    ``images`` float (N, 3, H, W) normalised, ``target_classes`` int64 (N,),
    ``maps`` float (N, H, W); the model runs in eval mode (modes restored).
    """
    images = check_float_images("images", images)
    n, _, height, width = images.shape
    targets = check_target_classes("target_classes", target_classes, n)
    maps = check_maps("maps", maps, (n, height, width), low=0.0)
    check_count("steps", steps)
    batch_size = check_batch_size("batch_size", batch_size, n)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    device = model_device(model, images.device)

    pixels = height * width
    counts = [s * pixels // steps for s in range(steps + 1)]
    attended_order = torch.sort(maps.cpu().flatten(1), dim=1, descending=True, stable=True).indices
    random_order = torch.rand((n, pixels), generator=generator).argsort(dim=1)
    positions = torch.arange(pixels).expand(n, pixels)
    # rank[i, p] = when pixel p of image i is blanked; "blanked at step s" is then rank < counts[s].
    ranks = {
        name: torch.empty((n, pixels), dtype=torch.int64).scatter_(1, order, positions)
        for name, order in (("attended", attended_order), ("random", random_order))
    }
    totals = {name: torch.zeros(steps + 1, dtype=torch.float64) for name in ranks}

    with eval_mode(model), torch.no_grad():
        for start in range(0, n, batch_size):
            x = images[start : start + batch_size].to(device)
            batch_targets = targets[start : start + batch_size].to(device)
            for name, rank in ranks.items():
                batch_rank = rank[start : start + batch_size].to(device).view(-1, 1, height, width)
                for step, count in enumerate(counts):
                    probs = model(x * (batch_rank >= count)).float().softmax(dim=1)
                    target_probs = probs.gather(1, batch_targets[:, None])
                    totals[name][step] += target_probs.sum(dtype=torch.float64).item()

    fractions = torch.tensor(counts, dtype=torch.float64) / pixels
    attended, random = totals["attended"] / max(n, 1), totals["random"] / max(n, 1)
    attended_auc, random_auc = (float(torch.trapezoid(y, fractions)) for y in (attended, random))
    return DeletionCurve(fractions, attended, random, attended_auc, random_auc)


def attention_measures(failure_maps: Tensor, control_maps: Tensor, *, center: int = 16) -> dict[str, Any]:
    """Periphery share of failures' float (K, H, W) maps versus their confidence-matched controls' maps
    (aligned with the failures, from :func:`.stage_reports.matched_controls`), JSON-ready.

    Returns:
        ``center``; ``failures`` and ``controls``: {n, mean, median} of the periphery share over
        non-empty maps; ``pairs``: pairs where both maps are non-empty; ``mean_difference``
        (failure - control over those pairs); ``share_failure_higher``; ``wilcoxon_p``: two-sided
        Wilcoxon signed-rank p-value over the pairs. Undefined values are None.
    """
    failure_maps = check_maps("failure_maps", failure_maps, low=0.0)
    control_maps = check_maps("control_maps", control_maps, low=0.0)
    if failure_maps.shape[0] != control_maps.shape[0]:
        raise ValueError(
            f"failure_maps ({failure_maps.shape[0]} maps) and control_maps ({control_maps.shape[0]}) "
            "must be paired one to one"
        )
    failure_share = periphery_share(failure_maps, center).double().cpu()
    control_share = periphery_share(control_maps, center).double().cpu()

    def describe(share: Tensor) -> dict[str, Any]:
        share = share[~share.isnan()]
        if len(share) == 0:
            return {"n": 0, "mean": None, "median": None}
        return {"n": len(share), "mean": float(share.mean()), "median": float(share.quantile(0.5))}

    both = ~failure_share.isnan() & ~control_share.isnan()
    difference = failure_share[both] - control_share[both]
    p_value = math.nan  # the test is undefined when every pair ties
    if (difference != 0).any():
        from scipy.stats import wilcoxon

        p_value = float(wilcoxon(difference.numpy()).pvalue)
    return {
        "center": center,
        "failures": describe(failure_share),
        "controls": describe(control_share),
        "pairs": int(both.sum()),
        "mean_difference": float(difference.mean()) if len(difference) else None,
        "share_failure_higher": float((difference > 0).double().mean()) if len(difference) else None,
        "wilcoxon_p": None if math.isnan(p_value) else p_value,
    }
