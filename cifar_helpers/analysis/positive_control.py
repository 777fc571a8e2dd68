"""A positive control for background confusion: does Grad-CAM show a cause we planted?

On generated images with known object masks, a model trained where backgrounds give the class away
should put less Grad-CAM mass on the object in its failures than one trained where they do not.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cifar_helpers.analysis.failures import find_high_confidence_failures
from cifar_helpers.analysis.faithfulness import RoadTable, random_maps, road_table
from cifar_helpers.analysis.gradcam import explain_images, mask_share, pointing_game
from cifar_helpers.analysis.sanity import nan_mean_std
from cifar_helpers.core.data import make_synthetic_cifar
from cifar_helpers.core.evaluation import accuracy, predict
from cifar_helpers.core.training import train_model
from cifar_helpers.rundir.artifacts import load_torch, save_torch
from cifar_helpers.rundir.config import make_config
from cifar_helpers.rundir.records import Record

if TYPE_CHECKING:
    from cifar_helpers.core.data import CifarData
    from cifar_helpers.rundir.config import RunConfig

# Thresholds tried, highest first, until both positive-control models have enough failures.
CONTROL_THRESHOLDS: tuple[float, ...] = (0.9, 0.8, 0.7, 0.6, 0.5)
# Failures each control model needs at the chosen threshold (why 50: background_positive_control).
CONTROL_MIN_FAILURES = 50
# Size of the control, the same in every profile (its own epochs, not the profile's).
CONTROL_TRAIN_PER_CLASS = 100
CONTROL_TEST_PER_CLASS = 100
CONTROL_EPOCHS = 4
CONTROL_CORRELATION = 0.9  # probability that a tied training image has its class's tied background
CONTROL_EXAMPLES = 8  # failures per model saved (image, mask, map) for figures
EXAMPLES_NAME = "positive_control_examples.pt"
CONTROL_MODELS = ("tied", "untied")  # the two models, in the order they are saved


@dataclass(frozen=True)
class ControlModel(Record):
    """One control model's measures: an entry ``tied`` or ``untied`` of ``positive_control.json``.

    ``mask_share`` (its std), ``pointing_game`` and ``failure_object_area`` are over the model's
    ``num_failures`` confident failures (NaN when there are none), ``*_all`` over every test image;
    ``road`` is :func:`cifar_helpers.analysis.faithfulness.road_table`'s result on the failures (Grad-CAM,
    a random map and the object mask as the map).
    """

    test_accuracy: float
    train_accuracy: float
    num_failures: int
    mask_share: float
    mask_share_std: float
    pointing_game: float
    failure_object_area: float
    mask_share_all: float
    pointing_game_all: float
    road: RoadTable


@dataclass(frozen=True)
class PositiveControl(Record):
    """The positive control's result (:func:`background_positive_control`, ``positive_control.json``).

    ``correlation``: the share of tied training images with their class's background; ``threshold``:
    the confidence threshold used, of ``thresholds_tried``; ``min_failures`` each model needed there;
    the control's sizes, width, seed and Grad-CAM ``layer``; ``object_area_fraction``: the mask share
    of a uniform map; ``tied`` and ``untied``: each model's measures; ``examples_file``: the failures
    kept for figures (:func:`load_positive_control_examples`); ``seconds``: how long it took.
    """

    correlation: float
    threshold: float
    thresholds_tried: tuple[float, ...]
    min_failures: int
    train_per_class: int
    test_per_class: int
    epochs: int
    width: int
    seed: int
    layer: str
    object_area_fraction: float
    tied: ControlModel
    untied: ControlModel
    examples_file: str
    seconds: float

    @property
    def mask_share_gap(self) -> float:
        """The untied model's mask share on its failures minus the tied model's."""
        return self.untied.mask_share - self.tied.mask_share

    @property
    def pointing_game_gap(self) -> float:
        """The untied model's pointing-game hit rate on its failures minus the tied model's."""
        return self.untied.pointing_game - self.tied.pointing_game

    @property
    def models(self) -> dict[str, ControlModel]:
        """``{"tied": ..., "untied": ...}``, in the order of :data:`CONTROL_MODELS`."""
        return {"tied": self.tied, "untied": self.untied}

    def to_dict(self) -> dict[str, Any]:
        """The fields with the two gaps (which ``from_dict`` does not read: they follow from the models)
        between the models and the examples file: the layout of ``positive_control.json``."""
        saved = super().to_dict()
        timing = {key: saved.pop(key) for key in ("examples_file", "seconds")}
        gaps = {"mask_share_gap": self.mask_share_gap, "pointing_game_gap": self.pointing_game_gap}
        return {**saved, **gaps, **timing}


@dataclass(frozen=True, eq=False)
class FailureExamples(Record):
    """One control model's first confident failures, for figures: ``indices`` int64 (K,) into the test
    split, ``images`` uint8 (K, 3, 32, 32), ``masks`` bool (K, 32, 32), ``maps`` float32 (K, 32, 32),
    ``true_labels`` / ``predicted`` int64 (K,), ``confidence`` float32 (K,). (No ``==``: tensors.)"""

    indices: torch.Tensor
    images: torch.Tensor
    masks: torch.Tensor
    maps: torch.Tensor
    true_labels: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor


@dataclass(frozen=True, eq=False)
class ControlExamples(Record):
    """The failures :func:`background_positive_control` keeps (``positive_control_examples.pt``): the
    generated ``classes``, the confidence ``threshold`` used, and each model's first failures."""

    classes: tuple[str, ...]
    threshold: float
    tied: FailureExamples
    untied: FailureExamples

    @property
    def models(self) -> dict[str, FailureExamples]:
        """``{"tied": ..., "untied": ...}``, in the order of :data:`CONTROL_MODELS`."""
        return {"tied": self.tied, "untied": self.untied}


def background_positive_control(config: RunConfig, *, out_dir: str | Path) -> PositiveControl:
    """Train a background-tied and an untied model on generated data and compare where Grad-CAM looks.

    Both use the smoke recipe with ``config``'s seed, device, threads, Grad-CAM layer and confidence
    threshold, at the fixed ``CONTROL_*`` sizes, and are tested on the same untied images. Failures are
    taken at the highest of ``config.confidence_threshold`` and the :data:`CONTROL_THRESHOLDS` below it
    at which *both* have :data:`CONTROL_MIN_FAILURES` (the lowest otherwise): the few most confident
    failures are dominated by the square/diamond confusion the generated classes invite by design, and
    only over many failures do the tied model's background-driven mistakes show. ``out_dir`` receives
    the checkpoints (``tied/``, ``untied/``; finished ones are reused) and
    ``positive_control_examples.pt`` (:class:`ControlExamples`).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    control = make_config(
        "smoke",
        seed=config.seed,
        device=config.device,
        num_threads=config.num_threads,
        data_source="synthetic",
        train_per_class=CONTROL_TRAIN_PER_CLASS,
        test_per_class=CONTROL_TEST_PER_CLASS,
        holdout_per_class=0,
        epochs=CONTROL_EPOCHS,
        confidence_threshold=config.confidence_threshold,
        gradcam_layer=config.gradcam_layer,
    )
    # No decoy colours: the control isolates one cause of failure, the background.
    datasets = {
        name: make_synthetic_cifar(
            CONTROL_TRAIN_PER_CLASS,
            CONTROL_TEST_PER_CLASS,
            seed=control.seed,
            background_class_correlation=correlation,
            decoy_colour_rate=0.0,
        )
        for name, correlation in (("untied", 0.0), ("tied", CONTROL_CORRELATION))
    }
    test = datasets["untied"]  # both share the test split: backgrounds there are never tied
    trained = {name: _train_control(control, datasets[name], test, out_dir / name) for name in CONTROL_MODELS}
    threshold, tried = _control_threshold(trained, test.test_labels, control.confidence_threshold)
    summary: dict[str, ControlModel] = {}
    examples: dict[str, FailureExamples] = {}
    for name, entry in trained.items():
        summary[name], examples[name] = _explain_control(entry, test, threshold, config)
    kept = ControlExamples(tuple(test.classes), threshold, examples["tied"], examples["untied"])
    save_torch(out_dir / EXAMPLES_NAME, kept.to_dict())
    return PositiveControl(
        correlation=float(CONTROL_CORRELATION),
        threshold=float(threshold),
        thresholds_tried=tuple(float(t) for t in tried),
        min_failures=CONTROL_MIN_FAILURES,
        train_per_class=CONTROL_TRAIN_PER_CLASS,
        test_per_class=CONTROL_TEST_PER_CLASS,
        epochs=CONTROL_EPOCHS,
        width=control.width,
        seed=control.seed,
        layer=control.gradcam_layer,
        object_area_fraction=float(test.test_masks.to(torch.float64).mean()),
        tied=summary["tied"],
        untied=summary["untied"],
        examples_file=EXAMPLES_NAME,
        seconds=time.perf_counter() - start,
    )


def _train_control(control: RunConfig, data: CifarData, test: CifarData, out_dir: Path) -> dict[str, Any]:
    """One control model trained (or resumed) on ``data``'s training split and tested on ``test``'s."""
    result = train_model(
        control,
        data.train_images,
        data.train_labels,
        test.test_images,
        test.test_labels,
        out_dir,
        augment=False,
        num_classes=len(data.classes),
        progress=False,
        resume=True,
    )
    model = result.model.eval()
    tested = predict(model, test.test_images, test.test_labels, **control.eval_options())
    train = predict(model, data.train_images, data.train_labels, **control.eval_options())
    return {
        "model": model,
        "probs": tested.probs,
        "test_accuracy": accuracy(tested),
        "train_accuracy": accuracy(train),
    }


def _control_threshold(
    trained: dict[str, dict[str, Any]], labels: torch.Tensor, configured: float
) -> tuple[float, list[float]]:
    """The highest threshold tried at which every model has :data:`CONTROL_MIN_FAILURES`, and those tried."""
    tried = [t for t in CONTROL_THRESHOLDS if t <= configured]
    if not tried or tried[0] != configured:
        tried.insert(0, configured)
    for candidate in tried:
        counts = [len(find_high_confidence_failures(t["probs"], labels, candidate)) for t in trained.values()]
        if min(counts) >= CONTROL_MIN_FAILURES:
            return candidate, tried
    return tried[-1], tried


def _explain_control(
    entry: dict[str, Any], test: CifarData, threshold: float, config: RunConfig
) -> tuple[ControlModel, FailureExamples]:
    """One control model's Grad-CAM measures (its result entry) and its first failures (for figures)."""
    model, masks = entry["model"], test.test_masks
    predicted = entry["probs"].argmax(dim=1)
    maps = explain_images(model, test.test_images, predicted, layer=config.gradcam_layer)
    shares = mask_share(maps, masks)
    hits = pointing_game(maps, masks)
    failures = find_high_confidence_failures(entry["probs"], test.test_labels, threshold)
    idx = failures.indices
    share_mean, share_std = nan_mean_std(shares[idx])
    # ROAD of the failures with their Grad-CAM, a random map, and the true object mask as a map: the mask
    # ranks every object pixel above every background pixel, so its combined score says how much more
    # the prediction rests on the object than on the background.
    road = idx[: config.road_images]
    road_images, fractions = test.test_images[road], config.road_fractions
    k, _, height, width = road_images.shape
    rows = {"gradcam": maps[road], "random": random_maps(k, height, width, seed=config.seed)}
    rows["object"] = masks[road].float()
    summary = ControlModel(
        test_accuracy=entry["test_accuracy"],
        train_accuracy=entry["train_accuracy"],
        num_failures=len(failures),
        mask_share=share_mean,
        mask_share_std=share_std,
        pointing_game=float(hits[idx].to(torch.float64).mean()) if len(idx) else math.nan,
        failure_object_area=float(masks[idx].to(torch.float64).mean()) if len(idx) else math.nan,
        mask_share_all=nan_mean_std(shares)[0],
        pointing_game_all=float(hits.to(torch.float64).mean()),
        road=road_table(model, road_images, predicted[road], rows, fractions=fractions, seed=config.seed),
    )
    keep = idx[:CONTROL_EXAMPLES]
    example = FailureExamples(
        indices=keep.clone(),
        images=test.test_images[keep].clone(),
        masks=masks[keep].clone(),
        maps=maps[keep].clone(),
        true_labels=test.test_labels[keep].clone(),
        predicted=predicted[keep].clone(),
        confidence=failures.confidence[:CONTROL_EXAMPLES].clone(),
    )
    return summary, example


def load_positive_control_examples(out_dir: str | Path) -> ControlExamples:
    """The :class:`ControlExamples` :func:`background_positive_control` saved in ``out_dir``."""
    path = Path(out_dir) / EXAMPLES_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run background_positive_control with out_dir={str(out_dir)!r}"
        )
    return ControlExamples.from_dict(load_torch(path))
