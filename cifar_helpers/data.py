"""Finding, validating, decoding and caching CIFAR-10 (or any 32x32 image-folder set).

Everything ends up as uint8 tensors (N, 3, 32, 32) with int64 labels, in a :class:`CifarData`.
Three sources are understood:

* ``cifar10``   - torchvision's ``cifar-10-batches-py`` folder (the pickled batches). The pickles are
  read directly: torchvision's own loader recomputes the md5 of every batch on each load and refuses
  any copy that differs from the official one. With ``download=True`` and nothing at the root,
  torchvision downloads the archive first.
* ``folder``    - an image-folder tree ``train/<class>/*`` and ``test/<class>/*`` of 32x32 RGB PNG or
  JPEG files. It is decoded once, with OpenCV on a thread pool, and the decoded arrays are cached
  under a fingerprint of the tree, so a later load only lists the files and reads one array file.
* ``synthetic`` - ten generated classes of coloured shapes on textured backgrounds, with object
  masks: learnable in seconds on a CPU, and with an optional background-class correlation that
  serves as a positive control for "the model looks at the background".

Subsets are class-stratified and seeded: first ``holdout_per_class`` training images per class are
held out (for temperature scaling), then ``train_per_class`` are drawn from what remains and
``test_per_class`` from the test split. Every image keeps its position in the full split
(``train_index`` ...), so any result can be traced back to a file.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .artifacts import atomic_path
from .safe_load import UnsafePickleError, load_batch_pickle

if TYPE_CHECKING:
    from .config import RunConfig

SOURCES = ("auto", "cifar10", "folder", "synthetic")
BATCHES_DIR = "cifar-10-batches-py"
CACHE_SUBDIR = ".cifar_stress_cache"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
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

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return len(self.classes)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description: source, root, classes, image counts per class per split, fingerprint."""

        def per_class(labels: torch.Tensor) -> dict[str, int]:
            counts = torch.bincount(labels, minlength=len(self.classes)).tolist()
            return dict(zip(self.classes, counts, strict=True))

        return {
            "source": self.source,
            "root": self.root,
            "classes": list(self.classes),
            "fingerprint": self.fingerprint,
            "image_shape": [3, IMAGE_SIZE, IMAGE_SIZE],
            "num_images": {
                "train": len(self.train_labels),
                "test": len(self.test_labels),
                "holdout": len(self.holdout_labels),
            },
            "counts": {
                "train": per_class(self.train_labels),
                "test": per_class(self.test_labels),
                "holdout": per_class(self.holdout_labels),
            },
            "has_masks": self.train_masks is not None,
        }


# --------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------


def resolve_data_root(root: str | os.PathLike[str] | None) -> Path:
    """Where to look for CIFAR-10: ``root`` if given, else ``$CIFAR10_ROOT``, else ``./data``.

    Returns an absolute path (``~`` expanded); the directory need not exist.
    """
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
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CifarData:
    """Load CIFAR-10 (or a 32x32 image-folder set, or synthetic shapes) as uint8 tensors.

    Args:
        root: where the data is (see :func:`resolve_data_root`); ignored for ``source="synthetic"``.
        download: let torchvision download CIFAR-10 into ``root`` when nothing is there.
        source: ``auto`` (detect from what is at ``root``), ``cifar10``, ``folder`` or ``synthetic``.
        train_per_class: stratified training subset per class; None = all that the hold-out leaves.
        test_per_class: stratified test subset per class; None = all.
        holdout_per_class: training images per class held out of ``train`` (drawn first).
        seed: seeds the subset draws (and the synthetic images).
        cache_dir: where a decoded image-folder tree is cached when ``root`` is not writable
            (then ``$CIFAR_STRESS_CACHE``, then ``~/.cache/cifar-stress``).
        progress: show a progress bar while decoding.

    Returns:
        :class:`CifarData` with images uint8 (N, 3, 32, 32) and labels int64 (N,).

    Raises:
        DataError: nothing usable at ``root`` (the message names it and the accepted layouts), a file
            that does not decode or is not 32x32 RGB, a failed download, or a subset larger than a class.
    """
    if source not in SOURCES:
        raise DataError(f"source must be one of {', '.join(map(repr, SOURCES))}, got {source!r}")
    _check_count("train_per_class", train_per_class, allow_none=True)
    _check_count("test_per_class", test_per_class, allow_none=True)
    _check_count("holdout_per_class", holdout_per_class, allow_none=False)
    if source == "synthetic":
        if train_per_class is None:
            train_per_class = SYNTHETIC_TRAIN_PER_CLASS - holdout_per_class
        return make_synthetic_cifar(
            train_per_class,
            SYNTHETIC_TEST_PER_CLASS if test_per_class is None else test_per_class,
            holdout_per_class=holdout_per_class,
            seed=seed,
        )

    data_root = resolve_data_root(root)
    kind, location = _detect_layout(data_root, source, download)
    if kind == "download":
        location = _download_cifar10(data_root)
        kind = "cifar10"
    if kind == "cifar10":
        full = _load_batches(location)
    else:
        full = _load_folder(location, cache_dir=cache_dir, progress=progress)
    return _take_subsets(
        full,
        source=kind,
        root=str(location),
        train_per_class=train_per_class,
        test_per_class=test_per_class,
        holdout_per_class=holdout_per_class,
        seed=seed,
    )


def load_data(config: RunConfig, progress: bool = True) -> CifarData:
    """:func:`load_cifar10` with the data fields of a run configuration.

    ``config.data_seed`` seeds the subsets and generated images, ``config.seed`` where it is None.
    """
    return load_cifar10(
        config.data_dir,
        download=config.download,
        source=config.data_source,
        train_per_class=config.train_per_class,
        test_per_class=config.test_per_class,
        holdout_per_class=config.holdout_per_class,
        seed=config.seed if config.data_seed is None else config.data_seed,
        progress=progress,
    )


def stratified_indices(
    labels: torch.Tensor,
    per_class: int,
    generator: torch.Generator,
    *,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
) -> torch.Tensor:
    """A seeded, class-stratified sample: ``per_class`` positions of each class, sorted ascending.

    Args:
        labels: int64 (N,) class of each item.
        per_class: how many items of each class to pick (0 gives an empty result).
        generator: seeds the draw; the same generator state gives the same indices.
        num_classes: classes that must all be present (default ``labels.max() + 1``).
        classes: class names, only to name a class in the error message.

    Returns:
        int64 (num_classes * per_class,) indices into ``labels``, sorted. A larger ``per_class`` with
        the same generator state picks a superset of a smaller one.

    Raises:
        DataError: a class has fewer than ``per_class`` items (the message names it and its count).
    """
    _check_count("per_class", per_class, allow_none=False)
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise DataError(
            f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}"
        )
    labels = labels.long()
    if num_classes is None:
        num_classes = len(classes) if classes is not None else int(labels.max()) + 1 if len(labels) else 0
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]"
        )
    counts = torch.bincount(labels, minlength=num_classes)
    short = [c for c in range(num_classes) if int(counts[c]) < per_class]
    if short:
        c = short[0]
        name = f"{classes[c]!r} (label {c})" if classes is not None else f"label {c}"
        raise DataError(f"asked for {per_class} images per class, but class {name} has only {int(counts[c])}")
    # A random order, then a stable sort by label: each class's items stay in random order, so the
    # first per_class of each class are a uniform sample, and a larger per_class extends it.
    order = torch.randperm(len(labels), generator=generator)
    order = order[torch.sort(labels[order], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(labels)) - starts[labels[order]]
    return torch.sort(order[rank < per_class]).values


# --------------------------------------------------------------------------------------------------
# Finding the data
# --------------------------------------------------------------------------------------------------


def _check_count(name: str, value: int | None, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataError(
            f"{name} must be a non-negative integer{' or None' if allow_none else ''}, got {value!r}"
        )


def _batches_dir(root: Path) -> Path | None:
    """The folder holding the pickled batches, if ``root`` is one or contains one."""
    for candidate in (root / BATCHES_DIR, root):
        if (candidate / META_FILE).is_file() or (candidate / TRAIN_BATCHES[0]).is_file():
            return candidate
    return None


def _detect_layout(root: Path, source: str, download: bool) -> tuple[str, Path]:
    """("cifar10" | "folder" | "download", location) for what is at ``root``, or a DataError."""
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a directory; {ACCEPTED_LAYOUTS}")
    batches = _batches_dir(root) if root.is_dir() else None
    has_train, has_test = (root / "train").is_dir(), (root / "test").is_dir()
    if source in ("auto", "cifar10") and batches is not None:
        return "cifar10", batches
    if source in ("auto", "folder") and has_train and has_test:
        return "folder", root
    if source == "folder" or (source == "auto" and (has_train or has_test)):
        missing = "test" if has_train else "train" if has_test else "train and test"
        raise DataError(f"{root}: no image-folder tree ({missing} missing); {ACCEPTED_LAYOUTS}")
    if download:
        return "download", root
    if not root.exists():
        raise DataError(f"data directory {root} does not exist (and download=False); {ACCEPTED_LAYOUTS}")
    raise DataError(f"no CIFAR-10 data found in {root} (and download=False); {ACCEPTED_LAYOUTS}")


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


# --------------------------------------------------------------------------------------------------
# Full splits and subsets
# --------------------------------------------------------------------------------------------------


@dataclass
class _FullData:
    """Both full splits as decoded: images uint8 (N, 3, 32, 32), labels int64 (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    fingerprint: str


def _derived_generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator per subset draw, so the test subset does not depend on the hold-out."""
    mixed = int(_splitmix64(np.array([seed % 2**64], dtype=np.uint64) ^ np.uint64(stream))[0])
    return torch.Generator().manual_seed(mixed & (2**63 - 1))


def _take_subsets(
    full: _FullData,
    *,
    source: str,
    root: str | None,
    train_per_class: int | None,
    test_per_class: int | None,
    holdout_per_class: int,
    seed: int,
) -> CifarData:
    n_classes = len(full.classes)
    all_train = torch.arange(len(full.train_labels))
    holdout_index = stratified_indices(
        full.train_labels,
        holdout_per_class,
        _derived_generator(seed, 1),
        num_classes=n_classes,
        classes=full.classes,
    )
    keep = torch.ones(len(all_train), dtype=torch.bool)
    keep[holdout_index] = False
    remaining = all_train[keep]
    if train_per_class is None:
        train_index = remaining
    else:
        picked = stratified_indices(
            full.train_labels[remaining],
            train_per_class,
            _derived_generator(seed, 2),
            num_classes=n_classes,
            classes=full.classes,
        )
        train_index = remaining[picked]
    if test_per_class is None:
        test_index = torch.arange(len(full.test_labels))
    else:
        test_index = stratified_indices(
            full.test_labels,
            test_per_class,
            _derived_generator(seed, 3),
            num_classes=n_classes,
            classes=full.classes,
        )
    whole = train_per_class is None and holdout_per_class == 0
    return CifarData(
        # The full split is returned as is (no copy) when nothing is subset.
        train_images=full.train_images if whole else full.train_images[train_index],
        train_labels=full.train_labels[train_index],
        test_images=full.test_images if test_per_class is None else full.test_images[test_index],
        test_labels=full.test_labels[test_index],
        classes=list(full.classes),
        source=source,
        root=root,
        holdout_images=full.train_images[holdout_index],
        holdout_labels=full.train_labels[holdout_index],
        train_index=train_index,
        test_index=test_index,
        holdout_index=holdout_index,
        fingerprint=full.fingerprint,
    )


# --------------------------------------------------------------------------------------------------
# torchvision's pickled batches
# --------------------------------------------------------------------------------------------------


def _unpickle(path: Path) -> dict[Any, Any]:
    try:
        # Only containers, str/bytes, numbers and NumPy arrays are reconstructed: a batch file from
        # an untrusted download cannot run code (see safe_load). str or bytes keys: _get takes both.
        obj = load_batch_pickle(path)
    except FileNotFoundError:
        raise DataError(f"{path} is missing; {ACCEPTED_LAYOUTS}") from None
    except UnsafePickleError as err:
        raise DataError(str(err)) from None
    except Exception as err:
        raise DataError(
            f"{path} is not a readable CIFAR-10 batch file ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch file (expected a pickled dict)")
    return obj


def _get(batch: dict[Any, Any], key: str, path: Path) -> Any:
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    raise DataError(f"{path} has no {key!r} entry; is it a CIFAR-10 batch file?")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A batch file -> images uint8 (n, 3, 32, 32) and labels int64 (n,)."""
    batch = _unpickle(path)
    data = np.asarray(_get(batch, "data", path))
    labels = np.asarray(_get(batch, "labels", path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE:
        raise DataError(f"{path}: 'data' must be uint8 of shape (n, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {len(labels)} labels for {data.shape[0]} images")
    # Rows are stored channel-major (1024 red, 1024 green, 1024 blue), i.e. already (3, 32, 32).
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE), labels


def _load_batches(folder: Path) -> _FullData:
    missing = [n for n in (*TRAIN_BATCHES, TEST_BATCH, META_FILE) if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}; {ACCEPTED_LAYOUTS}")
    meta = _unpickle(folder / META_FILE)
    classes = [
        n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, "label_names", folder / META_FILE)
    ]
    train = [_read_batch(folder / n) for n in TRAIN_BATCHES]
    test_images, test_labels = _read_batch(folder / TEST_BATCH)
    train_images = np.concatenate([b[0] for b in train])
    train_labels = np.concatenate([b[1] for b in train])
    for name, labels in (("training", train_labels), ("test", test_labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise DataError(
                f"{folder}: {name} labels outside [0, {len(classes)}) of {META_FILE}'s label_names"
            )
    entries = [(n, *_stat_key(folder / n)) for n in (*TRAIN_BATCHES, TEST_BATCH, META_FILE)]
    return _FullData(
        train_images=torch.from_numpy(train_images),
        train_labels=torch.from_numpy(train_labels),
        test_images=torch.from_numpy(np.ascontiguousarray(test_images)),
        test_labels=torch.from_numpy(test_labels),
        classes=classes,
        fingerprint=_hash_entries("cifar10", entries),
    )


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _hash_entries(kind: str, entries: Sequence[tuple[str, int, int]]) -> str:
    digest = hashlib.sha256(f"{kind}-v{_CACHE_VERSION}\n".encode())
    for name, size, mtime in entries:
        digest.update(f"{name}\t{size}\t{mtime}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Image-folder trees: scan, fingerprint, cache, decode
# --------------------------------------------------------------------------------------------------


@dataclass
class _TreeListing:
    """The files of a tree in load order, and its fingerprint."""

    classes: list[str]
    files: dict[str, list[str]]  # split -> file paths, class by class, sorted by name
    labels: dict[str, np.ndarray]  # split -> int64 (n,)
    fingerprint: str


def _class_dirs(split_dir: Path) -> list[str]:
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _scan_tree(root: Path) -> _TreeListing:
    """List train/test class folders and their images with os.scandir (one stat per file).

    Paths stay strings: building 60,000 Path objects would take longer than the stat calls.
    """
    train_classes, test_classes = _class_dirs(root / "train"), _class_dirs(root / "test")
    if not train_classes and not test_classes:
        raise DataError(f"{root}: train/ and test/ contain no class folders; {ACCEPTED_LAYOUTS}")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"{root}: train/ and test/ have different class folders "
            f"(only in train: {only_train or 'none'}; only in test: {only_test or 'none'}); "
            f"{ACCEPTED_LAYOUTS}"
        )
    entries: list[tuple[str, int, int]] = []
    files: dict[str, list[str]] = {}
    labels: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        split_files: list[str] = []
        split_labels: list[int] = []
        for label, name in enumerate(train_classes):
            class_dir = root / split / name
            with os.scandir(class_dir) as it:
                images = [
                    (e.name, e)
                    for e in it
                    if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)
                ]
            if not images:
                raise DataError(f"{class_dir} contains no PNG or JPEG images; {ACCEPTED_LAYOUTS}")
            images.sort(key=lambda item: item[0])
            prefix = f"{split}/{name}/"
            for file_name, e in images:
                st = e.stat()
                entries.append((prefix + file_name, st.st_size, st.st_mtime_ns))
                split_files.append(e.path)
            split_labels.extend([label] * len(images))
        files[split] = split_files
        labels[split] = np.asarray(split_labels, dtype=np.int64)
    return _TreeListing(train_classes, files, labels, _hash_entries("folder", entries))


def _dir_is_writable(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    # os.access alone says yes to root for any directory; a tree whose write bits were removed
    # (a shared read-only copy) is left untouched even then.
    return stat.S_ISDIR(mode) and bool(mode & 0o222) and os.access(path, os.W_OK)


def _cache_dirs(root: Path, cache_dir: str | os.PathLike[str] | None) -> tuple[list[Path], list[Path]]:
    """(directories to look for a cache in, directories to try writing one to), in order."""
    fallbacks = []
    if cache_dir is not None:
        fallbacks.append(Path(cache_dir).expanduser())
    if os.environ.get("CIFAR_STRESS_CACHE"):
        fallbacks.append(Path(os.environ["CIFAR_STRESS_CACHE"]).expanduser())
    fallbacks.append(Path.home() / ".cache" / "cifar-stress")
    in_root = root / CACHE_SUBDIR
    write = [in_root, *fallbacks] if _dir_is_writable(root) else fallbacks
    return [in_root, *fallbacks], write


def _read_cache(path: Path, fingerprint: str) -> _FullData | None:
    """The cached arrays at ``path`` if they exist, are intact and match ``fingerprint``."""
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        data = _FullData(
            train_images=obj["train_images"],
            train_labels=obj["train_labels"],
            test_images=obj["test_images"],
            test_labels=obj["test_labels"],
            classes=list(obj["classes"]),
            fingerprint=obj["fingerprint"],
        )
    except Exception:
        return None  # unreadable (e.g. written by another version): decode again and overwrite it
    ok = (
        data.fingerprint == fingerprint
        and data.train_images.dtype == torch.uint8
        and data.train_images.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
        and data.train_images.shape[0] == data.train_labels.shape[0]
        and data.test_images.shape[0] == data.test_labels.shape[0]
    )
    return data if ok else None


def _write_cache(dirs: Sequence[Path], name: str, data: _FullData) -> Path | None:
    """Save ``data`` atomically into the first directory that accepts it; None if none does."""
    payload = {
        "version": _CACHE_VERSION,
        "fingerprint": data.fingerprint,
        "classes": list(data.classes),
        "train_images": data.train_images,
        "train_labels": data.train_labels,
        "test_images": data.test_images,
        "test_labels": data.test_labels,
    }
    errors = []
    for directory in dirs:
        try:
            with atomic_path(directory / name) as tmp:
                torch.save(payload, tmp)
                # mkstemp creates the file private (0600); a cache beside shared data should be
                # readable by the other users of that data.
                tmp.chmod(0o644)
            return directory / name
        except (OSError, RuntimeError) as err:  # RuntimeError: torch's writer on a full disk
            errors.append(f"{directory}: {err}")
    warnings.warn(
        "could not cache the decoded images, so the next load decodes them again ("
        + "; ".join(errors)
        + "); set CIFAR_STRESS_CACHE to a writable directory",
        stacklevel=3,
    )
    return None


def _load_folder(root: Path, *, cache_dir: str | os.PathLike[str] | None, progress: bool) -> _FullData:
    listing = _scan_tree(root)
    name = f"folder-{listing.fingerprint[:40]}.pt"
    read_dirs, write_dirs = _cache_dirs(root, cache_dir)
    for directory in read_dirs:
        cached = _read_cache(directory / name, listing.fingerprint)
        if cached is not None:
            return cached
    total = sum(len(f) for f in listing.files.values())
    with tqdm(total=total, desc=f"decoding {root.name or root}", unit="img", disable=not progress) as bar:
        train_images = _decode_images(listing.files["train"], bar.update)
        test_images = _decode_images(listing.files["test"], bar.update)
    data = _FullData(
        train_images=train_images,
        train_labels=torch.from_numpy(listing.labels["train"]),
        test_images=test_images,
        test_labels=torch.from_numpy(listing.labels["test"]),
        classes=listing.classes,
        fingerprint=listing.fingerprint,
    )
    # Only a fully decoded tree reaches this line, so a decode error never leaves a cache behind.
    _write_cache(write_dirs, name, data)
    return data


def _describe(image: np.ndarray) -> str:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return f"{image.shape[1]}x{image.shape[0]} with {channels} channel(s) of {image.dtype}"


def _decode_into(paths: Sequence[str | Path], out: np.ndarray, start: int) -> None:
    """Decode ``paths`` into ``out[start:start+len(paths)]`` (uint8 (n, 32, 32, 3) RGB)."""
    for offset, path in enumerate(paths):
        try:
            # imdecode of the bytes (rather than imread) reads any path, and an unreadable file and
            # an undecodable one raise distinct errors.
            buffer = np.fromfile(path, dtype=np.uint8)
            image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
        except (OSError, cv2.error) as err:
            raise DataError(f"{path} cannot be read ({err})") from err
        if image is None:
            raise DataError(f"{path} cannot be decoded: corrupt, or not a PNG/JPEG image")
        if image.dtype != np.uint8 or image.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise DataError(
                f"{path} is {_describe(image)}; every image must be {IMAGE_SIZE}x{IMAGE_SIZE} RGB "
                "(3 channels, 8 bits, no alpha)"
            )
        out[start + offset] = image[:, :, ::-1]  # OpenCV decodes BGR


def _decode_images(paths: Sequence[str | Path], advance: Callable[[int], Any] | None = None) -> torch.Tensor:
    """Decode image files on a thread pool (OpenCV releases the GIL) -> uint8 (N, 3, 32, 32) RGB.

    ``advance(n)`` is called after each finished chunk of ``n`` files (a progress bar's update).
    """
    out = np.empty((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    chunk = 512
    workers = min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            (pool.submit(_decode_into, paths[i : i + chunk], out, i), len(paths[i : i + chunk]))
            for i in range(0, len(paths), chunk)
        ]
        try:
            for future, n in futures:
                future.result()
                if advance is not None:
                    advance(n)
        except BaseException:
            for future, _ in futures:
                future.cancel()
            raise
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------------
# Synthetic shapes
# --------------------------------------------------------------------------------------------------

SYNTHETIC_CLASSES = (
    "disc",
    "square",
    "triangle",
    "cross",
    "ring",
    "hbar",
    "vbar",
    "diamond",
    "star",
    "ellipse",
)
# Object hue per class, in degrees. Classes come in pairs of similar colour and similar shape
# (disc/ellipse, square/diamond, cross/star, hbar/vbar, triangle/ring) so that neither colour nor a
# coarse outline alone separates all ten: the task is learnable but not trivial.
SYNTHETIC_HUES = (0.0, 215.0, 300.0, 52.0, 278.0, 120.0, 142.0, 237.0, 36.0, 20.0)
SYNTHETIC_HUE_JITTER = 12.0  # +- degrees around the class hue
# Share of objects painted in their decoy class's colour (see make_synthetic_cifar).
SYNTHETIC_DECOY_RATE = 0.1
SYNTHETIC_TRAIN_PER_CLASS = 5000  # the virtual full splits have CIFAR-10's sizes
SYNTHETIC_TEST_PER_CLASS = 1000
_SPLIT_IDS = {"train": 1, "test": 2}
_CHUNK = 4096  # images rendered at once: bounds the float32 scratch memory (~ 30 MB per array)
_NOISE_TILES = 512  # pixel-noise tiles shared by all images (6 MB)
# Object radius in pixels: the smallest objects make the shape pairs hard to tell apart.
_RADIUS = (4.5, 11.5)
# Backgrounds are duller than objects (saturation <= 0.5), so the object can be found early in
# training, yet their hues span the whole circle, so some are close to the object's colour.
_BG_SATURATION = (0.0, 0.5)
_BG_VALUE = (0.25, 0.85)


def make_synthetic_cifar(
    train_per_class: int = 500,
    test_per_class: int = 100,
    *,
    holdout_per_class: int = 0,
    seed: int = 0,
    background_class_correlation: float = 0.0,
    decoy_colour_rate: float = SYNTHETIC_DECOY_RATE,
) -> CifarData:
    """Ten classes of coloured shapes on textured backgrounds, with object masks.

    Each image shows one object (class-specific shape, class-specific hue with jitter in hue,
    saturation and brightness, random position, scale and a small rotation) on a random textured
    background (gradient, stripes or blobs in two random colours, plus pixel noise).

    Every image is a function of ``(seed, split, position)`` only, where position ``p`` has label
    ``p % 10`` in a virtual full split of CIFAR-10's size (5000 training and 1000 test images per
    class). ``train`` holds positions ``0 .. 10 * train_per_class - 1`` and ``test`` likewise, so a
    smaller request is a prefix of a larger one. The hold-out takes the last ``holdout_per_class``
    per class of the virtual training split, so it never overlaps ``train`` and does not change it.

    ``background_class_correlation = p``: in ``train`` and the hold-out, each image's background is
    its class's own tied background (fixed stripes in a class-specific colour) with probability ``p``;
    ``test`` backgrounds are always random. With ``p`` near 1 a model learns to classify the background.

    ``decoy_colour_rate = q``: in every split, each object is painted, with probability ``q``, in the
    colour of its class's *decoy* class (the next class) instead of its own. Colour is the easiest
    cue, so a briefly trained model calls such an object by its colour, confidently: the generated
    set has high-confidence failures with a known cause (a colour, i.e. texture, bias), as CIFAR-10
    has cat/dog and automobile/truck. 0 gives only true-coloured objects.

    Returns:
        :class:`CifarData` with source ``"synthetic"``: images uint8 (N, 3, 32, 32), labels int64 (N,),
        masks bool (N, 32, 32) (True on the object, never empty).

    Raises:
        DataError: negative counts, ``train_per_class + holdout_per_class > 5000``,
            ``test_per_class > 1000``, or a correlation outside [0, 1].
    """
    _check_count("train_per_class", train_per_class, allow_none=False)
    _check_count("test_per_class", test_per_class, allow_none=False)
    _check_count("holdout_per_class", holdout_per_class, allow_none=False)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"seed must be an integer, got {seed!r}")
    if not 0.0 <= background_class_correlation <= 1.0:
        raise DataError(
            f"background_class_correlation must be in [0, 1], got {background_class_correlation!r}"
        )
    if not 0.0 <= decoy_colour_rate <= 1.0:
        raise DataError(f"decoy_colour_rate must be in [0, 1], got {decoy_colour_rate!r}")
    if train_per_class + holdout_per_class > SYNTHETIC_TRAIN_PER_CLASS:
        raise DataError(
            f"synthetic training split has {SYNTHETIC_TRAIN_PER_CLASS} images per class; asked for "
            f"train_per_class={train_per_class} + holdout_per_class={holdout_per_class}"
        )
    if test_per_class > SYNTHETIC_TEST_PER_CLASS:
        raise DataError(
            f"synthetic test split has {SYNTHETIC_TEST_PER_CLASS} images per class; "
            f"asked for test_per_class={test_per_class}"
        )
    n_classes = len(SYNTHETIC_CLASSES)
    full_train = SYNTHETIC_TRAIN_PER_CLASS * n_classes
    train_index = torch.arange(train_per_class * n_classes)
    holdout_index = torch.arange(full_train - holdout_per_class * n_classes, full_train)
    test_index = torch.arange(test_per_class * n_classes)
    p = float(background_class_correlation)
    q = float(decoy_colour_rate)
    train_images, train_masks = _render_split(seed, "train", train_index, p, q)
    holdout_images, holdout_masks = _render_split(seed, "train", holdout_index, p, q)
    test_images, test_masks = _render_split(seed, "test", test_index, 0.0, q)
    fingerprint = hashlib.sha256(f"synthetic-v{_CACHE_VERSION}-seed{seed}-p{p!r}".encode()).hexdigest()
    return CifarData(
        train_images=train_images,
        train_labels=train_index % n_classes,
        test_images=test_images,
        test_labels=test_index % n_classes,
        classes=list(SYNTHETIC_CLASSES),
        source="synthetic",
        root=None,
        holdout_images=holdout_images,
        holdout_labels=holdout_index % n_classes,
        train_index=train_index,
        test_index=test_index,
        holdout_index=holdout_index,
        train_masks=train_masks,
        test_masks=test_masks,
        holdout_masks=holdout_masks,
        fingerprint=fingerprint,
    )


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser: a bijective scramble of uint64 values (a counter-based RNG)."""
    with np.errstate(over="ignore"):
        x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _image_uniforms(seed: int, split: str, positions: np.ndarray, count: int) -> torch.Tensor:
    """``count`` uniforms in [0, 1) per image, float32 (N, count): a function of (seed, split, position)."""
    base = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    split_key = _splitmix64(base ^ np.uint64(_SPLIT_IDS[split]))
    keys = _splitmix64(split_key ^ _splitmix64(positions.astype(np.uint64)))
    with np.errstate(over="ignore"):
        streams = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03)
        bits = _splitmix64(keys[:, None] ^ streams[None, :])
    # The top 24 bits give float32-exact values in [0, 1).
    return torch.from_numpy(((bits >> np.uint64(40)).astype(np.float32)) * np.float32(2.0**-24))


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue in degrees, saturation and value in [0, 1] (each (N,)) -> RGB float (N, 3) in [0, 255]."""
    h = torch.remainder(h, 360.0) / 60.0
    k = torch.remainder(torch.tensor([5.0, 3.0, 1.0]) + h[:, None], 6.0)
    rgb = v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb * 255.0


_COORDS = torch.arange(IMAGE_SIZE, dtype=torch.float32) + 0.5  # pixel centres


def _stripes(angle: torch.Tensor, freq: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Soft-edged stripes from angle (rad), cycles per image and phase (rad), each float (N,).

    Returns float (N, 32, 32) in [0, 1].
    """
    x = (_COORDS / IMAGE_SIZE - 0.5).view(1, 1, -1)
    y = (_COORDS / IMAGE_SIZE - 0.5).view(1, -1, 1)
    proj = torch.cos(angle).view(-1, 1, 1) * x + torch.sin(angle).view(-1, 1, 1) * y
    wave = torch.sin(2 * math.pi * freq.view(-1, 1, 1) * proj + phase.view(-1, 1, 1))
    return torch.sigmoid(4.0 * wave)


def _tied_angle(label: int) -> float:
    return math.radians(18.0 * label)


def _tied_freq(label: int) -> float:
    return 2.0 + 0.4 * (label % 5)


def _tied_colours(label: int) -> tuple[list[float], list[float]]:
    hue = torch.tensor([(36.0 * label + 17.0) % 360.0])
    light = _hsv_to_rgb(hue, torch.tensor([0.55]), torch.tensor([0.85]))[0].tolist()
    dark = _hsv_to_rgb(hue + 25.0, torch.tensor([0.75]), torch.tensor([0.35]))[0].tolist()
    return light, dark


_NOISE_BANK: list[torch.Tensor] = []


def _noise_bank() -> torch.Tensor:
    """Standard-normal pixel-noise tiles, float32 (512, 3, 32, 32), the same in every process."""
    if not _NOISE_BANK:
        generator = torch.Generator().manual_seed(20240531)
        _NOISE_BANK.append(torch.randn(_NOISE_TILES, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator))
    return _NOISE_BANK[0]


def _plus(u: torch.Tensor, v: torch.Tensor, arm: float = 0.3) -> torch.Tensor:
    au, av = u.abs(), v.abs()
    return ((au <= arm) & (av <= 1.0)) | ((av <= arm) & (au <= 1.0))


def _star(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # An asterisk: the plus sign and the same rotated by 45 degrees.
    d1, d2 = (u - v) / math.sqrt(2), (u + v) / math.sqrt(2)
    diagonal = _plus(d1, d2, arm=0.22) & (d1.abs() <= 0.85) & (d2.abs() <= 0.85)
    return _plus(u, v) | diagonal


# Object coordinates (u, v) span about [-1, 1]; each entry maps float (n, 32, 32) pairs to bool masks.
_SHAPES: tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], ...] = (
    lambda u, v: u * u + v * v <= 1.0,  # disc
    lambda u, v: torch.maximum(u.abs(), v.abs()) <= 0.8,  # square
    lambda u, v: (v <= 0.6) & (u.abs() <= 0.92 * (v + 1.0) / 1.6),  # triangle, apex up
    _plus,  # cross
    lambda u, v: ((u * u + v * v) <= 1.0) & ((u * u + v * v) >= 0.55**2),  # ring
    lambda u, v: (u.abs() <= 1.0) & (v.abs() <= 0.32),  # hbar
    lambda u, v: (u.abs() <= 0.32) & (v.abs() <= 1.0),  # vbar
    lambda u, v: u.abs() + v.abs() <= 1.1,  # diamond
    _star,  # star
    lambda u, v: u * u + (v / 0.55) ** 2 <= 1.0,  # ellipse
)


def _shape_masks(labels: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bool (N, 32, 32) masks of each image's class shape at object coordinates u, v (float (N, 32, 32))."""
    masks = torch.empty(u.shape, dtype=torch.bool)
    # Only each image's own shape is evaluated: ten times less work than all shapes for all images.
    for label, shape in enumerate(_SHAPES):
        selected = torch.nonzero(labels == label)[:, 0]
        if len(selected):
            masks[selected] = shape(u[selected], v[selected])
    return masks


def _background_mix(kind: torch.Tensor, rnd: torch.Tensor) -> torch.Tensor:
    """Mixing weight of the two background colours, float (N, 32, 32) in [0, 1].

    ``kind`` (int64 (N,)) picks a linear gradient (0), stripes (1) or smooth blobs (2); ``rnd`` holds
    the per-image uniforms. Each image's texture alone is computed.
    """
    n = len(kind)
    t = torch.empty((n, IMAGE_SIZE, IMAGE_SIZE))
    angle = 2 * math.pi * rnd[:, _U_ANGLE]
    grad = torch.nonzero(kind == 0)[:, 0]
    if len(grad):
        x = (_COORDS / IMAGE_SIZE - 0.5).view(1, 1, -1)
        y = (_COORDS / IMAGE_SIZE - 0.5).view(1, -1, 1)
        a = angle[grad].view(-1, 1, 1)
        t[grad] = (0.5 + torch.cos(a) * x + torch.sin(a) * y).clamp(0, 1)
    stripe = torch.nonzero(kind == 1)[:, 0]
    if len(stripe):
        freq = 1.5 + 4.0 * rnd[stripe, _U_FREQ]
        t[stripe] = _stripes(angle[stripe], freq, 2 * math.pi * rnd[stripe, _U_PHASE])
    blob = torch.nonzero(kind == 2)[:, 0]
    if len(blob):
        grid = rnd[blob, _U_BLOBS : _U_BLOBS + 16].reshape(-1, 1, 4, 4)
        smooth = F.interpolate(grid, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False)
        t[blob] = torch.sigmoid(8.0 * (smooth[:, 0] - 0.5))
    return t


def _render_split(
    seed: int, split: str, positions: torch.Tensor, correlation: float, decoy_rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render images at ``positions`` of a split -> uint8 (N, 3, 32, 32) and bool masks (N, 32, 32)."""
    images = torch.empty((len(positions), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    masks = torch.empty((len(positions), IMAGE_SIZE, IMAGE_SIZE), dtype=torch.bool)
    for start in range(0, len(positions), _CHUNK):
        chunk = positions[start : start + _CHUNK]
        images[start : start + len(chunk)], masks[start : start + len(chunk)] = _render(
            seed, split, chunk, correlation, decoy_rate
        )
    return images, masks


# Indices of the per-image uniforms.
_U_HUE, _U_SAT, _U_VAL, _U_SCALE, _U_CX, _U_CY, _U_ROT = range(7)
_U_BG_KIND, _U_BG1, _U_BG2 = 7, 8, 11  # colours take 3 uniforms each (h, s, v)
_U_ANGLE, _U_FREQ, _U_PHASE, _U_TILE, _U_TIE, _U_NOISE, _U_SHADE = range(14, 21)
_U_BLOBS = 21  # a 4x4 grid of blob intensities: 16 uniforms
_U_DECOY = _U_BLOBS + 16
_U_COUNT = _U_DECOY + 1


def _render(
    seed: int, split: str, positions: torch.Tensor, correlation: float, decoy_rate: float
) -> tuple[torch.Tensor, torch.Tensor]:
    n_classes = len(SYNTHETIC_CLASSES)
    n = len(positions)
    labels = positions % n_classes
    rnd = _image_uniforms(seed, split, positions.numpy(), _U_COUNT)

    # --- background: two random colours mixed by a gradient, stripes or blobs ---------------------
    def colour(i: int, s_lo: float, s_hi: float, v_lo: float, v_hi: float) -> torch.Tensor:
        return _hsv_to_rgb(
            360.0 * rnd[:, i], s_lo + (s_hi - s_lo) * rnd[:, i + 1], v_lo + (v_hi - v_lo) * rnd[:, i + 2]
        )

    c1, c2 = colour(_U_BG1, *_BG_SATURATION, *_BG_VALUE), colour(_U_BG2, *_BG_SATURATION, *_BG_VALUE)
    t = _background_mix((3 * rnd[:, _U_BG_KIND]).long().clamp(max=2), rnd)
    background = torch.addcmul(c1.view(n, 3, 1, 1), (c2 - c1).view(n, 3, 1, 1), t[:, None])

    if correlation > 0:
        # The tied background: class-specific stripes and colours; only the phase and brightness vary,
        # so it identifies the class at a glance.
        tied = rnd[:, _U_TIE] < correlation
        if bool(tied.any()):
            angles = torch.tensor([_tied_angle(c) for c in range(n_classes)])[labels]
            freqs = torch.tensor([_tied_freq(c) for c in range(n_classes)])[labels]
            light = torch.tensor([_tied_colours(c)[0] for c in range(n_classes)])[labels]
            dark = torch.tensor([_tied_colours(c)[1] for c in range(n_classes)])[labels]
            brightness = (0.9 + 0.2 * rnd[:, _U_BG1]).view(n, 1, 1, 1)
            t_tied = _stripes(angles, freqs, 2 * math.pi * rnd[:, _U_PHASE])[:, None]
            tied_bg = (light.view(n, 3, 1, 1) * (1 - t_tied) + dark.view(n, 3, 1, 1) * t_tied) * brightness
            background = torch.where(tied.view(n, 1, 1, 1), tied_bg, background)

    # --- the object: class shape at a random place, scale and small rotation -----------------------
    radius = _RADIUS[0] + (_RADIUS[1] - _RADIUS[0]) * rnd[:, _U_SCALE]
    cx = radius + (IMAGE_SIZE - 2 * radius) * rnd[:, _U_CX]
    cy = radius + (IMAGE_SIZE - 2 * radius) * rnd[:, _U_CY]
    theta = math.radians(20.0) * (2 * rnd[:, _U_ROT] - 1)
    dx = (_COORDS.view(1, 1, -1) - cx.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    dy = (_COORDS.view(1, -1, 1) - cy.view(-1, 1, 1)) / radius.view(-1, 1, 1)
    cos, sin = torch.cos(theta).view(-1, 1, 1), torch.sin(theta).view(-1, 1, 1)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    mask = _shape_masks(labels, u, v)
    # A tiny object can fall between pixel centres; its centre pixel keeps every mask non-empty.
    empty = ~mask.flatten(1).any(1)
    if bool(empty.any()):
        idx = torch.nonzero(empty)[:, 0]
        mask[idx, cy[idx].long().clamp(0, IMAGE_SIZE - 1), cx[idx].long().clamp(0, IMAGE_SIZE - 1)] = True

    colour_class = torch.where(rnd[:, _U_DECOY] < decoy_rate, (labels + 1) % n_classes, labels)
    hues = torch.tensor(SYNTHETIC_HUES)[colour_class] + SYNTHETIC_HUE_JITTER * (2 * rnd[:, _U_HUE] - 1)
    obj = _hsv_to_rgb(hues, 0.7 + 0.3 * rnd[:, _U_SAT], 0.7 + 0.3 * rnd[:, _U_VAL])
    # Soft shading across the object, so it is not one flat colour.
    shade_angle = 2 * math.pi * rnd[:, _U_SHADE]
    shading = 1.0 + 0.12 * (
        torch.cos(shade_angle).view(-1, 1, 1) * u + torch.sin(shade_angle).view(-1, 1, 1) * v
    )
    obj_pixels = obj.view(n, 3, 1, 1) * shading[:, None]

    # --- pixel noise: a tile of the shared bank per image, at its own amplitude ----------------------
    tile = (rnd[:, _U_TILE] * _NOISE_TILES).long().clamp(max=_NOISE_TILES - 1)
    amplitude = (4.0 + 14.0 * rnd[:, _U_NOISE]).view(n, 1, 1, 1)
    image = torch.where(mask[:, None], obj_pixels, background)
    image.addcmul_(_noise_bank().index_select(0, tile), amplitude)
    return image.round_().clamp_(0, 255).to(torch.uint8), mask
