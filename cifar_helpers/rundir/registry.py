"""The pipeline's stages, each defined once: folder, notebook, title, what it reads and what it writes.

Everything that needs to know about stages (run directory, ``open_stage``, ``run_all.py``, lineage,
ETAs, the report) reads this one table. It imports nothing from the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    """One stage (a stage *is* its notebook: papermill runs it; its cells call the library)."""

    name: str  # the key used everywhere (``run_all.py --stages gradcam``, ``open_stage("gradcam")``)
    directory: str  # its folder in the run directory ("." : the run directory itself)
    notebook: str
    title: str  # its heading in the report
    inputs: tuple[str, ...]  # the stages whose outputs it reads directly, checked before it starts
    outputs: tuple[str, ...]  # what it must have written to count as finished (it may write more)
    # Seconds per profile, measured on a 2-core AMD EPYC with avx512_bf16 (full: guessed for one GPU).
    # The progress line rescales the non-training ones by the speed measured in the run; training
    # is estimated from its own measured step rate, never from these.
    expected_seconds: Mapping[str, float]


# Set in every kernel run_all.py starts: there is no widget front end, so browsers render statically.
HEADLESS_ENV = "CIFAR_STRESS_HEADLESS"

_TRAINING_OUTPUTS = ("checkpoint.pt", "history.json", "predictions.pt", "metrics.json")

# Every stage of a run by name, in pipeline order.
STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        StageSpec(
            name="setup",
            directory=".",
            notebook="00_setup.ipynb",
            title="00 Setup: configuration, environment and data",
            inputs=(),
            outputs=("config.json", "environment.json", "data_summary.json"),
            expected_seconds={"smoke": 12, "quick": 12, "cpu": 14, "full": 40},
        ),
        StageSpec(
            name="baseline",
            directory="baseline",
            notebook="01_baseline_training.ipynb",
            title="01 Baseline training",
            inputs=("setup",),
            outputs=_TRAINING_OUTPUTS,
            expected_seconds={"smoke": 22, "quick": 223, "cpu": 1165, "full": 600},
        ),
        StageSpec(
            name="failures",
            directory="failures",
            notebook="02_failure_detection.ipynb",
            title="02 High-confidence failures",
            inputs=("setup", "baseline"),
            outputs=("failures.json", "summary.json"),
            expected_seconds={"smoke": 8, "quick": 16, "cpu": 16, "full": 20},
        ),
        StageSpec(
            name="gradcam",
            directory="gradcam",
            notebook="03_gradcam.ipynb",
            title="03 Grad-CAM of the failures",
            inputs=("setup", "baseline", "failures"),
            outputs=("heatmaps.pt", "measures.json", "road.json", "claims.json"),
            expected_seconds={"smoke": 11, "quick": 36, "cpu": 50, "full": 40},
        ),
        StageSpec(
            name="augmented",
            directory="augmented",
            notebook="04_augmented_training.ipynb",
            title="04 Training with augmentation",
            inputs=("setup", "baseline"),  # its notebook draws both models' curves
            outputs=_TRAINING_OUTPUTS,
            expected_seconds={"smoke": 27, "quick": 188, "cpu": 1190, "full": 600},
        ),
        StageSpec(
            name="reevaluation",
            directory="reevaluation",
            notebook="05_reevaluation.ipynb",
            title="05 Re-evaluation: fixed, kept and new failures",
            inputs=("setup", "baseline", "failures", "gradcam", "augmented"),
            outputs=("comparison.json", "heatmaps.pt", "measures.json", "road.json", "claims.json"),
            expected_seconds={"smoke": 12, "quick": 47, "cpu": 57, "full": 30},
        ),
        StageSpec(
            name="stress",
            directory="stress",
            notebook="06_stress_tests.ipynb",
            title="06 Stress tests: corruptions, calibration, sanity checks, the planted-cause bench",
            inputs=("setup", "baseline", "failures", "augmented"),
            outputs=(
                "corruptions.json",
                "calibration.json",
                "sanity.json",
                "positive_control.json",
                "claims.json",
                "tile_shuffle.json",
            ),
            # The planted-cause bench (about 100 s on 2 cores, one thread, any profile) included.
            expected_seconds={"smoke": 135, "quick": 150, "cpu": 215, "full": 150},
        ),
    )
}

# Stage 07 compares the single-seed runs of a replicate run (``run_all.py --seeds``), so it is not
# one of a run's stages above; it writes into ``<root>/replicates/`` (``replicate_layout``) and shows
# its progress per seed, so it has no expected durations.
REPLICATES_SPEC = StageSpec(
    name="replicates",
    directory="replicates",
    notebook="07_replicates.ipynb",
    title="07 Replicates: accuracy over seeds, the reseed noise floor, failure stability",
    inputs=(),  # every seed's stages 00-06
    outputs=(
        "accuracy.json",
        "noise_floor.json",
        "stability.json",
        "category_mix.json",
        "summary.json",
        "claims.json",  # the claims ledger over seeds
    ),
    expected_seconds={},
)


def stage_number(name: str) -> int:
    """The stage's position in the pipeline (``setup`` is 0), as ``run_all.py --stages`` counts."""
    return list(STAGES).index(name)
