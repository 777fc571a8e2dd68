"""random_crop_flip: the torchvision crop+flip distribution, done for a whole batch at once."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cifar_helpers.core.augment import random_crop_flip


def _images(n: int = 64, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    # Values start at 1 so a zero in the output can only come from the padding.
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def _all_crops(image: torch.Tensor, padding: int) -> list[tuple[int, int, bool, torch.Tensor]]:
    """Every (top, left, flipped, crop) torchvision's RandomCrop + HorizontalFlip could produce."""
    _, h, w = image.shape
    padded = F.pad(image, (padding, padding, padding, padding))
    out = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            crop = padded[:, top : top + h, left : left + w]
            out.append((top, left, False, crop))
            out.append((top, left, True, crop.flip(-1)))
    return out


def test_shape_dtype_device_preserved() -> None:
    for dtype in (torch.uint8, torch.float32, torch.bfloat16):
        images = _images(5, 3, 12, 10).to(dtype)
        out = random_crop_flip(images, padding=3, generator=torch.Generator().manual_seed(1))
        assert out.shape == images.shape
        assert out.dtype == dtype
        assert out.device == images.device


def test_every_output_is_a_crop_of_the_padded_input() -> None:
    images = _images(40, 3, 6, 7)
    padding = 2
    out = random_crop_flip(images, padding=padding, generator=torch.Generator().manual_seed(3))
    positions = set()
    for image, result in zip(images, out, strict=True):
        matches = [(t, x, f) for t, x, f, crop in _all_crops(image, padding) if torch.equal(crop, result)]
        assert matches, "output is not any crop (or mirrored crop) of the zero-padded input"
        positions.update(matches)
    # Several distinct offsets were actually drawn, not one shared shift for the batch.
    assert len({(t, x) for t, x, _ in positions}) > 5


def test_channels_last_input_gives_same_result() -> None:
    images = _images(16)
    a = random_crop_flip(images, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(
        images.contiguous(memory_format=torch.channels_last), generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(a, b)


def test_flips_happen_about_half_the_time() -> None:
    # A flip-only transform on images that are not left-right symmetric: count the mirrored ones.
    n = 2000
    images = _images(n, 1, 2, 3)
    images[:, :, :, 0] = 1
    images[:, :, :, 2] = 2
    out = random_crop_flip(images, padding=0, flip=True, generator=torch.Generator().manual_seed(7))
    is_flipped = (out == images.flip(-1)).flatten(1).all(1)
    is_same = (out == images).flatten(1).all(1)
    assert bool((is_flipped ^ is_same).all()), "every image is either unchanged or exactly mirrored"
    fraction = is_flipped.float().mean().item()
    # Binomial(2000, 0.5): 5 standard deviations is ±0.056.
    assert 0.44 < fraction < 0.56


def test_no_flip_means_no_mirroring() -> None:
    images = _images(200, 1, 4, 4)
    out = random_crop_flip(images, padding=0, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, images)
    out = random_crop_flip(images, padding=1, flip=False, generator=torch.Generator().manual_seed(0))
    for image, result in zip(images, out, strict=True):
        assert any(torch.equal(c, result) for _, _, f, c in _all_crops(image, 1) if not f)


def test_crop_offsets_cover_the_whole_range_uniformly() -> None:
    # With a constant image, the zero border of each output reveals its offset.
    n, padding = 4000, 2
    images = torch.ones(n, 1, 8, 8, dtype=torch.uint8)
    out = random_crop_flip(images, padding=padding, flip=False, generator=torch.Generator().manual_seed(11))
    zero_rows_top = (out[:, 0, :, 4] == 0).int().cumprod(1).sum(1)
    zero_rows_bottom = (out[:, 0, :, 4] == 0).flip(1).int().cumprod(1).sum(1)
    top = padding - zero_rows_top + zero_rows_bottom  # offset in [0, 2 * padding]
    counts = torch.bincount(top, minlength=2 * padding + 1)
    assert counts.numel() == 2 * padding + 1
    expected = n / (2 * padding + 1)
    assert ((counts - expected).abs() < 0.15 * expected).all(), counts


def test_same_seed_same_output_different_seed_different_output() -> None:
    images = _images(32)
    a = random_crop_flip(images, generator=torch.Generator().manual_seed(123))
    b = random_crop_flip(images, generator=torch.Generator().manual_seed(123))
    c = random_crop_flip(images, generator=torch.Generator().manual_seed(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generator_state_advances_between_calls() -> None:
    images = _images(32)
    g = torch.Generator().manual_seed(9)
    assert not torch.equal(random_crop_flip(images, generator=g), random_crop_flip(images, generator=g))


def test_identity_without_padding_or_flip() -> None:
    images = _images(10)
    assert torch.equal(random_crop_flip(images, padding=0, flip=False), images)


def test_bad_inputs_are_refused_with_clear_errors() -> None:
    with pytest.raises(ValueError, match="N, C, H, W"):
        random_crop_flip(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="padding"):
        random_crop_flip(_images(2), padding=-1)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="generator"):
            random_crop_flip(_images(2), generator=torch.Generator(device="cuda"))
