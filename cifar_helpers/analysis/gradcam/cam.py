"""Batched Grad-CAM (Selvaraju et al., 2017) on any convolutional layer, of normalised or uint8 images.

For a target class c and a layer with activations A (K, h, w), the channel weights are the spatial
mean of d logit_c / d A_k, and the map is ReLU(sum_k w_k A_k), bilinearly upsampled to the input
size and divided by its maximum.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cifar_helpers.analysis.failures import FailureSet
from cifar_helpers.core.checks import (
    check_batch_size,
    check_count,
    check_float_images,
    check_images,
    check_target_classes,
    eval_mode,
    model_device,
)
from cifar_helpers.core.normalization import normalize
from cifar_helpers.rundir.records import Record

DEFAULT_LAYER = "layer4"


def resolve_layer(model: nn.Module, layer: nn.Module | str | None = None) -> nn.Module:
    """The module Grad-CAM explains: ``layer`` None for ``model.layer4`` (the last convolutional stage of
    our ResNets), a dotted submodule name such as ``"layer3.1"``, or a submodule itself.

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
        model: a classifier returning logits (N, C), run in eval mode; every module's mode is restored
            afterwards, and parameters' ``.grad`` are left exactly as they were.
        images: float (N, 3, H, W), normalised, any device (moved to the model's device).
        target_classes: int64 (N,) class to explain per image, or one int for all.
        layer: see :func:`resolve_layer`; its output must be a (N, K, h, w) tensor.
        batch_size: images per forward/backward pass; None does all N in one pass.

    Returns:
        float32 (N, H, W) on the model's device, each map in [0, 1] with maximum 1, or all zeros when
        no location has positive evidence for the class.
    """
    target_layer = resolve_layer(model, layer)
    images = check_float_images("images", images)
    n, _, height, width = images.shape
    targets = check_target_classes("target_classes", target_classes, n)
    batch_size = check_batch_size("batch_size", batch_size, n)
    device = model_device(model, images.device)
    targets = targets.to(device)
    captured: list[Tensor] = []

    def capture(module: nn.Module, inputs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(
                f"Grad-CAM needs a layer whose output is (N, K, h, w); this one returned {shape}"
            )
        # The activation becomes a leaf of a fresh graph: its gradient is all Grad-CAM needs, and the
        # layers before it stay graph-free.
        torch.set_grad_enabled(True)
        activation = output.detach().requires_grad_(True)
        captured.append(activation)
        # The model continues with a copy, so a later in-place op (ReLU(inplace=True)) neither fails
        # on a leaf nor alters the activation the map is built from.
        return activation.clone()

    handle = target_layer.register_forward_hook(capture)
    try:
        # inference_mode(False) lets a caller inside torch.inference_mode() get gradients at all; the
        # output is allocated inside it because inference tensors cannot be written to outside.
        with eval_mode(model), torch.inference_mode(False):
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
    return maps


@dataclass(frozen=True)
class FailureMaps(Record):
    """Grad-CAM of K explained failures (notebook 03's ``gradcam/heatmaps.pt``), row i for the failure
    at test index ``indices[i]``: int64 (K,) ``indices``, ``predicted`` and ``true_labels``; float32
    (K, H, W) ``predicted_maps`` and ``true_maps`` in [0, 1], of the predicted and of the true class."""

    indices: Tensor
    predicted: Tensor
    true_labels: Tensor
    predicted_maps: Tensor
    true_maps: Tensor

    def __len__(self) -> int:
        return len(self.indices)

    def restricted(self, keep: Tensor) -> FailureMaps:
        """The rows where bool (K,) ``keep`` is True."""
        return FailureMaps(*(getattr(self, f.name)[keep] for f in fields(self)))


def gradcam_for_failures(
    model: nn.Module,
    images_uint8: Tensor,
    failures: FailureSet,
    *,
    layer: nn.Module | str | None = None,
    batch_size: int = 256,
    max_items: int | None = None,
) -> FailureMaps:
    """Grad-CAM maps of the predicted (wrong) class and of the true class for each failure: where the
    model found evidence for what it said, and where it found (or missed) evidence for the right answer.

    ``images_uint8`` uint8 (N, 3, H, W) is the whole split ``failures`` were found on; ``max_items``
    explains only the first (most confident) failures. The result's tensors are on the CPU.
    """
    images_uint8 = check_images("images_uint8", images_uint8)
    if not isinstance(failures, FailureSet):
        raise TypeError(f"failures must be a FailureSet, got {type(failures).__name__}")
    if failures.num_images != len(images_uint8):
        raise ValueError(
            f"the failures were found on {failures.num_images} images but images_uint8 holds "
            f"{len(images_uint8)}; pass the whole split they index into"
        )
    k = len(failures)
    if max_items is not None:
        k = min(check_count("max_items", max_items, low=0), k)
    indices = failures.indices[:k]
    predicted, true_labels = failures.predicted[:k], failures.true_labels[:k]
    chosen = images_uint8[indices]
    return FailureMaps(
        indices.clone(),
        predicted.clone(),
        true_labels.clone(),
        explain_images(model, chosen, predicted, layer=layer, batch_size=batch_size),
        explain_images(model, chosen, true_labels, layer=layer, batch_size=batch_size),
    )


def explain_images(
    model: nn.Module,
    images_uint8: Tensor,
    target_classes: Tensor,
    *,
    layer: nn.Module | str | None = None,
    batch_size: int = 256,
) -> Tensor:
    """Grad-CAM of uint8 (K, 3, H, W) images for int64 (K,) ``target_classes``, normalised and moved to
    the model's device batch by batch: float32 (K, H, W) maps in [0, 1], on the CPU."""
    images_uint8 = check_images("images_uint8", images_uint8)
    k, _, height, width = images_uint8.shape
    targets = check_target_classes("target_classes", target_classes, k)
    batch_size = check_batch_size("batch_size", batch_size, k)
    device = model_device(model, images_uint8.device)
    target_layer = resolve_layer(model, layer)
    maps = torch.zeros((k, height, width), dtype=torch.float32)
    for start in range(0, k, batch_size):
        batch = slice(start, start + batch_size)
        x = normalize(images_uint8[batch].to(device))
        maps[batch] = grad_cam(model, x, targets[batch], target_layer).cpu()
    return maps
