"""Predictions of a model on a set of images, and the numbers computed from them.

:func:`predict` runs a model over uint8 images in batches on the device and returns a
:class:`Predictions` (logits and labels on the CPU), which every later stage reads: accuracy,
per-class accuracy, the confusion matrix, the cross-entropy, the high-confidence failures.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cifar_helpers.core.checks import check_images_and_labels, model_device
from cifar_helpers.core.normalization import normalize
from cifar_helpers.rundir.artifacts import load_torch, save_torch


@dataclass
class Predictions:
    """Logits of a model on N labelled images.

    Attributes:
        logits: float32 (N, C) on the CPU, the raw network outputs.
        labels: int64 (N,) on the CPU, the true classes in [0, C).
    """

    logits: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.logits.dim() != 2:
            raise ValueError(f"logits must have shape (N, C), got {tuple(self.logits.shape)}")
        if self.labels.shape != (self.logits.shape[0],):
            raise ValueError(
                f"labels must have shape ({self.logits.shape[0]},) to match logits "
                f"{tuple(self.logits.shape)}, got {tuple(self.labels.shape)}"
            )
        self.logits = self.logits.detach().to("cpu", torch.float32)
        self.labels = self.labels.detach().to("cpu", torch.int64)

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def num_classes(self) -> int:
        """C, the number of classes (columns of ``logits``)."""
        return self.logits.shape[1]

    @property
    def probs(self) -> torch.Tensor:
        """Softmax probabilities, float32 (N, C)."""
        return self.logits.softmax(dim=1)

    @property
    def preds(self) -> torch.Tensor:
        """Predicted classes (argmax of the logits), int64 (N,)."""
        return self.logits.argmax(dim=1)

    @property
    def confidences(self) -> torch.Tensor:
        """Probability of the predicted class, float32 (N,)."""
        return self.probs.max(dim=1).values

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write logits and labels to a torch file, atomically."""
        return save_torch(path, {"logits": self.logits, "labels": self.labels})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Predictions:
        """Read a file written by :meth:`save`."""
        data = load_torch(path)
        if not isinstance(data, dict) or not {"logits", "labels"} <= set(data):
            raise ValueError(f"{path}: not a Predictions file (expected a dict with 'logits' and 'labels')")
        return cls(logits=data["logits"], labels=data["labels"])


def predict(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 1000,
    device: str | torch.device | None = None,
    bf16: bool = False,
    channels_last: bool = False,
    fp16: bool = False,
) -> Predictions:
    """Logits of ``model`` on ``images``, in batches, in eval mode and without autograd.

    Each batch is moved to ``device`` as uint8 and normalised there, a quarter of float32's transfer.
    The model's training/eval mode is restored afterwards, so calling this between training epochs is
    safe. Up to float rounding the result does not depend on ``batch_size`` (eval-mode BatchNorm uses
    its running statistics, not the batch's).

    Args:
        model: a classifier mapping normalised float (B, 3, H, W) to logits (B, C); already on ``device``.
        images: uint8 (N, 3, H, W), on any device.
        labels: int64 (N,), stored with the logits.
        batch_size: images per forward pass.
        device: where to compute; ``None`` uses the model's device (its first parameter or buffer).
        bf16: autocast the forward pass to bfloat16 (logits are returned as float32 either way).
        fp16: autocast the forward pass to float16 instead (CUDA GPUs without native bf16).
        channels_last: give the model channels-last input (use it when the model is channels-last).

    Returns:
        :class:`Predictions` with float32 logits (N, C) and the labels, both on the CPU.
    """
    check_images_and_labels(images, labels)
    if images.shape[0] == 0:
        raise ValueError("predict needs at least one image, got N = 0")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    device = model_device(model) if device is None else torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if bf16 and fp16:
        raise ValueError("predict: choose bf16 or fp16, not both")
    dtype = torch.bfloat16 if bf16 else torch.float16 if fp16 else None
    autocast = torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    was_training = model.training
    model.eval()
    chunks = []
    try:
        with torch.inference_mode(), autocast:
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(device, non_blocking=True)
                x = normalize(batch).contiguous(memory_format=memory_format)
                chunks.append(model(x).float().cpu())
    finally:
        model.train(was_training)
    return Predictions(logits=torch.cat(chunks), labels=labels.cpu())


def _preds_and_labels(
    preds_or_predictions: torch.Tensor | Predictions, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(preds_or_predictions, Predictions):
        if labels is not None:
            raise ValueError("pass labels only with a tensor of predicted classes, not with Predictions")
        return preds_or_predictions.preds, preds_or_predictions.labels
    if labels is None:
        raise ValueError("labels are required when the first argument is a tensor of predicted classes")
    preds = preds_or_predictions
    if preds.shape != labels.shape or preds.dim() != 1:
        raise ValueError(
            f"preds and labels must both have shape (N,), got {tuple(preds.shape)} and {tuple(labels.shape)}"
        )
    return preds.cpu(), labels.cpu()


def accuracy(preds_or_predictions: torch.Tensor | Predictions, labels: torch.Tensor | None = None) -> float:
    """Fraction of correct predictions, in [0, 1].

    Either ``accuracy(predictions)`` with a :class:`Predictions`, or ``accuracy(preds, labels)`` with
    two int64 (N,) tensors. Raises ``ValueError`` for an empty set (accuracy is undefined there).
    """
    preds, labels = _preds_and_labels(preds_or_predictions, labels)
    if preds.numel() == 0:
        raise ValueError("accuracy of an empty set is undefined (N = 0)")
    return (preds == labels).double().mean().item()


def _check_classes(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    for name, t in (("preds", preds), ("labels", labels)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got values in [{int(t.min())}, {int(t.max())}]"
            )


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs.

    Args:
        preds: int64 (N,) predicted classes.
        labels: int64 (N,) true classes.
        num_classes: C.

    Returns:
        int64 (C, C); entry ``[i, j]`` counts images of true class ``i`` predicted as ``j`` (rows are
        the truth, columns the prediction), so each row sums to the class's number of images.
    """
    preds, labels = _preds_and_labels(preds, labels)
    _check_classes(preds, labels, num_classes)
    pairs = labels.long() * num_classes + preds.long()
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy over the images of each true class (recall per class).

    Args:
        preds: int64 (N,) predicted classes.
        labels: int64 (N,) true classes.
        num_classes: C.

    Returns:
        float32 (C,); entry ``c`` is correct/total over images whose label is ``c``. A class with no
        images has no accuracy: its entry is NaN (not 0, which would read as "always wrong").
    """
    matrix = confusion_matrix(preds, labels, num_classes).double()
    totals = matrix.sum(dim=1)
    correct = matrix.diagonal()
    return torch.where(totals > 0, correct / totals.clamp(min=1), torch.nan).float()


def cross_entropy(predictions: Predictions) -> float:
    """Mean negative log-likelihood of the true labels under the softmax of the logits (nats)."""
    if len(predictions) == 0:
        raise ValueError("cross_entropy of an empty set is undefined (N = 0)")
    return F.cross_entropy(predictions.logits.double(), predictions.labels).item()
