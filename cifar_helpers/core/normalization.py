"""Turning uint8 images into the network's input, on the device, one batch at a time."""

from __future__ import annotations

import torch

# Per-channel mean and standard deviation of the CIFAR-10 training set (pixel values in [0, 1]).
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, H, W) in [0, 255] -> float32 (N, 3, H, W), zero mean, unit variance.

    Runs on whatever device ``images`` is on.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalize expects uint8 images, got {images.dtype}")
    mean = torch.tensor(CIFAR10_MEAN, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float().div_(255.0) - mean) / std
