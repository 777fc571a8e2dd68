"""The planted-cause bench: is each claim test *sensitive* (supported where its cause is planted) and
*specific* (nowhere else)? Every test of :mod:`.probes` runs on a small model per planted cause of
generated data through the same functions as on CIFAR-10 (no object mask or planted label reaches a
test); a real-data verdict counts only for a test whose row of the matrix is right (:func:`bench_gate`).
Objects are centred, as CIFAR-10 frames them, and untied backgrounds grey, so that no cause is there by
accident; ``none`` has only a small model's fragility, ``label noise`` is its model on flipped labels.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from cifar_helpers.analysis.failures import FailureSet, find_high_confidence_failures
from cifar_helpers.analysis.faithfulness import GRADCAM, RANDOM, map_key, random_maps, road_table
from cifar_helpers.analysis.gradcam import gradcam_for_failures
from cifar_helpers.analysis.interventions import other_classes
from cifar_helpers.core.data import CifarData, make_synthetic_cifar
from cifar_helpers.core.evaluation import Predictions, predict
from cifar_helpers.core.training import train_model
from cifar_helpers.rundir.config import make_config

from .probes import (
    GRADCAM_CLAIM_LAYER,
    background_claim,
    background_shares,
    gradcam_claim,
    off_center_claim,
    reseed_claims,
    road_check,
    texture_claim,
)
from .rules import BENCH, SUPPORTED, ClaimResult

if TYPE_CHECKING:
    from cifar_helpers.rundir.config import RunConfig

CAUSES = ("none", "background", "texture", "off-center", "label noise")
NONE, BACKGROUND, TEXTURE, OFF_CENTER, LABEL_NOISE = CAUSES
CAUSE_OF_CLAIM = {3: BACKGROUND, 4: TEXTURE, 5: BACKGROUND, 6: OFF_CENTER}  # the diagonal
_RECIPES: dict[str, dict[str, Any]] = {
    NONE: {},
    BACKGROUND: {"background_class_correlation": 0.9, "test_cue_conflict": 0.7},
    TEXTURE: {"texture_class_correlation": 0.7, "test_cue_conflict": 0.5, "random_object_colour": True},
    OFF_CENTER: {"test_off_center_rate": 0.15},
    LABEL_NOISE: {},
}
# Sizes, the same in every profile, so the bench answers the same way on a laptop and in CI.
BENCH_TRAIN_PER_CLASS = 100
BENCH_TEST_PER_CLASS = 500  # 5,000 test images: several hundred failures per model
BENCH_HOLDOUT_PER_CLASS = 20  # the donors of claims 3 and 4, never trained on
BENCH_EPOCHS = 6
LABEL_NOISE_RATE = 0.25
# Why 0.5: the bench's small models are rarely very sure, and every test compares failures with
# controls of matched confidence, so the threshold only decides which errors count as confident.
BENCH_THRESHOLD = 0.5
BENCH_FAILURES = 400  # failures tested per model: intervals of about ±0.07
MODELS = ("baseline", "augmented", "reseeded")  # per cause: claim 6's fixers beside the baseline
BENCH_ROAD_IMAGES = 40  # failures scored by ROAD: enough for its bootstrap (20) at any profile
NO_BENCH = "the planted-cause bench has not run yet (06_stress_tests)"


def _bench_data(cause: str, seed: int) -> CifarData:
    """The generated dataset of one planted ``cause`` (one of :data:`CAUSES`), at the bench's sizes."""
    sizes = (BENCH_TRAIN_PER_CLASS, BENCH_TEST_PER_CLASS)
    options = {"holdout_per_class": BENCH_HOLDOUT_PER_CLASS, "decoy_colour_rate": 0.0, "centred": True}
    # Grey backgrounds: a random background of an object's hue would be a background cause of its own.
    options["grey_backgrounds"] = True
    data = make_synthetic_cifar(*sizes, seed=seed, **options, **_RECIPES[cause])
    if cause != LABEL_NOISE:
        return data
    generator = torch.Generator().manual_seed(seed)
    labels = data.test_labels
    flip = torch.rand(len(labels), generator=generator) < LABEL_NOISE_RATE
    other = other_classes(labels, len(data.classes), generator)
    return replace(data, test_labels=torch.where(flip, other, labels))


def run_bench(config: RunConfig, out_dir: str | Path) -> list[ClaimResult]:
    """Every claim test (3-6) on every planted cause: the bench's rows, population ``"bench: <cause>"``.

    The models use the smoke recipe (one CPU thread) with ``config``'s seed and device at the bench's
    sizes; their checkpoints go to ``out_dir/<cause>/<model>/`` (finished ones are reused). Claim 6's
    row is its replicate test (:func:`.probes.reseed_claims`, the augmented and reseeded twins as
    fixers); its details add the single-run test (:func:`.probes.off_center_claim`), which cannot tell
    the two apart.
    """
    bench = make_config(
        "smoke",
        seed=config.seed,
        device=config.device,  # one thread (smoke's): the same matrix on every profile of a machine
        data_source="synthetic",
        train_per_class=BENCH_TRAIN_PER_CLASS,
        test_per_class=BENCH_TEST_PER_CLASS,
        holdout_per_class=BENCH_HOLDOUT_PER_CLASS,
        epochs=BENCH_EPOCHS,
    )
    threads = torch.get_num_threads()  # training sets one thread process-wide; given back at the end
    jobs = [(cause, name) for cause in CAUSES if cause != LABEL_NOISE for name in MODELS]
    if bench.resolved_device().type == "cpu" and threads > 1:
        # The models are independent and each trains at one thread: as many at a time as this
        # process has threads, in fresh processes (spawn works on every OS and inside a notebook).
        # Each saves its checkpoint, which the loop below then loads: the same weights as in turn.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(threads, len(jobs)), mp_context=context) as pool:
            list(pool.map(_train_job, repeat(bench), repeat(Path(out_dir)), jobs))
    rows, models = [], {}
    try:
        for cause in CAUSES:
            data = _bench_data(cause, bench.seed)
            if cause != LABEL_NOISE:  # label noise is the none model's, tested on flipped labels
                models[cause] = {name: _train(bench, data, Path(out_dir), cause, name) for name in MODELS}
            rows += _cause_rows(bench, cause, data, models[NONE if cause == LABEL_NOISE else cause])
    finally:
        torch.set_num_threads(threads)
    return rows


def _train_job(config: RunConfig, out_dir: Path, job: tuple[str, str]) -> None:
    cause, name = job
    _train(config, _bench_data(cause, config.seed), out_dir, cause, name)


def _train(config: RunConfig, data: CifarData, out_dir: Path, cause: str, name: str) -> nn.Module:
    """The bench's model ``name`` (one of :data:`MODELS`) of ``cause``, trained or loaded when finished."""
    seed = config.seed + 1 if name == "reseeded" else config.seed
    result = train_model(
        replace(config, seed=seed),
        data.train_images,
        data.train_labels,
        data.test_images,
        data.test_labels,
        out_dir / cause / name,
        augment=name == "augmented",
        num_classes=len(data.classes),
        progress=False,
        resume=True,
    )
    return result.model.eval()


def _fixed(model: nn.Module, data: CifarData, failures: FailureSet, options: dict[str, Any]) -> torch.Tensor:
    """The failures ``model`` gets right: int64 indices into the test split."""
    preds = predict(model, data.test_images, data.test_labels, **options).preds
    return failures.indices[preds[failures.indices] == data.test_labels[failures.indices]]


def _cause_rows(
    config: RunConfig, cause: str, data: CifarData, models: dict[str, nn.Module]
) -> list[ClaimResult]:
    """Claims 3-6 on the baseline of one cause (claim 6 with its augmented and reseeded twins as fixers)."""
    options, seed, baseline = config.eval_options(), config.seed, models["baseline"]
    images, labels = data.test_images, data.test_labels
    predictions = predict(baseline, images, labels, **options)
    failures = find_high_confidence_failures(predictions.probs, labels, BENCH_THRESHOLD)
    common = {"max_failures": BENCH_FAILURES, "seed": seed, "population": BENCH + cause}
    predicting = {**common, "eval_options": options}
    donors = (data.holdout_images, data.holdout_labels)
    # Claim 6: augmentation against a reseed as the fixer (a single run cannot tell the two apart).
    by_augmentation, by_reseed = (
        _fixed(models[n], data, failures, options) for n in ("augmented", "reseeded")
    )
    single = off_center_claim(baseline, images, failures, by_augmentation, **predicting)
    reseeded, did = reseed_claims(images, failures, by_augmentation, by_reseed, **common)
    effects = {"augmentation_effect": single.effect, "reseed_effect": reseeded.effect}
    off_center = replace(did, details={**single.details, **did.details, **effects})
    return [
        background_claim(baseline, images, predictions, failures, *donors, **predicting),
        texture_claim(baseline, images, predictions, failures, *donors, data.classes, **predicting),
        _gradcam_row(config, cause, baseline, data, predictions, failures),
        off_center,
    ]


def _gradcam_row(
    config: RunConfig,
    cause: str,
    model: nn.Module,
    data: CifarData,
    predictions: Predictions,
    failures: FailureSet,
) -> ClaimResult:
    """Claim 5 without its ROAD precondition (the bench knows the cause ROAD stands in for: README), its
    ROAD check in the details: the first :data:`BENCH_ROAD_IMAGES` failures' maps against random maps."""
    images, seed = data.test_images, config.seed
    measures = background_shares(model, images, predictions, failures, max_failures=BENCH_FAILURES, seed=seed)
    row = gradcam_claim(measures, None, seed=seed, population=BENCH + cause)
    layer = GRADCAM_CLAIM_LAYER
    maps = gradcam_for_failures(model, images, failures, layer=layer, max_items=BENCH_ROAD_IMAGES)
    k = len(maps)
    road_maps = {
        map_key(GRADCAM, layer): maps.predicted_maps,
        RANDOM: random_maps(k, *images.shape[2:], seed=seed),
    }
    road = road_table(
        model,
        images[maps.indices],
        maps.predicted,
        road_maps,
        fractions=config.road_fractions,
        seed=seed,
    )
    return replace(row, details={**row.details, "road": road_check(road, layer, seed=seed).to_dict()})


def bench_verdicts(rows: Sequence[ClaimResult]) -> dict[int, dict[str, str]]:
    """The bench's matrix: ``{claim number: {cause: verdict}}`` from its rows."""
    matrix: dict[int, dict[str, str]] = {}
    for row in rows:
        if row.population.startswith(BENCH):
            claim = int(row.claim.split(".")[0])
            matrix.setdefault(claim, {})[row.population.removeprefix(BENCH)] = row.verdict
    return matrix


@dataclass(frozen=True)
class BenchGate:
    """Which claim tests passed the planted-cause bench (:func:`bench_gate`): ``reasons`` ``{claim: ""}``
    for a test that said supported on its own cause and on no other, else ``{claim: why not}``; a
    claim the bench did not test is absent."""

    reasons: dict[int, str]

    def withheld(self, claim: int) -> str:
        """Why a real-data verdict of ``claim`` is withheld: "" when its test passed the bench,
        :data:`NO_BENCH` when no bench row tested it."""
        return self.reasons.get(claim, NO_BENCH)  # optional by design: a claim the bench did not test


def bench_gate(rows: Sequence[ClaimResult]) -> BenchGate:
    """Which tests passed the bench among ``rows`` (a real-data row of a test that did not is then
    inconclusive)."""
    reasons = {}
    for claim, verdicts in bench_verdicts(rows).items():
        own = CAUSE_OF_CLAIM[claim]
        wrong = [cause for cause, verdict in verdicts.items() if cause != own and verdict == SUPPORTED]
        if verdicts.get(own) != SUPPORTED:  # a missing cell is no verdict
            reasons[claim] = f"the test is not sensitive: on the bench it did not find a planted {own} cause"
        elif wrong:
            reasons[claim] = (
                f"the test is not specific: on the bench it also said supported for {', '.join(wrong)}"
            )
        else:
            reasons[claim] = ""
    return BenchGate(reasons)
