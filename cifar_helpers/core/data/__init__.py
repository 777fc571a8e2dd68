"""Finding, validating, decoding and caching CIFAR-10 (or any 32x32 image-folder set).

Everything ends up as uint8 tensors (N, 3, 32, 32) with int64 labels, in a :class:`CifarData`.
Three sources are understood:

* ``cifar10``   - torchvision's ``cifar-10-batches-py`` folder, its pickles read directly (torchvision's
  loader refuses any copy whose md5 differs from the official one); downloaded when absent.
* ``folder``    - an image-folder tree ``train/<class>/*``, ``test/<class>/*`` of 32x32 RGB PNG or JPEG
  files, decoded once and cached under a fingerprint of the tree.
* ``synthetic`` - generated coloured shapes on textured backgrounds, with object masks.

Subsets are class-stratified and seeded: first ``holdout_per_class`` training images per class are
held out (for temperature scaling), then ``train_per_class`` are drawn from what remains and
``test_per_class`` from the test split. Every image keeps its position in the full split
(``train_index`` ...), so any result can be traced back to a file.

One job per module: ``loading`` (the entry points: layout detection, dispatch, stratified subsets),
``batches`` (the pickled batches), ``folders`` (image-folder trees: scan, fingerprint, decode, cache),
``generated`` (the synthetic shapes) and ``common`` (constants, :class:`CifarData`, :class:`DataError`
and what the others share). Import the public names from here.
"""

from __future__ import annotations

from .common import BATCHES_DIR, CACHE_SUBDIR, CifarData, DataError
from .generated import SYNTHETIC_CLASSES, SYNTHETIC_HUE_JITTER, SYNTHETIC_HUES, make_synthetic_cifar
from .loading import load_cifar10, load_data, resolve_data_root, stratified_indices

__all__ = [
    "BATCHES_DIR",
    "CACHE_SUBDIR",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_HUES",
    "SYNTHETIC_HUE_JITTER",
    "CifarData",
    "DataError",
    "load_cifar10",
    "load_data",
    "make_synthetic_cifar",
    "resolve_data_root",
    "stratified_indices",
]
