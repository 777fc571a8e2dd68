"""Shared fixtures: where the shared CIFAR-10 copy is, and small generated data for everything else."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

if TYPE_CHECKING:
    from cifar_helpers.analysis.faithfulness import RoadTable
    from cifar_helpers.analysis.positive_control import PositiveControl

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_all(*args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    """``python run_all.py ARGS`` from the repository root, output captured (as a user would run it)."""
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "run_all.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
    )


# The shared JPEG copy sits beside the repository in development and CI; CIFAR10_ROOT overrides it.
DEFAULT_SHARED_ROOT = REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg"
# torchvision's batches rebuilt from that copy (test set in the original order) by
# ../shared/data/build_cifar10_batches.py; .ci/run builds them and sets CIFAR10_BATCHES_ROOT.
BATCHES_ENV = "CIFAR10_BATCHES_ROOT"
DEFAULT_HUMAN_LABELS = REPO_ROOT.parent / "shared" / "data" / "human-labels"

# Tests share the 2 cores with whatever else runs; one thread each keeps them predictable.
torch.set_num_threads(1)


def shared_cifar_root() -> Path | None:
    """The shared CIFAR-10 image-folder copy, or None when this machine has none."""
    env = os.environ.get("CIFAR10_ROOT")
    for candidate in (Path(env) if env else None, DEFAULT_SHARED_ROOT):
        if candidate is not None and (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_root() -> Path:
    """Path of the shared CIFAR-10 copy; the test is skipped where there is none."""
    root = shared_cifar_root()
    if root is None:
        pytest.skip("the shared CIFAR-10 copy is not on this machine")
    return root


def shared_batches_root() -> Path | None:
    """The rebuilt CIFAR-10 batches (``<root>/cifar-10-batches-py``), or None when not built here."""
    env = os.environ.get(BATCHES_ENV)
    if env and (Path(env) / "cifar-10-batches-py" / "test_batch").is_file():
        return Path(env)
    return None


def shared_human_labels_root() -> Path | None:
    """The shared human-label files ($CIFAR10H_ROOT, else ../shared/data/human-labels), or None."""
    env = os.environ.get("CIFAR10H_ROOT")
    for candidate in (Path(env) if env else None, DEFAULT_HUMAN_LABELS):
        if candidate is not None and (candidate / "cifar10h-counts.npy").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def batches_root() -> Path:
    """Path of the rebuilt CIFAR-10 batches; the test is skipped where they were not built."""
    root = shared_batches_root()
    if root is None:
        pytest.skip(f"the rebuilt CIFAR-10 batches are not here (build them and set {BATCHES_ENV})")
    return root


@pytest.fixture(scope="session")
def human_labels_root() -> Path:
    """Path of the shared human-label files; the test is skipped where there are none."""
    root = shared_human_labels_root()
    if root is None:
        pytest.skip("the shared human-label files are not on this machine")
    return root


@dataclass
class ReplicateRun:
    """A finished ``run_all.py --seeds`` run: its root directory and the completed process."""

    root: Path
    completed: subprocess.CompletedProcess[str]


# The replicate run the tests share (CI: generated data, the smoke profile, a real embedded Ray).
REPLICATE_SEEDS = (42, 43)


@pytest.fixture(scope="session")
def smoke_replicates(tmp_path_factory: pytest.TempPathFactory) -> ReplicateRun:
    """``run_all.py --profile smoke --seeds 42,43`` on generated data, run once per test session."""
    root = tmp_path_factory.mktemp("replicates") / "run"
    seeds = ",".join(map(str, REPLICATE_SEEDS))
    completed = run_all(
        "--profile",
        "smoke",
        "-p",
        "data_source=synthetic",
        "--seeds",
        seeds,
        "--run-dir",
        str(root),
        timeout=3600,
    )
    return ReplicateRun(root, completed)


def positive_control_result(road: RoadTable, **tied: Any) -> PositiveControl:
    """A positive-control result with made-up numbers (the tied model's overridden by ``tied``) and
    ``road`` as both models' ROAD table, for the tables, figures and report that read one."""
    from cifar_helpers.analysis.positive_control import ControlModel, PositiveControl

    entry = {
        "test_accuracy": 0.25,
        "train_accuracy": 0.9,
        "num_failures": 40,
        "mask_share": 0.1361,
        "mask_share_std": 0.05,
        "pointing_game": 0.2,
        "failure_object_area": 0.14,
        "mask_share_all": 0.2,
        "pointing_game_all": 0.3,
        "road": road,
    }
    untied = {"num_failures": 25, "mask_share": 0.3171, "pointing_game": 0.9, "mask_share_all": 0.22}
    return PositiveControl(
        correlation=0.9,
        threshold=0.6,
        thresholds_tried=(0.9, 0.8, 0.7, 0.6),
        min_failures=50,
        train_per_class=100,
        test_per_class=100,
        epochs=4,
        width=16,
        seed=0,
        layer="layer4",
        object_area_fraction=0.135,
        tied=ControlModel(**{**entry, **tied}),
        untied=ControlModel(**{**entry, **untied}),
        examples_file="positive_control_examples.pt",
        seconds=12.5,
    )
