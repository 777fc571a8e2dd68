"""Loading: the public entry points. Finds which layout is at a root, reads or generates it, and takes
the seeded, class-stratified subsets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .batches import _batches_dir, _download_cifar10, _load_batches
from .common import ACCEPTED_LAYOUTS, CifarData, DataError, _check_count, _FullData, _splitmix64
from .folders import _load_folder
from .generated import SYNTHETIC_TEST_PER_CLASS, SYNTHETIC_TRAIN_PER_CLASS, make_synthetic_cifar

if TYPE_CHECKING:
    from cifar_helpers.rundir.config import RunConfig

SOURCES = ("auto", "cifar10", "folder", "synthetic")


def resolve_data_root(root: str | os.PathLike[str] | None) -> Path:
    """Where to look for CIFAR-10: ``root`` if given, else ``$CIFAR10_ROOT``, else ``./data``, as an
    absolute path (``~`` expanded); the directory need not exist."""
    if root is None or str(root) == "":
        root = os.environ.get("CIFAR10_ROOT") or "data"
    return Path(root).expanduser().absolute()


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    source: str = "auto",
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    holdout_per_class: int = 0,
    seed: int = 0,
) -> CifarData:
    """Load CIFAR-10 (or a 32x32 image-folder set, or synthetic shapes) as a :class:`CifarData` of
    uint8 (N, 3, 32, 32) images and int64 (N,) labels.

    ``root`` is resolved by :func:`resolve_data_root` (unused by ``source="synthetic"``); ``auto``
    detects the layout there, and ``download`` lets torchvision fetch CIFAR-10 when nothing is there.
    ``*_per_class``: seeded, class-stratified subsets (None: all; the hold-out is drawn first, out of
    the training split). ``seed`` also seeds the synthetic images. A decoded image-folder tree is
    cached in ``root``, or where ``root`` is not writable in ``$CIFAR_STRESS_CACHE``, then
    ``~/.cache/cifar-stress``. :class:`DataError` for unusable data at ``root``, a failed download,
    or a subset larger than a class.
    """
    if source not in SOURCES:
        raise DataError(f"source must be one of {', '.join(map(repr, SOURCES))}, got {source!r}")
    _check_count("train_per_class", train_per_class, allow_none=True)
    _check_count("test_per_class", test_per_class, allow_none=True)
    _check_count("holdout_per_class", holdout_per_class, allow_none=False)
    if source == "synthetic":
        if train_per_class is None:
            train_per_class = max(SYNTHETIC_TRAIN_PER_CLASS - holdout_per_class, 0)  # too large: said below
        return make_synthetic_cifar(
            train_per_class,
            SYNTHETIC_TEST_PER_CLASS if test_per_class is None else test_per_class,
            holdout_per_class=holdout_per_class,
            seed=seed,
        )

    data_root = resolve_data_root(root)
    kind, location = _detect_layout(data_root, source, download)
    full = _load_batches(location) if kind == "cifar10" else _load_folder(location)
    return _take_subsets(full, kind, str(location), train_per_class, test_per_class, holdout_per_class, seed)


def load_data(config: RunConfig) -> CifarData:
    """:func:`load_cifar10` with the data fields of a run configuration; ``config.data_seed`` seeds the
    subsets and generated images, ``config.seed`` where it is None."""
    return load_cifar10(
        config.data_dir,
        download=config.download,
        source=config.data_source,
        train_per_class=config.train_per_class,
        test_per_class=config.test_per_class,
        holdout_per_class=config.holdout_per_class,
        seed=config.seed if config.data_seed is None else config.data_seed,
    )


def _stratified_indices(
    labels: torch.Tensor, per_class: int, generator: torch.Generator, classes: Sequence[str]
) -> torch.Tensor:
    """A seeded, class-stratified sample of int64 (N,) ``labels``: int64 (C * per_class,) sorted
    positions, ``per_class`` of each of the C ``classes``.

    The same ``generator`` state gives the same indices, and a larger ``per_class`` a superset of a
    smaller one. :class:`DataError` when a class has fewer than ``per_class`` items (naming it).
    """
    counts = torch.bincount(labels, minlength=len(classes))
    short = torch.nonzero(counts < per_class)
    if len(short):
        c = int(short[0])
        raise DataError(
            f"asked for {per_class} images per class, but class {classes[c]!r} (label {c}) "
            f"has only {int(counts[c])}"
        )
    # A random order, then a stable sort by label: a larger per_class extends a smaller one's sample.
    order = torch.randperm(len(labels), generator=generator)
    order = order[torch.sort(labels[order], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[labels[order]]
    return torch.sort(order[rank < per_class]).values


def _detect_layout(root: Path, source: str, download: bool) -> tuple[str, Path]:
    """("cifar10" | "folder", location) for what is at ``root`` (downloading CIFAR-10 there when
    allowed and nothing is), or a DataError."""
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a directory; {ACCEPTED_LAYOUTS}")
    batches = _batches_dir(root)
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if source in ("auto", "cifar10") and batches is not None:
        return "cifar10", batches
    if source in ("auto", "folder") and has_train and has_test:
        return "folder", root
    if source == "folder" or (source == "auto" and (has_train or has_test)):
        missing = "test" if has_train else "train" if has_test else "train and test"
        raise DataError(f"{root}: no image-folder tree ({missing} missing); {ACCEPTED_LAYOUTS}")
    if download:
        return "cifar10", _download_cifar10(root)
    if not root.exists():
        raise DataError(f"data directory {root} does not exist (and download=False); {ACCEPTED_LAYOUTS}")
    raise DataError(f"no CIFAR-10 data found in {root} (and download=False); {ACCEPTED_LAYOUTS}")


def _take_subsets(
    full: _FullData, kind: str, root: str, n_train: int | None, n_test: int | None, n_holdout: int, seed: int
) -> CifarData:
    """The seeded, class-stratified subsets of both full splits (``n_*`` images per class, None: all),
    with each image's full-split position."""

    def draw(labels: torch.Tensor, per_class: int | None, stream: int) -> torch.Tensor:
        """Stratified positions in ``labels`` (all of them for None). Each draw has a generator of its
        own, derived from the seed and ``stream``, so the test subset does not depend on the hold-out."""
        if per_class is None:
            return torch.arange(len(labels))
        mixed = int(_splitmix64(np.array([seed % 2**64], dtype=np.uint64) ^ np.uint64(stream))[0])
        generator = torch.Generator().manual_seed(mixed & (2**63 - 1))
        return _stratified_indices(labels, per_class, generator, full.classes)

    holdout_index = draw(full.train_labels, n_holdout, 1)
    keep = torch.ones(len(full.train_labels), dtype=torch.bool)
    keep[holdout_index] = False
    remaining = torch.arange(len(full.train_labels))[keep]
    train_index = remaining[draw(full.train_labels[remaining], n_train, 2)]
    test_index = draw(full.test_labels, n_test, 3)
    whole = n_train is None and n_holdout == 0
    return CifarData(
        # The full split is returned as is (no copy) when nothing is subset.
        train_images=full.train_images if whole else full.train_images[train_index],
        train_labels=full.train_labels[train_index],
        test_images=full.test_images if n_test is None else full.test_images[test_index],
        test_labels=full.test_labels[test_index],
        classes=list(full.classes),
        source=kind,
        root=root,
        holdout_images=full.train_images[holdout_index],
        holdout_labels=full.train_labels[holdout_index],
        train_index=train_index,
        test_index=test_index,
        holdout_index=holdout_index,
        fingerprint=full.fingerprint,
    )
