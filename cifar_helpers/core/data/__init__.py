"""Finding, validating, decoding and caching CIFAR-10 (or any 32x32 image-folder set).

Everything ends up as uint8 (N, 3, 32, 32) images with int64 labels in a :class:`CifarData`, from one
of three sources: ``cifar10`` (torchvision's ``cifar-10-batches-py`` pickles, read directly because
torchvision's loader refuses any copy whose md5 differs), ``folder`` (an image-folder tree, decoded once
and cached) or ``synthetic`` (generated shapes with object masks). Subsets are class-stratified and
seeded, and every image keeps its position in the full split (``train_index`` ...). Import the public
names from here.
"""

from __future__ import annotations

from .common import BATCHES_DIR, CACHE_SUBDIR, CifarData, DataError
from .generated import SYNTHETIC_CLASSES, SYNTHETIC_HUE_JITTER, SYNTHETIC_HUES, make_synthetic_cifar
from .loading import load_cifar10, load_data, resolve_data_root, stratified_indices
