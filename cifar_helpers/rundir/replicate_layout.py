"""Where a replicate run (``run_all.py --seeds``) keeps what; the runner, analysis and report read it::

runs/<profile>/
    seed-42/, seed-43/, ...   complete single-seed runs (stages 00-06)
    replicates/               07: accuracy over seeds, the reseed noise floor, failure stability, claims
    executed/                 07_replicates.ipynb as papermill ran it
    summary.json, report.html
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cifar_helpers.rundir.artifacts import load_json
from cifar_helpers.rundir.lineage import failure_marker
from cifar_helpers.rundir.registry import REPLICATES_SPEC

_SEED_DIR_PREFIX = "seed-"


def seed_run_dir(root: str | os.PathLike[str], seed: int) -> Path:
    """Run directory of ``seed`` in the replicate run at ``root``."""
    return Path(root) / f"{_SEED_DIR_PREFIX}{seed}"


def find_seeds(root: str | os.PathLike[str]) -> list[int]:
    """The seeds of the ``seed-<k>`` directories under ``root`` (:func:`seed_run_dir`), in order."""
    seeds = []
    for path in Path(root).glob(f"{_SEED_DIR_PREFIX}*"):
        suffix = path.name.removeprefix(_SEED_DIR_PREFIX)
        if path.is_dir() and suffix.isdigit():
            seeds.append(int(suffix))
    return sorted(seeds)


def replicates_dir(root: str | os.PathLike[str]) -> Path:
    """Where stage 07 writes: ``<root>/replicates``."""
    return Path(root) / REPLICATES_SPEC.directory


def replicates_complete(root: str | os.PathLike[str], seeds: Sequence[int]) -> bool:
    """Whether stage 07 wrote all its outputs for exactly ``seeds`` and did not fail since."""
    directory = replicates_dir(root)
    if not all((directory / name).exists() for name in REPLICATES_SPEC.outputs):
        return False
    if failure_marker(root, REPLICATES_SPEC.name).exists():
        return False
    return load_json(directory / "summary.json")["seeds"] == list(seeds)
