"""Batched Grad-CAM on any convolutional layer, and measures of where the maps put their mass.

Grad-CAM (Selvaraju et al., 2017): for a target class c and a layer with activations A (K, h, w),
the channel weights are the spatial mean of d logit_c / d A_k (the logit, before the softmax), and
the map is ReLU(sum_k w_k A_k), bilinearly upsampled to the input size and divided by its maximum.

The maps of a whole batch come from one forward and one backward pass on the model's device: in
eval mode the samples do not interact, so the gradient of the *sum* of each sample's target logit
with respect to the batch's activations is each sample's own gradient. Only the activation's
gradient is computed (``torch.autograd.grad``), so parameters' ``.grad`` are never touched.

Typical use::

    maps = grad_cam(model, normalize(images_uint8.to(device)), predicted)      # (N, 32, 32) in [0, 1]
    heatmaps = gradcam_for_failures(model, test_images, failures, layer="layer4")
    periphery_share(heatmaps["predicted_maps"])                                 # (K,) in [0, 1]
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checks import check_images, check_target_classes, model_device
from .failures import FailureSet
from .normalization import normalize

DEFAULT_LAYER = "layer4"


# --------------------------------------------------------------------------------------------------
# Validation and small helpers
# --------------------------------------------------------------------------------------------------
def _check_batch_size(batch_size: int | None, n: int) -> int:
    if batch_size is None:
        return max(n, 1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return batch_size


def _check_float_images(images: Tensor, name: str = "images") -> Tensor:
    if not isinstance(images, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, 3, H, W), got shape {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(
            f"{name} must be normalised floats (use cifar_helpers.normalization.normalize on uint8 "
            f"images), got dtype {images.dtype}"
        )
    return images.detach()


def _check_maps(maps: Tensor, name: str = "maps") -> Tensor:
    if not isinstance(maps, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor (N, H, W), got {type(maps).__name__}")
    if maps.ndim != 3:
        raise ValueError(f"{name} must be 3-D (N, H, W), got shape {tuple(maps.shape)}")
    if not maps.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got dtype {maps.dtype}")
    if maps.numel() and (maps.min() < 0 or not torch.isfinite(maps).all()):
        raise ValueError(
            f"{name} must be non-negative and finite (Grad-CAM maps are), got negative or NaN values"
        )
    return maps.detach()


def _check_masks(masks: Tensor, maps: Tensor) -> Tensor:
    if not isinstance(masks, Tensor) or masks.dtype != torch.bool:
        raise TypeError(f"masks must be a bool tensor (N, H, W), got {getattr(masks, 'dtype', type(masks))}")
    if masks.shape != maps.shape:
        raise ValueError(f"masks must have the maps' shape {tuple(maps.shape)}, got {tuple(masks.shape)}")
    return masks.to(maps.device)


def _save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    # Per module, not just the root: a caller may have put some submodules in eval on purpose.
    return [(module, module.training) for module in model.modules()]


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for module, training in modes:
        module.training = training


def resolve_layer(model: nn.Module, layer: nn.Module | str | None = None) -> nn.Module:
    """The module Grad-CAM explains.

    Args:
        model: the network.
        layer: None for ``model.layer4`` (the last convolutional stage of our ResNets), a dotted
            submodule name such as ``"layer3.1"`` or ``"layer4.1.conv2"``, or a submodule itself.

    Raises:
        ValueError: the name is unknown (the message lists the valid names) or the module is not
            part of ``model``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    is_default = layer is None
    if layer is None:
        layer = DEFAULT_LAYER
    if isinstance(layer, str):
        modules = dict(model.named_modules())
        if layer and layer in modules:
            return modules[layer]
        names = [name for name in modules if name]
        close = difflib.get_close_matches(layer, names, n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        default = " (the default layer; pass layer= to choose another)" if is_default else ""
        raise ValueError(
            f"layer {layer!r}{default} is not a submodule of {type(model).__name__}{hint}; "
            f"valid names: {', '.join(names) or '(the model has no submodules)'}"
        )
    if isinstance(layer, nn.Module):
        if not any(module is layer for module in model.modules()):
            raise ValueError(f"layer {type(layer).__name__} is not a submodule of {type(model).__name__}")
        return layer
    raise TypeError(f"layer must be None, a dotted module name or an nn.Module, got {type(layer).__name__}")


# --------------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------------
def grad_cam(
    model: nn.Module,
    images: Tensor,
    target_classes: Tensor | int,
    layer: nn.Module | str | None = None,
    *,
    batch_size: int | None = None,
) -> Tensor:
    """Grad-CAM maps of ``target_classes`` for each image.

    Args:
        model: a classifier returning logits (N, C). It is run in eval mode (BatchNorm uses its
            running statistics); every module's mode is restored afterwards, and parameters'
            ``.grad`` are left exactly as they were.
        images: float (N, 3, H, W), normalised, any device (moved to the model's device).
        target_classes: int64 (N,) class to explain per image, or one int for all.
        layer: see :func:`resolve_layer`; its output must be a (N, K, h, w) tensor.
        batch_size: images per forward/backward pass; None does all N in one pass.

    Returns:
        float32 (N, H, W) on the model's device, each map in [0, 1] with maximum 1, or all zeros when
        no location has positive evidence for the class.

    Works inside ``torch.no_grad()`` and ``torch.inference_mode()``: gradients are enabled internally.
    """
    target_layer = resolve_layer(model, layer)
    images = _check_float_images(images)
    n, _, height, width = images.shape
    targets = check_target_classes("target_classes", target_classes, n)
    batch_size = _check_batch_size(batch_size, n)
    device = model_device(model, images.device)
    targets = targets.to(device)
    captured: list[Tensor] = []

    def capture(module: nn.Module, inputs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"Grad-CAM needs a layer whose output is (N, K, h, w); this one returned {shape}"
            )
        # The activation becomes a leaf of a fresh graph: its gradient is all Grad-CAM needs, and
        # recording only from here on leaves the layers before it graph-free (a fraction of the memory
        # of a full backward). The caller's no_grad block restores the grad mode on exit.
        torch.set_grad_enabled(True)
        activation = output.detach().requires_grad_(True)
        captured.append(activation)
        # The model continues with a copy, so a later in-place op (ReLU(inplace=True)) neither fails
        # on a leaf nor alters the activation the map is built from.
        return activation.clone()

    modes = _save_modes(model)
    handle = target_layer.register_forward_hook(capture)
    try:
        model.eval()
        # inference_mode(False) lets a caller inside torch.inference_mode() get gradients at all; the
        # output is allocated inside it because inference tensors cannot be written to outside.
        with torch.inference_mode(False):
            maps = torch.empty((n, height, width), dtype=torch.float32, device=device)
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                captured.clear()
                with torch.no_grad():
                    logits = model(images[start:stop].to(device))
                if len(captured) != 1:
                    raise RuntimeError(
                        f"the Grad-CAM layer ran {len(captured)} times in one forward pass; "
                        "choose a layer the model calls exactly once"
                    )
                if logits.ndim != 2 or not logits.requires_grad:
                    raise RuntimeError(
                        "the model must return logits (N, C) computed from the Grad-CAM layer's output"
                    )
                batch_targets = targets[start:stop]
                if batch_targets.max() >= logits.shape[1]:
                    raise ValueError(
                        f"target_classes must be < the model's {logits.shape[1]} classes, "
                        f"got {int(batch_targets.max())}"
                    )
                # Backpropagating a one-hot per sample equals the gradient of the sum of the selected
                # logits: one backward gives every sample its own gradient.
                selector = torch.zeros_like(logits).scatter_(1, batch_targets[:, None], 1.0)
                (gradient,) = torch.autograd.grad(logits, captured[0], grad_outputs=selector)
                activation = captured[0].detach().float()
                weights = gradient.float().mean(dim=(2, 3), keepdim=True)
                cam = F.relu((weights * activation).sum(dim=1, keepdim=True))
                cam = F.interpolate(cam, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
                peak = cam.amax(dim=(1, 2), keepdim=True)
                maps[start:stop] = torch.where(
                    peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), 0.0
                )
                del logits  # frees this batch's graph before the next forward builds one
    finally:
        handle.remove()
        _restore_modes(modes)
    return maps


def gradcam_for_failures(
    model: nn.Module,
    images_uint8: Tensor,
    failures: FailureSet,
    *,
    layer: nn.Module | str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    max_items: int | None = None,
) -> dict[str, Tensor]:
    """Grad-CAM maps of the predicted (wrong) class and of the true class for each failure.

    The predicted-class map shows where the model found evidence for what it said; the true-class map
    where it found (or missed) evidence for the right answer.

    Args:
        model: the model whose failures these are, already on ``device``.
        images_uint8: uint8 (N, 3, H, W) the whole split the failures were found on (CPU is fine;
            only the failures' images are moved).
        failures: from :func:`cifar_helpers.failures.find_high_confidence_failures` on that split.
        layer: see :func:`resolve_layer`.
        batch_size: images per pass.
        device: where to compute; None uses the model's device. The model is not moved: a device
            that differs from the model's raises.
        max_items: explain only the first (most confident) ``max_items`` failures.

    Returns:
        On the CPU: ``indices`` int64 (K,), ``predicted`` and ``true_labels`` int64 (K,),
        ``predicted_maps`` and ``true_maps`` float32 (K, H, W) in [0, 1].
    """
    images_uint8 = check_images("images_uint8", images_uint8)
    if not isinstance(failures, FailureSet):
        raise TypeError(f"failures must be a FailureSet, got {type(failures).__name__}")
    if failures.num_images != len(images_uint8):
        raise ValueError(
            f"the failures were found on {failures.num_images} images but images_uint8 holds "
            f"{len(images_uint8)}; pass the whole split they index into"
        )
    if max_items is not None and (
        isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0
    ):
        raise ValueError(f"max_items must be a non-negative integer or None, got {max_items!r}")
    batch_size = _check_batch_size(batch_size, len(failures))
    home = model_device(model, images_uint8.device)
    requested = home if device is None else torch.device(device)
    if requested.type != home.type or requested.index not in (None, home.index):
        raise ValueError(f"device={str(device)!r} but the model is on {home}; move the model first")
    target_layer = resolve_layer(model, layer)

    k = len(failures) if max_items is None else min(max_items, len(failures))
    indices = failures.indices[:k]
    predicted, true_labels = failures.predicted[:k], failures.true_labels[:k]
    height, width = images_uint8.shape[2:]
    predicted_maps = torch.empty((k, height, width), dtype=torch.float32)
    true_maps = torch.empty((k, height, width), dtype=torch.float32)
    for start in range(0, k, batch_size):
        batch = slice(start, start + batch_size)
        x = normalize(images_uint8[indices[batch]].to(home))
        predicted_maps[batch] = grad_cam(model, x, predicted[batch], target_layer).cpu()
        true_maps[batch] = grad_cam(model, x, true_labels[batch], target_layer).cpu()
    return {
        "indices": indices.clone(),
        "predicted": predicted.clone(),
        "true_labels": true_labels.clone(),
        "predicted_maps": predicted_maps,
        "true_maps": true_maps,
    }


# --------------------------------------------------------------------------------------------------
# Where the mass is
# --------------------------------------------------------------------------------------------------
def _share(maps: Tensor, region: Tensor) -> Tensor:
    """Share of each map's mass inside ``region`` (bool, broadcastable to maps); NaN for an empty map."""
    total = maps.sum(dim=(1, 2), dtype=torch.float64)
    inside = (maps * region).sum(dim=(1, 2), dtype=torch.float64)
    share = torch.where(total > 0, inside / total.clamp_min(math.ulp(0.0)), math.nan)
    return share.to(maps.dtype)


def periphery_share(maps: Tensor, center: int = 16) -> Tensor:
    """Share of each map's mass outside the central ``center`` x ``center`` square.

    Args:
        maps: non-negative float (N, H, W), e.g. Grad-CAM maps.
        center: side of the central square, 1 <= center <= min(H, W). It starts at
            ((H - center) // 2, (W - center) // 2): rows and columns 8..23 for 32x32 and 16.

    Returns:
        (N,) in the maps' dtype, in [0, 1]: 0 when all the mass is in the centre, 1 when it is all
        outside. NaN for an all-zero map, which has no mass to place anywhere; use ``nanmean`` or
        drop them before averaging.
    """
    maps = _check_maps(maps)
    height, width = maps.shape[1:]
    if isinstance(center, bool) or not isinstance(center, int) or not 1 <= center <= min(height, width):
        raise ValueError(
            f"center must be an integer in [1, {min(height, width)}] for {height}x{width} maps, "
            f"got {center!r}"
        )
    top, left = (height - center) // 2, (width - center) // 2
    outside = torch.ones((height, width), dtype=torch.bool, device=maps.device)
    outside[top : top + center, left : left + center] = False
    return _share(maps, outside)


def mask_share(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of each map's mass inside its object mask.

    Args:
        maps: non-negative float (N, H, W).
        masks: bool (N, H, W), True on the object.

    Returns:
        (N,) in [0, 1] in the maps' dtype; NaN for an all-zero map.
    """
    maps = _check_maps(maps)
    return _share(maps, _check_masks(masks, maps))


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Whether each map's maximum falls inside its mask (Zhang et al., 2016).

    Args:
        maps: non-negative float (N, H, W).
        masks: bool (N, H, W).

    Returns:
        bool (N,). With several maximal pixels the first in row-major order counts; an all-zero map
        points nowhere and scores False.
    """
    maps = _check_maps(maps)
    masks = _check_masks(masks, maps)
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1)
    hit = masks.flatten(1).gather(1, peak[:, None])[:, 0]
    return hit & (flat.amax(dim=1) > 0)


def matched_confidence_controls(
    confidences: Tensor,
    correct: Tensor,
    reference_confidences: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """For each reference (failure), a correctly classified image with the nearest confidence.

    Comparing failures with *confidence-matched* correct images keeps a difference in attention from
    being a difference in confidence in disguise.

    Args:
        confidences: float (N,) max softmax probability of every image of the split.
        correct: bool (N,) whether each image was classified correctly.
        reference_confidences: float (K,) confidences to match (the failures').
        generator: breaks ties between equally near candidates at random (confidences saturate at
            1.0, so ties are common). None breaks them by lowest index, deterministically.

    Returns:
        int64 (K,) indices into the split, aligned with ``reference_confidences``. References are
        matched greedily from the most confident down; candidates are drawn without replacement
        until every correct image has been used once, and only then reused.
    """
    for name, value in (("confidences", confidences), ("reference_confidences", reference_confidences)):
        if not isinstance(value, Tensor) or value.ndim != 1 or not value.dtype.is_floating_point:
            raise TypeError(f"{name} must be a 1-D float tensor, got {getattr(value, 'shape', type(value))}")
    if not isinstance(correct, Tensor) or correct.dtype != torch.bool or correct.shape != confidences.shape:
        raise TypeError(f"correct must be a bool tensor of shape {tuple(confidences.shape)}")
    candidates = torch.nonzero(correct.cpu()).flatten()
    if len(candidates) == 0 and len(reference_confidences):
        raise ValueError("there are no correctly classified images to match against")
    if generator is not None:
        # A random candidate order makes argmin's first-minimum rule a random tie-break.
        candidates = candidates[torch.randperm(len(candidates), generator=generator)]
    pool = confidences.detach().cpu().double()[candidates]
    references = reference_confidences.detach().cpu().double()
    available = torch.ones(len(candidates), dtype=torch.bool)
    matches = torch.empty(len(references), dtype=torch.int64)
    for ref in torch.sort(references, descending=True, stable=True).indices.tolist():
        if not available.any():
            available.fill_(True)
        distance = torch.where(available, (pool - references[ref]).abs(), math.inf)
        best = int(distance.argmin())
        available[best] = False
        matches[ref] = candidates[best]
    return matches


def deletion_curve(
    model: nn.Module,
    images: Tensor,
    target_classes: Tensor,
    maps: Tensor,
    *,
    steps: int = 10,
    generator: torch.Generator | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Probability of the target class as the most attended pixels are blanked, versus random pixels.

    Pixels are blanked (all channels set to 0 in normalised space, i.e. the dataset mean) in ``steps``
    equal steps from none to all, in order of decreasing map value (ties: row-major order) for the
    "attended" curve and in a random order for the "random" curve. A faithful map makes the attended
    curve fall faster, i.e. a lower area under it.

    Args:
        model: the classifier (run in eval mode, modes restored afterwards).
        images: float (N, 3, H, W), normalised.
        target_classes: int64 (N,) class whose probability is tracked.
        maps: float (N, H, W) the maps to test, the images' spatial size.
        steps: number of blanking steps (>= 1).
        generator: for the random order; None uses a fixed seed (0), so results are reproducible.
        batch_size: images per forward pass.

    Returns:
        ``fractions``, ``attended``, ``random``: float64 (steps + 1,) CPU tensors (fraction of pixels
        blanked, mean target probability); ``attended_auc``, ``random_auc``: trapezoidal areas.
    """
    images = _check_float_images(images)
    n, _, height, width = images.shape
    targets = check_target_classes("target_classes", target_classes, n)
    maps = _check_maps(maps)
    if maps.shape != (n, height, width):
        raise ValueError(
            f"maps must have shape {(n, height, width)} to match images, got {tuple(maps.shape)}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    batch_size = _check_batch_size(batch_size, n)
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

    modes = _save_modes(model)
    try:
        model.eval()
        with torch.no_grad():
            for start in range(0, n, batch_size):
                x = images[start : start + batch_size].to(device)
                batch_targets = targets[start : start + batch_size].to(device)
                for name, rank in ranks.items():
                    batch_rank = rank[start : start + batch_size].to(device).view(-1, 1, height, width)
                    for step, count in enumerate(counts):
                        probs = model(x * (batch_rank >= count)).float().softmax(dim=1)
                        target_probs = probs.gather(1, batch_targets[:, None])
                        totals[name][step] += target_probs.sum(dtype=torch.float64).item()
    finally:
        _restore_modes(modes)

    fractions = torch.tensor(counts, dtype=torch.float64) / pixels
    attended, random = totals["attended"] / max(n, 1), totals["random"] / max(n, 1)
    return {
        "fractions": fractions,
        "attended": attended,
        "random": random,
        "attended_auc": float(torch.trapezoid(attended, fractions)),
        "random_auc": float(torch.trapezoid(random, fractions)),
    }


def attention_measures(failure_maps: Tensor, control_maps: Tensor, *, center: int = 16) -> dict[str, Any]:
    """Periphery share of failures' maps versus their confidence-matched controls' maps, JSON-ready.

    Args:
        failure_maps: float (K, H, W) maps of the failures.
        control_maps: float (K, H, W) maps of the matched correct images, aligned with the failures
            (from :func:`matched_confidence_controls`).
        center: see :func:`periphery_share`.

    Returns:
        ``center``; ``failures`` and ``controls``: {n, mean, median} of the periphery share over
        non-empty maps; ``pairs``: pairs where both maps are non-empty; ``mean_difference``
        (failure - control over those pairs); ``share_failure_higher``; ``wilcoxon_p``: two-sided
        Wilcoxon signed-rank p-value over the pairs. Undefined values are None.
    """
    failure_maps, control_maps = (
        _check_maps(failure_maps, "failure_maps"),
        _check_maps(control_maps, "control_maps"),
    )
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
    return {
        "center": center,
        "failures": describe(failure_share),
        "controls": describe(control_share),
        "pairs": int(both.sum()),
        "mean_difference": float(difference.mean()) if len(difference) else None,
        "share_failure_higher": float((difference > 0).double().mean()) if len(difference) else None,
        "wilcoxon_p": _wilcoxon_p(difference),
    }


def _wilcoxon_p(difference: Tensor) -> float | None:
    if not (difference != 0).any():
        return None  # the test is undefined when every pair ties
    from scipy.stats import wilcoxon

    p_value = float(wilcoxon(difference.numpy()).pvalue)
    return None if math.isnan(p_value) else p_value


# --------------------------------------------------------------------------------------------------
# Stage-level helpers: what notebooks 03 and 05 compute, each in one call
# --------------------------------------------------------------------------------------------------
def explain_images(
    model: nn.Module,
    images_uint8: Tensor,
    target_classes: Tensor,
    *,
    layer: nn.Module | str | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Grad-CAM of uint8 images: normalised and moved to the model's device batch by batch.

    Args:
        model: the classifier (its device is used).
        images_uint8: uint8 (K, 3, H, W).
        target_classes: int64 (K,) the class to explain for each image.
        layer: see :func:`resolve_layer`.
        batch_size: images per forward/backward pass.

    Returns:
        float32 (K, H, W) maps in [0, 1], on the CPU.
    """
    images_uint8 = check_images("images_uint8", images_uint8)
    k, _, height, width = images_uint8.shape
    targets = check_target_classes("target_classes", target_classes, k)
    batch_size = _check_batch_size(batch_size, k)
    device = model_device(model, images_uint8.device)
    target_layer = resolve_layer(model, layer)
    maps = torch.zeros((k, height, width), dtype=torch.float32)
    for start in range(0, k, batch_size):
        batch = slice(start, start + batch_size)
        x = normalize(images_uint8[batch].to(device))
        maps[batch] = grad_cam(model, x, targets[batch], target_layer).cpu()
    return maps


def _share_list(maps: Tensor, center: int) -> list[float | None]:
    """Per-image periphery shares as a JSON-ready list (None for an all-zero map)."""
    return [None if math.isnan(v) else v for v in periphery_share(maps, center).tolist()]


def failure_attention_report(
    model: nn.Module,
    images_uint8: Tensor,
    probs: Tensor,
    labels: Tensor,
    failure_maps: dict[str, Tensor],
    *,
    layer: nn.Module | str | None = None,
    deletion_steps: int = 10,
    seed: int = 0,
    center: int = 16,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Are the failures' heatmaps different, and are they faithful? The measures of notebook 03.

    1. *Periphery*: the share of each failure's predicted-class map outside the central
       ``center``×``center`` square, against correctly classified images of matched confidence
       (:func:`matched_confidence_controls`), so the comparison is not one of confidence in disguise.
    2. *Deletion test*: blanking the failures' most attended pixels against as many random pixels
       (:func:`deletion_curve`); faithful maps make the predicted class's probability fall faster.

    Args:
        model: the model the failures and maps belong to.
        images_uint8: uint8 (N, 3, H, W) the whole split.
        probs: float (N, C) the model's probabilities on the split.
        labels: int64 (N,) true classes.
        failure_maps: output of :func:`gradcam_for_failures` (``indices``, ``predicted``,
            ``predicted_maps``).
        layer, batch_size: as for :func:`grad_cam`.
        deletion_steps: blanking steps of the deletion test.
        seed: seeds tie-breaking among controls and the random deletion order.
        center: side of the central square, in pixels.

    Returns:
        JSON-ready: ``num_failures``; ``periphery`` (:func:`attention_measures`);
        ``failure_periphery_shares`` and ``control_periphery_shares`` (per image, NaN as None);
        ``control_indices``; ``deletion`` (:func:`deletion_curve`, or None without failures).
    """
    indices = failure_maps["indices"]
    k = len(indices)
    report: dict[str, Any] = {"num_failures": k, "center": center, "deletion_steps": deletion_steps}
    if k == 0:
        empty = torch.zeros((0, *images_uint8.shape[2:]))
        report.update(
            periphery=attention_measures(empty, empty, center=center),
            failure_periphery_shares=[],
            control_periphery_shares=[],
            control_indices=[],
            deletion=None,
        )
        return report
    confidences, predicted = probs.max(dim=1)
    controls = matched_confidence_controls(
        confidences,
        predicted == labels,
        confidences[indices],
        generator=torch.Generator().manual_seed(seed),
    )
    control_maps = explain_images(
        model, images_uint8[controls], predicted[controls], layer=layer, batch_size=batch_size
    )
    fail_maps = failure_maps["predicted_maps"]

    device = model_device(model, images_uint8.device)
    report.update(
        periphery=attention_measures(fail_maps, control_maps, center=center),
        failure_periphery_shares=_share_list(fail_maps, center),
        control_periphery_shares=_share_list(control_maps, center),
        control_indices=controls.tolist(),
        deletion=deletion_curve(
            model,
            normalize(images_uint8[indices].to(device)),
            failure_maps["predicted"],
            fail_maps,
            steps=deletion_steps,
            generator=torch.Generator().manual_seed(seed),
            batch_size=batch_size,
        ),
    )
    return report


def compare_attention(
    before_maps: Tensor,
    after_maps: Tensor,
    *,
    center: int = 16,
    names: tuple[str, str] = ("baseline", "augmented"),
) -> dict[str, Any]:
    """Periphery share of two models' maps of the same images: did attention move onto the object?

    Args:
        before_maps, after_maps: float (K, H, W), aligned image by image.
        center: side of the central square, in pixels.
        names: what to call the two sets of maps in the result.

    Returns:
        JSON-ready: per model {n, mean, median} of the periphery share and the per-image shares;
        ``mean_change`` (after - before over images where both maps are non-empty);
        ``share_moved_inward`` (fraction of those images whose periphery share fell); ``wilcoxon_p``.
    """
    measures = attention_measures(before_maps, after_maps, center=center)
    before, after = names
    return {
        "center": center,
        before: measures["failures"],
        after: measures["controls"],
        f"{before}_shares": _share_list(before_maps, center),
        f"{after}_shares": _share_list(after_maps, center),
        "pairs": measures["pairs"],
        "mean_change": None if measures["mean_difference"] is None else -measures["mean_difference"],
        # "failure higher" is "before higher": the periphery share fell, attention moved inward.
        "share_moved_inward": measures["share_failure_higher"],
        "wilcoxon_p": measures["wilcoxon_p"],
    }
