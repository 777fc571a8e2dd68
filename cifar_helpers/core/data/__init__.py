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

The package, one job per module: ``loading`` (the public entry points: layout detection, dispatch,
stratified subsets), ``batches`` (torchvision's pickled batches), ``folders`` (image-folder trees:
scan, fingerprint, decode, cache), ``generated`` (the synthetic shapes) and ``core`` (the constants,
:class:`CifarData`, :class:`DataError` and the pieces they share). Import the public names from here.
"""

from __future__ import annotations

from .core import (
    ACCEPTED_LAYOUTS,
    BATCHES_DIR,
    CACHE_SUBDIR,
    IMAGE_EXTENSIONS,
    IMAGE_SIZE,
    META_FILE,
    SOURCES,
    TEST_BATCH,
    TRAIN_BATCHES,
    CifarData,
    DataError,
)
from .generated import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_DECOY_RATE,
    SYNTHETIC_HUE_JITTER,
    SYNTHETIC_HUES,
    SYNTHETIC_TEST_PER_CLASS,
    SYNTHETIC_TRAIN_PER_CLASS,
    make_synthetic_cifar,
)
from .loading import load_cifar10, load_data, resolve_data_root, stratified_indices

__all__ = [
    "ACCEPTED_LAYOUTS",
    "BATCHES_DIR",
    "CACHE_SUBDIR",
    "IMAGE_EXTENSIONS",
    "IMAGE_SIZE",
    "META_FILE",
    "SOURCES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_DECOY_RATE",
    "SYNTHETIC_HUES",
    "SYNTHETIC_HUE_JITTER",
    "SYNTHETIC_TEST_PER_CLASS",
    "SYNTHETIC_TRAIN_PER_CLASS",
    "TEST_BATCH",
    "TRAIN_BATCHES",
    "CifarData",
    "DataError",
    "load_cifar10",
    "load_data",
    "make_synthetic_cifar",
    "resolve_data_root",
    "stratified_indices",
]
