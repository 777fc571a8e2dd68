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
  fill ``core.augment.random_crop_flip`` pads with, so a shift stays inside what augmentation showed;
  :func:`black_border` - the same zero border without the shift (the non-positional control).
* :func:`surround_only` - the object removed: the centre filled with the mean colour of the ring.
* :func:`frequency_hybrid` - a cue-conflict image: the fine detail (texture) of one image on the
  coarse content (shape, colour) of another, as in Geirhos et al. (2019) with a frequency split
  (the high-frequency view of Wang et al. (2020), "High-frequency Component Helps Explain the
  Generalization of Convolutional Neural Networks").
* :func:`object_centres`, :func:`object_masks` - where the object is, from the image alone (never
  from a model): the colour contrast to the image border, the "boundary prior" of salient-object
  detection (Wei et al. (2012), "Geodesic Saliency Using Background Priors").
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
    ring = _surround_mask(images.shape[2], width).to(images.device)
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
    """uint8 (N, 3, H, W): the high frequencies of ``images`` (the image minus its Gaussian blur of
    ``sigma`` px: texture and fine edges, no colour) added to the blur of ``donors`` (uint8, the same
    shape: their coarse shape and colour)."""
    check_images("images", images)
    check_images("donors", donors)
    if donors.shape != images.shape:
        raise ValueError(f"images and donors must be of one shape, got {images.shape}, {donors.shape}")
    detail = images.float() - _blur(images, sigma)
    return (_blur(donors.to(images.device), sigma) + detail).round().clamp(0, 255).to(torch.uint8)


def _object_weights(images: Tensor) -> Tensor:
    """How much each pixel stands out from the image's border, float64 (N, H, W), zero on the background
    (:func:`object_centres` says how)."""
    check_images("images", images)
    h, w = images.shape[2:]
    if h != w:
        raise ValueError(f"images must be square, got {h}x{w}")
    blurred, border = _blur(images, 1.0), _surround_mask(h, 2).to(images.device)
    background = blurred[:, :, border].median(dim=2).values  # (N, 3)
    saliency = (blurred - background[:, :, None, None]).norm(dim=1)  # (N, H, W)
    # Why the border's 90th percentile and not the image's mean: the mean counts the object and the
    # background's noise alike, which pulls every estimate toward the centre (on the bench a 7-px
    # offset read as under 4 px one time in five; with the border's noise level as the floor, 1 in 40).
    floor = saliency[:, border].quantile(0.9, dim=1)[:, None, None]
    return (saliency - floor).clamp_min(0).double()


def object_masks(images: Tensor) -> Tensor:
    """Which pixels are the object, estimated from the image alone, bool (N, H, W) for uint8 (N, 3, H, W):
    those more salient than 90 % of the border's (:func:`object_centres`); empty for a flat image."""
    if len(images) == 0:
        check_images("images", images)
        return torch.zeros((0, *images.shape[2:]), dtype=torch.bool)
    return (_object_weights(images) > 0).cpu()


def object_centres(images: Tensor) -> Tensor:
    """Where each image's object is, estimated from its pixels alone: float (N, 2) (x, y) in pixels,
    (0, 0) the centre of the top-left pixel.

    The saliency of a pixel is its colour distance (after a 1-px blur) from the median colour of
    the image's outer 2-px border, which on CIFAR-10 is nearly always background; the centre is the
    mean position of the pixels more salient than 90 % of the border's, weighted by how much more.
    """
    if len(images) == 0:
        check_images("images", images)
        return torch.zeros((0, 2))
    weight = _object_weights(images)
    h, w = images.shape[2:]
    weight = weight + (weight.sum(dim=(1, 2), keepdim=True) == 0)  # a flat image: its centre
    ys, xs = (torch.arange(s, dtype=torch.float64, device=images.device) for s in (h, w))
    total = weight.sum(dim=(1, 2))
    x = (weight.sum(dim=1) * xs).sum(dim=1) / total
    y = (weight.sum(dim=2) * ys).sum(dim=1) / total
    return torch.stack([x, y], dim=1).float().cpu()
