"""Files and values a careful but hostile user could hand the project (issue 10, items 1-3 and 6).

Crafted pickles must not run their payload (the side effect is asserted absent), damaged artifacts
name the file and the stage to rerun, and non-finite numbers are refused before anything trains.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import cifar_helpers.core.training as training
from cifar_helpers.core.data import DataError, load_cifar10
from cifar_helpers.core.training import TrainingDivergedError, train_model
from cifar_helpers.rundir.artifacts import (
    DamagedArtifactError,
    MissingStageError,
    RunDir,
    load_torch,
    save_json,
    save_torch,
)
from cifar_helpers.rundir.config import ConfigError, RunConfig, make_config
from cifar_helpers.rundir.manifest import MANIFEST_NAME, read_manifest
from cifar_helpers.rundir.safe_load import UnsafePickleError, load_batch_pickle

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _RunsCommand:
    """Unpickling this calls ``os.system(command)``: the payload of a crafted file."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def _write_batches(folder: Path, per_batch: int = 20, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "labels": list(range(10)) * 2,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": CIFAR_CLASSES, "num_vis": 3072}, protocol=2)
    )


# --- 1. pickled data batches ------------------------------------------------------------------------


def test_a_batch_whose_pickle_runs_a_command_is_refused_without_running_it(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder)
    pwned = tmp_path / "PWNED"
    payload = {"data": _RunsCommand(f"touch {pwned}"), "labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path, download=False)
    message = str(info.value)
    assert str(folder / "data_batch_1") in message and "system" in message and "\n" not in message
    assert not pwned.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_numpy_batches_of_every_pickle_protocol_still_load(tmp_path: Path, protocol: int) -> None:
    _write_batches(tmp_path / "cifar-10-batches-py", protocol=protocol)
    data = load_cifar10(tmp_path, download=False)
    assert data.train_images.shape == (100, 3, 32, 32) and data.classes == CIFAR_CLASSES


def test_python2_batches_that_name_numpy_core_load(tmp_path: Path) -> None:
    # The official archive was pickled by Python 2 with NumPy 1.x: arrays are rebuilt by
    # numpy.core.multiarray._reconstruct and str values are latin1 bytes.
    array = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072) % 251
    raw = pickle.dumps({"data": array, "labels": [3, 4]}, protocol=2)
    raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw
    path = tmp_path / "batch"
    path.write_bytes(raw)
    loaded = load_batch_pickle(path)
    assert np.array_equal(loaded["data"], array) and loaded["labels"] == [3, 4]


@pytest.mark.parametrize(
    "payload",
    [
        (eval, ("1 + 1",)),
        (__import__, ("os",)),
        (np.frombuffer, (b"\0",)),
    ],
    ids=["builtins.eval", "builtins.__import__", "numpy.frombuffer"],
)
def test_only_the_allow_listed_globals_are_reconstructed(tmp_path: Path, payload: tuple[Any, ...]) -> None:
    class Crafted:
        def __reduce__(self) -> tuple[Any, ...]:
            return payload

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": Crafted()}, protocol=2))
    with pytest.raises(UnsafePickleError, match=str(path)):
        load_batch_pickle(path)


# --- 2. checkpoints ----------------------------------------------------------------------------------


def test_a_checkpoint_whose_pickle_runs_a_command_is_refused_without_running_it(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    pwned = tmp_path / "PWNED"
    path = run.path("baseline", "checkpoint.pt")
    path.parent.mkdir(parents=True)
    # Written by hand, not by save_torch: a file planted in the run directory.
    torch.save({"format": 1, "model": _RunsCommand(f"touch {pwned}")}, path)
    with pytest.raises(DamagedArtifactError) as info:
        load_torch(path)
    message = str(info.value)
    assert message.startswith(f"refusing to load {path}") and "system" in message and "\n" not in message
    assert "rerun stage 'baseline'" in message and "--stages 1 --force" in message
    assert not pwned.exists()


def test_checkpoints_hold_only_what_a_safe_load_accepts(tmp_path: Path) -> None:
    config = make_config(
        "smoke", width=4, epochs=1, batch_size=50, device="cpu", precision="fp32", memory_format="contiguous"
    )
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(100) % 10
    result = train_model(
        config, images, labels, images[:20], labels[:20], tmp_path, augment=True, progress=False
    )
    checkpoint = torch.load(result.checkpoint_path, weights_only=True)
    assert set(checkpoint["rng"]) >= {"order", "augment", "torch_cpu"}
    assert RunConfig.from_dict(checkpoint["config"]) == config


# --- 3. non-finite numbers and a diverging loss ------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["lr", "momentum", "weight_decay", "label_smoothing", "warmup_epochs", "confidence_threshold"]
)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_floats_are_refused_naming_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"^{key} must be a finite number"):
        make_config("smoke", **{key: value})


def test_training_stops_at_the_first_non_finite_loss_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(
        "smoke", width=4, epochs=3, batch_size=20, device="cpu", precision="fp32", memory_format="contiguous"
    )
    steps = 5
    real_schedule = training._learning_rates

    def explodes_in_epoch_two(config: RunConfig, num_train_images: int) -> list[float]:
        rates = real_schedule(config, num_train_images)
        return rates[: steps + 2] + [1e30] * (len(rates) - steps - 2)  # epoch 2 from its 3rd step

    monkeypatch.setattr(training, "_learning_rates", explodes_in_epoch_two)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(100) % 10
    with pytest.raises(TrainingDivergedError) as info:
        train_model(config, images, labels, images[:20], labels[:20], tmp_path, augment=False, progress=False)
    message = str(info.value)
    assert "epoch 2, step" in message and "learning rate" in message and "\n" not in message
    assert "the checkpoint of epoch 1" in message
    checkpoint = load_torch(tmp_path / "checkpoint.pt")
    assert checkpoint["epoch"] == 1 and len(checkpoint["history"]) == 1
    assert all(torch.isfinite(p).all() for p in checkpoint["model"].values() if p.is_floating_point())


# --- 6. damaged artifacts ------------------------------------------------------------------------


def test_every_save_records_size_and_sha256(tmp_path: Path) -> None:
    save_torch(tmp_path / "a.pt", {"w": torch.arange(3)})
    save_json(tmp_path / "b.json", {"x": 1})
    files = read_manifest(tmp_path)
    assert set(files) == {"a.pt", "b.json"}
    assert files["a.pt"].bytes == (tmp_path / "a.pt").stat().st_size
    assert (tmp_path / MANIFEST_NAME).exists()


def test_a_truncated_checkpoint_names_the_file_and_the_stage_to_rerun(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    path = run.path("baseline", "checkpoint.pt")
    save_torch(path, {"model": {"w": torch.randn(1000)}})
    for name in ("history.json", "predictions.pt", "metrics.json"):
        save_json(run.path("baseline", name), {})
    assert run.is_complete("baseline")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert not run.is_complete("baseline")
    for call in (lambda: load_torch(path), lambda: run.require("baseline", "checkpoint.pt")):
        with pytest.raises(DamagedArtifactError) as info:
            call()
        message = str(info.value)
        assert str(path) in message and "rerun stage 'baseline'" in message and "\n" not in message
        assert isinstance(info.value, MissingStageError)


def test_a_truncated_file_without_a_manifest_entry_still_names_the_stage(tmp_path: Path) -> None:
    # Run directories written before manifests existed: unverified, and torch's error is translated.
    path = tmp_path / "run" / "augmented" / "checkpoint.pt"
    path.parent.mkdir(parents=True)
    torch.save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DamagedArtifactError, match=r"cannot be read .*rerun stage 'augmented'"):
        load_torch(path)


def test_same_size_alteration_is_caught_by_the_hash(tmp_path: Path) -> None:
    path = save_json(tmp_path / "failures" / "failures.json", {"indices": [1, 2, 3]})
    path.write_text(path.read_text().replace("1", "7"))
    run = RunDir(tmp_path)
    assert run.damaged("failures", "failures.json") == [
        ("failures.json", "its contents differ from what was written (SHA-256 mismatch)")
    ]
