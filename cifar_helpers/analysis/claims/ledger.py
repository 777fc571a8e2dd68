"""The ledger of a run: which rows each stage tests (on which populations), where they are saved, how
a replicate run combines them, and the gate every real-data verdict of claims 3-6 passes: the test
must have passed the planted-cause bench of the same run (:func:`.bench.bench_gate`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from cifar_helpers.analysis.failures import FailureSet
from cifar_helpers.analysis.faithfulness import RoadTable
from cifar_helpers.analysis.human_labels import HumanFailureReport, NotApplicable
from cifar_helpers.core.data import CifarData
from cifar_helpers.core.evaluation import Predictions
from cifar_helpers.rundir.artifacts import DamagedArtifactError, RunDir, load_json, rerun_hint

from .bench import bench_gate
from .probes import (
    accuracy_claims,
    background_claim,
    background_shares,
    gradcam_claim,
    off_center_claim,
    reseed_claims,
    texture_claim,
)
from .rules import ALL_FAILURES, BENCH, MODEL_ERRORS, T_OVER_SEEDS, ClaimResult, t_interval

CLAIMS_FILE = "claims.json"  # a stage's rows, a list of ClaimResult.to_dict()
_LEDGER_STAGES = ("gradcam", "reevaluation", "stress")  # the stages that save rows, in pipeline order
# Why a single run's claim 6 is never a verdict: a baseline retrained with another seed, without any
# augmentation, fixes shift-sensitive failures too; only the difference against it is augmentation's.
ONE_RUN = "one run cannot tell augmentation from a reseed: see the replicates (07, --seeds 42,43)"


def _populations(
    failures: FailureSet, human_report: HumanFailureReport | NotApplicable
) -> dict[str, FailureSet]:
    """The failures claims 3-6 are tested on: all (:data:`ALL_FAILURES`) and, where human labels apply,
    the model errors alone (:data:`MODEL_ERRORS`: verified label errors and ambiguous images set aside).
    The last is the primary population, declared before any number: why the model fails is judged on
    the failures that are the model's, not the label's."""
    if isinstance(human_report, NotApplicable):
        return {ALL_FAILURES: failures}
    model_errors = failures.restricted_to(torch.tensor(human_report.model_errors(), dtype=torch.int64))
    return {ALL_FAILURES: failures, MODEL_ERRORS: model_errors}


def _on_populations(
    failures: FailureSet,
    human_report: HumanFailureReport | NotApplicable,
    test: Callable[[str, FailureSet], list[ClaimResult]],
) -> list[ClaimResult]:
    """``test(population, failures)``'s rows on each of :func:`_populations`, in turn; a row stays
    primary only on the last (primary) population."""
    populations = _populations(failures, human_report)
    rows = []
    for population, chosen in populations.items():
        primary = population == list(populations)[-1]
        rows += [replace(row, primary=row.primary and primary) for row in test(population, chosen)]
    return rows


def gradcam_stage_claims(
    model: nn.Module,
    data: CifarData,
    predictions: Predictions,
    failures: FailureSet,
    human_report: HumanFailureReport | NotApplicable,
    road: RoadTable,
    *,
    seed: int = 0,
    eval_options: Mapping[str, Any] | None = None,
) -> list[ClaimResult]:
    """Notebook 03's rows: claims 3 (:func:`background_claim`), 4 (:func:`texture_claim`), both with
    the hold-out images as donors, and 5 (:func:`gradcam_claim`, ``road`` its precondition) of the
    baseline ``model`` on each of :func:`_populations` of its ``failures``."""
    if len(data.holdout_labels) == 0:
        raise ValueError("claims 3 and 4 need held-out training images as donors; set holdout_per_class >= 1")
    options = {"seed": seed, "eval_options": eval_options}
    donors, images = (data.holdout_images, data.holdout_labels), data.test_images

    def tests(population: str, chosen: FailureSet) -> list[ClaimResult]:
        on = {"population": population}
        return [
            background_claim(model, images, predictions, chosen, *donors, **on, **options),
            texture_claim(model, images, predictions, chosen, *donors, data.classes, **on, **options),
            gradcam_claim(
                background_shares(model, images, predictions, chosen, seed=seed), road, seed=seed, **on
            ),
        ]

    return _on_populations(failures, human_report, tests)


def reevaluation_claims(
    baseline: Predictions,
    augmented: Predictions,
    train_accuracies: tuple[float, float],
    num_train_images: int,
    baseline_model: nn.Module,
    test_images: Tensor,
    failures: FailureSet,
    fixed: Tensor,
    human_report: HumanFailureReport | NotApplicable,
    *,
    seed: int = 0,
    eval_options: Mapping[str, Any] | None = None,
) -> list[ClaimResult]:
    """Notebook 05's rows: claims 1 and 2 (:func:`accuracy_claims`) and claim 6 (:func:`off_center_claim`
    of the baseline's ``failures`` and those augmentation ``fixed``) on each of :func:`_populations`,
    its verdict withheld (:data:`ONE_RUN`): its test is :func:`reseed_stage_claims`."""
    rows = accuracy_claims(baseline, augmented, *train_accuracies, num_train_images, seed=seed)

    def off_center(population: str, chosen: FailureSet) -> list[ClaimResult]:
        options = {"population": population, "seed": seed, "eval_options": eval_options}
        row = off_center_claim(baseline_model, test_images, chosen, fixed, **options)
        return [replace(row, precondition=ONE_RUN)]

    return rows + _on_populations(failures, human_report, off_center)


def reseed_stage_claims(
    test_images: Tensor,
    failures: FailureSet,
    fixed: Tensor,
    reseed_fixed: Tensor,
    human_report: HumanFailureReport | NotApplicable,
    bench_rows: Sequence[ClaimResult],
    *,
    seed: int = 0,
) -> list[ClaimResult]:
    """Notebook 07's rows: claim 6 against a reseeded baseline (:func:`reseed_claims` of one seed's
    baseline ``failures``, ``fixed`` by its augmented model, ``reseed_fixed`` by another seed's
    baseline) on each of :func:`_populations`, gated by the ``bench_rows`` of the run the failures come
    from (:func:`_gate_by_bench`). ``test_images``: uint8 (N, 3, 32, 32)."""

    def against_reseed(population: str, chosen: FailureSet) -> list[ClaimResult]:
        reseed, did = reseed_claims(
            test_images, chosen, fixed, reseed_fixed, seed=seed, population=population
        )
        # The reseed as fixer is context (the control of the difference), never a primary row.
        return [replace(reseed, primary=False), did]

    rows = _on_populations(failures, human_report, against_reseed)
    bench = [r for r in bench_rows if r.population.startswith(BENCH)]
    return [r for r in _gate_by_bench([*rows, *bench]) if not r.population.startswith(BENCH)]


def combine_seeds(per_seed: Sequence[Sequence[ClaimResult]]) -> list[ClaimResult]:
    """A replicate run's ledger from ``per_seed`` ledgers, rows matched by (claim, test, population):
    per row of the first seed's, the mean effect and its t interval (:data:`T_OVER_SEEDS`) over the
    seeds whose row measured one (``n`` counts them), the verdict by the same rule, each seed's effect
    and verdict in the details. A seed's effect counts only with its own interval defined: an effect
    over fewer than :data:`MIN_BOOTSTRAP_SAMPLE` failures is not a measurement, and seeds that agree on
    one (no failure of a handful rescued) would give a zero-width interval.
    """
    rows = []
    for first in per_seed[0]:
        key = (first.claim, first.test, first.population)
        same = [r for ledger in per_seed for r in ledger if (r.claim, r.test, r.population) == key]
        measured = [math.nan if math.isnan(r.ci_low) else r.effect for r in same]
        interval = t_interval(measured)
        # A row's numbers are floats: what the interval leaves undefined (None) is NaN here.
        effect, low, high = (
            math.nan if v is None else v for v in (interval.mean, interval.low, interval.high)
        )
        details = {"per_seed_effect": [r.effect for r in same], "per_seed_verdict": [r.verdict for r in same]}
        failed = [r.precondition for r in same if r.precondition]
        precondition = f"{failed[0]} (in {len(failed)} of {len(same)} seeds)" if failed else ""
        combined = {"effect": effect, "ci_low": low, "ci_high": high, "method": T_OVER_SEEDS, "n": interval.n}
        rows.append(replace(first, **combined, details=details, precondition=precondition))
    return rows


def _gate_by_bench(rows: Sequence[ClaimResult]) -> list[ClaimResult]:
    """``rows`` with every real-data row of claims 3-6 inconclusive unless its test passed the bench
    among them (:func:`.bench.bench_gate`). A row whose own instrument failed keeps that reason."""
    gate = bench_gate(rows)
    gated = []
    for row in rows:
        claim = int(row.claim.split(".")[0])
        if claim >= 3 and not row.population.startswith(BENCH) and not row.precondition:
            # optional by design: a claim no bench row tested
            row = replace(row, precondition=gate.withheld(claim))
        gated.append(row)
    return gated


def read_ledger(run_dir: str | os.PathLike[str], stages: Sequence[str] = _LEDGER_STAGES) -> list[ClaimResult]:
    """The rows ``stages`` saved in ``<stage>/claims.json`` (a stage not run yet adds none), gated by
    the bench (:func:`_gate_by_bench`), by claim, the bench's rows last."""
    run = RunDir(run_dir)
    rows = []
    for path in (run.stage_dir(stage) / CLAIMS_FILE for stage in stages):
        saved = load_json(path) if path.exists() else []
        if not isinstance(saved, list):  # {} is no ledger, not an empty one
            raise DamagedArtifactError(f"{path} is damaged (not a list of claims): {rerun_hint(path)}")
        rows += [ClaimResult.from_dict(row) for row in saved]
    return sorted(_gate_by_bench(rows), key=lambda r: (r.population.startswith(BENCH), r.claim))
