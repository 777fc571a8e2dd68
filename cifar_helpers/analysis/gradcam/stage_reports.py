"""The measures notebooks 03 and 05 record, each in one call: failures' attention against
confidence-matched correct images plus the deletion test (:func:`failure_attention_report`), and
two models' attention on the same images (:func:`compare_attention`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from cifar_helpers.core.checks import model_device
from cifar_helpers.core.normalization import normalize
from cifar_helpers.rundir.records import Record

from .attention import DeletionCurve, attention_measures, deletion_curve, periphery_share
from .cam import FailureMaps, explain_images


def matched_controls(
    confidences: Tensor, predicted: Tensor, labels: Tensor, indices: Tensor, seed: int
) -> Tensor:
    """For each failure at int64 (K,) ``indices``, a correctly classified image (``predicted == labels``,
    int64 (N,)) of the nearest of float (N,) ``confidences`` and the same predicted class, so a
    difference in attention is not a difference in confidence or in the class mix in disguise.

    Matched greedily from the most confident failure down, without replacement until every correct
    image of the class has been used once, another class's only where the class has none; ties broken
    at random by ``seed``. Returns int64 (K,) indices into the split, aligned with ``indices``.
    """
    candidates = torch.nonzero((predicted == labels).cpu()).flatten()
    if len(candidates) == 0 and len(indices):
        raise ValueError("there are no correctly classified images to match against")
    # A random candidate order makes argmin's first-minimum rule a random tie-break.
    candidates = candidates[torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))]
    pool = confidences.detach().cpu().double()[candidates]
    references = confidences[indices].detach().cpu().double()
    pool_classes, wanted = predicted.cpu()[candidates], predicted[indices].cpu()
    available = torch.ones(len(candidates), dtype=torch.bool)
    matches = torch.empty(len(references), dtype=torch.int64)
    for ref in torch.sort(references, descending=True, stable=True).indices.tolist():
        same = pool_classes == wanted[ref]
        if not (available & same).any():  # the class's correct images all used: use them again
            available |= same
        if not available.any():
            available.fill_(True)
        # A class mismatch costs 2, more than any difference of confidences: same-class candidates first.
        cost = (pool - references[ref]).abs() + 2.0 * (pool_classes != wanted[ref])
        distance = torch.where(available, cost, math.inf)
        best = int(distance.argmin())
        available[best] = False
        matches[ref] = candidates[best]
    return matches


def _share_list(maps: Tensor, center: int) -> list[float | None]:
    """Per-image periphery shares as a JSON-ready list (None for an all-zero map)."""
    return [None if math.isnan(v) else v for v in periphery_share(maps, center).tolist()]


@dataclass(frozen=True, eq=False)
class AttentionReport(Record):
    """Notebook 03's attention measures (:func:`failure_attention_report`, ``gradcam/measures.json``):
    ``periphery`` (:func:`attention_measures`) of the ``num_failures`` failures' maps against their
    controls', each map's periphery share (None for an all-zero map) outside the central ``center`` px,
    the failures' and the controls' indices into the split, and the ``deletion`` test in
    ``deletion_steps`` steps (None without failures)."""

    num_failures: int
    center: int
    deletion_steps: int
    periphery: dict[str, Any]
    failure_periphery_shares: list[float | None]
    control_periphery_shares: list[float | None]
    failure_indices: list[int]
    control_indices: list[int]
    deletion: DeletionCurve | None


def failure_attention_report(
    model: nn.Module,
    images_uint8: Tensor,
    probs: Tensor,
    labels: Tensor,
    failure_maps: FailureMaps,
    *,
    layer: nn.Module | str | None = None,
    deletion_steps: int = 10,
    seed: int = 0,
    center: int = 16,
    batch_size: int = 256,
) -> AttentionReport:
    """Are the failures' heatmaps different, and are they faithful? Notebook 03's measures: the
    periphery share of each failure's predicted-class map against correct images of matched confidence
    and predicted class (:func:`matched_controls`), and the deletion test (:func:`deletion_curve`).

    ``images_uint8`` uint8 (N, 3, H, W), ``probs`` float (N, C) and ``labels`` int64 (N,) cover the
    whole split; ``failure_maps`` is :func:`gradcam_for_failures`' output; ``layer`` and
    ``batch_size`` as for :func:`grad_cam`.
    """
    indices, fail_maps = failure_maps.indices, failure_maps.predicted_maps
    confidences, predicted = probs.max(dim=1)
    controls = matched_controls(confidences, predicted, labels, indices, seed)
    control_maps = explain_images(
        model, images_uint8[controls], predicted[controls], layer=layer, batch_size=batch_size
    )
    deletion = None
    if len(indices):
        deletion = deletion_curve(
            model,
            normalize(images_uint8[indices].to(model_device(model, images_uint8.device))),
            failure_maps.predicted,
            fail_maps,
            steps=deletion_steps,
            generator=torch.Generator().manual_seed(seed),
            batch_size=batch_size,
        )
    return AttentionReport(
        len(indices),
        center,
        deletion_steps,
        attention_measures(fail_maps, control_maps, center=center),
        _share_list(fail_maps, center),
        _share_list(control_maps, center),
        indices.tolist(),
        controls.tolist(),
        deletion,
    )


def compare_attention(before_maps: Tensor, after_maps: Tensor, *, center: int = 16) -> dict[str, Any]:
    """Periphery share of the baseline's and the augmented model's float (K, H, W) maps of the same
    images, aligned image by image: did attention move onto the object?

    Returns:
        JSON-ready: per model {n, mean, median} of the periphery share and the per-image shares;
        ``mean_change`` (after - before over images where both maps are non-empty);
        ``share_moved_inward`` (fraction of those images whose periphery share fell); ``wilcoxon_p``.
    """
    measures = attention_measures(before_maps, after_maps, center=center)
    return {
        "center": center,
        "baseline": measures["failures"],
        "augmented": measures["controls"],
        "baseline_shares": _share_list(before_maps, center),
        "augmented_shares": _share_list(after_maps, center),
        "pairs": measures["pairs"],
        "mean_change": None if measures["mean_difference"] is None else -measures["mean_difference"],
        # "failure higher" is "before higher": the periphery share fell, attention moved inward.
        "share_moved_inward": measures["share_failure_higher"],
        "wilcoxon_p": measures["wilcoxon_p"],
    }


def _pct(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.0%}"


def describe_attention(measures: AttentionReport) -> str:
    """:func:`failure_attention_report`'s measures in words (notebook 03)."""
    if measures.num_failures == 0:
        return "no high-confidence failures to explain"
    periphery, center, deletion = measures.periphery, measures.center, measures.deletion
    lines = [
        f"Grad-CAM mass outside the central {center}x{center} pixels (a uniform map puts 75 % there):",
        f"  high-confidence failures:             median {_pct(periphery['failures']['median'])}",
        f"  correct images of matched confidence: median {_pct(periphery['controls']['median'])}",
    ]
    if periphery["share_failure_higher"] is not None:  # None without a pair to compare
        lines.append(
            f"  the failure's map is more peripheral than its control's in "
            f"{_pct(periphery['share_failure_higher'])} of {periphery['pairs']} pairs"
        )
    if deletion is not None:  # None without deletion steps
        lines += [
            "mean-blanking deletion (area under the predicted class's probability as pixels are set to the "
            f"mean): most attended first {deletion.attended_auc:.2f}, random {deletion.random_auc:.2f}",
            "  not a faithfulness verdict: scattered mean-valued pixels are out of distribution themselves "
            "and destroy the prediction whatever their order; ROAD (below) removes pixels without it",
        ]
    return "\n".join(lines)


def describe_attention_change(measures: dict[str, Any]) -> str:
    """:func:`compare_attention`'s periphery comparison in words (notebook 05)."""
    if measures["pairs"] == 0:
        return "no pairs of non-empty heatmaps to compare"
    c = measures["center"]
    return "\n".join(
        [
            f"Grad-CAM mass outside the central {c}x{c} pixels, on the baseline's failures "
            f"({measures['pairs']} images):",
            *(f"  {name:<10} median {_pct(measures[name]['median'])}" for name in ("baseline", "augmented")),
            f"attention moved towards the centre on {_pct(measures['share_moved_inward'])} of the images",
        ]
    )
