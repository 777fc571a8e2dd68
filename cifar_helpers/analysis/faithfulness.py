"""Are the heatmaps faithful to the model? ROAD (Rong et al., ICML 2022), a random-map floor, layers
and explainers compared.

ROAD removes the most (MoRF) or least (LeRF) relevant ``f`` of a map's pixels, imputed from their
neighbours (pytorch-grad-cam's ``NoisyLinearImputer``: constant blanking is itself out of distribution);
*combined* is the mean over fractions of (LeRF change - MoRF change) / 2, as ``ROADCombined``: higher
is more faithful, a random map scores 0 on average. Why ties are ranked in a seeded order and the
noise seeded per (order, fraction): docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from cifar_helpers.analysis.gradcam.cam import FailureMaps, explain_images, resolve_layer
from cifar_helpers.core.checks import (
    check_fractions,
    check_images,
    check_maps,
    check_target_classes,
    eval_mode,
    model_device,
)
from cifar_helpers.core.normalization import normalize
from cifar_helpers.rundir.records import Record

MOST_RELEVANT_FIRST = "most_relevant_first"
LEAST_RELEVANT_FIRST = "least_relevant_first"
REMOVAL_ORDERS = (MOST_RELEVANT_FIRST, LEAST_RELEVANT_FIRST)

GRADCAM = "gradcam"  # the project's batched Grad-CAM (analysis.gradcam), identical to the library's
# Then established alternatives from pytorch-grad-cam, by the name used in tables and results.
EXPLAINERS = (GRADCAM, "gradcam++", "hirescam", "scorecam", "eigencam")
RANDOM = "random"
_ROAD_BATCH = 256  # images per forward pass when scoring
_CAM_BATCH = 64  # images per explainer call
ROAD_LAYERS = ("layer2", "layer3", "layer4")  # 16x16, 8x8 and 4x4 maps before upsampling


@dataclass(frozen=True)
class RoadCurves(Record):
    """ROAD of one set of maps of ``num_images`` images over ``fractions``: per order, the mean change in
    the target class's probability per fraction (``most_relevant_first``, ``least_relevant_first``) and
    its standard error (``*_sem``); ``combined``, the mean over fractions of (LeRF - MoRF) / 2 (higher
    is more faithful), its ``combined_sem`` and ``combined_per_image`` (N,). Undefined values (no
    image, or one for an error) are None."""

    num_images: int
    fractions: list[float]
    most_relevant_first: list[float | None]
    most_relevant_first_sem: list[float | None]
    least_relevant_first: list[float | None]
    least_relevant_first_sem: list[float | None]
    combined: float | None
    combined_sem: float | None
    combined_per_image: list[float]


@dataclass(frozen=True)
class RoadTable(Record):
    """ROAD of several sets of maps of the same ``num_images`` images (:func:`road_table`): ``rows``
    ``{name: RoadCurves}`` over ``fractions``, scored in ``seconds``."""

    num_images: int
    fractions: list[float]
    rows: dict[str, RoadCurves]
    seconds: float


@dataclass(frozen=True)
class FailureRoad(RoadTable):
    """Notebook 03's ROAD (:func:`failure_faithfulness`, ``gradcam/road.json``): the table of Grad-CAM
    at each of ``layers``, each of ``explainers`` at ``explainer_layer`` and a random map, on the
    failures at ``indices`` (into the split), the most confident of ``num_failures``; the most
    faithful layer and explainer by combined score (None where none was scored) and the seconds each
    map took."""

    layers: list[str]
    explainers: list[str]
    explainer_layer: str
    best_layer: str | None
    best_explainer: str | None
    map_seconds: dict[str, float]
    indices: list[int]
    num_failures: int


@dataclass(frozen=True)
class RoadByModel(Record):
    """ROAD of each model's own maps of the same ``num_images`` images (:func:`road_by_model`,
    ``reevaluation/road.json``): ``models`` ``{name: RoadTable}`` with rows ``gradcam`` and ``random``."""

    num_images: int
    fractions: list[float]
    models: dict[str, RoadTable]


def _keep_masks(maps: Tensor, fraction: float, order: str, generator: torch.Generator) -> Tensor:
    """Which pixels ROAD keeps when it removes ``fraction`` (in (0, 1)) of them in ``order``.

    ``maps`` float (N, H, W) only rank the pixels; ``generator`` orders tied ones (a seeded random
    tie-break). Returns bool (N, H, W) on the CPU, True where kept: as many per image as the library
    keeps on a map without ties (``RemoveMostRelevantFirst(percentile=100 * (1 - fraction))`` keeps the
    pixels strictly below ``np.percentile``: with distinct values, ``ceil((1 - fraction) * (H W - 1))``).
    """
    n, height, width = maps.shape
    pixels = height * width
    flat = maps.detach().cpu().double().flatten(1)
    # A random permutation first, then a stable sort: ties end up in a random order.
    shuffle = torch.rand((n, pixels), generator=generator).argsort(dim=1)
    ascending = shuffle.gather(1, torch.sort(flat.gather(1, shuffle), dim=1, stable=True).indices)
    kept = math.ceil(round((1.0 - fraction) * (pixels - 1), 9))
    # MoRF keeps the least relevant pixels, LeRF the most relevant.
    chosen = ascending[:, :kept] if order == MOST_RELEVANT_FIRST else ascending[:, pixels - kept :]
    keep = torch.zeros((n, pixels), dtype=torch.bool).scatter_(1, chosen, True)
    return keep.view(n, height, width)


def _impute(images: Tensor, keep: Tensor, *, seed: int) -> Tensor:
    """Replace the pixels not kept (``keep`` bool (N, H, W)) of float (N, 3, H, W) normalised ``images``
    by pytorch-grad-cam's noisy linear imputation, its noise seeded by ``seed`` (the caller's global
    generator is left as it was): float32 (N, 3, H, W) on the CPU."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    imputer = NoisyLinearImputer()
    images = images.detach().float().cpu()
    out = torch.empty_like(images)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        # The imputer hands torch tensors to np.argwhere, which NumPy 2 warns about; harmless here.
        warnings.filterwarnings("ignore", message="__array_wrap__", category=DeprecationWarning)
        torch.manual_seed(seed)
        for i in range(len(images)):
            out[i] = imputer(images[i], keep[i].float())
    return out


def _target_probabilities(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    device = model_device(model, x.device)
    out = torch.empty(len(x), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(x), _ROAD_BATCH):
            logits = model(x[start : start + _ROAD_BATCH].to(device)).float()
            probs = logits.softmax(dim=1).gather(1, targets[start : start + _ROAD_BATCH, None].to(device))
            out[start : start + _ROAD_BATCH] = probs[:, 0].double().cpu()
    return out


def _road_change(
    model: nn.Module,
    images: Tensor,
    target_classes: Tensor,
    maps: Tensor,
    fraction: float,
    order: str,
    *,
    seed: int = 0,
) -> Tensor:
    """Per image, float64 (N,) on the CPU: the target class's probability after ROAD removes ``fraction``
    in ``order`` (:func:`_keep_masks`) minus before. ``images`` float (N, 3, H, W) normalised,
    ``target_classes`` int64 (N,), ``maps`` float (N, H, W); ``seed`` seeds the tie-break and the noise."""
    n, _, height, width = images.shape
    targets = check_target_classes("target_classes", target_classes, n)
    maps = check_maps("maps", maps, (n, height, width)).cpu()
    keep = _keep_masks(maps, fraction, order, torch.Generator().manual_seed(seed))
    imputed = _impute(images, keep, seed=seed)
    with eval_mode(model):
        before = _target_probabilities(model, images.detach().float().cpu(), targets)
        after = _target_probabilities(model, imputed, targets)
    return after - before


def _road_curves(
    model: nn.Module,
    images: Tensor,
    target_classes: Tensor,
    maps: Tensor,
    fractions: Sequence[float],
    *,
    seed: int = 0,
) -> RoadCurves:
    """ROAD most- and least-relevant-first curves over ``fractions`` (strictly increasing in (0, 1)) and
    their combination; arguments as for :func:`_road_change`, each (order, fraction) seeded on its own
    so its noise does not depend on the other fractions."""
    fractions = check_fractions("fractions", fractions, increasing=True).tolist()
    n = len(images)
    change = partial(_road_change, model, images, target_classes, maps)
    curves: list[list[float | None]] = []
    changes: dict[str, Tensor] = {}
    for i, order in enumerate(REMOVAL_ORDERS):
        per_fraction = [
            change(f, order, seed=seed * 1_000_003 + i * 1_000 + round(f * 1000)) for f in fractions
        ]
        changes[order] = torch.stack(per_fraction, dim=1) if n else torch.zeros((0, len(fractions)))
        curves.append(changes[order].mean(dim=0).tolist() if n else [None] * len(fractions))
        curves.append(
            (changes[order].std(dim=0) / math.sqrt(n)).tolist() if n > 1 else [None] * len(fractions)
        )
    combined = ((changes[LEAST_RELEVANT_FIRST] - changes[MOST_RELEVANT_FIRST]) / 2).mean(dim=1)
    return RoadCurves(
        n,
        fractions,
        *curves,
        float(combined.mean()) if n else None,
        float(combined.std() / math.sqrt(n)) if n > 1 else None,
        combined.tolist(),
    )


def random_maps(n: int, height: int, width: int, *, seed: int) -> Tensor:
    """Uniform noise per pixel, float32 (N, H, W): a map that knows nothing about the model."""
    return torch.rand((n, height, width), generator=torch.Generator().manual_seed(seed))


def _explainer_maps(
    model: nn.Module,
    images_uint8: Tensor,
    target_classes: Tensor,
    method: str,
    *,
    layer: nn.Module | str | None = None,
) -> Tensor:
    """Maps of ``method`` (one of :data:`EXPLAINERS`) of uint8 (N, 3, H, W) ``images_uint8`` for int64
    (N,) ``target_classes``: float32 (N, H, W) on the CPU in [0, 1] (the library's min-max scaling).
    ``model`` (fp32) keeps its modes and ``.grad``; ``layer`` as for :func:`resolve_layer`."""
    if method == GRADCAM:
        return explain_images(model, images_uint8, target_classes, layer=layer, batch_size=_CAM_BATCH)
    from pytorch_grad_cam import EigenCAM, GradCAMPlusPlus, HiResCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = {"gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "scorecam": ScoreCAM, "eigencam": EigenCAM}
    if method not in classes:
        raise ValueError(f"method must be one of {', '.join(classes)}, got {method!r}")
    n, _, height, width = images_uint8.shape
    target_layer = resolve_layer(model, layer)
    device = model_device(model, images_uint8.device)
    maps = torch.zeros((n, height, width), dtype=torch.float32)
    grads_before = [p.grad for p in model.parameters()]
    try:
        with eval_mode(model), classes[method](model=model, target_layers=[target_layer]) as cam:
            # Score-CAM: all of one image's channel-masked copies in one forward pass.
            cam.batch_size = 1024
            for start in range(0, n, _CAM_BATCH):
                x = normalize(images_uint8[start : start + _CAM_BATCH].to(device))
                wanted = [ClassifierOutputTarget(int(c)) for c in target_classes[start : start + _CAM_BATCH]]
                # Score-CAM prints a progress bar per image; keep notebook outputs clean.
                with contextlib.redirect_stderr(io.StringIO()):
                    maps[start : start + _CAM_BATCH] = torch.from_numpy(cam(input_tensor=x, targets=wanted))
    finally:
        for p, grad in zip(model.parameters(), grads_before, strict=True):
            p.grad = grad
    return maps


def map_key(method: str, layer: str) -> str:
    """How a (method, layer) pair is named in results: ``"gradcam@layer4"``."""
    return f"{method}@{layer}"


def road_table(
    model: nn.Module,
    images_uint8: Tensor,
    target_classes: Tensor,
    maps: dict[str, Tensor],
    *,
    fractions: Sequence[float],
    seed: int = 0,
) -> RoadTable:
    """ROAD curves (:func:`_road_curves`) of several sets of maps of the same images, every set scored
    with the same seed, so differences between rows come from the maps alone.

    ``images_uint8`` uint8 (N, 3, H, W); ``target_classes`` int64 (N,), the class explained;
    ``maps`` ``{name: float (N, H, W)}``, the table's rows.
    """
    images_uint8 = check_images("images_uint8", images_uint8)
    fractions = check_fractions("fractions", fractions, increasing=True).tolist()
    start = time.perf_counter()
    images = normalize(images_uint8.cpu())
    rows = {
        name: _road_curves(model, images, target_classes, m, fractions, seed=seed) for name, m in maps.items()
    }
    return RoadTable(len(images_uint8), fractions, rows, time.perf_counter() - start)


def _best_map(table: RoadTable, candidates: Sequence[str]) -> str | None:
    """The candidate row of ``table`` with the highest combined ROAD score (None if none)."""
    scored = [(table.rows[c].combined, c) for c in candidates if c in table.rows]
    scored = [(score, c) for score, c in scored if score is not None]
    return max(scored)[1] if scored else None


def failure_faithfulness(
    model: nn.Module,
    images_uint8: Tensor,
    failure_maps: FailureMaps,
    config: Any,
) -> tuple[FailureRoad, dict[str, Any]]:
    """Notebook 03's faithfulness section in one call: on the ``config.road_images`` most confident
    failures, Grad-CAM at each of :data:`ROAD_LAYERS`, each of :data:`EXPLAINERS` at
    ``config.gradcam_layer`` and a random map, scored by ROAD (:func:`road_table`).

    ``images_uint8`` uint8 (N, 3, H, W) is the whole split; ``failure_maps`` from
    :func:`cifar_helpers.analysis.gradcam.gradcam_for_failures`, whose ``predicted`` class is explained.

    Returns:
        The :class:`FailureRoad`, and the maps scored: ``indices``, ``predicted`` and ``maps``
        (``{"gradcam@layer2": float32 (K, H, W), ..., "random"}``).
    """
    k = min(config.road_images, len(failure_maps))
    indices, targets = failure_maps.indices[:k], failure_maps.predicted[:k]
    images = check_images("images_uint8", images_uint8[indices])
    explainer_layer, seed = config.gradcam_layer, config.seed
    jobs = [(GRADCAM, layer) for layer in ROAD_LAYERS]
    jobs += [(method, explainer_layer) for method in EXPLAINERS if (method, explainer_layer) not in jobs]
    maps: dict[str, Tensor] = {}
    map_seconds: dict[str, float] = {}
    for method, layer in jobs:
        start = time.perf_counter()
        key = map_key(method, layer)
        maps[key] = _explainer_maps(model, images, targets, method, layer=layer)
        map_seconds[key] = time.perf_counter() - start
    maps[RANDOM] = random_maps(k, *images.shape[2:], seed=seed)
    map_seconds[RANDOM] = 0.0
    table = road_table(model, images, targets, maps, fractions=config.road_fractions, seed=seed)
    best_layer = _best_map(table, [map_key(GRADCAM, layer) for layer in ROAD_LAYERS])
    best_explainer = _best_map(table, [map_key(e, explainer_layer) for e in EXPLAINERS])
    report = FailureRoad(
        **vars(table),
        layers=list(ROAD_LAYERS),
        explainers=list(EXPLAINERS),
        explainer_layer=explainer_layer,
        best_layer=None if best_layer is None else best_layer.split("@", 1)[1],
        best_explainer=None if best_explainer is None else best_explainer.split("@", 1)[0],
        map_seconds=map_seconds,
        indices=indices.tolist(),
        num_failures=len(failure_maps),
    )
    return report, {"indices": indices, "predicted": targets, "maps": maps}


def road_by_model(
    models: dict[str, nn.Module],
    images_uint8: Tensor,
    targets: dict[str, Tensor],
    maps: dict[str, Tensor],
    *,
    fractions: Sequence[float],
    seed: int = 0,
) -> RoadByModel:
    """ROAD of each model's own maps of the same images, each against the same random floor.

    ``models`` ``{name: model}``; ``images_uint8`` uint8 (K, 3, H, W), scored for every model;
    ``targets`` ``{name: int64 (K,)}``, the class each model's maps explain (its own prediction);
    ``maps`` ``{name: float (K, H, W)}``; ``fractions``, ``seed`` as for :func:`road_table`.
    """
    images_uint8 = check_images("images_uint8", images_uint8)
    n, _, height, width = images_uint8.shape
    floor = random_maps(n, height, width, seed=seed)
    tables = {}
    for name, model in models.items():
        rows = {GRADCAM: maps[name], RANDOM: floor}
        tables[name] = road_table(model, images_uint8, targets[name], rows, fractions=fractions, seed=seed)
    return RoadByModel(n, check_fractions("fractions", fractions, increasing=True).tolist(), tables)
