"""One typed, validated configuration per run, and the named profiles (README: what each is for).

``make_config("smoke", epochs=3)`` starts from a profile and applies overrides, each checked (type,
range, choices; unknown keys refused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import torch

from cifar_helpers.rundir.artifacts import load_json, save_json
from cifar_helpers.rundir.reproducibility import cpu_supports_bf16

Precision = Literal["auto", "bf16", "fp16", "fp32"]
MemoryFormat = Literal["auto", "channels_last", "contiguous"]
DataSource = Literal["auto", "cifar10", "folder", "synthetic"]

PROFILE_NAMES = ("smoke", "quick", "cpu", "full", "auto")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and what is allowed."""


@dataclass(frozen=True)
class RunConfig:
    """Every knob of a run. Field comments say what each one does and why its default is what it is;
    the defaults are the ``cpu`` profile's but for ``zero_init_residual`` (:data:`PROFILES` holds what
    each profile changes)."""

    profile: str = "cpu"  # the profile the values came from (``auto`` is resolved to cpu or full)
    seed: int = 42  # seeds data subsets, initialisation, batch order and augmentation
    # Seeds the data instead of ``seed`` (subsets, hold-out, generated images); None: ``seed``. Seed
    # replicates fix it, so every seed trains on the same images and is tested on the same ones.
    data_seed: int | None = None
    # --- data -------------------------------------------------------------------------------------
    data_source: DataSource = "auto"  # auto: detect torchvision batches or an image-folder tree
    data_dir: str | None = None  # None: $CIFAR10_ROOT, then ./data
    download: bool = True  # let torchvision download CIFAR-10 when nothing is at data_dir
    train_per_class: int | None = None  # stratified subset of the training set; None = all
    test_per_class: int | None = None  # stratified subset of the test set; None = all
    holdout_per_class: int = 100  # training images kept out of training, for temperature scaling
    # --- model ------------------------------------------------------------------------------------
    # Channels of ResNet-18's first stage (64 is the standard network); 16 is the fastest width per
    # useful FLOP on a CPU, as oneDNN's bf16 kernels want channel counts that are multiples of 16.
    width: int = 16
    zero_init_residual: bool = False  # start every residual block as its shortcut (short schedules)
    # --- optimisation (SGD + Nesterov momentum, cosine annealing per step) ---------------------------
    epochs: int = 19  # as many as fit in about 15 minutes of training on 2 cores with native bf16
    batch_size: int = 128  # more, smaller steps learn more per epoch in a short schedule
    lr: float = 0.1  # peak learning rate, reached after the warm-up
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # applied to all weights, as in the reference CIFAR recipes
    label_smoothing: float = 0.0  # 0 keeps confidences comparable with the original assignment
    warmup_epochs: float = 1.0  # linear warm-up from lr/10: large batches diverge without it
    crop_padding: int = 4  # RandomCrop(32, padding=crop_padding) in the augmented stage
    flip: bool = True  # RandomHorizontalFlip in the augmented stage
    # --- execution --------------------------------------------------------------------------------
    device: str = "auto"  # auto: cuda if available, else cpu
    precision: Precision = "auto"  # auto: see resolved_precision (bf16 / fp16 / fp32 by device)
    # auto: training measures both (core.step_choice); evaluation uses channels_last with bf16 or fp16.
    memory_format: MemoryFormat = "auto"
    # auto: a training stage times eager and torch.compile'd steps and keeps the fastest, counting the
    # compile time against the run's length (core.step_choice); true/false force it.
    compile: bool | Literal["auto"] = "auto"
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default
    eval_batch_size: int = 1000
    # --- analysis ---------------------------------------------------------------------------------
    confidence_threshold: float = 0.9  # a failure is "high confidence" when max prob > this
    gradcam_layer: str = "layer4"  # dotted name of the conv layer Grad-CAM explains
    max_gradcam_failures: int = 256  # heatmaps are computed for at most this many failures
    stress_images: int = 2000  # test images used by the corruption stress test
    sanity_images: int = 64  # images used by the Grad-CAM randomisation test
    # --- human labels (CIFAR-10H, verified label errors; see analysis.human_labels) ------------
    human_labels_dir: str | None = None  # None: $CIFAR10H_ROOT, ../shared/data/human-labels, download
    # A failure is "ambiguous" when the given label's human share is below this (justified in
    # human_labels.py: below 0.8 annotator slips alone explain essentially no image).
    ambiguity_threshold: float = 0.8
    # ROAD faithfulness (notebooks 03, 05, 06): the most confident failures scored, and the shares of
    # pixels removed. Each image costs ~10 ms of imputation per fraction, order and map compared.
    road_images: int = 64
    road_fractions: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes saved with the run

    def to_dict(self) -> dict[str, Any]:
        """The configuration as a plain dict (JSON-ready: tuples become lists, as JSON reads them back)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the configuration as JSON, atomically."""
        return save_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunConfig:
        """Read a configuration written by :meth:`save`, validating it again."""
        values = load_json(path)
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a JSON object of configuration values")
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build and validate a configuration from plain values."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown configuration key(s) {', '.join(map(repr, unknown))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        hints = typing.get_type_hints(cls)
        coerced = {k: _check_type(k, v, hints[k]) for k, v in values.items()}
        config = cls(**coerced)
        config._validate()
        return config

    def replace(self, **overrides: Any) -> RunConfig:
        """A copy with ``overrides`` applied and validated."""
        return RunConfig.from_dict({**self.to_dict(), **overrides})

    def _validate(self) -> None:
        """Check ranges and cross-field rules; raise :class:`ConfigError` naming the key."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # inf and nan pass every range check below (nan compares false both ways) and train nonsense.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
        # (key, its allowed range as the message states it, whether the value lies in it), in the
        # order checked; an optional count (None allowed) is checked only when set.
        ranges = (
            ("epochs", ">= 1", self.epochs >= 1),
            ("batch_size", ">= 1", self.batch_size >= 1),
            ("eval_batch_size", ">= 1", self.eval_batch_size >= 1),
            ("width", ">= 1", self.width >= 1),
            ("lr", "> 0", self.lr > 0),
            ("momentum", "in [0, 1)", 0 <= self.momentum < 1),
            ("weight_decay", ">= 0", self.weight_decay >= 0),
            ("label_smoothing", "in [0, 1)", 0 <= self.label_smoothing < 1),
            ("warmup_epochs", f"in [0, epochs={self.epochs}]", 0 <= self.warmup_epochs <= self.epochs),
            ("crop_padding", ">= 0", self.crop_padding >= 0),
            ("confidence_threshold", "in (0, 1)", 0 < self.confidence_threshold < 1),
            ("ambiguity_threshold", "in (0, 1]", 0 < self.ambiguity_threshold <= 1),
            ("train_per_class", ">= 1", self.train_per_class is None or self.train_per_class >= 1),
            ("test_per_class", ">= 1", self.test_per_class is None or self.test_per_class >= 1),
            ("num_threads", ">= 1", self.num_threads is None or self.num_threads >= 1),
            ("holdout_per_class", ">= 0", self.holdout_per_class >= 0),
            ("max_gradcam_failures", ">= 1", self.max_gradcam_failures >= 1),
            ("stress_images", ">= 1", self.stress_images >= 1),
            ("sanity_images", ">= 1", self.sanity_images >= 1),
            ("road_images", ">= 1", self.road_images >= 1),
        )
        for key, allowed, ok in ranges:
            if not ok:
                raise ConfigError(f"{key} must be {allowed}, got {getattr(self, key)!r}")
        fractions = list(self.road_fractions)
        if not fractions or any(not 0 < f < 1 for f in fractions):
            raise ConfigError(f"road_fractions must be fractions in (0, 1), got {fractions!r}")
        if any(b <= a for a, b in itertools.pairwise(fractions)):
            raise ConfigError(f"road_fractions must be strictly increasing, got {fractions!r}")
        if self.profile not in PROFILE_NAMES:
            raise ConfigError(f"profile must be one of {', '.join(PROFILE_NAMES)}, got {self.profile!r}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    def resolved_device(self) -> torch.device:
        """The torch device this run uses (``auto`` -> cuda when available)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"device={self.device!r} but CUDA is not available; use 'cpu' or 'auto'")
        return torch.device(self.device)

    def resolved_precision(self) -> Literal["bf16", "fp16", "fp32"]:
        """The arithmetic this run trains and infers in on the resolved device; ``fp16`` trains with a
        gradient scaler. ``auto`` is the fastest that computes natively there: bf16 on CUDA >= 8.0 (no
        loss scaling needed); fp16 on 7.x and 6.0, whose bf16 is emulated (though
        ``torch.cuda.is_bf16_supported()`` says yes); fp32 on older GPUs; on a CPU, bf16 where it is
        native."""
        if self.precision != "auto":
            return self.precision
        device = self.resolved_device()
        if device.type != "cuda":
            return "bf16" if cpu_supports_bf16() else "fp32"
        capability = torch.cuda.get_device_capability(device)
        if capability >= (8, 0):
            return "bf16"
        if capability >= (7, 0) or capability == (6, 0):
            return "fp16"
        return "fp32"

    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype of the autocast regions (None: plain fp32)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.resolved_precision())

    def eval_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`cifar_helpers.core.evaluation.predict` (and of the functions that
        call it) for this run, as resolved on this machine."""
        precision = self.resolved_precision()
        return {
            "batch_size": self.eval_batch_size,
            "device": self.resolved_device(),
            "bf16": precision == "bf16",
            "fp16": precision == "fp16",
            "channels_last": self.use_channels_last(),
        }

    def use_channels_last(self) -> bool:
        """Whether tensors and the model use the channels-last memory format."""
        if self.memory_format == "auto":
            return self.resolved_precision() != "fp32"
        return self.memory_format == "channels_last"


# Scalar field types: the Python types accepted for each, and how the error message names it.
_SCALARS: dict[type, tuple[type | tuple[type, ...], str]] = {
    bool: (bool, "true or false"),
    int: (int, "an integer"),
    float: ((int, float), "a number"),
    str: (str, "a string"),
}


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint; ints are accepted for floats."""
    origin = get_origin(hint)
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                with contextlib.suppress(ConfigError):
                    return _check_type(key, value, arg)
        names = " or ".join(
            "None"
            if a is type(None)
            else ", ".join(map(repr, get_args(a)))
            if get_origin(a) is Literal
            else getattr(a, "__name__", str(a))
            for a in args
        )
        raise ConfigError(f"{key} must be {names}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        (item,) = {arg for arg in get_args(hint) if arg is not Ellipsis}
        return tuple(_check_type(key, v, item) for v in value)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a dict, got {value!r}")
        return value
    if hint in _SCALARS:
        accepted, description = _SCALARS[hint]
        # bool is a subclass of int, but true is not a count or a learning rate.
        if not isinstance(value, accepted) or (isinstance(value, bool) and hint is not bool):
            raise ConfigError(f"{key} must be {description}, got {value!r}")
        return float(value) if hint is float else value
    return value


PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        train_per_class=100,
        test_per_class=50,
        holdout_per_class=10,
        width=8,
        epochs=6,  # with small batches, enough for the baseline to make some confident mistakes
        batch_size=25,
        warmup_epochs=0.5,
        # fp32 on one thread: the same numbers on any CPU count, for the nbval references.
        precision="fp32",
        memory_format="contiguous",
        # Eager, never a measured choice: the nbval references must not depend on what a machine picks.
        compile=False,
        num_threads=1,
        eval_batch_size=500,
        max_gradcam_failures=64,
        stress_images=200,
        sanity_images=16,
        road_images=8,
    ),
    "quick": dict(
        # A first look at the whole story on real data in minutes on a 2-core laptop: a tenth of the
        # training set and a narrow network, trained long enough to overfit it, so the baseline is
        # confidently wrong about hundreds of test images and augmentation has something to fix;
        # tested on the whole test set, so the human labels apply.
        train_per_class=500,
        holdout_per_class=50,
        width=8,
        epochs=20,
        # Width 8 gains nothing from bf16 kernels, and fp32 gives every machine the same numbers.
        precision="fp32",
        memory_format="contiguous",
        max_gradcam_failures=128,
        stress_images=500,
        sanity_images=32,
        road_images=32,
    ),
    "cpu": dict(zero_init_residual=True),  # RunConfig's defaults are this profile's
    "full": dict(
        width=64,
        epochs=40,
        stress_images=10000,
        sanity_images=128,
        road_images=256,
    ),
}


def resolve_profile(name: str) -> str:
    """``auto`` -> ``full`` where CUDA is available, else ``cpu``; other names are checked and returned."""
    if name not in PROFILE_NAMES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    if name == "auto":
        return "full" if torch.cuda.is_available() else "cpu"
    return name


def make_config(profile: str = "auto", **overrides: Any) -> RunConfig:
    """A validated :class:`RunConfig` from a named profile plus overrides.

    >>> make_config("smoke", seed=0).epochs
    6
    """
    resolved = resolve_profile(profile)
    return RunConfig.from_dict({**PROFILES[resolved], **overrides, "profile": resolved})
