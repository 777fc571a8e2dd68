"""ROAD: agreement with pytorch-grad-cam, ties, determinism, and a model whose evidence is known."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import positive_control_result
from torch import nn

from cifar_helpers.analysis import faithfulness
from cifar_helpers.analysis.faithfulness import (
    LEAST_RELEVANT_FIRST,
    MOST_RELEVANT_FIRST,
    FailureRoad,
    RoadByModel,
    RoadTable,
    _explainer_maps,
    _keep_masks,
    _road_change,
    _road_curves,
    failure_faithfulness,
    random_maps,
    road_table,
)
from cifar_helpers.analysis.gradcam import FailureMaps, deletion_curve, explain_images
from cifar_helpers.core.models import resnet18


def failure_maps(indices: torch.Tensor, predicted: torch.Tensor) -> FailureMaps:
    """Notebook 03's maps of failures at ``indices`` predicted as ``predicted``; ROAD re-explains them,
    so the maps themselves are blank."""
    blank = torch.zeros(len(indices), 32, 32)
    return FailureMaps(indices, predicted, predicted, blank, blank)


def random_uint8(n: int, *, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)


def small_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet18(num_classes=10, width=8).eval()


class QuadrantWithArtifacts(nn.Module):
    """Class 0 is decided by channel 0 of the top-left quadrant; the model is also disturbed by noise.

    Like a CNN trained on natural images, it reacts to pixel-level artefacts anywhere: its class-0
    logit falls with the image's local roughness (the distance of each pixel from its 3x3 mean).
    Scattered pixels set to the mean are such artefacts; smoothly imputed pixels are not.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = x[:, 0, :8, :8].mean(dim=(1, 2))
        roughness = (x - F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)).abs().mean(dim=(1, 2, 3))
        logit = 4 * evidence - 40 * roughness
        return torch.stack([logit, torch.zeros_like(logit)], dim=1)


def quadrant_images(n: int = 8) -> torch.Tensor:
    """Normalised (n, 3, 16, 16): channel 0 is +1 on the top-left quadrant, everything else -1, plus noise."""
    images = torch.full((n, 3, 16, 16), -1.0)
    images[:, 0, :8, :8] = 1.0
    return images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))


def test_road_ranks_the_true_evidence_above_random_where_mean_blanking_does_not() -> None:
    model, images = QuadrantWithArtifacts(), quadrant_images()
    targets = torch.zeros(len(images), dtype=torch.int64)
    true_map = torch.zeros(len(images), 16, 16)
    true_map[:, :8, :8] = 1.0  # exactly the pixels the class depends on
    random_map = random_maps(len(images), 16, 16, seed=1)

    # The old test: blanking to the mean destroys the prediction faster for random pixels (the
    # artefacts) than for the evidence itself, so the true map looks *less* faithful than noise.
    deletion = deletion_curve(model, images, targets, true_map, steps=4)
    assert deletion.attended_auc > deletion.random_auc

    # ROAD: removing the quadrant first makes the probability collapse; random removal barely moves it.
    fractions = (0.25, 0.5, 0.75)
    true = _road_curves(model, images, targets, true_map, fractions, seed=0)
    random = _road_curves(model, images, targets, random_map, fractions, seed=0)
    assert max(true.most_relevant_first) < -0.5
    assert min(random.most_relevant_first) > -0.2
    assert all(t < r for t, r in zip(true.most_relevant_first, random.most_relevant_first, strict=True))
    assert true.combined > 0.3 > 0.1 > abs(random.combined)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("order", [MOST_RELEVANT_FIRST, LEAST_RELEVANT_FIRST])
def test_road_change_agrees_with_pytorch_grad_cam_on_maps_without_ties(order: str, fraction: float) -> None:
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = small_resnet()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 3, 5, 9])
    maps = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(2)).double()
    assert len(maps.flatten(1)[0].unique()) == 32 * 32  # no ties: the library's rule is well defined

    metric = {MOST_RELEVANT_FIRST: ROADMostRelevantFirst, LEAST_RELEVANT_FIRST: ROADLeastRelevantFirst}[order]
    torch.manual_seed(7)
    expected = metric(percentile=100 * (1 - fraction))(
        images, maps.numpy(), [ClassifierOutputSoftmaxTarget(int(t)) for t in targets], model
    )
    ours = _road_change(model, images, targets, maps, fraction, order, seed=7)
    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-5)


def test_keep_masks_remove_what_was_asked_even_when_the_map_is_flat() -> None:
    maps = torch.zeros(2, 8, 8)
    maps[:, :2] = torch.rand(2, 2, 8, generator=torch.Generator().manual_seed(0)) + 0.1  # 75 % zeros
    # The library keeps the pixels strictly below the percentile: here nothing, whatever the fraction.
    threshold = np.percentile(maps[0].numpy(), 100 * (1 - 0.3))
    assert (maps[0].numpy() < threshold).sum() == 0
    for order in (MOST_RELEVANT_FIRST, LEAST_RELEVANT_FIRST):
        keep = _keep_masks(maps, 0.3, order, torch.Generator().manual_seed(0))
        assert keep.dtype == torch.bool and keep.shape == maps.shape
        assert keep.flatten(1).sum(dim=1).tolist() == [45] * 2  # ceil(0.7 * 63), the library's count
    morf = _keep_masks(maps, 0.3, MOST_RELEVANT_FIRST, torch.Generator().manual_seed(0))
    assert not morf[:, :2].any()  # the 16 non-zero pixels go first ...
    lerf = _keep_masks(maps, 0.3, LEAST_RELEVANT_FIRST, torch.Generator().manual_seed(0))
    assert lerf[:, :2].all()  # ... or last
    again = _keep_masks(maps, 0.3, MOST_RELEVANT_FIRST, torch.Generator().manual_seed(0))
    other = _keep_masks(maps, 0.3, MOST_RELEVANT_FIRST, torch.Generator().manual_seed(1))
    assert torch.equal(morf, again) and not torch.equal(morf, other)  # ties: seeded, random


def test_road_curves_are_deterministic_and_leave_the_global_generator_alone() -> None:
    model = small_resnet().train()
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([1, 2, 3])
    maps = explain_images(model, (images.clamp(-2, 2) * 60 + 128).to(torch.uint8), targets)
    state = torch.get_rng_state()
    first = _road_curves(model, images, targets, maps, (0.3, 0.6), seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    second = _road_curves(model, images, targets, maps, (0.3, 0.6), seed=5)
    assert first == second
    assert model.training
    assert first.num_images == 3 and first.fractions == [0.3, 0.6]
    assert len(first.most_relevant_first) == len(first.least_relevant_first) == 2
    json.dumps(RoadTable(3, first.fractions, {"m": first}, 0.0).to_dict())


def test_library_explainers_give_maps_and_leave_the_model_as_it_was() -> None:
    model = small_resnet().train()
    images = torch.randint(
        0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    targets = torch.tensor([0, 4, 7])
    for method in ("gradcam++", "hirescam", "scorecam", "eigencam"):
        maps = _explainer_maps(model, images, targets, method, layer="layer3")
        assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32
        assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
        assert model.training and all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="method must be one of"):
        _explainer_maps(model, images, targets, "lime")


def test_project_gradcam_matches_the_library_gradcam() -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cifar_helpers.core.normalization import normalize

    model = small_resnet()
    images = torch.randint(
        0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(4)
    )
    targets = torch.tensor([2, 3, 4, 5])
    ours = explain_images(model, images, targets, layer="layer3")
    with GradCAM(model=model, target_layers=[model.layer3]) as cam:
        theirs = cam(normalize(images), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    # The library min-max scales, the project divides by the maximum: the same map where the minimum is 0.
    theirs_min_max = torch.from_numpy(theirs)
    ours_min_max = (ours - ours.amin((1, 2), True)) / (
        ours.amax((1, 2), True) - ours.amin((1, 2), True) + 1e-7
    )
    torch.testing.assert_close(ours_min_max, theirs_min_max, atol=1e-4, rtol=0)


def test_failure_faithfulness_on_a_small_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_resnet()
    images = torch.randint(
        0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5)
    )
    failures = failure_maps(torch.tensor([2, 0, 1]), torch.tensor([0, 1, 2]))
    config = SimpleNamespace(road_images=3, road_fractions=(0.5,), gradcam_layer="layer4", seed=0)
    # Fewer layers and explainers than the notebook's, to keep the test short.
    monkeypatch.setattr(faithfulness, "ROAD_LAYERS", ("layer3", "layer4"))
    monkeypatch.setattr(faithfulness, "EXPLAINERS", ("gradcam", "eigencam"))
    report, figures = failure_faithfulness(model, images, failures, config)
    maps = figures["maps"]
    assert set(maps) == {"gradcam@layer3", "gradcam@layer4", "eigencam@layer4", "random"}
    assert report.indices == [2, 0, 1] and report.num_failures == 3
    assert set(report.rows) == set(maps)
    assert report.best_layer in ("layer3", "layer4")
    assert report.best_explainer in ("gradcam", "eigencam")
    best = report.rows[f"gradcam@{report.best_layer}"].combined
    assert best == max(report.rows[f"gradcam@{layer}"].combined for layer in ("layer3", "layer4"))
    # road.json: the keys in the order the stage has always written them, read back strictly.
    saved = json.loads(json.dumps(report.to_dict()))
    assert list(saved) == [
        "num_images",
        "fractions",
        "rows",
        "seconds",
        "layers",
        "explainers",
        "explainer_layer",
        "best_layer",
        "best_explainer",
        "map_seconds",
        "indices",
        "num_failures",
    ]
    assert list(saved["rows"]["random"]) == [
        "num_images",
        "fractions",
        "most_relevant_first",
        "most_relevant_first_sem",
        "least_relevant_first",
        "least_relevant_first_sem",
        "combined",
        "combined_sem",
        "combined_per_image",
    ]
    assert FailureRoad.from_dict(saved) == report
    with pytest.raises(KeyError, match="best_layer"):
        FailureRoad.from_dict({k: v for k, v in saved.items() if k != "best_layer"})


def _small_table() -> RoadTable:
    model = small_resnet()
    images = random_uint8(2, seed=6)
    targets = torch.tensor([3, 4])
    maps = {"gradcam": explain_images(model, images, targets), "random": random_maps(2, 32, 32, seed=0)}
    return road_table(model, images, targets, maps, fractions=(0.25, 0.75), seed=0)


def test_road_table_text_and_figures() -> None:
    from cifar_helpers.views.plotting import plot_map_columns, plot_road_curves
    from cifar_helpers.views.tables import positive_control_road_table, road_by_model_table, text

    table = _small_table()
    assert set(table.rows) == {"gradcam", "random"} and table.num_images == 2
    by_model = RoadByModel(2, [0.25, 0.75], {"m": table})
    assert RoadByModel.from_dict(json.loads(json.dumps(by_model.to_dict()))) == by_model
    shown = text(road_by_model_table(by_model))
    assert "m Grad-CAM" in shown and "m random" in shown and "25%" in shown and "75%" in shown
    object_row = replace(table.rows["gradcam"], combined=0.4321)
    road = replace(table, rows={**table.rows, "object": object_row})
    control = text(positive_control_road_table(positive_control_result(road)))
    assert control.count("+0.43") == 2 and control.count(f"{table.rows['random'].combined:+.2f}") >= 2
    fig = plot_road_curves(table)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3  # two maps and the zero line
    images = random_uint8(2, seed=6)
    fig = plot_map_columns(images, {"a": random_maps(2, 32, 32, seed=0), "b": random_maps(2, 32, 32, seed=1)})
    assert len(fig.axes) == 2 * 3 + 1  # images x (image + two maps) + colour bar
    with pytest.raises(ValueError, match="shape"):
        plot_map_columns(images, {"a": random_maps(3, 32, 32, seed=0)})


def test_road_table_names_the_best_layer_and_explainer(monkeypatch: pytest.MonkeyPatch) -> None:
    from cifar_helpers.views.tables import failure_road_table, text

    model = small_resnet()
    failures = failure_maps(torch.arange(5), torch.arange(5))
    config = SimpleNamespace(road_images=2, road_fractions=(0.5,), gradcam_layer="layer4", seed=0)
    images = random_uint8(5, seed=8)
    monkeypatch.setattr(faithfulness, "ROAD_LAYERS", ("layer3", "layer4"))
    monkeypatch.setattr(faithfulness, "EXPLAINERS", ("gradcam", "hirescam"))
    report, _ = failure_faithfulness(model, images, failures, config)
    shown = text(failure_road_table(report))
    assert "ROAD on the 2 most confident of 5 failures" in shown
    assert f"most faithful Grad-CAM layer: {report.best_layer}" in shown
    assert f"most faithful explainer at layer4: {report.best_explainer}" in shown
    assert shown.splitlines()[-3].startswith("random")
