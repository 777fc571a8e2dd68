"""The Grad-CAM sanity check: the cascading model-parameter randomisation test and its typed result."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import nn

from cifar_helpers.analysis.sanity import (
    RANDOMISATION_STEPS,
    RandomisationSummary,
    cascading_randomisation_maps,
    spearman_per_image,
    summarise_randomisation,
)
from cifar_helpers.core.data import make_synthetic_cifar
from cifar_helpers.core.normalization import normalize
from cifar_helpers.core.training import train_model
from cifar_helpers.rundir.config import make_config
from cifar_helpers.views.plotting.stress import plot_randomisation_test

# sanity.json's keys as the stress stage has always written them, in their order.
SAVED_KEYS = ["steps", "spearman_mean", "spearman_std", "num_defined", "num_images", "layer", "seed"]


def randomisation_test(model: nn.Module, images: torch.Tensor, **options: Any) -> RandomisationSummary:
    """The randomisation test as notebook 06 runs it: every step's maps, then their summary."""
    steps, maps, _ = cascading_randomisation_maps(model, images, **options)
    return summarise_randomisation(steps, maps, layer=options.get("layer"), seed=options.get("seed", 0))


def test_spearman_of_identical_reversed_and_constant_maps() -> None:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 8, 8, generator=generator)
    other = maps.clone()
    other[1] = 1 - maps[1]  # ranks reversed
    other[2] = 0.0  # an all-zero map: no evidence anywhere
    rho = spearman_per_image(maps, other)
    assert rho[0].item() == pytest.approx(1.0)
    assert rho[1].item() == pytest.approx(-1.0)
    assert math.isnan(rho[2].item())
    with pytest.raises(ValueError, match="same shape"):
        spearman_per_image(maps, other[:2])


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, torch.Tensor]:
    """A width-8 ResNet-18 trained for 2 epochs (the smoke recipe) on 500 generated images."""
    config = make_config("smoke", seed=0, device="cpu", num_threads=1)
    data = make_synthetic_cifar(50, 4, seed=0)
    result = train_model(
        config,
        data.train_images,
        data.train_labels,
        data.test_images,
        data.test_labels,
        tmp_path_factory.mktemp("sanity_model"),
        augment=False,
        progress=False,
    )
    return result.model.eval(), normalize(data.test_images[:32])


def test_randomisation_destroys_the_maps(trained_model: tuple[nn.Module, torch.Tensor]) -> None:
    model, images = trained_model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    result = randomisation_test(model, images, layer="layer4", seed=0)

    assert result.steps == ("trained", *(name for name, _ in RANDOMISATION_STEPS))
    means = result.spearman_mean
    assert len(means) == len(result.spearman_std) == len(result.num_defined) == 7
    assert means[0] == pytest.approx(1.0)  # the trained maps against themselves
    assert result.num_defined[0] >= 16  # most trained maps are not blank
    # Destroying the learned weights must decorrelate the maps: the fully randomised network below
    # the trained one, every randomised step far below 1 and, on average, little rank agreement left.
    # (Not monotone: once layer4 itself is random, its maps follow the image's edges again, which the
    # trained maps partly do too; the linear step alone already scrambles Grad-CAM's channel weights,
    # which are the head's weights passed back through the average pool.)
    assert means[0] > means[-1]
    assert max(means[1:]) < 0.8
    assert sum(means[1:]) / len(means[1:]) < 0.5
    # The trained model itself and torch's global generator are left untouched.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.random.get_rng_state())
    text = json.dumps(result.to_dict())  # JSON-ready, with sanity.json's keys
    assert list(json.loads(text)) == SAVED_KEYS
    # Compared as text: a step without a defined correlation holds NaN, which equals nothing.
    assert json.dumps(RandomisationSummary.from_dict(json.loads(text)).to_dict()) == text


def test_randomisation_is_deterministic_and_seeded(trained_model: tuple[nn.Module, torch.Tensor]) -> None:
    model, images = trained_model
    images = images[:6]
    first = cascading_randomisation_maps(model, images, seed=3)
    again = cascading_randomisation_maps(model, images, seed=3)
    other = cascading_randomisation_maps(model, images, seed=4)
    assert first[0] == again[0]
    assert torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])
    assert first[1].shape == (7, 6, 32, 32)
    assert torch.equal(first[1][0], other[1][0])  # the trained maps do not depend on the seed
    assert not torch.equal(first[1][-1], other[1][-1])  # the re-initialised weights do


def test_randomisation_refuses_other_architectures() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="no submodule"):
        randomisation_test(model, torch.zeros(1, 3, 32, 32))


def test_randomisation_figure(trained_model: tuple[nn.Module, torch.Tensor]) -> None:
    model, images = trained_model
    steps, maps, _ = cascading_randomisation_maps(model, images[:3], seed=0)
    result = randomisation_test(model, images[:3], seed=0)
    uint8 = (images[:3] * 40 + 128).clamp(0, 255).to(torch.uint8)  # any uint8 images of the right shape
    fig = plot_randomisation_test(result, maps, uint8, num_examples=2)
    curve = fig.axes[0]
    assert [t.get_text() for t in curve.get_xticklabels()][:2] == ["trained", "+ linear"]
    assert list(curve.lines[0].get_ydata()) == pytest.approx(result.spearman_mean)
    assert len([ax for ax in fig.axes if ax.images]) == 2 * len(steps)
    assert plot_randomisation_test(result)._repr_png_().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="images are needed"):
        plot_randomisation_test(result, maps)


def test_the_summary_round_trips_and_reads_strictly() -> None:
    result = RandomisationSummary(
        steps=("trained", "linear"),
        spearman_mean=(1.0, 0.25),
        spearman_std=(0.0, 0.5),
        num_defined=(16, 15),
        num_images=16,
        layer="layer4",
        seed=3,
    )
    saved = result.to_dict()
    assert list(saved) == SAVED_KEYS and saved["steps"] == ["trained", "linear"]
    assert RandomisationSummary.from_dict(json.loads(json.dumps(saved))) == result
    with pytest.raises(KeyError, match="num_defined"):
        RandomisationSummary.from_dict({k: v for k, v in saved.items() if k != "num_defined"})
    with pytest.raises(ValueError, match="same length"):
        RandomisationSummary.from_dict({**saved, "spearman_std": [0.0]})
    with pytest.raises(TypeError, match="RandomisationSummary"):
        plot_randomisation_test(saved)
