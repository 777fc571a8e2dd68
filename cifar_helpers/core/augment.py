"""Batch augmentations on the device, driven by a seeded generator."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cifar_helpers.core.checks import check_count


def random_crop_flip(
    images: torch.Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop after zero padding, then a random horizontal flip, independently per image: per
    image distributed exactly like torchvision's ``RandomCrop((H, W), padding=padding)`` followed by
    ``RandomHorizontalFlip(0.5)``, for a whole (N, C, H, W) batch of any dtype on its device.

    ``generator`` must live on the images' device (None: torch's global one); it draws crop rows,
    crop columns, then flips, one value per image. Returns contiguous NCHW (N, C, H, W), or ``images``
    itself when there is neither crop nor flip.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"random_crop_flip expects images of shape (N, C, H, W), got {shape}")
    padding = check_count("padding", padding, low=0)
    if generator is not None and generator.device.type != images.device.type:
        raise ValueError(
            f"generator is on {generator.device} but images are on {images.device}; "
            f"create it with torch.Generator(device={str(images.device)!r})"
        )
    if padding == 0 and not flip:
        return images

    n, c, h, w = images.shape
    device = images.device
    span = 2 * padding + 1
    top = torch.randint(0, span, (n,), generator=generator, device=device)
    left = torch.randint(0, span, (n,), generator=generator, device=device)
    rows = top[:, None] + torch.arange(h, device=device)  # (N, H)
    cols = torch.arange(w, device=device).expand(n, w)
    if flip:
        # A mirrored crop reads its columns right to left: the same pixels as flipping after cropping.
        mirrored = torch.rand(n, generator=generator, device=device) < 0.5
        cols = torch.where(mirrored[:, None], (w - 1) - cols, cols)
    cols = cols + left[:, None]  # (N, W)

    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    flat_index = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).reshape(n, 1, h * w)
    flat = padded.reshape(n, c, -1)
    return flat.gather(2, flat_index.expand(n, c, h * w)).view(n, c, h, w)
