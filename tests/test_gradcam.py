"""Grad-CAM against hand-computed answers, batching, hook/mode/grad hygiene, and the attention measures."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifar_helpers.analysis.failures import FailureSet
from cifar_helpers.analysis.gradcam import (
    FailureMaps,
    attention_measures,
    deletion_curve,
    grad_cam,
    gradcam_for_failures,
    mask_share,
    matched_controls,
    periphery_share,
    pointing_game,
    resolve_layer,
)
from cifar_helpers.core.models import resnet18
from cifar_helpers.core.normalization import normalize

# Class 0 and 1 mix positive and negative channel weights; class 2's are all negative, so with
# positive activations its map is negative everywhere and Grad-CAM's ReLU leaves nothing.
HEAD_WEIGHT = torch.tensor([[1.0, 0.5, -1.0], [0.0, -1.0, 2.0], [-1.0, -0.5, -2.0]])


class PoolHead(nn.Module):
    """``features`` (the explained layer) -> global average pool -> linear head with known weights.

    d logit_c / d A_k(i, j) = W[c, k] / (h * w) everywhere, so Grad-CAM's channel weights are
    W[c, :] / (h * w) and the normalised map is ReLU(sum_k W[c, k] A_k) / max.
    """

    def __init__(self, features: nn.Module, fail_after_layer: bool = False) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Linear(3, 3)
        self.fail_after_layer = fail_after_layer
        with torch.no_grad():
            self.head.weight.copy_(HEAD_WEIGHT)
            self.head.bias.copy_(torch.tensor([0.3, -0.2, 5.0]))  # the bias must not matter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        if self.fail_after_layer:
            raise RuntimeError("forward failed after the layer")
        return self.head(a.mean(dim=(2, 3)))


def expected_cam(activation: torch.Tensor, cls: int, size: tuple[int, int]) -> torch.Tensor:
    cam = F.relu(torch.einsum("k,nkhw->nhw", HEAD_WEIGHT[cls], activation))[:, None]
    cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)[:, 0]
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-30), 0.0)


def small_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet18(num_classes=10, width=8).eval()


def reference_grad_cam(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The textbook recipe, one image at a time: full backward with a retained gradient on layer4."""
    model = copy.deepcopy(model).eval()
    maps = []
    for image, target in zip(images, targets.tolist(), strict=True):
        store = {}

        def keep(module: nn.Module, inputs: object, output: torch.Tensor, store: dict = store) -> None:
            output.retain_grad()
            store["a"] = output

        handle = model.layer4.register_forward_hook(keep)
        model(image[None])[0, target].backward()
        handle.remove()
        activation, gradient = store["a"], store["a"].grad
        cam = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=image.shape[1:], mode="bilinear", align_corners=False)[0, 0]
        maps.append(cam / cam.max() if cam.max() > 0 else cam)
    return torch.stack(maps).detach()


# --- the known answer ------------------------------------------------------------------------------------
def test_identity_layer_matches_hand_computation() -> None:
    model = PoolHead(nn.Identity())
    images = torch.rand(4, 3, 5, 6) + 0.1  # positive activations
    for cls in range(3):
        maps = grad_cam(model, images, cls, layer="features")
        assert torch.allclose(maps, expected_cam(images, cls, (5, 6)), atol=1e-6), cls
    zero = grad_cam(model, images, 2, layer="features")
    assert torch.equal(zero, torch.zeros_like(zero))  # all-negative evidence: zeros, not NaN


def test_downsampling_layer_is_upsampled_bilinearly() -> None:
    model = PoolHead(nn.AvgPool2d(2))
    images = torch.rand(3, 3, 8, 8) - 0.3  # mixed signs: parts of the maps are clipped by the ReLU
    targets = torch.tensor([0, 1, 0])
    maps = grad_cam(model, images, targets, layer="features")
    pooled = F.avg_pool2d(images, 2)
    expected = torch.stack(
        [expected_cam(pooled[i : i + 1], int(t), (8, 8))[0] for i, t in enumerate(targets)]
    )
    assert maps.shape == (3, 8, 8)
    assert torch.allclose(maps, expected, atol=1e-6)


def test_matches_textbook_full_backward_on_resnet() -> None:
    model = small_resnet()
    images = torch.randn(4, 3, 32, 32)
    targets = torch.tensor([0, 3, 7, 9])
    assert torch.allclose(
        grad_cam(model, images, targets), reference_grad_cam(model, images, targets), atol=1e-5
    )


def test_in_place_op_after_the_layer_is_harmless() -> None:
    torch.manual_seed(0)
    layers = [
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ]
    model = nn.Sequential(*layers).eval()
    in_place = copy.deepcopy(model)
    in_place[1] = nn.ReLU(inplace=True)  # would modify the explained activation, or fail on a leaf
    images = torch.randn(2, 3, 8, 8)
    expected = grad_cam(model, images, 1, layer="0")
    assert expected.amax() == 1
    assert torch.equal(grad_cam(in_place, images, 1, layer="0"), expected)


# --- batching, output -------------------------------------------------------------------------------------
def test_batched_equals_one_at_a_time() -> None:
    model = small_resnet()
    torch.manual_seed(1)
    images = torch.randn(16, 3, 32, 32)
    targets = torch.randint(0, 10, (16,))
    batched = grad_cam(model, images, targets)
    single = torch.cat([grad_cam(model, images[i : i + 1], targets[i : i + 1]) for i in range(16)])
    assert torch.allclose(batched, single, atol=1e-5)
    assert torch.allclose(grad_cam(model, images, targets, batch_size=5), batched, atol=1e-5)
    # Deterministic: the same call gives the same bits.
    assert torch.equal(grad_cam(model, images, targets), batched)


def test_output_shape_dtype_and_range() -> None:
    model = small_resnet()
    images = torch.randn(6, 3, 32, 32)
    maps = grad_cam(model, images, torch.arange(6), layer="layer3")
    assert maps.shape == (6, 32, 32) and maps.dtype == torch.float32 and maps.device == images.device
    assert maps.min() >= 0
    peaks = maps.amax(dim=(1, 2))
    assert torch.all((peaks == 1) | (peaks == 0))
    assert grad_cam(model, images[:0], 0).shape == (0, 32, 32)


def test_works_under_no_grad_inference_mode_and_with_inputs_requiring_grad() -> None:
    model = small_resnet()
    images = torch.randn(3, 3, 32, 32)
    expected = grad_cam(model, images, 1)
    with torch.no_grad():
        assert torch.equal(grad_cam(model, images, 1), expected)
    assert torch.is_grad_enabled()
    with torch.inference_mode():
        frozen = images.clone()  # an inference tensor
        assert torch.equal(grad_cam(model, frozen, 1), expected)
    leaf = images.clone().requires_grad_(True)
    assert torch.equal(grad_cam(model, leaf, 1), expected)
    assert leaf.grad is None


# --- hygiene: hooks, modes, gradients ---------------------------------------------------------------------
def test_hooks_removed_after_success_and_after_errors() -> None:
    model = small_resnet()
    images = torch.randn(2, 3, 32, 32)
    grad_cam(model, images, 0)
    assert not model.layer4._forward_hooks

    with pytest.raises(ValueError, match="target_classes"):
        grad_cam(model, images, 10)  # out of range: found after the forward, inside the hooked section
    assert not model.layer4._forward_hooks

    with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
        grad_cam(model, images, 0, layer="linear")  # not a convolutional layer
    assert not model.linear._forward_hooks

    failing = PoolHead(nn.Identity(), fail_after_layer=True).train()
    with pytest.raises(RuntimeError, match="after the layer"):
        grad_cam(failing, images, 0, layer="features")
    assert not failing.features._forward_hooks
    assert failing.training and failing.features.training
    assert torch.is_grad_enabled()


def test_modes_restored_running_stats_and_grads_untouched() -> None:
    model = small_resnet().train()
    model.layer2.eval()  # a mixed state must come back exactly
    modes = {name: m.training for name, m in model.named_modules()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model.linear.weight.grad = torch.full_like(model.linear.weight, 0.25)
    existing = model.linear.weight.grad

    grad_cam(model, torch.randn(4, 3, 32, 32), torch.tensor([1, 2, 3, 4]))

    assert {name: m.training for name, m in model.named_modules()} == modes
    # BatchNorm ran on running statistics (eval), so none were updated.
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert model.linear.weight.grad is existing
    assert torch.equal(existing, torch.full_like(existing, 0.25))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "linear.weight")


def test_resolve_layer_names_and_errors() -> None:
    model = small_resnet()
    assert resolve_layer(model, None) is model.layer4
    assert resolve_layer(model, "layer3.1") is model.layer3[1]
    assert resolve_layer(model, "layer4.1.conv2") is model.layer4[1].conv2
    assert resolve_layer(model, model.layer2) is model.layer2
    with pytest.raises(ValueError, match=r"'layer5'.*did you mean.*valid names:.*layer3\.1"):
        resolve_layer(model, "layer5")
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layer(model, nn.Conv2d(3, 3, 1))
    with pytest.raises(TypeError, match="layer must be"):
        resolve_layer(model, 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"'layer4' \(the default layer"):
        resolve_layer(nn.Linear(2, 2), None)


def test_bad_inputs_raise_clear_errors() -> None:
    model = small_resnet()
    with pytest.raises(TypeError, match="normalize"):
        grad_cam(model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 0)
    with pytest.raises(ValueError, match="4-D"):
        grad_cam(model, torch.zeros(3, 32, 32), 0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        grad_cam(model, torch.zeros(2, 3, 32, 32), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="non-negative"):
        grad_cam(model, torch.zeros(2, 3, 32, 32), -1)
    with pytest.raises(ValueError, match="batch_size"):
        grad_cam(model, torch.zeros(2, 3, 32, 32), 0, batch_size=0)


# --- maps for failures ------------------------------------------------------------------------------------
def test_gradcam_for_failures_maps_predicted_and_true_classes() -> None:
    model = small_resnet()
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=generator)
    failures = FailureSet(
        indices=torch.tensor([7, 2, 5]),
        true_labels=torch.tensor([1, 4, 0]),
        predicted=torch.tensor([3, 3, 9]),
        confidence=torch.tensor([0.99, 0.95, 0.93]),
        threshold=0.9,
        num_images=10,
        num_errors=4,
    )
    result = gradcam_for_failures(model, images, failures, batch_size=2, max_items=2)
    assert result.indices.tolist() == [7, 2] and len(result) == 2
    assert result.predicted_maps.shape == result.true_maps.shape == (2, 32, 32)
    x = normalize(images[[7, 2]])
    assert torch.allclose(result.predicted_maps, grad_cam(model, x, torch.tensor([3, 3])), atol=1e-6)
    assert torch.allclose(result.true_maps, grad_cam(model, x, torch.tensor([1, 4])), atol=1e-6)
    assert gradcam_for_failures(model, images, failures).indices.tolist() == [7, 2, 5]
    # heatmaps.pt holds its fields by name and reads back strictly; a row subset keeps rows aligned.
    again = FailureMaps.from_dict(result.to_dict())
    assert all(torch.equal(getattr(again, k), v) for k, v in result.to_dict().items())
    with pytest.raises(KeyError, match="true_maps"):
        FailureMaps.from_dict({k: v for k, v in result.to_dict().items() if k != "true_maps"})
    second = result.restricted(torch.tensor([False, True]))
    assert second.indices.tolist() == [2] and torch.equal(second.true_maps, result.true_maps[1:])
    with pytest.raises(ValueError, match="10 images"):
        gradcam_for_failures(model, images[:9], failures)


# --- where the mass is ------------------------------------------------------------------------------------
def test_periphery_share_centre_border_uniform_and_empty() -> None:
    maps = torch.zeros(4, 32, 32)
    maps[0, 8:24, 8:24] = 1.0  # all inside the central 16x16
    maps[1, 0, :] = 1.0  # all on the border
    maps[2] = 1.0  # uniform: 1 - 256 / 1024 outside
    share = periphery_share(maps)
    assert share[:3].tolist() == [0.0, 1.0, 0.75]
    assert math.isnan(share[3])  # an all-zero map has no mass to place
    assert periphery_share(maps, center=32)[:3].tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="center"):
        periphery_share(maps, center=33)
    with pytest.raises(ValueError, match=r"maps must lie in \[0, inf\]"):
        periphery_share(-maps)


def test_mask_share_and_pointing_game() -> None:
    maps = torch.zeros(3, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0  # 3/4 of the mass and the peak at the top left
    maps[1, 0, 0], maps[1, 3, 3] = 1.0, 3.0  # 1/4 of the mass at the top left, peak outside
    masks = torch.zeros(3, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    share = mask_share(maps, masks)
    assert share[:2].tolist() == [0.75, 0.25]
    assert math.isnan(share[2])
    assert pointing_game(maps, masks).tolist() == [True, False, False]  # an empty map points nowhere
    with pytest.raises(TypeError, match="bool"):
        mask_share(maps, masks.float())


def test_matched_controls_nearest_without_replacement() -> None:
    # Images 0, 1, 3 and 4 are right; the failures 5, 6 and 2 are at 0.96, 0.98 and 0.97, and six more
    # (7-12) at 0.9. Every image is predicted as class 0.
    confidences = torch.tensor([0.5, 0.95, 0.97, 0.99, 0.8, 0.96, 0.98, *[0.9] * 6])
    predicted, labels = torch.zeros(13, dtype=torch.int64), torch.tensor([0, 0, 1, 0, 0, *[1] * 8])
    # Most confident failure first: 0.98 takes 0.99 (index 3), 0.97 takes 0.95 (index 1), and
    # 0.96, with both used, gets the nearest left, 0.8 (index 4).
    matches = matched_controls(confidences, predicted, labels, torch.tensor([5, 6, 2]), seed=0)
    assert matches.tolist() == [4, 3, 1]
    assert matches.dtype == torch.int64
    # More failures than correct images: every one is used before any is reused.
    # Distances to 0.9: index 1 (0.05), 3 (0.09), 4 (0.1), 0 (0.4); then the pool starts again.
    many = matched_controls(confidences, predicted, labels, torch.arange(7, 13), seed=0)
    assert many.tolist() == [1, 3, 4, 0, 1, 3]


def test_matched_controls_break_ties_by_the_seed() -> None:
    confidences, predicted = torch.ones(25), torch.zeros(25, dtype=torch.int64)
    labels = torch.tensor([0] * 20 + [1] * 5)  # 20 right, the last 5 the failures
    failures = torch.arange(20, 25)
    draw = [matched_controls(confidences, predicted, labels, failures, seed=3) for _ in range(2)]
    assert torch.equal(draw[0], draw[1])
    assert len(set(draw[0].tolist())) == 5 and max(draw[0].tolist()) < 20
    with pytest.raises(ValueError, match="no correctly classified"):
        matched_controls(confidences, predicted, torch.ones(25, dtype=torch.int64), failures, seed=3)


class QuadrantModel(nn.Module):
    """Logit 0 is the sum of channel 0 over the top-left quadrant; logit 1 is constant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = x[:, 0, :4, :4].sum(dim=(1, 2))
        return torch.stack([evidence, torch.zeros_like(evidence)], dim=1)


def test_deletion_curve_shapes_and_faithful_map_falls_faster() -> None:
    images = torch.full((3, 3, 8, 8), 0.5)  # positive evidence everywhere in normalised space
    maps = torch.zeros(3, 8, 8)
    maps[:, :4, :4] = 1.0  # the map points exactly at what the model uses
    curve = deletion_curve(QuadrantModel(), images, torch.zeros(3, dtype=torch.int64), maps, steps=4)
    assert curve.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.attended.shape == curve.random.shape == (5,)
    assert curve.attended[0] == curve.random[0] == pytest.approx(torch.sigmoid(torch.tensor(8.0)).item())
    assert curve.attended[1] == pytest.approx(0.5)  # the whole quadrant is gone after one step
    assert curve.attended[-1] == curve.random[-1] == pytest.approx(0.5)
    assert curve.attended_auc < curve.random_auc
    saved = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in asdict(curve).items()}
    assert list(json.loads(json.dumps(saved))) == [
        "fractions",
        "attended",
        "random",
        "attended_auc",
        "random_auc",
    ]


def test_deletion_curve_on_resnet_is_reproducible_and_restores_mode() -> None:
    model = small_resnet().train()
    images = torch.randn(5, 3, 32, 32)
    targets = torch.tensor([0, 1, 2, 3, 4])
    maps = grad_cam(model, images, targets)
    first = deletion_curve(model, images, targets, maps, steps=3, batch_size=2)
    second = deletion_curve(model, images, targets, maps, steps=3)
    assert first.fractions.shape == first.attended.shape == first.random.shape == (4,)
    assert first.attended[0] == first.random[0]
    assert torch.allclose(first.attended, second.attended) and torch.allclose(first.random, second.random)
    assert model.training
    with pytest.raises(ValueError, match="maps must have shape"):
        deletion_curve(model, images, targets, maps[:, :16])


def test_attention_measures_json_ready() -> None:
    failure_maps = torch.zeros(3, 32, 32)
    failure_maps[:, 0, :] = 1.0  # all periphery
    control_maps = torch.zeros(3, 32, 32)
    control_maps[:2, 8:24, 8:24] = 1.0  # all centre; the third control map is empty
    measures = json.loads(json.dumps(attention_measures(failure_maps, control_maps)))
    assert measures["failures"] == {"n": 3, "mean": 1.0, "median": 1.0}
    assert measures["controls"] == {"n": 2, "mean": 0.0, "median": 0.0}
    assert measures["pairs"] == 2
    assert measures["mean_difference"] == 1.0
    assert measures["share_failure_higher"] == 1.0
    assert 0 < measures["wilcoxon_p"] <= 1


def test_the_package_offers_the_names_notebooks_import() -> None:
    # cifar_helpers.analysis.gradcam is a package of three modules; its old import paths keep working.
    import cifar_helpers.analysis.gradcam as gradcam
    from cifar_helpers.analysis.gradcam import attention, cam, stage_reports

    homes = {
        cam: (
            "DEFAULT_LAYER",
            "FailureMaps",
            "grad_cam",
            "gradcam_for_failures",
            "explain_images",
            "resolve_layer",
        ),
        attention: ("periphery_share", "mask_share", "pointing_game", "attention_measures", "deletion_curve"),
        stage_reports: ("matched_controls", "failure_attention_report", "compare_attention"),
    }
    for module, names in homes.items():
        assert all(getattr(gradcam, name) is getattr(module, name) for name in names)
