"""Batch augmentations on the device, driven by a seeded generator.

The original assignment augmented one PIL image at a time in DataLoader workers
(``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip()``). Here the same distribution is drawn for
a whole batch at once, on whatever device the batch already lives on: one zero-pad and one gather,
with per-image crop offsets and flips taken from a ``torch.Generator`` so that a seed fixes every
augmented pixel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(
    images: torch.Tensor,
    padding: int = 4,
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop after zero padding, then a random horizontal flip, independently per image.

    Per image this is distributed exactly like torchvision's ``RandomCrop((H, W), padding=padding)``
    (constant zero fill) followed by ``RandomHorizontalFlip(0.5)``: the crop's top-left corner is
    uniform over the ``(2 * padding + 1) ** 2`` positions of the padded image, and each image is
    mirrored with probability 1/2. The whole batch is done with one pad and one gather on the
    images' device, with no Python loop over images.

    Args:
        images: (N, C, H, W) tensor of any dtype (uint8 in this project), on any device, in any
            memory format.
        padding: zero pixels added on every side before cropping back to (H, W); 0 disables the crop.
        flip: whether to mirror a random half of the images left to right.
        generator: source of the random offsets and flips. It must live on the same device as
            ``images`` (``torch.Generator(device=images.device)``); ``None`` uses torch's global
            generator for that device. Draw order: crop rows, crop columns, then flips, each one
            value per image.

    Returns:
        (N, C, H, W) tensor with the dtype and device of ``images`` (contiguous, NCHW). When
        ``padding == 0`` and ``flip`` is false, ``images`` itself is returned unchanged.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"random_crop_flip expects images of shape (N, C, H, W), got {shape}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
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
    if flip:
        mirrored = torch.rand(n, generator=generator, device=device) < 0.5
    else:
        mirrored = torch.zeros(n, dtype=torch.bool, device=device)

    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    padded_w = w + 2 * padding
    rows = top[:, None] + torch.arange(h, device=device)  # (N, H)
    cols = torch.arange(w, device=device).expand(n, w)
    # A mirrored crop reads its columns right to left: the same pixels as flipping after cropping.
    cols = torch.where(mirrored[:, None], (w - 1) - cols, cols) + left[:, None]  # (N, W)
    flat_index = (rows[:, :, None] * padded_w + cols[:, None, :]).reshape(n, 1, h * w)
    flat = padded.reshape(n, c, -1)
    return flat.gather(2, flat_index.expand(n, c, h * w)).view(n, c, h, w)
