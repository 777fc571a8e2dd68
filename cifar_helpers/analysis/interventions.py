"""Interventions on uint8 image batches: change one thing about an image and see whether the prediction
follows. Each works on a whole batch (N, 3, H, W) at once, on the batch's device, and every random
choice comes from a seeded CPU ``torch.Generator``, so the same seed gives the same pixels anywhere.
Where the object is comes from the image alone, never from a model (:func:`object_centres`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur

from cifar_helpers.core.checks import check_images


def _surround_mask(size: int, width: int) -> Tensor:
    """bool (size, size): True on the outer ring of ``width`` pixels, False on the central square."""
    if not 0 < 2 * width < size:
        raise ValueError(f"width must leave a central square: 0 < 2 * width < {size}, got width={width}")
    ring = torch.ones(size, size, dtype=torch.bool)
    ring[width : size - width, width : size - width] = False
    return ring


def swap_surround(images: Tensor, donors: Tensor, width: int) -> Tensor:
    """uint8 (N, 3, H, H) ``images`` with their outer ring of ``width`` pixels taken from ``donors`` (the
    same shape; donor i gives its ring to image i) and the centre, where CIFAR-10 puts its object, kept:
    a background intervention in the spirit of Xiao et al. (2020), without their masks."""
    check_images("images", images)
    check_images("donors", donors)
    if donors.shape != images.shape or images.shape[2] != images.shape[3]:
        raise ValueError(f"images and donors must be of one square shape, got {images.shape}, {donors.shape}")
    ring = _surround_mask(images.shape[2], width).to(images.device)
    return torch.where(ring, donors.to(images.device), images)


def shuffle_tiles(images: Tensor, tile: int, generator: torch.Generator) -> Tensor:
    """uint8 (N, 3, H, W) ``images`` (H and W multiples of ``tile``) each cut into ``tile``×``tile`` tiles
    put back in an order ``generator`` draws per image: global shape gone, local texture kept (the
    patch shuffling of Zhang & Zhu, 2019)."""
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
    """uint8 (N, 3, H, W) ``images`` moved ``dx`` pixels right and ``dy`` down (negative: left, up):
    ``out[..., y, x] = images[..., y - dy, x - dx]`` where that pixel exists, else 0, the fill
    ``core.augment.random_crop_flip`` pads with, so a shift stays inside what augmentation showed."""
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
    """For each of int64 (M,) ``classes``, the index of a donor of that class in a pool of int64 (D,)
    ``donor_labels``, drawn uniformly with replacement: int64 (M,)."""
    donor_labels, classes = donor_labels.cpu(), classes.cpu()
    counts = torch.bincount(donor_labels, minlength=int(classes.max()) + 1 if len(classes) else 0)
    if len(classes) and bool((counts[classes] == 0).any()):
        raise ValueError("the donor pool has no image of some requested class")
    order = torch.argsort(donor_labels, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    offsets = (torch.rand(len(classes), generator=generator, dtype=torch.float64) * counts[classes]).long()
    return order[starts[classes] + offsets]


def other_classes(classes: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """For each of int64 ``classes``, another of ``num_classes`` classes drawn uniformly by ``generator``."""
    return (classes + torch.randint(1, num_classes, classes.shape, generator=generator)) % num_classes


def black_border(images: Tensor, width: int) -> Tensor:
    """uint8 (N, 3, H, W) with the outer ``width`` pixels set to 0 and nothing moved: what a shift's
    zero fill does to an image, without the shift."""
    check_images("images", images)
    return torch.where(_surround_mask(images.shape[-1], width).to(images.device), 0, images)


def surround_only(images: Tensor, width: int) -> Tensor:
    """uint8 (N, 3, H, H): each image's outer ring of ``width`` pixels kept and everything inside it
    (on CIFAR-10, the object) filled with the ring's mean colour, per image and channel."""
    check_images("images", images)
    ring = _surround_mask(images.shape[-1], width).to(images.device)
    mean = images.double()[:, :, ring].mean(dim=2).round().to(torch.uint8)  # (N, 3)
    return torch.where(ring, images, mean[:, :, None, None])


def _blur(images: Tensor, sigma: float) -> Tensor:
    return gaussian_blur(images.float(), kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)


def frequency_hybrid(images: Tensor, donors: Tensor, sigma: float) -> Tensor:
    """A cue-conflict image, uint8 (N, 3, H, W): the high frequencies of ``images`` (the image minus its
    Gaussian blur of ``sigma`` px: texture and fine edges, no colour) added to the blur of ``donors``
    (uint8, the same shape: their coarse shape and colour), as in Geirhos et al. (2019)."""
    check_images("images", images)
    check_images("donors", donors)
    if donors.shape != images.shape:
        raise ValueError(f"images and donors must be of one shape, got {images.shape}, {donors.shape}")
    detail = images.float() - _blur(images, sigma)
    return (_blur(donors.to(images.device), sigma) + detail).round().clamp(0, 255).to(torch.uint8)


def _object_weights(images: Tensor) -> Tensor:
    """How much each pixel stands out from the image's border, float64 (N, H, W) on the images' device,
    zero on the background (:func:`object_centres` says how)."""
    check_images("images", images)
    h, w = images.shape[2:]
    if len(images) == 0:  # the median below needs an image
        return torch.zeros((0, h, w), dtype=torch.float64, device=images.device)
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    blurred, border = _blur(images, 1.0), _surround_mask(h, 2).to(images.device)
    background = blurred[:, :, border].median(dim=2).values  # (N, 3)
    saliency = (blurred - background[:, :, None, None]).norm(dim=1)  # (N, H, W)
    # Why the border's 90th percentile and not the image's mean: the mean counts the object and the
    # background's noise alike, which pulls every estimate toward the centre.
    floor = saliency[:, border].quantile(0.9, dim=1)[:, None, None]
    return (saliency - floor).clamp_min(0).double()


def object_masks(images: Tensor) -> Tensor:
    """Which pixels are the object, estimated from the image alone, bool (N, H, W) for uint8 (N, 3, H, W):
    those more salient than 90 % of the border's (:func:`object_centres`); empty for a flat image."""
    return (_object_weights(images) > 0).cpu()


def object_centres(images: Tensor) -> Tensor:
    """Where each image's object is, estimated from its pixels alone: float (N, 2) (x, y) in pixels,
    (0, 0) the centre of the top-left pixel.

    The saliency of a pixel is its colour distance (after a 1-px blur) from the median colour of
    the image's outer 2-px border, which on CIFAR-10 is nearly always background (the "boundary prior"
    of salient-object detection, Wei et al. 2012); the centre is the mean position of the pixels more
    salient than 90 % of the border's, weighted by how much more.
    """
    weight = _object_weights(images)
    h, w = images.shape[2:]
    weight = weight + (weight.sum(dim=(1, 2), keepdim=True) == 0)  # a flat image: its centre
    ys, xs = (torch.arange(s, dtype=torch.float64, device=images.device) for s in (h, w))
    total = weight.sum(dim=(1, 2))
    x = (weight.sum(dim=1) * xs).sum(dim=1) / total
    y = (weight.sum(dim=2) * ys).sum(dim=1) / total
    return torch.stack([x, y], dim=1).float().cpu()
