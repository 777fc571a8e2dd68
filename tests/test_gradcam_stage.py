"""The stage-level Grad-CAM helpers used by notebooks 03 and 05."""

import torch

from cifar_helpers.analysis.failures import find_high_confidence_failures
from cifar_helpers.analysis.gradcam import (
    compare_attention,
    explain_images,
    failure_attention_report,
    grad_cam,
    gradcam_for_failures,
)
from cifar_helpers.core.models import resnet18
from cifar_helpers.core.normalization import normalize


def _model_and_images(n=24):
    torch.manual_seed(0)
    model = resnet18(width=4).eval()
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    return model, images


def test_explain_images_equals_grad_cam_of_the_normalised_batch():
    model, images = _model_and_images(10)
    targets = torch.arange(10) % 10
    maps = explain_images(model, images, targets, batch_size=3)
    expected = grad_cam(model, normalize(images), targets)
    assert maps.shape == (10, 32, 32) and maps.device.type == "cpu"
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=0)


def test_failure_attention_report_pairs_failures_with_correct_controls():
    model, images = _model_and_images(40)
    labels = torch.arange(40) % 10
    # Probabilities chosen so that images 0-4 are confident mistakes and the rest are right.
    probs = torch.full((40, 10), 0.01)
    predicted = labels.clone()
    predicted[:5] = (labels[:5] + 1) % 10
    probs[torch.arange(40), predicted] = 0.91
    failures = find_high_confidence_failures(probs, labels, 0.9)
    maps = gradcam_for_failures(model, images, failures)
    report = failure_attention_report(model, images, probs, labels, maps, deletion_steps=4, seed=1)
    assert report.num_failures == 5
    assert len(report.control_indices) == 5
    assert all(labels[i] == predicted[i] for i in report.control_indices)  # controls are correct
    assert not set(report.control_indices) & set(failures.indices.tolist())
    assert len(report.failure_periphery_shares) == 5
    assert report.deletion.attended.shape == (5,)
    assert list(report.to_dict()) == [  # measures.json's keys, in the order it has always had them
        "num_failures",
        "center",
        "deletion_steps",
        "periphery",
        "failure_periphery_shares",
        "control_periphery_shares",
        "failure_indices",
        "control_indices",
        "deletion",
    ]
    again = failure_attention_report(model, images, probs, labels, maps, deletion_steps=4, seed=1)
    assert again.control_indices == report.control_indices


def test_failure_attention_report_without_failures():
    model, images = _model_and_images(8)
    labels = torch.zeros(8, dtype=torch.int64)
    probs = torch.nn.functional.one_hot(labels, 10).float()
    failures = find_high_confidence_failures(probs, labels, 0.9)
    maps = gradcam_for_failures(model, images, failures)
    report = failure_attention_report(model, images, probs, labels, maps)
    assert report.num_failures == 0 and report.deletion is None


def test_compare_attention_sees_attention_move_inward():
    border = torch.zeros(3, 32, 32)
    border[:, 0, :] = 1.0
    centre = torch.zeros(3, 32, 32)
    centre[:, 16, 16] = 1.0
    result = compare_attention(border, centre)
    assert result["baseline"]["mean"] == 1.0 and result["augmented"]["mean"] == 0.0
    assert result["mean_change"] == -1.0 and result["share_moved_inward"] == 1.0
    assert compare_attention(centre, border)["share_moved_inward"] == 0.0
