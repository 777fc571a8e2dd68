"""Predictions of a model on a set of images (:func:`predict`, logits and labels on the CPU), and
the numbers computed from them: accuracy, per-class accuracy, the confusion matrix, the cross-entropy.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cifar_helpers.core.checks import check_images_and_labels, eval_mode, model_device
from cifar_helpers.core.normalization import normalize
from cifar_helpers.rundir.artifacts import load_torch, save_torch


@dataclass
class Predictions:
    """Logits of a model on N labelled images: float32 (N, C) ``logits`` and int64 (N,) ``labels`` (the
    true classes in [0, C)), both kept on the CPU."""

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
    """Logits of ``model`` (already on ``device``, None: the model's) on uint8 (N, 3, H, W) ``images``
    and int64 (N,) ``labels``, in eval mode and without autograd: float32 logits (N, C) and the labels,
    on the CPU. Each batch moves to ``device`` as uint8 and is normalised there; ``bf16`` or ``fp16``
    autocast the forward pass. The model's modes are restored afterwards.
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
    chunks = []
    with eval_mode(model), torch.inference_mode(), autocast:
        for start in range(0, images.shape[0], batch_size):
            x = normalize(images[start : start + batch_size].to(device, non_blocking=True))
            chunks.append(model(x.contiguous(memory_format=memory_format)).float().cpu())
    return Predictions(logits=torch.cat(chunks), labels=labels.cpu())


def accuracy(predictions: Predictions) -> float:
    """Fraction of correct predictions, in [0, 1]; ``ValueError`` for an empty set (undefined there)."""
    if len(predictions) == 0:
        raise ValueError("accuracy of an empty set is undefined (N = 0)")
    return (predictions.preds == predictions.labels).double().mean().item()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs among int64 (N,) ``preds`` and ``labels``: int64
    (C, C) whose entry ``[i, j]`` counts images of true class ``i`` predicted as ``j``."""
    if preds.shape != labels.shape or preds.dim() != 1:
        raise ValueError(
            f"preds and labels must both have shape (N,), got {tuple(preds.shape)} and {tuple(labels.shape)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
    preds, labels = preds.cpu(), labels.cpu()
    for name, t in (("preds", preds), ("labels", labels)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"{name} must lie in [0, {num_classes}), got values in [{int(t.min())}, {int(t.max())}]"
            )
    pairs = labels.long() * num_classes + preds.long()
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Accuracy over the images of each true class (recall per class), from int64 (N,) ``preds`` and
    ``labels``: float32 (C,). A class with no images has no accuracy: its entry is NaN (not 0, which
    would read as "always wrong").
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
