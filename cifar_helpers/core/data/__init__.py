"""CIFAR-10 as uint8 (N, 3, 32, 32) images and int64 labels in a :class:`CifarData`, from torchvision's
batches (``batches``), an image-folder tree (``folders``) or generated shapes (``generated``), in seeded,
class-stratified subsets (``loading``). Import the public names from here."""

from __future__ import annotations

from .common import BATCHES_DIR, CifarData, DataError
from .folders import CACHE_SUBDIR
from .generated import SYNTHETIC_CLASSES, SYNTHETIC_HUE_JITTER, SYNTHETIC_HUES, make_synthetic_cifar
from .loading import load_cifar10, load_data, resolve_data_root
