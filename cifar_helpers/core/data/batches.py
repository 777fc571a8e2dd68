"""torchvision's ``cifar-10-batches-py`` layout: recognising the batches folder, downloading it with
torchvision, and reading the pickled batches (without running code) into both full splits. They are read
here, not by torchvision's loader, because that refuses any copy whose md5 differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cifar_helpers.rundir.safe_load import UnsafePickleError, load_batch_pickle

from .common import ACCEPTED_LAYOUTS, BATCHES_DIR, IMAGE_SIZE, META_FILE, DataError, _FullData, _hash_entries

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def _batches_dir(root: Path) -> Path | None:
    """The folder holding the pickled batches, if ``root`` is one or contains one."""
    for candidate in (root / BATCHES_DIR, root):
        if (candidate / META_FILE).is_file() or (candidate / TRAIN_BATCHES[0]).is_file():
            return candidate
    return None


def _download_cifar10(root: Path) -> Path:
    """Download and unpack CIFAR-10 into ``root`` with torchvision; return the batches folder."""
    try:
        import torchvision

        root.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # no network shows up as URLError, OSError, RuntimeError, ...
        raise DataError(
            f"downloading CIFAR-10 into {root} failed ({type(err).__name__}: {err}); this machine probably "
            "has no network access. Point --data-dir or the CIFAR10_ROOT environment variable at a copy "
            f"of CIFAR-10; {ACCEPTED_LAYOUTS}"
        ) from err
    return root / BATCHES_DIR


def _unpickle(path: Path, *keys: str) -> list[Any]:
    """The entries ``keys`` of the pickled dict at ``path`` (whose keys may be str or bytes)."""
    try:
        obj = load_batch_pickle(path)
    except UnsafePickleError as err:
        raise DataError(str(err)) from None
    except Exception as err:
        raise DataError(
            f"{path} is not a readable CIFAR-10 batch file ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch file (expected a pickled dict)")
    missing = [key for key in keys if key not in obj and key.encode() not in obj]
    if missing:
        raise DataError(f"{path} has no {missing[0]!r} entry; is it a CIFAR-10 batch file?")
    return [obj[key] if key in obj else obj[key.encode()] for key in keys]


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch file -> images uint8 (n, 3, 32, 32) and labels int64 (n,)."""
    data, labels = _unpickle(path, "data", "labels")
    data, labels = np.asarray(data), np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise DataError(f"{path}: 'data' must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {len(labels)} labels for {data.shape[0]} images")
    # Rows are stored channel-major (1024 red, 1024 green, 1024 blue), i.e. already (3, 32, 32).
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE), labels


def _load_batches(folder: Path) -> _FullData:
    """The batches folder -> both full splits, the class names from its meta file and a fingerprint."""
    names = (*TRAIN_BATCHES, TEST_BATCH, META_FILE)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}; {ACCEPTED_LAYOUTS}")
    (label_names,) = _unpickle(folder / META_FILE, "label_names")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in label_names]
    train = [_read_batch(folder / n) for n in TRAIN_BATCHES]
    train_images, train_labels = (np.concatenate(parts) for parts in zip(*train, strict=True))
    test_images, test_labels = _read_batch(folder / TEST_BATCH)
    for name, labels in (("training", train_labels), ("test", test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(
                f"{folder}: {name} labels outside [0, {len(classes)}) of {META_FILE}'s label_names"
            )
    fingerprint = _hash_entries("cifar10", [(n, (folder / n).stat()) for n in names])
    arrays = (train_images, train_labels, np.ascontiguousarray(test_images), test_labels)
    return _FullData(fingerprint, classes, *map(torch.from_numpy, arrays))
