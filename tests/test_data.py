"""cifar_helpers.core.data: synthetic shapes, image-folder trees and their cache, pickled batches, errors."""

from __future__ import annotations

import json
import pickle
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.error import URLError

import cv2
import numpy as np
import pytest
import torch

# folders and generated are submodules: their private helpers are patched and called there, where
# the code that uses them looks them up.
from cifar_helpers.core.data import (
    BATCHES_DIR,
    CACHE_SUBDIR,
    SYNTHETIC_CLASSES,
    SYNTHETIC_HUE_JITTER,
    SYNTHETIC_HUES,
    CifarData,
    DataError,
    folders,
    generated,
    load_cifar10,
    load_data,
    make_synthetic_cifar,
    resolve_data_root,
)
from cifar_helpers.core.data.loading import _stratified_indices
from cifar_helpers.rundir.config import make_config

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _private_cache(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep caches of test trees out of the user's home (the shared-copy test uses the real default)."""
    if request.node.get_closest_marker("shared_data") is None:
        monkeypatch.setenv("CIFAR_STRESS_CACHE", str(tmp_path / "env-cache"))
        monkeypatch.delenv("CIFAR10_ROOT", raising=False)


# --- helpers ---------------------------------------------------------------------------------------


def _pixel(split: str, label: int, i: int) -> tuple[int, int, int]:
    """A distinct RGB colour per image, so labels and order can be checked pixel-exactly."""
    return (10 + 60 * label, 5 + 20 * i, 200 if split == "train" else 100)


def _write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # cv2 writes BGR; the loader must undo it.
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]) if rgb.ndim == 3 else rgb)


def _write_tree(
    root: Path, classes: tuple[str, ...] = ("cat", "ant", "bee"), n_train: int = 4, n_test: int = 2
) -> Path:
    """root/{train,test}/<class>/NNNN.png, each image one flat colour from :func:`_pixel`."""
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(sorted(classes)):
            for i in range(n):
                rgb = np.empty((32, 32, 3), dtype=np.uint8)
                rgb[:] = _pixel(split, label, i)
                _write_image(root / split / name / f"{i:04d}.png", rgb)
    return root


def _cache_files(*dirs: Path) -> list[Path]:
    return [p for d in dirs if d.exists() for p in d.rglob("*") if p.is_file()]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return _write_tree(tmp_path / "tree")


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[list[Path]]:
    """Paths appended to the yielded list are made read-only, and writable again afterwards."""
    paths: list[Path] = []
    yield paths
    for p in paths:
        for q in [p, *p.rglob("*")]:
            q.chmod(q.stat().st_mode | stat.S_IWUSR)


def _make_read_only(path: Path, registry: list[Path]) -> None:
    registry.append(path)
    for q in [*path.rglob("*"), path]:
        q.chmod(q.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _write_batches(folder: Path, per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's cifar-10-batches-py layout with small batches; returns all (images, labels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    images, labels = [], []
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        batch_labels = [int(x) for x in rng.integers(0, 10, size=per_batch)]
        batch_labels[:10] = list(range(10))  # every class in every batch
        with open(folder / name, "wb") as f:
            # Bytes keys, as the official Python-2 pickles read with encoding="bytes".
            pickle.dump({b"batch_label": name.encode(), b"data": batch, b"labels": batch_labels}, f)
        images.append(batch)
        labels.append(batch_labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR_CLASSES, "num_vis": 3072}, f)
    return np.concatenate(images), np.concatenate(labels)


def _hue_deg(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of float RGB colours (n, 3) in [0, 255]."""
    hsv = cv2.cvtColor((rgb / 255.0).astype(np.float32).reshape(-1, 1, 3), cv2.COLOR_RGB2HSV)
    return hsv[:, 0, 0]


# --- synthetic data --------------------------------------------------------------------------------


def test_synthetic_shapes_dtypes_and_indices() -> None:
    d = make_synthetic_cifar(6, 3, holdout_per_class=2, seed=1)
    assert isinstance(d, CifarData)
    assert d.classes == list(SYNTHETIC_CLASSES) and len(d.classes) == 10
    assert d.source == "synthetic" and d.root is None and d.fingerprint
    for images, labels, index, masks, n in (
        (d.train_images, d.train_labels, d.train_index, d.train_masks, 60),
        (d.test_images, d.test_labels, d.test_index, d.test_masks, 30),
        (d.holdout_images, d.holdout_labels, d.holdout_index, d.holdout_masks, 20),
    ):
        assert images.shape == (n, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert index.dtype == torch.int64 and torch.equal(labels, index % 10)
        assert masks is not None and masks.shape == (n, 32, 32) and masks.dtype == torch.bool
        assert torch.bincount(labels, minlength=10).tolist() == [n // 10] * 10
    assert not set(d.holdout_index.tolist()) & set(d.train_index.tolist())
    summary = d.summary()
    json.dumps(summary)
    assert summary["counts"]["holdout"]["disc"] == 2 and summary["num_images"]["train"] == 60


def test_synthetic_is_deterministic_and_seeded() -> None:
    a, b = make_synthetic_cifar(5, 2, seed=3), make_synthetic_cifar(5, 2, seed=3)
    c = make_synthetic_cifar(5, 2, seed=4)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_masks, b.test_masks)
    assert not torch.equal(a.train_images, c.train_images)
    assert not torch.equal(a.test_images, c.test_images)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    # Train and test are different images, not the same stream twice.
    assert not torch.equal(a.train_images[:20], a.test_images[:20])


def test_synthetic_subsets_are_consistent_whatever_the_size() -> None:
    small = make_synthetic_cifar(3, 2, seed=7)
    large = make_synthetic_cifar(9, 5, holdout_per_class=4, seed=7, background_class_correlation=0.0)
    assert torch.equal(large.train_images[:30], small.train_images)
    assert torch.equal(large.train_masks[:30], small.train_masks)
    assert torch.equal(large.test_images[:20], small.test_images)
    # The hold-out comes from the end of the virtual 5000-per-class training split.
    assert large.holdout_index.min() >= 50_000 - 40
    assert torch.equal(
        make_synthetic_cifar(1, 0, holdout_per_class=4, seed=7).holdout_images, large.holdout_images
    )


def _object_hue_error(d: CifarData, colour_class: np.ndarray) -> np.ndarray:
    masks, images = d.train_masks, d.train_images.permute(0, 2, 3, 1).double()
    assert masks is not None and masks.flatten(1).any(1).all()
    inside = (images * masks[..., None]).sum((1, 2)) / masks.sum((1, 2))[:, None]
    hue = _hue_deg(inside.numpy())
    expected = np.asarray(SYNTHETIC_HUES)[colour_class]
    return np.abs((hue - expected + 180.0) % 360.0 - 180.0)


def test_synthetic_decoys_wear_the_next_class_colour() -> None:
    decoys = make_synthetic_cifar(20, 0, seed=0, decoy_colour_rate=1.0)
    labels = decoys.train_labels.numpy()
    assert _object_hue_error(decoys, (labels + 1) % 10).max() <= SYNTHETIC_HUE_JITTER + 8.0
    mixed = make_synthetic_cifar(200, 0, seed=0, decoy_colour_rate=0.1)
    labels = mixed.train_labels.numpy()
    own = _object_hue_error(mixed, labels) <= SYNTHETIC_HUE_JITTER + 8.0
    decoy = _object_hue_error(mixed, (labels + 1) % 10) <= SYNTHETIC_HUE_JITTER + 8.0
    assert (own | decoy).all()
    assert 0.06 < (~own).mean() < 0.14  # about one object in ten wears its decoy colour
    with pytest.raises(DataError, match="decoy_colour_rate"):
        make_synthetic_cifar(2, 0, decoy_colour_rate=1.5)


def test_synthetic_masks_hold_the_class_coloured_object() -> None:
    d = make_synthetic_cifar(20, 0, seed=0, decoy_colour_rate=0.0)
    masks = d.train_masks
    diff = _object_hue_error(d, d.train_labels.numpy())
    # The class hue +- the jitter, plus a little for shading, noise and rounding at 255.
    assert diff.max() <= SYNTHETIC_HUE_JITTER + 8.0, diff.max()
    # The object stands out from the (duller) background: its saturation is higher on average.
    hsv = cv2.cvtColor(d.train_images.permute(0, 2, 3, 1).reshape(-1, 32, 3).numpy(), cv2.COLOR_RGB2HSV)
    sat = torch.from_numpy(hsv[..., 1].reshape(-1, 32, 32)).float()
    assert (sat[masks].mean() - sat[~masks].mean()) > 60


def _background_means(d: CifarData, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    images = getattr(d, f"{split}_images").permute(0, 2, 3, 1).double()
    outside = ~getattr(d, f"{split}_masks")
    means = (images * outside[..., None]).sum((1, 2)) / outside.sum((1, 2))[:, None]
    return means, getattr(d, f"{split}_labels")


def _tied_background(label: int) -> torch.Tensor:
    """What ``background_class_correlation`` puts behind a training object of class ``label``, without
    jitter or noise: uint8 (3, 32, 32), from the generator's own recipe."""
    angle, freq, light, dark = generated._tied_recipe(label)
    t = generated._stripes(torch.tensor([angle]), torch.tensor([freq]), torch.zeros(1))
    c1, c2 = (torch.tensor(c, dtype=torch.float32).view(1, 3, 1, 1) for c in (light, dark))
    image = c1 * (1 - t[:, None]) + c2 * t[:, None]
    return image[0].round().clamp(0, 255).to(torch.uint8)


def _nearest_tied_class(means: torch.Tensor) -> torch.Tensor:
    tied = torch.stack([_tied_background(c).double().mean((1, 2)) for c in range(10)])
    return torch.cdist(means, tied).argmin(1)


def test_background_class_correlation_ties_train_not_test() -> None:
    d = make_synthetic_cifar(10, 10, holdout_per_class=3, seed=2, background_class_correlation=1.0)
    for split in ("train", "holdout"):
        means, labels = _background_means(d, split)
        assert torch.equal(_nearest_tied_class(means), labels), split
    means, labels = _background_means(d, "test")
    assert (_nearest_tied_class(means) == labels).float().mean() < 0.4
    # Without correlation the training backgrounds are random too.
    free = make_synthetic_cifar(10, 0, seed=2)
    means, labels = _background_means(free, "train")
    assert (_nearest_tied_class(means) == labels).float().mean() < 0.4
    # The objects are the same images either way: only backgrounds change.
    assert torch.equal(free.train_masks, d.train_masks)


def test_synthetic_rejects_bad_sizes() -> None:
    with pytest.raises(DataError, match="5000"):
        make_synthetic_cifar(4990, 0, holdout_per_class=20)
    with pytest.raises(DataError, match="background_class_correlation"):
        make_synthetic_cifar(1, 1, background_class_correlation=1.5)
    with pytest.raises(DataError, match="train_per_class"):
        make_synthetic_cifar(-1, 1)
    # A hold-out larger than the split is named as such, not as the negative rest it leaves.
    with pytest.raises(DataError, match=r"has 5000 images per class; asked for .*holdout_per_class=5001"):
        load_cifar10(source="synthetic", holdout_per_class=5001)


def test_load_data_uses_the_config() -> None:
    config = make_config("smoke", data_source="synthetic", seed=5)
    d = load_data(config)
    assert d.source == "synthetic"
    assert (len(d.train_labels), len(d.test_labels), len(d.holdout_labels)) == (1000, 500, 100)
    same = load_cifar10(
        source="synthetic", train_per_class=100, test_per_class=50, holdout_per_class=10, seed=5
    )
    assert torch.equal(d.train_images, same.train_images)


# --- stratified subsets ----------------------------------------------------------------------------


def test_stratified_indices_counts_order_and_determinism() -> None:
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)[
        torch.randperm(21, generator=torch.Generator().manual_seed(0))
    ]
    classes = ["a", "b", "c"]
    idx = _stratified_indices(labels, 3, torch.Generator().manual_seed(1), classes)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, torch.sort(idx).values) and len(set(idx.tolist())) == 9
    assert torch.bincount(labels[idx], minlength=3).tolist() == [3, 3, 3]
    assert torch.equal(idx, _stratified_indices(labels, 3, torch.Generator().manual_seed(1), classes))
    assert not torch.equal(idx, _stratified_indices(labels, 3, torch.Generator().manual_seed(2), classes))
    larger = _stratified_indices(labels, 5, torch.Generator().manual_seed(1), classes)
    assert set(idx.tolist()) <= set(larger.tolist())
    assert len(_stratified_indices(labels, 0, torch.Generator(), classes)) == 0
    with pytest.raises(DataError, match=r"'b'.*only 5"):
        _stratified_indices(labels, 6, torch.Generator(), classes)


# --- image-folder trees ----------------------------------------------------------------------------


def test_folder_tree_loads_with_labels_and_classes(tree: Path) -> None:
    # A JPEG beside the PNGs: both formats load (JPEG is lossy, so it gets its own flat colour check).
    _write_image(tree / "train" / "bee" / "0004.jpg", np.full((32, 32, 3), (30, 120, 220), np.uint8))
    (tree / "train" / "bee" / "notes.txt").write_text("not an image")
    d = load_cifar10(tree, download=False)
    assert d.source == "folder" and d.root == str(tree) and d.classes == ["ant", "bee", "cat"]
    assert d.train_images.shape == (13, 3, 32, 32) and d.train_images.dtype == torch.uint8
    assert d.train_labels.tolist() == [0] * 4 + [1] * 5 + [2] * 4
    assert d.test_labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(d.train_index, torch.arange(13)) and d.holdout_images.shape == (0, 3, 32, 32)
    # Exact RGB (not BGR) values of the PNGs, in sorted file order.
    for pos, (label, i) in enumerate([(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)]):
        assert d.train_images[pos, :, 5, 5].tolist() == list(_pixel("train", label, i))
    assert d.test_images[5, :, 0, 0].tolist() == list(_pixel("test", 2, 1))
    jpeg = d.train_images[8].double().mean((1, 2))
    assert torch.allclose(jpeg, torch.tensor([30.0, 120.0, 220.0], dtype=torch.float64), atol=4)
    summary = d.summary()
    assert summary["counts"]["train"] == {"ant": 4, "bee": 5, "cat": 4}
    json.dumps(summary)


def test_folder_subsets_are_stratified_disjoint_and_traceable(tree: Path) -> None:
    full = load_cifar10(tree, download=False)
    d = load_cifar10(tree, download=False, train_per_class=2, test_per_class=1, holdout_per_class=1, seed=3)
    assert torch.bincount(d.train_labels).tolist() == [2, 2, 2]
    assert torch.bincount(d.holdout_labels).tolist() == [1, 1, 1]
    assert torch.bincount(d.test_labels).tolist() == [1, 1, 1]
    assert not set(d.train_index.tolist()) & set(d.holdout_index.tolist())
    assert torch.equal(d.train_images, full.train_images[d.train_index])
    assert torch.equal(d.holdout_images, full.train_images[d.holdout_index])
    assert torch.equal(d.test_images, full.test_images[d.test_index])
    again = load_cifar10(
        tree, download=False, train_per_class=2, test_per_class=1, holdout_per_class=1, seed=3
    )
    assert torch.equal(again.train_index, d.train_index) and torch.equal(again.test_index, d.test_index)
    with pytest.raises(DataError, match=r"'ant'.*only 3"):
        load_cifar10(tree, download=False, train_per_class=4, holdout_per_class=1)


def test_second_load_reads_the_cache(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_cifar10(tree, download=False)
    cached = _cache_files(tree / CACHE_SUBDIR)
    assert len(cached) == 1 and cached[0].suffix == ".pt"

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("images were decoded again instead of read from the cache")

    monkeypatch.setattr(folders, "_decode_images", no_decoding)
    second = load_cifar10(tree, download=False)
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    assert first.classes == second.classes and first.fingerprint == second.fingerprint


def test_a_cache_holding_other_arrays_is_decoded_again(tree: Path) -> None:
    first = load_cifar10(tree, download=False)
    (path,) = _cache_files(tree / CACHE_SUBDIR)
    payload = torch.load(path, weights_only=True)
    payload["train_images"] = payload["train_images"][1:]  # loads, fingerprint right, arrays wrong
    torch.save(payload, path)
    second = load_cifar10(tree, download=False)
    assert torch.equal(first.train_images, second.train_images)
    assert len(torch.load(path, weights_only=True)["train_images"]) == len(first.train_images)  # rewritten


def test_changed_tree_is_decoded_again(tree: Path) -> None:
    first = load_cifar10(tree, download=False)
    rgb = np.full((32, 32, 3), 77, np.uint8)
    rgb[0, 0] = (1, 2, 3)  # a different file size as well as content
    _write_image(tree / "train" / "ant" / "0000.png", rgb)
    second = load_cifar10(tree, download=False)
    assert second.fingerprint != first.fingerprint
    assert second.train_images[0, :, 5, 5].tolist() == [77, 77, 77]


def test_read_only_root_caches_in_the_cache_folder(tree: Path, tmp_path: Path, read_only: list[Path]) -> None:
    _make_read_only(tree, read_only)
    # $CIFAR_STRESS_CACHE is set by the autouse fixture.
    first = load_cifar10(tree, download=False)
    assert len(_cache_files(tmp_path / "env-cache")) == 1 and not (tree / CACHE_SUBDIR).exists()
    second = load_cifar10(tree, download=False)
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_images, second.test_images)


def test_missing_directory_without_download(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="accepted layouts") as info:
        load_cifar10(missing, download=False)
    assert str(missing) in str(info.value)
    assert not missing.exists()


def test_tree_without_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "empty-tree"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    with pytest.raises(DataError, match="no class folders") as info:
        load_cifar10(root, download=False)
    assert str(root) in str(info.value)


def test_train_and_test_classes_must_match(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "tree", classes=("ant", "bee"))
    _write_image(root / "test" / "wasp" / "0000.png", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"only in test: \['wasp'\]") as info:
        load_cifar10(root, download=False)
    assert str(root) in str(info.value)


def test_only_one_split_is_an_error(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "tree")
    for p in sorted((root / "test").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (root / "test").rmdir()
    with pytest.raises(DataError, match="test missing"):
        load_cifar10(root, download=True)


@pytest.mark.parametrize(
    ("name", "image", "message"),
    [
        ("short.png", np.zeros((31, 32, 3), np.uint8), "32x31 with 3 channel"),
        ("gray.png", np.zeros((32, 32), np.uint8), "1 channel"),
        ("gray.jpg", np.zeros((32, 32), np.uint8), "1 channel"),
        ("alpha.png", np.zeros((32, 32, 4), np.uint8), "4 channel"),
        ("corrupt.png", None, "cannot be decoded"),
        ("empty.jpg", b"", "cannot be decoded"),
    ],
)
def test_bad_image_is_named_and_nothing_is_cached(
    tree: Path, tmp_path: Path, name: str, image: np.ndarray | bytes | None, message: str
) -> None:
    path = tree / "test" / "bee" / name
    if image is None:
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    elif isinstance(image, bytes):
        path.write_bytes(image)
    else:
        assert cv2.imwrite(str(path), image)
    with pytest.raises(DataError, match=message) as info:
        load_cifar10(tree, download=False)
    assert str(path) in str(info.value)
    assert not _cache_files(tree / CACHE_SUBDIR, tmp_path / "env-cache")


# --- torchvision's pickled batches ----------------------------------------------------------------


def test_pickled_batches_load_without_md5_checks(tmp_path: Path) -> None:
    images, labels = _write_batches(tmp_path / "root" / "cifar-10-batches-py")
    for root in (tmp_path / "root", tmp_path / "root" / "cifar-10-batches-py"):
        d = load_cifar10(root, download=False)
        assert d.source == "cifar10" and d.classes == CIFAR_CLASSES
        assert d.root == str(tmp_path / "root" / "cifar-10-batches-py")
        assert d.train_images.shape == (100, 3, 32, 32) and d.train_images.dtype == torch.uint8
        assert d.test_images.shape == (20, 3, 32, 32) and d.test_labels.dtype == torch.int64
        # Channel-major rows: the first 1024 bytes are the red plane.
        assert torch.equal(d.train_images[0, 0].flatten(), torch.from_numpy(images[0, :1024]))
        assert torch.equal(d.test_images[-1, 2].flatten(), torch.from_numpy(images[-1, 2048:]))
        assert d.train_labels.tolist() == labels[:100].tolist()
        assert d.fingerprint
    subset = load_cifar10(tmp_path / "root", source="cifar10", train_per_class=2, holdout_per_class=1, seed=1)
    assert torch.bincount(subset.train_labels).tolist() == [2] * 10
    assert torch.equal(subset.holdout_images, d.train_images[subset.holdout_index])


def test_incomplete_batches_name_the_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch") as info:
        load_cifar10(tmp_path, download=False)
    assert str(folder) in str(info.value)


def test_failed_download_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets.cifar

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    root = tmp_path / "data"
    with pytest.raises(DataError) as info:
        load_cifar10(root, download=True)
    message = str(info.value)
    for needle in ("download", str(root), "CIFAR10_ROOT", "--data-dir", "accepted layouts", BATCHES_DIR):
        assert needle in message, needle


def test_bad_arguments_are_refused(tree: Path) -> None:
    with pytest.raises(DataError, match="source must be one of"):
        load_cifar10(tree, source="imagenet")
    with pytest.raises(DataError, match="holdout_per_class"):
        load_cifar10(tree, holdout_per_class=-1)
    with pytest.raises(DataError, match="no image-folder tree"):
        load_cifar10(tree.parent, source="folder")
    with pytest.raises(DataError, match="is a file"):
        load_cifar10(tree / "train" / "ant" / "0000.png", download=False)


def test_resolve_data_root_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(None) == tmp_path / "data"
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "from-env"))
    assert resolve_data_root(None) == tmp_path / "from-env"
    assert resolve_data_root(tmp_path / "given") == tmp_path / "given"
    assert resolve_data_root("~/x") == Path.home() / "x"


# --- the shared copy -------------------------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.slow
def test_shared_copy_loads_and_is_cached(shared_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_cifar10(shared_root, download=False)
    assert first.source == "folder" and first.classes == CIFAR_CLASSES
    assert first.train_images.shape == (50_000, 3, 32, 32) and first.train_images.dtype == torch.uint8
    assert first.test_images.shape == (10_000, 3, 32, 32) and first.test_labels.dtype == torch.int64
    assert torch.bincount(first.train_labels).tolist() == [5000] * 10
    assert torch.bincount(first.test_labels).tolist() == [1000] * 10
    if not folders._dir_is_writable(shared_root):
        # A read-only copy (as in CI, even for root) is never written to: the cache goes elsewhere.
        assert not (shared_root / CACHE_SUBDIR).exists()

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("the shared copy was decoded again instead of read from the cache")

    monkeypatch.setattr(folders, "_decode_images", no_decoding)
    second = load_cifar10(shared_root, download=False, train_per_class=10, test_per_class=10)
    assert torch.equal(second.train_images, first.train_images[second.train_index])
