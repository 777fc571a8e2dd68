"""Image-folder trees, ``train/<class>/*`` and ``test/<class>/*`` of 32x32 RGB PNG or JPEG files,
decoded once and cached (beside the tree when it is writable, else in a cache directory)."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import torch

from cifar_helpers.rundir.artifacts import atomic_path

from .common import _CACHE_VERSION, ACCEPTED_LAYOUTS, IMAGE_SIZE, DataError, _FullData, _hash_entries

CACHE_SUBDIR = ".cifar_stress_cache"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def _class_dirs(split_dir: Path) -> list[str]:
    with os.scandir(split_dir) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _scan_tree(root: Path) -> tuple[list[str], dict[str, list[str]], dict[str, torch.Tensor], str]:
    """List train/test class folders and their images with os.scandir (one stat per file): the
    classes, per split the file paths (class by class, sorted by name) and int64 (n,) labels, and the
    tree's fingerprint. Paths stay strings: Path objects would cost more than the stat calls.
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
    entries: list[tuple[str, os.stat_result]] = []
    files: dict[str, list[str]] = {}
    labels: dict[str, torch.Tensor] = {}
    for split in ("train", "test"):
        files[split] = []
        split_labels: list[int] = []
        for label, name in enumerate(train_classes):
            class_dir = root / split / name
            with os.scandir(class_dir) as it:
                images = [
                    e for e in it if not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS)
                ]
            if not images:
                raise DataError(f"{class_dir} contains no PNG or JPEG images; {ACCEPTED_LAYOUTS}")
            images.sort(key=lambda e: e.name)
            entries += [(f"{split}/{name}/{e.name}", e.stat()) for e in images]
            files[split] += [e.path for e in images]
            split_labels += [label] * len(images)
        labels[split] = torch.tensor(split_labels, dtype=torch.int64)
    return train_classes, files, labels, _hash_entries("folder", entries)


def _dir_is_writable(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    # os.access alone says yes to root for any directory; a tree whose write bits were removed
    # (a shared read-only copy) is left untouched even then.
    return stat.S_ISDIR(mode) and bool(mode & 0o222) and os.access(path, os.W_OK)


def _cache_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(directories to look for a cache in, directories to try writing one to), in order."""
    env = os.environ.get("CIFAR_STRESS_CACHE") or None  # unset or empty: skipped
    fallbacks = [Path(env).expanduser()] if env is not None else []
    fallbacks.append(Path.home() / ".cache" / "cifar-stress")
    in_root = root / CACHE_SUBDIR
    write = [in_root, *fallbacks] if _dir_is_writable(root) else fallbacks
    return [in_root, *fallbacks], write


def _read_cache(path: Path, fingerprint: str) -> _FullData | None:
    """The cached arrays at ``path`` if they exist, are intact and match ``fingerprint``."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        data = _FullData(**{field.name: obj[field.name] for field in fields(_FullData)})
    except Exception:
        return None  # unreadable (e.g. written by another version): decode again and overwrite it
    # A file left behind may load yet hold other arrays (edited, or damaged): decode again then.
    ok = (
        data.fingerprint == fingerprint
        and data.train_images.dtype == torch.uint8
        and data.train_images.shape[1:] == (3, IMAGE_SIZE, IMAGE_SIZE)
        and data.train_images.shape[0] == data.train_labels.shape[0]
        and data.test_images.shape[0] == data.test_labels.shape[0]
    )
    return data if ok else None


def _write_cache(dirs: Sequence[Path], name: str, data: _FullData) -> None:
    """Save ``data`` atomically into the first directory that accepts it, else warn."""
    payload = {"version": _CACHE_VERSION, **vars(data)}
    errors = []
    for directory in dirs:
        try:
            with atomic_path(directory / name) as tmp:
                torch.save(payload, tmp)
                # mkstemp creates the file private (0600); others sharing the data should read it.
                tmp.chmod(0o644)
            return
        except (OSError, RuntimeError) as err:  # RuntimeError: torch's writer on a full disk
            errors.append(f"{directory}: {err}")
    warnings.warn(
        "could not cache the decoded images, so the next load decodes them again ("
        + "; ".join(errors)
        + "); set CIFAR_STRESS_CACHE to a writable directory",
        stacklevel=3,
    )


def _load_folder(root: Path) -> _FullData:
    classes, files, labels, fingerprint = _scan_tree(root)
    name = f"folder-{fingerprint[:40]}.pt"
    read_dirs, write_dirs = _cache_dirs(root)
    for directory in read_dirs:
        cached = _read_cache(directory / name, fingerprint)
        if cached is not None:
            return cached
    images = {split: _decode_images(paths) for split, paths in files.items()}
    data = _FullData(fingerprint, classes, images["train"], labels["train"], images["test"], labels["test"])
    # Only a fully decoded tree reaches this line, so a decode error never leaves a cache behind.
    _write_cache(write_dirs, name, data)
    return data


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
            channels = 1 if image.ndim == 2 else image.shape[2]
            raise DataError(
                f"{path} is {image.shape[1]}x{image.shape[0]} with {channels} channel(s) of {image.dtype}; "
                f"every image must be {IMAGE_SIZE}x{IMAGE_SIZE} RGB (3 channels, 8 bits, no alpha)"
            )
        out[start + offset] = image[:, :, ::-1]  # OpenCV decodes BGR


def _decode_images(paths: Sequence[str | Path]) -> torch.Tensor:
    """Decode image files on a thread pool (OpenCV releases the GIL) -> uint8 (N, 3, 32, 32) RGB."""
    out = np.empty((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    chunk = 512
    workers = min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [
            pool.submit(_decode_into, paths[i : i + chunk], out, i) for i in range(0, len(paths), chunk)
        ]
        try:
            for future in futures:
                future.result()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
