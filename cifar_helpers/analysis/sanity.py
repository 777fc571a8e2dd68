"""Is Grad-CAM telling us about the model? Two checks with known answers.

1. **Model-parameter randomisation test** (Adebayo et al., 2018): the layers of a copy of the trained
   network are re-initialised cumulatively from the top, and each step's Grad-CAM maps are compared
   with the trained model's by Spearman rank correlation; maps that depend on what was learned must
   decorrelate.
2. **Positive control for background confusion**: on generated images with known object masks, a model
   trained where backgrounds give the class away should put less Grad-CAM mass on the object in its
   failures than one trained where they do not.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from cifar_helpers.analysis.failures import find_high_confidence_failures
from cifar_helpers.analysis.faithfulness import random_maps, road_table
from cifar_helpers.analysis.gradcam import grad_cam, mask_share, pointing_game
from cifar_helpers.core.checks import check_float_images, eval_mode, model_device
from cifar_helpers.core.data import make_synthetic_cifar
from cifar_helpers.core.evaluation import accuracy, predict
from cifar_helpers.core.normalization import normalize
from cifar_helpers.core.training import train_model
from cifar_helpers.rundir.artifacts import load_torch, save_torch
from cifar_helpers.rundir.config import make_config

if TYPE_CHECKING:
    from cifar_helpers.core.data import CifarData
    from cifar_helpers.rundir.config import RunConfig

# Cascading randomisation order, top of the network first: (step name, modules re-initialised).
RANDOMISATION_STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("linear", ("linear",)),
    ("layer4", ("layer4",)),
    ("layer3", ("layer3",)),
    ("layer2", ("layer2",)),
    ("layer1", ("layer1",)),
    ("conv1/bn1", ("conv1", "bn1")),
)
TRAINED_STEP = "trained"  # step 0: nothing randomised (the trained maps against themselves)

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


def spearman_per_image(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between two stacks of float (N, H, W) maps of the same images.

    Returns float64 (N,) in [-1, 1] (ties get average ranks); NaN where either map is constant (0
    would read "no evidence" as "unrelated evidence").
    """
    if reference.shape != other.shape or reference.ndim != 3:
        raise ValueError(
            f"maps must be two (N, H, W) tensors of the same shape, got {tuple(reference.shape)} and "
            f"{tuple(other.shape)}"
        )
    a = reference.detach().flatten(1).cpu().to(torch.float64).numpy()
    b = other.detach().flatten(1).cpu().to(torch.float64).numpy()
    out = np.full(a.shape[0], np.nan)
    for i in range(a.shape[0]):
        if np.ptp(a[i]) == 0 or np.ptp(b[i]) == 0:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[i] = spearmanr(a[i], b[i]).statistic
    return torch.from_numpy(out)


def _nan_mean_std(values: torch.Tensor) -> tuple[float, float]:
    """Mean and population std (ddof 0: defined even for one image) of the non-NaN values, in float64.

    Not torch.nanmean: its summation order differs in the last bit, which would change
    positive_control.json.
    """
    values = values.to(torch.float64)
    valid = values[~torch.isnan(values)]
    return (float(valid.mean()), float(valid.std(unbiased=False))) if valid.numel() else (math.nan, math.nan)


def cascading_randomisation_maps(
    model: nn.Module,
    images_normalised: torch.Tensor,
    *,
    layer: str | None = None,
    seed: int = 0,
    target_classes: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Grad-CAM maps of the trained model and of each cumulatively randomised copy (the model itself is
    left unchanged: a deep copy is randomised; step k re-initialises under ``seed + k``).

    ``images_normalised`` float (N, 3, H, W); ``layer`` the Grad-CAM layer (None: ``layer4``);
    ``target_classes`` int64 (N,), None for the *trained* model's predictions at every step;
    ``batch_size`` images per Grad-CAM pass (None: all at once).

    Returns:
        ``(steps, maps, targets)``: step names (``"trained"`` first, then :data:`RANDOMISATION_STEPS`),
        float32 maps (S, N, H, W) on the CPU, and the int64 (N,) target classes.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    missing = [n for _, names in RANDOMISATION_STEPS for n in names if n not in dict(model.named_modules())]
    if missing:
        raise ValueError(
            f"model has no submodule(s) {', '.join(map(repr, missing))}; the randomisation test expects "
            f"the CIFAR ResNet's {', '.join(n for _, m in RANDOMISATION_STEPS for n in m)}"
        )
    images_normalised = check_float_images("images_normalised", images_normalised)
    if images_normalised.shape[0] == 0:
        raise ValueError(
            f"images_normalised must be (N, 3, H, W) with N >= 1, got {tuple(images_normalised.shape)}"
        )
    device = model_device(model)
    images = images_normalised.to(device)
    if target_classes is None:
        with eval_mode(model), torch.no_grad():
            target_classes = model(images).argmax(dim=1).cpu()
    target_classes = torch.as_tensor(target_classes).long().cpu()

    steps = [TRAINED_STEP]
    maps = [grad_cam(model, images, target_classes, layer, batch_size=batch_size).cpu()]
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    for k, (step, names) in enumerate(RANDOMISATION_STEPS, start=1):
        # Forked so the caller's random state is left as it was; BatchNorm's reset clears its statistics.
        for name in names:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed + k)
                for sub in modules[name].modules():
                    if callable(getattr(sub, "reset_parameters", None)):
                        sub.reset_parameters()
        steps.append(step)
        maps.append(grad_cam(randomised, images, target_classes, layer, batch_size=batch_size).cpu())
    return steps, torch.stack(maps), target_classes


def summarise_randomisation(
    steps: list[str], maps: torch.Tensor, *, layer: str | None = None, seed: int = 0
) -> dict[str, Any]:
    """The cascading model-parameter randomisation test of Adebayo et al. (2018) for Grad-CAM: the
    Spearman correlation of every step's maps (float (S, N, H, W), step 0 the trained model's, from
    :func:`cascading_randomisation_maps`) with the trained maps; ``layer`` and ``seed`` are recorded.

    Returns:
        JSON-ready ``{"steps": [...], "spearman_mean": [...], "spearman_std": [...],
        "num_defined": [...], "num_images", "layer", "seed"}``, one entry per step, the first the
        trained model against itself; means and stds over the ``num_defined`` images whose maps are
        both non-constant (NaN when none).
    """
    if maps.ndim != 4 or maps.shape[0] != len(steps):
        raise ValueError(f"maps must be (S, N, H, W) with S = {len(steps)} steps, got {tuple(maps.shape)}")
    rhos = [spearman_per_image(maps[0], step_maps) for step_maps in maps]
    stats = [_nan_mean_std(rho) for rho in rhos]
    return {
        "steps": list(steps),
        "spearman_mean": [mean for mean, _ in stats],
        "spearman_std": [std for _, std in stats],
        "num_defined": [int((~torch.isnan(rho)).sum()) for rho in rhos],
        "num_images": int(maps.shape[1]),
        "layer": layer if layer is not None else "layer4",
        "seed": int(seed),
    }


def background_positive_control(config: RunConfig, *, out_dir: str | Path) -> dict[str, Any]:
    """Train a background-tied and an untied model on generated data and compare where Grad-CAM looks.

    Both use the smoke recipe with ``config``'s seed, device, threads, Grad-CAM layer and confidence
    threshold, at the fixed ``CONTROL_*`` sizes, and are tested on the same untied images. Failures are
    taken at the highest of ``config.confidence_threshold`` and the :data:`CONTROL_THRESHOLDS` below it
    at which *both* have :data:`CONTROL_MIN_FAILURES` (the lowest otherwise): the few most confident
    failures are dominated by the square/diamond confusion the generated classes invite by design, and
    only over many failures do the tied model's background-driven mistakes show. ``out_dir`` receives
    the checkpoints (``tied/``, ``untied/``; finished ones are reused) and
    ``positive_control_examples.pt``.

    Returns:
        JSON-ready dict (saved by the stress stage as ``positive_control.json``): ``correlation``,
        ``threshold`` (used), ``thresholds_tried``, ``object_area_fraction`` (the mask share of a
        uniform map), ``tied`` and ``untied``, each ``{"test_accuracy", "train_accuracy",
        "num_failures", "mask_share", "mask_share_std", "pointing_game", "failure_object_area",
        "mask_share_all", "pointing_game_all", "road"}`` (``*_all`` over every test image),
        ``mask_share_gap`` and ``pointing_game_gap`` (untied minus tied), the sizes used,
        ``examples_file`` and ``seconds``.
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
    trained = {
        name: _train_control(control, datasets[name], test, out_dir / name) for name in ("tied", "untied")
    }
    threshold, tried = _control_threshold(trained, test.test_labels, control.confidence_threshold)
    normalised = normalize(test.test_images.to(model_device(trained["tied"]["model"])))
    summary: dict[str, Any] = {}
    examples: dict[str, dict[str, torch.Tensor]] = {}
    for name, entry in trained.items():
        summary[name], examples[name] = _explain_control(entry, test, normalised, threshold, config)
    save_torch(out_dir / EXAMPLES_NAME, {"classes": list(test.classes), "threshold": threshold, **examples})
    return {
        "correlation": float(CONTROL_CORRELATION),
        "threshold": float(threshold),
        "thresholds_tried": [float(t) for t in tried],
        "min_failures": CONTROL_MIN_FAILURES,
        "train_per_class": CONTROL_TRAIN_PER_CLASS,
        "test_per_class": CONTROL_TEST_PER_CLASS,
        "epochs": CONTROL_EPOCHS,
        "width": control.width,
        "seed": control.seed,
        "layer": control.gradcam_layer,
        "object_area_fraction": float(test.test_masks.to(torch.float64).mean()),
        "tied": summary["tied"],
        "untied": summary["untied"],
        "mask_share_gap": summary["untied"]["mask_share"] - summary["tied"]["mask_share"],
        "pointing_game_gap": summary["untied"]["pointing_game"] - summary["tied"]["pointing_game"],
        "examples_file": EXAMPLES_NAME,
        "seconds": time.perf_counter() - start,
    }


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
    entry: dict[str, Any], test: CifarData, normalised: torch.Tensor, threshold: float, config: RunConfig
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One control model's Grad-CAM measures (its result entry) and its first failures (for figures)."""
    model, masks = entry["model"], test.test_masks
    predicted = entry["probs"].argmax(dim=1)
    maps = grad_cam(model, normalised, predicted, config.gradcam_layer, batch_size=256).cpu()
    shares = mask_share(maps, masks)
    hits = pointing_game(maps, masks)
    failures = find_high_confidence_failures(entry["probs"], test.test_labels, threshold)
    idx = failures.indices
    share_mean, share_std = _nan_mean_std(shares[idx])
    # ROAD of the failures with their Grad-CAM, a random map, and the true object mask as a map: the mask
    # ranks every object pixel above every background pixel, so its combined score says how much more
    # the prediction rests on the object than on the background.
    road = idx[: config.road_images]
    road_images, fractions = test.test_images[road], config.road_fractions
    k, _, height, width = road_images.shape
    rows = {"gradcam": maps[road], "random": random_maps(k, height, width, seed=config.seed)}
    rows["object"] = masks[road].float()
    summary = {
        "test_accuracy": entry["test_accuracy"],
        "train_accuracy": entry["train_accuracy"],
        "num_failures": len(failures),
        "mask_share": share_mean,
        "mask_share_std": share_std,
        "pointing_game": float(hits[idx].to(torch.float64).mean()) if len(idx) else math.nan,
        "failure_object_area": float(masks[idx].to(torch.float64).mean()) if len(idx) else math.nan,
        "mask_share_all": _nan_mean_std(shares)[0],
        "pointing_game_all": float(hits.to(torch.float64).mean()),
        "road": road_table(model, road_images, predicted[road], rows, fractions=fractions, seed=config.seed),
    }
    keep = idx[:CONTROL_EXAMPLES]
    example = {
        "indices": keep.clone(),
        "images": test.test_images[keep].clone(),
        "masks": masks[keep].clone(),
        "maps": maps[keep].clone(),
        "true_labels": test.test_labels[keep].clone(),
        "predicted": predicted[keep].clone(),
        "confidence": failures.confidence[:CONTROL_EXAMPLES].clone(),
    }
    return summary, example


def load_positive_control_examples(out_dir: str | Path) -> dict[str, Any]:
    """The examples :func:`background_positive_control` saved in ``out_dir``.

    Returns:
        ``{"classes": [...], "threshold": float, "tied": {...}, "untied": {...}}``, each model's
        entry holding ``images`` uint8 (K, 3, 32, 32), ``masks`` bool (K, 32, 32), ``maps`` float32
        (K, 32, 32), ``true_labels`` / ``predicted`` int64 (K,), ``confidence`` float32 (K,), ``indices``.
    """
    path = Path(out_dir) / EXAMPLES_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: run background_positive_control with out_dir={str(out_dir)!r}"
        )
    return load_torch(path)
