"""Interventions on uint8 image batches: change one thing about an image and see whether the prediction
follows. Each works on a whole batch (N, 3, H, W) at once, on the batch's device, and every random
choice comes from a seeded CPU ``torch.Generator``, so the same seed gives the same pixels anywhere.

* :func:`swap_surround` - the outer ring of each image replaced by a donor image's ring (the centre,
  where CIFAR-10 puts its object, kept): a background intervention in the spirit of Xiao et al.
  (2020), "Noise or Signal: The Role of Image Backgrounds in Object Recognition", without their masks.
* :func:`shuffle_tiles` - each image cut into k×k tiles put back in a random order: global shape gone,
  local texture kept (the patch shuffling of Zhang & Zhu (2019), "Interpreting Adversarially Trained
  Convolutional Neural Networks").
* :func:`shift_images` - content moved by (dx, dy) pixels, the uncovered border filled with zeros, the
  fill ``core.augment.random_crop_flip`` pads with, so a shift stays inside what augmentation showed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from cifar_helpers.core.checks import check_images


def surround_mask(size: int, width: int) -> Tensor:
    """bool (size, size): True on the outer ring of ``width`` pixels, False on the central square."""
    if not 0 < 2 * width < size:
        raise ValueError(f"width must leave a central square: 0 < 2 * width < {size}, got width={width}")
    ring = torch.ones(size, size, dtype=torch.bool)
    ring[width : size - width, width : size - width] = False
    return ring


def swap_surround(images: Tensor, donors: Tensor, width: int) -> Tensor:
    """Each image's outer ring of ``width`` pixels replaced by the same ring of its donor.

    Args:
        images: uint8 (N, 3, H, H).
        donors: uint8 (N, 3, H, H), donor i gives its ring to image i.
        width: ring width in pixels (4 on 32×32 swaps the outer 44 % of the pixels).

    Returns:
        uint8 (N, 3, H, H) on ``images``' device: the centre from ``images``, the ring from ``donors``.
    """
    check_images("images", images)
    check_images("donors", donors)
    if donors.shape != images.shape or images.shape[2] != images.shape[3]:
        raise ValueError(f"images and donors must be of one square shape, got {images.shape}, {donors.shape}")
    ring = surround_mask(images.shape[2], width).to(images.device)
    return torch.where(ring, donors.to(images.device), images)


def shuffle_tiles(images: Tensor, tile: int, generator: torch.Generator) -> Tensor:
    """Each image cut into ``tile``×``tile`` tiles, put back in its own random order.

    Args:
        images: uint8 (N, 3, H, W) with H and W multiples of ``tile``.
        tile: tile side in pixels; ``tile == H == W`` leaves the images unchanged.
        generator: CPU generator drawing one permutation of the tiles per image.

    Returns:
        uint8 (N, 3, H, W): every image holds exactly its own pixels (the same multiset), moved as tiles.
    """
    check_images("images", images)
    n, c, h, w = images.shape
    if tile < 1 or h % tile or w % tile:
        raise ValueError(f"tile must divide the image size {h}x{w}, got {tile}")
    rows, cols = h // tile, w // tile
    tiles = images.reshape(n, c, rows, tile, cols, tile).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(n, rows * cols, c * tile * tile)  # one row per tile
    order = torch.rand(n, rows * cols, generator=generator).argsort(dim=1).to(images.device)
    tiles = tiles.gather(1, order[:, :, None].expand_as(tiles))
    return tiles.reshape(n, rows, cols, c, tile, tile).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def shift_images(images: Tensor, dx: int, dy: int) -> Tensor:
    """Content moved ``dx`` pixels right and ``dy`` pixels down; the uncovered border is zero.

    Args:
        images: uint8 (N, 3, H, W).
        dx, dy: shifts in pixels, negative for left / up, each smaller than the image.

    Returns:
        uint8 (N, 3, H, W): ``out[..., y, x] = images[..., y - dy, x - dx]`` where that pixel exists, else 0.
    """
    check_images("images", images)
    h, w = images.shape[2:]
    if abs(dx) >= w or abs(dy) >= h:
        raise ValueError(f"a shift must be smaller than the image ({h}x{w}), got dx={dx}, dy={dy}")
    p = max(abs(dx), abs(dy))
    padded = F.pad(images, (p, p, p, p))
    return padded[:, :, p - dy : p - dy + h, p - dx : p - dx + w].contiguous()


def shift_grid(max_shift: int, step: int) -> list[tuple[int, int]]:
    """The non-zero shifts (dx, dy) with both coordinates in ``range(-max_shift, max_shift + 1, step)``."""
    values = range(-max_shift, max_shift + 1, step)
    return [(dx, dy) for dy in values for dx in values if (dx, dy) != (0, 0)]


def draw_donors(donor_labels: Tensor, classes: Tensor, generator: torch.Generator) -> Tensor:
    """For each requested class, the index of a random donor of that class.

    Args:
        donor_labels: int64 (D,) classes of the donor pool.
        classes: int64 (M,) the class each donor must have.
        generator: CPU generator.

    Returns:
        int64 (M,) indices into the donor pool, drawn uniformly (with replacement) within each class.
    """
    donor_labels, classes = donor_labels.cpu(), classes.cpu()
    counts = torch.bincount(donor_labels, minlength=int(classes.max()) + 1 if len(classes) else 0)
    if len(classes) and bool((counts[classes] == 0).any()):
        raise ValueError("the donor pool has no image of some requested class")
    order = torch.argsort(donor_labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    offsets = (torch.rand(len(classes), generator=generator, dtype=torch.float64) * counts[classes]).long()
    return order[starts[classes] + offsets]
