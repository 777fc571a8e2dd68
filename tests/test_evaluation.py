"""Predictions, predict, and the metrics computed from them."""

from __future__ import annotations

import math

import pytest
import torch

from cifar_helpers.core.evaluation import (
    Predictions,
    accuracy,
    confusion_matrix,
    cross_entropy,
    per_class_accuracy,
    predict,
)
from cifar_helpers.core.models import resnet18
from cifar_helpers.core.normalization import normalize

Data = tuple[torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = resnet18(num_classes=10, width=4)
    # A few train-mode passes so BatchNorm's running statistics are not the trivial (0, 1).
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    return model


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (23, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (23,), generator=g)
    return images, labels


def test_confusion_matrix_hand_example() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 2, 0])
    expected = torch.tensor([[1, 1, 0], [0, 2, 1], [1, 0, 0]])
    matrix = confusion_matrix(preds, labels, 3)
    assert matrix.dtype == torch.int64
    assert torch.equal(matrix, expected)
    assert torch.equal(matrix.sum(1), torch.bincount(labels, minlength=3))


def test_per_class_accuracy_with_missing_class_is_nan() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1, 3])
    preds = torch.tensor([0, 2, 1, 1, 0, 3])
    acc = per_class_accuracy(preds, labels, 4)
    assert acc.dtype == torch.float32 and acc.shape == (4,)
    assert acc[0].item() == pytest.approx(0.5)
    assert acc[1].item() == pytest.approx(2 / 3)
    assert math.isnan(acc[2].item())  # class 2 is predicted once but never the true label
    assert acc[3].item() == 1.0


def test_accuracy_of_predictions() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, -1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 1])
    assert accuracy(Predictions(logits, labels)) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="empty"):
        accuracy(Predictions(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)))


def test_out_of_range_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="labels must lie in"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="must both have shape"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)


def test_prediction_properties_and_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 1])
    p = Predictions(logits, labels)
    assert torch.allclose(p.probs.sum(1), torch.ones(2))
    assert torch.equal(p.preds, torch.tensor([0, 2]))
    assert torch.allclose(p.confidences, p.probs.max(1).values)
    expected = -(p.probs[0, 0].log() + p.probs[1, 1].log()).item() / 2
    assert cross_entropy(p) == pytest.approx(expected, rel=1e-6)


def test_predict_equals_manual_forward_and_restores_train_mode(
    tiny_model: torch.nn.Module, data: Data
) -> None:
    images, labels = data
    tiny_model.train()
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    p = predict(tiny_model, images, labels, batch_size=1000)
    assert tiny_model.training, "predict must restore train mode"
    # Eval mode means BatchNorm's running statistics are neither used for the batch nor updated.
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, before[k]), k
    tiny_model.eval()
    with torch.no_grad():
        manual = tiny_model(normalize(images))
    tiny_model.train()
    assert p.logits.dtype == torch.float32 and p.logits.shape == (23, 10)
    assert p.logits.device.type == "cpu"
    assert torch.allclose(p.logits, manual, atol=1e-5)
    assert torch.equal(p.labels, labels)


def test_predict_keeps_eval_mode(tiny_model: torch.nn.Module, data: Data) -> None:
    tiny_model.eval()
    predict(tiny_model, *data)
    assert not tiny_model.training
    tiny_model.train()


def test_batching_does_not_change_the_result(tiny_model: torch.nn.Module, data: Data) -> None:
    images, labels = data
    a = predict(tiny_model, images, labels, batch_size=7)
    b = predict(tiny_model, images, labels, batch_size=1000)
    assert torch.allclose(a.logits, b.logits, atol=1e-5)
    assert torch.equal(a.preds, b.preds)


def test_predict_bf16_channels_last_close_to_fp32(tiny_model: torch.nn.Module, data: Data) -> None:
    images, labels = data
    ref = predict(tiny_model, images, labels)
    cl_model = resnet18(num_classes=10, width=4)
    cl_model.load_state_dict(tiny_model.state_dict())
    cl_model = cl_model.to(memory_format=torch.channels_last)
    fast = predict(cl_model, images, labels, bf16=True, channels_last=True)
    assert fast.logits.dtype == torch.float32
    assert (fast.logits - ref.logits).abs().max() < 0.1 * ref.logits.abs().max() + 0.05


def test_predict_refuses_bad_inputs(tiny_model: torch.nn.Module, data: Data) -> None:
    images, labels = data
    with pytest.raises(ValueError, match="uint8"):
        predict(tiny_model, images.float(), labels)
    with pytest.raises(ValueError, match="labels"):
        predict(tiny_model, images, labels[:-1])


def test_save_load_roundtrip(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    p = Predictions(torch.randn(9, 4, generator=g), torch.randint(0, 4, (9,), generator=g))
    path = p.save(tmp_path / "sub" / "predictions.pt")
    q = Predictions.load(path)
    assert torch.equal(p.logits, q.logits) and torch.equal(p.labels, q.labels)
    assert q.logits.dtype == torch.float32 and q.labels.dtype == torch.int64
    assert not list(path.parent.glob("*.tmp"))


def test_predictions_validate_shapes() -> None:
    with pytest.raises(ValueError, match="labels must have shape"):
        Predictions(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
