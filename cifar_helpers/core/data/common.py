"""What every part of :mod:`cifar_helpers.core.data` shares; the readers import from here, never from
each other."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

BATCHES_DIR = "cifar-10-batches-py"
META_FILE = "batches.meta"
IMAGE_SIZE = 32

# Bump when the cached arrays' layout changes, so an old cache is never read as a new one.
_CACHE_VERSION = 1

ACCEPTED_LAYOUTS = (
    "accepted layouts:\n"
    f"  1. torchvision's CIFAR-10 batches: <root>/{BATCHES_DIR}/{{data_batch_1..5, test_batch, "
    f"{META_FILE}}} (or <root> being that folder)\n"
    "  2. an image-folder tree: <root>/train/<class>/*.png|jpg and <root>/test/<class>/*.png|jpg, "
    "32x32 RGB, the same class folders in both\n"
    "  3. source='synthetic': generated shapes, no files needed"
)


class DataError(ValueError):
    """The data cannot be found, read or subset; the message names the path and what is accepted."""


@dataclass
class CifarData:
    """A loaded data set: uint8 images, int64 labels and where each image came from.

    Images are uint8 (N, 3, 32, 32) RGB, labels int64 (N,) indexing ``classes``. ``*_index`` (int64)
    is each image's position in its full split (hold-out images are positions in the full training
    split). Masks (bool (N, 32, 32), True on the object) exist only for synthetic data.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    source: str
    root: str | None
    holdout_images: torch.Tensor
    holdout_labels: torch.Tensor
    train_index: torch.Tensor
    test_index: torch.Tensor
    holdout_index: torch.Tensor
    train_masks: torch.Tensor | None = None
    test_masks: torch.Tensor | None = None
    holdout_masks: torch.Tensor | None = None
    fingerprint: str = ""

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: source, root, classes, image counts per class per split, fingerprint."""

        def per_class(labels: torch.Tensor) -> dict[str, int]:
            counts = torch.bincount(labels, minlength=len(self.classes)).tolist()
            return dict(zip(self.classes, counts, strict=True))

        splits = {"train": self.train_labels, "test": self.test_labels, "holdout": self.holdout_labels}
        return {
            "source": self.source,
            "root": self.root,
            "classes": list(self.classes),
            "fingerprint": self.fingerprint,
            "image_shape": [3, IMAGE_SIZE, IMAGE_SIZE],
            "num_images": {split: len(labels) for split, labels in splits.items()},
            "counts": {split: per_class(labels) for split, labels in splits.items()},
            "has_masks": self.train_masks is not None,
        }


def _check_count(name: str, value: int | None, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(
            f"{name} must be a non-negative integer{' or None' if allow_none else ''}, got {value!r}"
        )


@dataclass
class _FullData:
    """Both full splits as decoded: images uint8 (N, 3, 32, 32), labels int64 (N,). An image-folder
    cache file holds these fields, in this order, after its ``version``: a change needs a new
    ``_CACHE_VERSION``."""

    fingerprint: str
    classes: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def _hash_entries(kind: str, entries: Sequence[tuple[str, os.stat_result]]) -> str:
    """A fingerprint of files by name, size and modification time (their contents are not read)."""
    digest = hashlib.sha256(f"{kind}-v{_CACHE_VERSION}\n".encode())
    for name, st in entries:
        digest.update(f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective scramble of uint64 values (a counter-based RNG)."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))
