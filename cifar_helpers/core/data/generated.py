"""The generated ("synthetic") dataset: ten classes of coloured shapes on textured backgrounds, with
object masks and an optional background-class correlation. Every image is a function of
``(seed, split, position)``, rendered in chunks with torch; no files are read or written.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .common import _CACHE_VERSION, IMAGE_SIZE, CifarData, DataError, _check_count, _splitmix64

SYNTHETIC_CLASSES = (
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "hbar",
    "vbar",
    "diamond",
    "star",
    "ellipse",
)
# Object hue per class, in degrees. Classes come in pairs of similar colour and shape (disc/ellipse,
# square/diamond, ...) so that neither colour nor a coarse outline alone separates all ten.
SYNTHETIC_HUES = (0.0, 215.0, 300.0, 52.0, 278.0, 120.0, 142.0, 237.0, 36.0, 20.0)
SYNTHETIC_HUE_JITTER = 12.0  # +- degrees around the class hue
SYNTHETIC_DECOY_RATE = 0.1
SYNTHETIC_TRAIN_PER_CLASS = 5000  # the virtual full splits have CIFAR-10's sizes
SYNTHETIC_TEST_PER_CLASS = 1000
_SPLIT_IDS = {"train": 1, "test": 2}
_CHUNK = 4096  # images rendered at once: bounds the float32 scratch memory (~ 30 MB per array)
_NOISE_TILES = 512  # pixel-noise tiles shared by all images (6 MB)
# Object radius in pixels: the smallest objects make the shape pairs hard to tell apart, yet every
# shape holds a disc at least 2 px across (a ring's band at 4.5 px), so each mask covers a pixel centre.
_RADIUS = (4.5, 11.5)
# Backgrounds are duller than objects (saturation <= 0.5), so the object can be found early in
# training, yet their hues span the whole circle, so some are close to the object's colour.
_BG_SATURATION = (0.0, 0.5)
_BG_VALUE = (0.25, 0.85)


def make_synthetic_cifar(
    train_per_class: int = 500,
    test_per_class: int = 100,
    *,
    holdout_per_class: int = 0,
    seed: int = 0,
    background_class_correlation: float = 0.0,
    decoy_colour_rate: float = SYNTHETIC_DECOY_RATE,
    texture_class_correlation: float = 0.0,
    test_cue_conflict: float = 0.0,
    random_object_colour: bool = False,
    grey_backgrounds: bool = False,
    centred: bool = False,
    test_off_center_rate: float = 0.0,
) -> CifarData:
    """Ten classes of coloured shapes on textured backgrounds, with object masks.

    Position ``p`` of a virtual split of CIFAR-10's size has label ``p % 10``; ``train`` and ``test``
    hold its first ``10 * *_per_class`` positions, so a smaller request is a prefix of a larger one, and
    the hold-out takes the last ``holdout_per_class`` per class of the virtual training split.

    ``background_class_correlation = p``: in ``train`` and the hold-out, each background is its class's
    tied background with probability ``p``; ``test`` backgrounds are always random.
    ``decoy_colour_rate = q``: in every split, each object is painted, with probability ``q``, in the
    colour of the next class, which gives confident failures with a known cause (a colour bias).
    ``texture_class_correlation = t``: in ``train`` and the hold-out, each object carries its class's
    fine luminance stripe texture with probability ``t``, else none. ``test_cue_conflict = c``: in
    ``test``, each planted cue of the recipe (tied background, texture) is present with probability
    ``c``, and then it is *another* class's (a cue conflict, as Xiao et al.'s Mixed-Rand); else absent.
    ``random_object_colour``: objects of any hue, so colour says nothing of the class.
    ``grey_backgrounds``: untied backgrounds without colour, so none can be mistaken for an object's.
    ``centred``: objects sit within 2 px of the centre, small enough to stay out of the outer 4-px
    ring (as CIFAR-10 frames its objects), instead of anywhere.
    ``test_off_center_rate = r``: that share of the ``test`` objects is moved 7 px off the centre.

    Returns a :class:`CifarData` of source ``"synthetic"`` with masks bool (N, 32, 32) (True on the
    object, never empty). :class:`DataError` for negative counts, ``train_per_class + holdout_per_class
    > 5000``, ``test_per_class > 1000``, or a rate outside [0, 1].
    """
    _check_count("train_per_class", train_per_class, allow_none=False)
    _check_count("test_per_class", test_per_class, allow_none=False)
    _check_count("holdout_per_class", holdout_per_class, allow_none=False)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"seed must be an integer, got {seed!r}")
    for name, rate in (
        ("background_class_correlation", background_class_correlation),
        ("decoy_colour_rate", decoy_colour_rate),
        ("texture_class_correlation", texture_class_correlation),
        ("test_cue_conflict", test_cue_conflict),
        ("test_off_center_rate", test_off_center_rate),
    ):
        if not 0.0 <= rate <= 1.0:
            raise DataError(f"{name} must be in [0, 1], got {rate!r}")
    if train_per_class + holdout_per_class > SYNTHETIC_TRAIN_PER_CLASS:
        raise DataError(
            f"synthetic training split has {SYNTHETIC_TRAIN_PER_CLASS} images per class; asked for "
            f"train_per_class={train_per_class} + holdout_per_class={holdout_per_class}"
        )
    if test_per_class > SYNTHETIC_TEST_PER_CLASS:
        raise DataError(
            f"synthetic test split has {SYNTHETIC_TEST_PER_CLASS} images per class; "
            f"asked for test_per_class={test_per_class}"
        )
    n_classes = len(SYNTHETIC_CLASSES)
    full_train = SYNTHETIC_TRAIN_PER_CLASS * n_classes
    train_index = torch.arange(train_per_class * n_classes)
    holdout_index = torch.arange(full_train - holdout_per_class * n_classes, full_train)
    test_index = torch.arange(test_per_class * n_classes)
    p, q = float(background_class_correlation), float(decoy_colour_rate)
    t, c = float(texture_class_correlation), float(test_cue_conflict)
    recipe = _Recipe(p, q, t, bool(centred), 0.0, False, bool(random_object_colour), bool(grey_backgrounds))
    train_images, train_masks = _render_split(seed, "train", train_index, recipe)
    holdout_images, holdout_masks = _render_split(seed, "train", holdout_index, recipe)
    off = float(test_off_center_rate)
    test_recipe = recipe._replace(
        correlation=c if p else 0.0, texture_rate=c if t else 0.0, off_center=off, conflict=True
    )
    test_images, test_masks = _render_split(seed, "test", test_index, test_recipe)
    key = f"synthetic-v{_CACHE_VERSION}-seed{seed}-p{p!r}"
    if recipe[2:] != (0.0, False, 0.0, False, False, False) or c or test_off_center_rate:  # else the original
        key += f"-{recipe[2:]}-c{c!r}-o{float(test_off_center_rate)!r}"
    fingerprint = hashlib.sha256(key.encode()).hexdigest()
    return CifarData(
        train_images=train_images,
        train_labels=train_index % n_classes,
        test_images=test_images,
        test_labels=test_index % n_classes,
        classes=list(SYNTHETIC_CLASSES),
        source="synthetic",
        root=None,
        holdout_images=holdout_images,
        holdout_labels=holdout_index % n_classes,
        train_index=train_index,
        test_index=test_index,
        holdout_index=holdout_index,
        train_masks=train_masks,
        test_masks=test_masks,
        holdout_masks=holdout_masks,
        fingerprint=fingerprint,
    )


def _image_uniforms(seed: int, split: str, positions: np.ndarray, count: int) -> torch.Tensor:
    """``count`` uniforms in [0, 1) per image, float32 (N, count): a function of (seed, split, position)."""
    base = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    split_key = _splitmix64(base ^ np.uint64(_SPLIT_IDS[split]))
    keys = _splitmix64(split_key ^ _splitmix64(positions.astype(np.uint64)))
    with np.errstate(over="ignore"):
        streams = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
        bits = _splitmix64(keys[:, None] ^ streams[None, :])
    # The top 24 bits give float32-exact values in [0, 1).
    return torch.from_numpy(((bits >> np.uint64(40)).astype(np.float32)) * np.float32(2.0**-24))


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue in degrees, saturation and value in [0, 1] (each (N,)) -> RGB float (N, 3) in [0, 255]."""
    h = torch.remainder(h, 360.0) / 60.0
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]) + h[:, None], 6.0)
    rgb = v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb * 255.0


_COORDS = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5  # pixel centres
# Pixel centres relative to the image centre, in image widths: x along a row, y down a column.
_X = (_COORDS / IMAGE_SIZE - 0.5).view(1, 1, -1)
_Y = (_COORDS / IMAGE_SIZE - 0.5).view(1, -1, 1)


def _stripes(angle: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Soft-edged stripes, float (N, 32, 32) in [0, 1], from angle and phase (rad), cycles per image."""
    proj = torch.cos(angle).view(-1, 1, 1) * _X + torch.sin(angle).view(-1, 1, 1) * _Y
    wave = torch.sin(2 * math.pi * freq.view(-1, 1, 1) * proj + phase.view(-1, 1, 1))
    return torch.sigmoid(4.0 * wave)


def _tied_recipe(label: int) -> tuple[float, float, list[float], list[float]]:
    """Class ``label``'s tied background: stripe angle (rad), cycles per image, light and dark RGB."""
    hue = torch.tensor([(36.0 * label + 17.0) % 360.0])
    light = _hsv_to_rgb(hue, torch.tensor([0.55]), torch.tensor([0.85]))[0].tolist()
    dark = _hsv_to_rgb(hue + 25.0, torch.tensor([0.75]), torch.tensor([0.35]))[0].tolist()
    return math.radians(18.0 * label), 2.0 + 0.4 * (label % 5), light, dark


@functools.cache
def _noise_bank() -> torch.Tensor:
    """Standard-normal pixel-noise tiles, float32 (512, 3, 32, 32), the same in every process."""
    generator = torch.Generator().manual_seed(20240531)
    return torch.randn(_NOISE_TILES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def _plus(u: torch.Tensor, v: torch.Tensor, arm: float = 0.3) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= arm) & (av <= 1.0)) | ((av <= arm) & (au <= 1.0))


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # An asterisk: the plus sign and the same rotated by 45 degrees.
    d1, d2 = (u - v) / math.sqrt(2), (u + v) / math.sqrt(2)
    diagonal = _plus(d1, d2, arm=0.22) & (d1.abs() <= 0.85) & (d2.abs() <= 0.85)
    return _plus(u, v) | diagonal


# Object coordinates (u, v) span about [-1, 1]; each entry maps float (n, 32, 32) pairs to bool masks.
_SHAPES: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    lambda u, v: u * u + v * v <= 1.0,  # disc
    lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.8,  # square
    lambda u, v: (v <= 0.6) & (u.abs() <= 0.92 * (v + 1.0) / 1.6),  # triangle, apex up
    _plus,  # cross
    lambda u, v: ((u * u + v * v) <= 1.0) & ((u * u + v * v) >= 0.55**2),  # ring
    lambda u, v: (u.abs() <= 1.0) & (v.abs() <= 0.32),  # hbar
    lambda u, v: (u.abs() <= 0.32) & (v.abs() <= 1.0),  # vbar
    lambda u, v: u.abs() + v.abs() <= 1.1,  # diamond
    _star,  # star
    lambda u, v: u * u + (v / 0.55) ** 2 <= 1.0,  # ellipse
)


def _shape_masks(labels: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bool (N, 32, 32) masks of each image's class shape at object coordinates u, v (float (N, 32, 32))."""
    masks = torch.empty(u.shape, dtype=torch.bool)
    for label, shape in enumerate(_SHAPES):
        selected = torch.nonzero(labels == label)[:, 0]
        masks[selected] = shape(u[selected], v[selected])
    return masks


def _background_mix(kind: torch.Tensor, rnd: torch.Tensor) -> torch.Tensor:
    """Mixing weight of the two background colours, float (N, 32, 32) in [0, 1]: ``kind`` (int64 (N,))
    picks a linear gradient (0), stripes (1) or smooth blobs (2) drawn from the per-image uniforms ``rnd``.
    """
    n = len(kind)
    t = torch.empty((n, IMAGE_SIZE, IMAGE_SIZE))
    angle = 2 * math.pi * rnd[:, _U_ANGLE]
    grad = torch.nonzero(kind == 0)[:, 0]
    a = angle[grad].view(-1, 1, 1)
    t[grad] = (0.5 + torch.cos(a) * _X + torch.sin(a) * _Y).clamp(0, 1)
    stripe = torch.nonzero(kind == 1)[:, 0]
    freq = 1.5 + 4.0 * rnd[stripe, _U_FREQ]
    t[stripe] = _stripes(angle[stripe], freq, 2 * math.pi * rnd[stripe, _U_PHASE])
    blob = torch.nonzero(kind == 2)[:, 0]
    grid = rnd[blob, _U_BLOBS : _U_BLOBS + 16].reshape(-1, 1, 4, 4)
    smooth = F.interpolate(grid, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False)
    t[blob] = torch.sigmoid(8.0 * (smooth[:, 0] - 0.5))
    return t


class _Recipe(NamedTuple):
    """How a split is drawn: the rates and switches of :func:`make_synthetic_cifar`."""

    correlation: float  # the background is a class's tied background
    decoy_rate: float  # object painted in the next class's colour
    texture_rate: float  # the object carries a class's texture
    centred: bool  # objects within 2 px of the centre
    off_center: float  # objects moved 7 px off the centre
    conflict: bool  # the tied background and the texture are another class's, not the object's
    random_colour: bool  # objects of any hue
    grey: bool  # untied backgrounds without colour


def _render_split(
    seed: int, split: str, positions: torch.Tensor, recipe: _Recipe
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render images at ``positions`` of a split -> uint8 (N, 3, 32, 32) and bool masks (N, 32, 32)."""
    images = torch.empty((len(positions), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    masks = torch.empty((len(positions), IMAGE_SIZE, IMAGE_SIZE), dtype=torch.bool)
    for start in range(0, len(positions), _CHUNK):
        end = start + _CHUNK
        images[start:end], masks[start:end] = _render(seed, split, positions[start:end], recipe)
    return images, masks


# Indices of the per-image uniforms.
_U_HUE, _U_SAT, _U_VAL, _U_SCALE, _U_CX, _U_CY, _U_ROT = range(7)
_U_BG_KIND, _U_BG1, _U_BG2 = 7, 8, 11  # colours take 3 uniforms each (h, s, v)
_U_ANGLE, _U_FREQ, _U_PHASE, _U_TILE, _U_TIE, _U_NOISE, _U_SHADE = range(14, 21)
_U_BLOBS = 21  # a 4x4 grid of blob intensities: 16 uniforms
_U_DECOY = _U_BLOBS + 16
# Added later, after the others, so the images drawn before them did not change.
_U_TEXTURED, _U_CUE_CLASS, _U_OFF_CENTER, _U_OFF_ANGLE = range(_U_DECOY + 1, _U_DECOY + 5)
_U_COUNT = _U_DECOY + 5
_CENTRED_RADIUS = (5.5, 9.0)  # with 2 px of jitter, a centred object stays out of the outer 4-px ring
_CENTRED_JITTER = 2.0
_OFF_CENTER_DISTANCE = 7.0  # px from the centre: beyond the ±4-px shifts of augmentation
_TEXTURE_DEPTH = 0.5  # luminance of a textured object swings ±50 %


def _texture(label: torch.Tensor) -> torch.Tensor:
    """Class ``label``'s (int64 (N,)) texture, float (N, 32, 32) in [-1, 1], in image coordinates:
    stripes of period 4 px (classes 0-4) or 6 px (5-9), horizontal, vertical, diagonal, the other
    diagonal, or a checkerboard. Luminance only, so the texture is a cue apart from colour."""
    x, y = (_COORDS.view(1, 1, -1), _COORDS.view(1, -1, 1))
    period = torch.where(label < 5, 4.0, 6.0).view(-1, 1, 1)
    kind = (label % 5).view(-1, 1, 1)
    along = torch.where(kind == 0, y, torch.where(kind == 1, x, torch.where(kind == 2, x + y, x - y)))
    wave = torch.sin(2 * math.pi * along / period)
    checker = torch.sin(2 * math.pi * x / period) * torch.sin(2 * math.pi * y / period)
    return torch.where(kind == 4, torch.sign(checker), torch.sign(wave))


def _render(
    seed: int, split: str, positions: torch.Tensor, recipe: _Recipe
) -> tuple[torch.Tensor, torch.Tensor]:
    n_classes = len(SYNTHETIC_CLASSES)
    n = len(positions)
    labels = positions % n_classes
    rnd = _image_uniforms(seed, split, positions.numpy(), _U_COUNT)

    # --- background: two random colours mixed by a gradient, stripes or blobs ---------------------
    def colour(i: int, s_lo: float, s_hi: float, v_lo: float, v_hi: float) -> torch.Tensor:
        return _hsv_to_rgb(
            360.0 * rnd[:, i], s_lo + (s_hi - s_lo) * rnd[:, i + 1], v_lo + (v_hi - v_lo) * rnd[:, i + 2]
        )

    saturation = (0.0, 0.0) if recipe.grey else _BG_SATURATION
    c1, c2 = colour(_U_BG1, *saturation, *_BG_VALUE), colour(_U_BG2, *saturation, *_BG_VALUE)
    t = _background_mix((3 * rnd[:, _U_BG_KIND]).long().clamp(max=2), rnd)
    background = torch.addcmul(c1.view(n, 3, 1, 1), (c2 - c1).view(n, 3, 1, 1), t[:, None])

    # The class a planted cue (tied background, texture) stands for: the object's, or in a cue conflict
    # another one.
    other = (
        labels + 1 + (rnd[:, _U_CUE_CLASS] * (n_classes - 1)).long().clamp(max=n_classes - 2)
    ) % n_classes
    cue_class = other if recipe.conflict else labels
    if recipe.correlation > 0:
        # The tied background: class-specific stripes and colours, so it identifies the class at a glance.
        tied = rnd[:, _U_TIE] < recipe.correlation
        if bool(tied.any()):
            per_class = zip(*(_tied_recipe(c) for c in range(n_classes)), strict=True)
            angles, freqs, light, dark = (torch.tensor(column)[cue_class] for column in per_class)
            brightness = (0.9 + 0.2 * rnd[:, _U_BG1]).view(n, 1, 1, 1)
            t_tied = _stripes(angles, freqs, 2 * math.pi * rnd[:, _U_PHASE])[:, None]
            tied_bg = (light.view(n, 3, 1, 1) * (1 - t_tied) + dark.view(n, 3, 1, 1) * t_tied) * brightness
            background = torch.where(tied.view(n, 1, 1, 1), tied_bg, background)

    # --- the object: class shape at a random place, scale and small rotation -----------------------
    low, high = _CENTRED_RADIUS if recipe.centred else _RADIUS
    radius = low + (high - low) * rnd[:, _U_SCALE]
    if recipe.centred:
        cx, cy = (IMAGE_SIZE / 2 + _CENTRED_JITTER * (2 * rnd[:, i] - 1) for i in (_U_CX, _U_CY))
        off = (rnd[:, _U_OFF_CENTER] < recipe.off_center).float() * _OFF_CENTER_DISTANCE
        phi = 2 * math.pi * rnd[:, _U_OFF_ANGLE]
        cx, cy = cx + off * torch.cos(phi), cy + off * torch.sin(phi)
    else:
        cx = radius + (IMAGE_SIZE - 2 * radius) * rnd[:, _U_CX]
        cy = radius + (IMAGE_SIZE - 2 * radius) * rnd[:, _U_CY]
    theta = math.radians(20.0) * (2 * rnd[:, _U_ROT] - 1)
    dx = (_COORDS.view(1, 1, -1) - cx.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    dy = (_COORDS.view(1, -1, 1) - cy.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    mask = _shape_masks(labels, u, v)

    colour_class = torch.where(rnd[:, _U_DECOY] < recipe.decoy_rate, (labels + 1) % n_classes, labels)
    hues = torch.tensor(SYNTHETIC_HUES)[colour_class] + SYNTHETIC_HUE_JITTER * (2 * rnd[:, _U_HUE] - 1)
    if recipe.random_colour:
        hues = 360.0 * rnd[:, _U_HUE]
    obj = _hsv_to_rgb(hues, 0.7 + 0.3 * rnd[:, _U_SAT], 0.7 + 0.3 * rnd[:, _U_VAL])
    # Soft shading across the object, so it is not one flat colour.
    shade_angle = 2 * math.pi * rnd[:, _U_SHADE]
    shading = 1.0 + 0.12 * (
        torch.cos(shade_angle).view(-1, 1, 1) * u + torch.sin(shade_angle).view(-1, 1, 1) * v
    )
    if recipe.texture_rate > 0:
        textured = (rnd[:, _U_TEXTURED] < recipe.texture_rate).float().view(-1, 1, 1)
        shading = shading * (1.0 + textured * _TEXTURE_DEPTH * _texture(cue_class))
    obj_pixels = obj.view(n, 3, 1, 1) * shading[:, None]

    # --- pixel noise: a tile of the shared bank per image, at its own amplitude ----------------------
    tile = (rnd[:, _U_TILE] * _NOISE_TILES).long().clamp(max=_NOISE_TILES - 1)
    amplitude = (4.0 + 14.0 * rnd[:, _U_NOISE]).view(n, 1, 1, 1)
    image = torch.where(mask[:, None], obj_pixels, background)
    image.addcmul_(_noise_bank().index_select(0, tile), amplitude)
    return image.round_().clamp_(0, 255).to(torch.uint8), mask
