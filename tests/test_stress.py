"""Corruptions: identity at severity 0, growing damage with severity, determinism, and the accuracy table."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_helpers.analysis import stress
from cifar_helpers.analysis.stress import (
    CORRUPTION_PARAMETERS,
    CORRUPTIONS,
    ModelStress,
    StressResult,
    corrupt,
    corruption_seed,
    run_stress_test,
    stratified_subset,
)


def _natural_like_images(n: int = 48, seed: int = 0) -> torch.Tensor:
    """Smooth colour fields with a sharp-edged rectangle: uint8 (n, 3, 32, 32), like photos in miniature."""
    generator = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=generator)
    images = F.interpolate(low, size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    for i in range(n):
        top, left = torch.randint(2, 14, (2,), generator=generator).tolist()
        bottom, right = torch.randint(18, 30, (2,), generator=generator).tolist()
        images[i, :, top:bottom, left:right] = torch.rand(3, 1, 1, generator=generator)
    return (images * 255).round().to(torch.uint8)


def _mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _natural_like_images()


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_damage_grows_with_severity(images: torch.Tensor, name: str) -> None:
    diffs = [_mean_abs_diff(corrupt(images, name, s, generator=0), images) for s in range(6)]
    assert diffs[0] == 0.0  # severity 0 is the identity
    # Severity 1 is a mild change, severity 5 a strong one...
    assert _psnr(corrupt(images, name, 1, generator=0), images) > 22.0
    assert _psnr(corrupt(images, name, 5, generator=0), images) < 30.0
    assert diffs[5] > 1.4 * diffs[1]
    # ...and the damage never shrinks from one severity to the next (a rounding-level tolerance).
    for milder, stronger in itertools.pairwise(diffs[1:]):
        assert stronger >= milder - 0.05


@pytest.mark.parametrize("name", list(CORRUPTIONS))
@pytest.mark.parametrize("severity", [0, 3, 5])
def test_output_is_uint8_of_the_input_shape(images: torch.Tensor, name: str, severity: int) -> None:
    out = corrupt(images[:5], name, severity, generator=1)
    assert out.dtype == torch.uint8
    assert out.shape == (5, 3, 32, 32)
    assert out.data_ptr() != images.data_ptr()  # a copy, never the caller's tensor


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_same_seed_same_pixels(images: torch.Tensor, name: str) -> None:
    first = corrupt(images, name, 4, generator=123)
    again = corrupt(images, name, 4, generator=torch.Generator().manual_seed(123))
    assert torch.equal(first, again)


def test_noise_depends_on_the_seed_and_advances_a_generator(images: torch.Tensor) -> None:
    assert not torch.equal(corrupt(images, "gaussian_noise", 3, 1), corrupt(images, "gaussian_noise", 3, 2))
    generator = torch.Generator().manual_seed(5)
    first = corrupt(images, "gaussian_noise", 3, generator)
    second = corrupt(images, "gaussian_noise", 3, generator)
    assert not torch.equal(first, second)


def test_corruptions_keep_the_image_in_one_piece(images: torch.Tensor) -> None:
    # Contrast keeps each channel's mean (up to rounding and clipping), brightness never darkens,
    # noise is centred.
    for severity in range(1, 6):
        reduced = corrupt(images, "contrast", severity)
        assert torch.allclose(reduced.float().mean(dim=(2, 3)), images.float().mean(dim=(2, 3)), atol=1.0)
        assert reduced.float().std() < images.float().std()
        brighter = corrupt(images, "brightness", severity)
        assert (brighter.int() >= images.int() - 1).all()
    noisy = corrupt(images, "gaussian_noise", 5, 0)
    assert abs(float(noisy.float().mean() - images.float().mean())) < 2.0


def test_brightness_equals_the_hsv_round_trip(images: torch.Tensor) -> None:
    # The vectorised shortcut must match the definition: add c to HSV's V channel, convert back.
    shift = CORRUPTION_PARAMETERS["brightness"][2]
    expected = []
    for image in images.permute(0, 2, 3, 1).numpy():
        hsv = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
        hsv[:, :, 2] = np.clip(hsv[:, :, 2] + shift, 0, 1)
        rgb = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)
        expected.append(np.round(rgb * 255).astype(np.uint8))
    reference = torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2)
    assert (corrupt(images, "brightness", 3).int() - reference.int()).abs().max() <= 1


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_pixelate_matches_the_reference_resampling(images: torch.Tensor, severity: int) -> None:
    # CIFAR-10-C pixelates with PIL's box filter both ways; its severities assume that resampler.
    pil_image = pytest.importorskip("PIL.Image")
    size = int(32 * CORRUPTION_PARAMETERS["pixelate"][severity - 1])
    expected = [
        np.asarray(
            pil_image.fromarray(image).resize((size, size), pil_image.BOX).resize((32, 32), pil_image.BOX)
        )
        for image in images.permute(0, 2, 3, 1).numpy()
    ]
    reference = torch.from_numpy(np.stack(expected)).permute(0, 3, 1, 2)
    # PIL rounds in fixed point between its horizontal and vertical passes: one grey level at most.
    assert (corrupt(images, "pixelate", severity).int() - reference.int()).abs().max() <= 1


def test_blur_of_a_flat_image_is_flat() -> None:
    flat = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    for name in ("gaussian_blur", "pixelate", "contrast"):
        assert torch.equal(corrupt(flat, name, 5), flat)


def test_unknown_corruption_lists_the_known_ones(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match=r"unknown corruption 'fog'.*gaussian_noise.*pixelate"):
        corrupt(images, "fog", 1)


@pytest.mark.parametrize("severity", [-1, 6, 2.5, True])
def test_bad_severity_is_refused(images: torch.Tensor, severity: object) -> None:
    with pytest.raises(ValueError, match=r"severity must be an integer in \[0, 5\]"):
        corrupt(images, "contrast", severity)  # type: ignore[arg-type]


def test_bad_images_are_refused(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="uint8 with shape"):
        corrupt(images.float(), "contrast", 1)
    with pytest.raises(ValueError, match="uint8 with shape"):
        corrupt(images[:, :1], "contrast", 1)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        corrupt(images.numpy(), "contrast", 1)  # type: ignore[arg-type]


def test_cell_seeds_are_stable_and_distinct() -> None:
    seeds = {corruption_seed(0, name, s) for name in CORRUPTIONS for s in range(1, 6)}
    assert len(seeds) == len(CORRUPTIONS) * 5
    assert corruption_seed(7, "gaussian_noise", 3) == corruption_seed(7, "gaussian_noise", 3)
    assert corruption_seed(7, "gaussian_noise", 3) != corruption_seed(8, "gaussian_noise", 3)


def test_stratified_subset_balances_classes() -> None:
    labels = torch.arange(100) % 4
    chosen = stratified_subset(labels, 20, seed=0)
    assert chosen.numel() == 20 and torch.equal(chosen, chosen.sort().values)
    assert torch.bincount(labels[chosen], minlength=4).tolist() == [5, 5, 5, 5]
    assert torch.equal(chosen, stratified_subset(labels, 20, seed=0))
    assert stratified_subset(labels, 500, seed=0).numel() == 100


# --- accuracy under corruption ---------------------------------------------------------------------
class TextureDetector(nn.Module):
    """Class 1 when the image has pixel-scale texture (a 1-px checkerboard), class 0 when flat.

    Perfect on clean images of the two kinds below; a blur that removes the texture fools it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(1, 2, 3))
        score = 8.0 * (energy - 0.6)
        return torch.stack([-score, score], dim=1)


def _texture_set(n_per_class: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    base = torch.randint(90, 160, (2 * n_per_class, 3, 1, 1), generator=generator).float()
    checker = ((torch.arange(32).view(-1, 1) + torch.arange(32).view(1, -1)) % 2).float() * 2 - 1
    images = base.expand(-1, -1, 32, 32).clone()
    images[n_per_class:] += 45 * checker
    labels = torch.cat([torch.zeros(n_per_class), torch.ones(n_per_class)]).long()
    return images.round().clamp(0, 255).to(torch.uint8), labels


def corruption_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, **kwargs
) -> ModelStress:
    """One model's entry of :func:`run_stress_test`, as it would be were it the only model."""
    return run_stress_test({"model": model}, images, labels, **kwargs).models["model"]


def only_corruptions(monkeypatch: pytest.MonkeyPatch, names: list[str], severities=(1, 2, 3, 4, 5)) -> None:
    """Fewer corruptions and severities than the notebook's, to keep a test short."""
    monkeypatch.setattr(stress, "CORRUPTIONS", {name: stress.CORRUPTIONS[name] for name in names})
    monkeypatch.setattr(stress, "SEVERITIES", tuple(severities))


def test_corruption_accuracy_measures_the_drop(monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = _texture_set()
    only_corruptions(monkeypatch, ["gaussian_blur", "contrast"])
    result = corruption_accuracy(TextureDetector(), images, labels, batch_size=16, seed=3)
    assert result.clean_accuracy == 1.0
    blur = result.corruptions["gaussian_blur"].accuracy
    assert len(blur) == 5 and blur[-1] <= 0.55  # the checkerboard is blurred away: every image "flat"
    cells = blur + result.corruptions["contrast"].accuracy
    assert result.mean_corruption_accuracy == pytest.approx(sum(cells) / len(cells))
    assert result.absolute_drop == pytest.approx(1.0 - result.mean_corruption_accuracy)
    assert result.relative_drop == pytest.approx(result.absolute_drop)  # clean accuracy is 1
    assert result.setup.corruption_names == ("gaussian_blur", "contrast")
    assert result.setup.severities == (1, 2, 3, 4, 5)
    assert result.setup.num_images == 40


def test_stress_test_is_deterministic_and_shared_between_models(monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = _texture_set(10)
    torch.manual_seed(0)
    random_model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    models = {"texture": TextureDetector(), "random": random_model}
    only_corruptions(monkeypatch, ["gaussian_noise", "jpeg"], (1, 5))
    kwargs = dict(batch_size=8, seed=11)
    both = run_stress_test(models, images, labels, **kwargs)
    assert both == run_stress_test(models, images, labels, **kwargs)
    # Each model sees exactly the corrupted pixels it would see alone.
    alone = corruption_accuracy(TextureDetector(), images, labels, **kwargs)
    assert both.models["texture"] == alone
    # corruptions.json: the setup's keys, then the models, each entry complete on its own.
    saved = json.loads(json.dumps(both.to_dict()))
    setup = ["corruption_names", "severities", "parameters", "num_images", "seed"]
    assert list(saved) == [*setup, "models"]
    model_keys = ["clean_accuracy", "clean_mean_confidence", "corruptions", "mean_corruption_accuracy"]
    assert list(saved["models"]["texture"]) == [*model_keys, "absolute_drop", "relative_drop", *setup]
    cell_keys = ["accuracy", "mean_confidence", "mean_accuracy", "absolute_drop", "relative_drop"]
    assert list(saved["models"]["random"]["corruptions"]["jpeg"]) == cell_keys
    assert StressResult.from_dict(saved) == both
    # A cell's noise does not depend on which other corruptions are evaluated.
    only_corruptions(monkeypatch, ["gaussian_noise"], (5,))
    noise_only = corruption_accuracy(TextureDetector(), images, labels, **kwargs)
    assert noise_only.corruptions["gaussian_noise"].accuracy == (
        alone.corruptions["gaussian_noise"].accuracy[1],
    )


def test_stress_test_refuses_bad_arguments() -> None:
    images, labels = _texture_set(2)
    with pytest.raises(ValueError, match="labels"):
        run_stress_test({"m": TextureDetector()}, images, labels[:-1])
    with pytest.raises(ValueError, match="at least one model"):
        run_stress_test({}, images, labels)


# --- figures ----------------------------------------------------------------------------------------
def test_corruption_curves_figure(monkeypatch: pytest.MonkeyPatch) -> None:
    from cifar_helpers.views.plotting.stress import plot_corruption_curves

    images, labels = _texture_set(4)
    only_corruptions(monkeypatch, ["gaussian_blur", "contrast", "jpeg", "pixelate"])
    models = {"baseline": TextureDetector(), "augmented": TextureDetector()}
    both = run_stress_test(models, images, labels, batch_size=8)
    fig = plot_corruption_curves(both)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert [ax.get_title() for ax in panels] == ["gaussian blur", "contrast", "jpeg", "pixelate"]
    # One solid curve per model (clean point + 5 severities) and one dashed clean line per model.
    first = panels[0]
    solid = [line for line in first.lines if line.get_linestyle() == "-"]
    dashed = [line for line in first.lines if line.get_linestyle() == "--"]
    assert len(solid) == 2 and len(dashed) == 2
    assert list(solid[0].get_xdata()) == [0, 1, 2, 3, 4, 5]
    assert fig._repr_png_().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="no corruption"):
        plot_corruption_curves(replace(both, setup=replace(both.setup, corruption_names=())))


def test_severity_grid_shows_every_corruption_at_every_severity(images: torch.Tensor) -> None:
    from cifar_helpers.views.plotting.stress import plot_severity_grid

    fig = plot_severity_grid(images[0], seed=1)
    assert len(fig.axes) == len(CORRUPTIONS) * 6
    # The panel of "severity 3 blur" holds exactly corrupt(image, "gaussian_blur", 3).
    row = list(CORRUPTIONS).index("gaussian_blur")
    shown = fig.axes[row * 6 + 3].images[0].get_array()
    expected = corrupt(images[:1], "gaussian_blur", 3)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(shown), expected)
    with pytest.raises(ValueError, match=r"shape \(3, H, W\)"):
        plot_severity_grid(images)
