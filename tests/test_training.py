"""The training loop: schedule, determinism, resume, checkpoints, and a whole training stage.

Everything runs a width-4 ResNet-18 on a couple of hundred random images for two epochs, in fp32 on
the CPU, so each training takes a second or two.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import cifar_helpers.core.training as training
from cifar_helpers.core.evaluation import Predictions, predict
from cifar_helpers.core.normalization import normalize
from cifar_helpers.core.training import (
    CheckpointMismatchError,
    _learning_rates,
    build_model,
    load_trained_model,
    run_training_stage,
    steps_per_epoch,
    train_model,
)
from cifar_helpers.rundir.artifacts import RunDir, load_json, load_torch
from cifar_helpers.rundir.config import RunConfig, make_config
from cifar_helpers.rundir.manifest import MANIFEST_NAME
from cifar_helpers.rundir.registry import STAGES
from cifar_helpers.rundir.reproducibility import cpu_supports_bf16

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"class{i}" for i in range(10)]


def tiny_config(**overrides: Any) -> RunConfig:
    values = dict(
        seed=42,
        width=4,
        epochs=2,
        batch_size=50,
        lr=0.1,
        warmup_epochs=0.5,
        device="cpu",
        precision="fp32",
        memory_format="contiguous",
        eval_batch_size=64,
        num_threads=1,
    )
    values.update(overrides)
    return make_config("smoke", **values)


def tiny_data(n_train: int = 201, n_test: int = 60, seed: int = 0) -> SimpleNamespace:
    # 201 = 4 batches of 50 + one image, which exercises the single-image drop.
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(
        train_images=torch.randint(0, 256, (n_train, 3, 32, 32), generator=g, dtype=torch.uint8),
        train_labels=torch.randint(0, 10, (n_train,), generator=g),
        test_images=torch.randint(0, 256, (n_test, 3, 32, 32), generator=g, dtype=torch.uint8),
        test_labels=torch.randint(0, 10, (n_test,), generator=g),
        classes=CLASSES,
    )


def train(config: RunConfig, data: SimpleNamespace, out_dir: Path, **kwargs: Any) -> training.TrainResult:
    kwargs.setdefault("augment", True)
    kwargs.setdefault("progress", False)
    return train_model(
        config, data.train_images, data.train_labels, data.test_images, data.test_labels, out_dir, **kwargs
    )


def without_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in entry.items() if k != "seconds"} for entry in history]


# --- schedule and model ---------------------------------------------------------------------------


def test_steps_per_epoch_drops_only_a_single_leftover_image() -> None:
    assert steps_per_epoch(200, 50) == 4
    assert steps_per_epoch(201, 50) == 4
    assert steps_per_epoch(202, 50) == 5
    with pytest.raises(ValueError, match="at least 2"):
        steps_per_epoch(1, 50)


def test_lr_schedule_warms_up_then_cosine_to_near_zero_per_step() -> None:
    config = tiny_config(epochs=4, warmup_epochs=1.0, lr=0.2)
    lrs = _learning_rates(config, 200)  # 4 steps per epoch
    assert len(lrs) == 16
    assert lrs[0] == pytest.approx(0.02)  # warm-up starts at lr / 10
    assert lrs[:5] == pytest.approx([0.02, 0.065, 0.11, 0.155, 0.2])  # linear, peak after 1 epoch
    decay = lrs[4:]
    assert all(a > b for a, b in itertools.pairwise(decay)), "cosine decreases every step"
    assert decay[len(decay) // 2] == pytest.approx(0.1, rel=0.15)  # half way down at half time
    # The last step's lr is the cosine one step before its end: 0.2 * (1 + cos(11 pi / 12)) / 2.
    assert lrs[-1] == pytest.approx(0.2 * (1 + math.cos(math.pi * 11 / 12)) / 2)
    assert lrs[-1] < 0.02 * 0.2
    assert len(set(lrs[4:8])) == 4, "the learning rate changes within an epoch, not per epoch"


def test_optimizer_uses_the_schedule_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    data = tiny_data()
    seen: list[float] = []
    original_step = torch.optim.SGD.step

    def spy_step(self: torch.optim.SGD, *args: Any, **kwargs: Any) -> Any:
        seen.append(self.param_groups[0]["lr"])
        assert self.param_groups[0]["nesterov"] and self.param_groups[0]["momentum"] == config.momentum
        assert self.param_groups[0]["weight_decay"] == config.weight_decay
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", spy_step)
    result = train(config, data, tmp_path)
    expected = _learning_rates(config, 201)
    assert seen == expected
    assert [h["lr"] for h in result.history] == [expected[3], expected[7]]


def test_build_model_is_seeded_and_leaves_global_rng_alone() -> None:
    before = torch.get_rng_state()
    a = build_model(tiny_config(seed=1))
    b = build_model(tiny_config(seed=1))
    c = build_model(tiny_config(seed=2))
    assert torch.equal(torch.get_rng_state(), before)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert a.conv1.weight.shape[0] == 4


def test_zero_init_residual_reaches_the_trained_model() -> None:
    plain = build_model(tiny_config())
    zeroed = build_model(tiny_config(zero_init_residual=True))
    assert not torch.equal(plain.layer1[0].bn2.weight, torch.zeros_like(plain.layer1[0].bn2.weight))
    assert torch.equal(zeroed.layer1[0].bn2.weight, torch.zeros_like(zeroed.layer1[0].bn2.weight))
    torch.testing.assert_close(zeroed.conv1.weight, plain.conv1.weight)


# --- what the network sees -------------------------------------------------------------------------


def _record_training_inputs(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    inputs: list[torch.Tensor] = []
    real_build = training.build_model

    def spy_build(config: RunConfig, num_classes: int = 10) -> torch.nn.Module:
        model = real_build(config, num_classes)

        def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if module.training:
                inputs.append(args[0].detach().clone())

        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(training, "build_model", spy_build)
    return inputs


def _rows(x: torch.Tensor) -> list[bytes]:
    return sorted(row.numpy().tobytes() for row in x.flatten(1))


def test_without_augmentation_the_network_sees_exactly_the_normalised_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tiny_data(n_train=200)
    inputs = _record_training_inputs(monkeypatch)
    train(tiny_config(epochs=1, warmup_epochs=0.5), data, tmp_path, augment=False)
    assert len(inputs) == 4 and all(x.shape[0] == 50 for x in inputs)
    assert all(x.dtype == torch.float32 for x in inputs)
    # One epoch is a permutation of the training set: every image exactly once, normalised.
    assert _rows(torch.cat(inputs)) == _rows(normalize(data.train_images))
    assert not torch.equal(torch.cat(inputs), normalize(data.train_images)), "batch order is shuffled"


def test_with_augmentation_the_batch_goes_through_random_crop_flip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config(epochs=1, crop_padding=3, flip=False)
    data = tiny_data(n_train=200)
    calls: list[dict[str, Any]] = []
    real = training.random_crop_flip

    def spy(images: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        calls.append({"shape": tuple(images.shape), "dtype": images.dtype, **kwargs})
        return real(images, **kwargs)

    monkeypatch.setattr(training, "random_crop_flip", spy)
    inputs = _record_training_inputs(monkeypatch)
    train(config, data, tmp_path, augment=True)
    assert len(calls) == 4
    for call in calls:
        assert call["shape"] == (50, 3, 32, 32) and call["dtype"] == torch.uint8
        assert call["padding"] == 3 and call["flip"] is False
        assert isinstance(call["generator"], torch.Generator)
    assert _rows(torch.cat(inputs)) != _rows(normalize(data.train_images))


# --- determinism and resume ------------------------------------------------------------------------

TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    sys.path.insert(0, {root!r})
    from cifar_helpers.rundir.config import make_config
    from cifar_helpers.core.training import train_model

    config = make_config("smoke", **{config!r})
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (201, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (201,), generator=g)
    tx = torch.randint(0, 256, (60, 3, 32, 32), generator=g, dtype=torch.uint8)
    ty = torch.randint(0, 10, (60,), generator=g)
    train_model(config, x, y, tx, ty, sys.argv[1], augment=True)
    """
)


@pytest.mark.slow
def test_two_processes_with_the_same_seed_write_identical_histories(tmp_path: Path) -> None:
    config = tiny_config()
    overrides = {k: v for k, v in config.to_dict().items() if k in ("seed", "width", "epochs", "batch_size")}
    overrides.update(
        lr=config.lr,
        warmup_epochs=config.warmup_epochs,
        device="cpu",
        precision="fp32",
        memory_format="contiguous",
        eval_batch_size=64,
        num_threads=1,
    )
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT.format(root=str(REPO_ROOT), config=overrides))
    runs = [tmp_path / "a", tmp_path / "b"]
    # Two fresh interpreters side by side (one thread each): nothing shared but the seed.
    procs = [subprocess.Popen([sys.executable, str(script), str(out)]) for out in runs]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    a, b = (load_json(out / "history.json") for out in runs)
    assert a["complete"] and b["complete"]
    assert len(a["epochs"]) == 2
    assert without_seconds(a["epochs"]) == without_seconds(b["epochs"])
    assert a["config"] == b["config"]
    wa, wb = (load_torch(out / "checkpoint.pt")["model"] for out in runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    config = tiny_config()
    data = tiny_data()
    full = train(config, data, tmp_path / "full")

    part = train(config, data, tmp_path / "resumed", stop_after_epoch=1)
    assert len(part.history) == 1
    partial_history = load_json(tmp_path / "resumed" / "history.json")
    assert partial_history["complete"] is False and len(partial_history["epochs"]) == 1
    # A different global RNG state in the new "session" must not matter: every draw is seeded.
    torch.manual_seed(12345)
    resumed = train(config, data, tmp_path / "resumed")

    assert without_seconds(resumed.history) == without_seconds(full.history)
    assert load_json(tmp_path / "resumed" / "history.json")["complete"] is True
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key in full_state:
        assert torch.equal(full_state[key], resumed_state[key]), key
    a = load_torch(tmp_path / "full" / "checkpoint.pt")
    b = load_torch(tmp_path / "resumed" / "checkpoint.pt")
    for index, state in a["optimizer"]["state"].items():
        assert torch.equal(state["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert a["step"] == b["step"] == 8
    # Training beyond the first epoch changed the weights (the comparison above is not vacuous).
    assert not torch.equal(part.model.conv1.weight, full.model.conv1.weight)


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_channels_last_resume_is_also_exact(tmp_path: Path) -> None:
    # The cpu profile's fast path: bf16 autocast and channels-last, on oneDNN's bf16 kernels.
    config = tiny_config(precision="bf16", memory_format="channels_last", epochs=2)
    data = tiny_data()
    full = train(config, data, tmp_path / "full")
    train(config, data, tmp_path / "resumed", stop_after_epoch=1)
    resumed = train(config, data, tmp_path / "resumed")
    assert full.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert without_seconds(resumed.history) == without_seconds(full.history)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_resuming_a_finished_run_does_not_train_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config()
    data = tiny_data()
    first = train(config, data, tmp_path)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished run must not take another optimizer step")

    monkeypatch.setattr(torch.optim.SGD, "step", fail)
    again = train(config, data, tmp_path)
    assert again.history == first.history
    assert torch.equal(again.model.linear.weight, first.model.linear.weight)
    assert not again.model.training


def test_mismatched_checkpoint_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = tiny_config()
    data = tiny_data()
    train(config, data, tmp_path, stop_after_epoch=1)
    with pytest.raises(CheckpointMismatchError, match="lr"):
        train(config.replace(lr=0.05), data, tmp_path)
    with pytest.raises(CheckpointMismatchError, match="width"):
        train(config.replace(width=8), data, tmp_path)
    with pytest.raises(CheckpointMismatchError, match="augment"):
        train(config, data, tmp_path, augment=False)
    with pytest.raises(CheckpointMismatchError, match="train_data"):
        train(config, tiny_data(seed=1), tmp_path)
    # Settings that do not change the numbers (evaluation batch size, threads) may differ.
    resumed = train(config.replace(eval_batch_size=17, num_threads=1), data, tmp_path)
    assert len(resumed.history) == 2
    # resume=False starts over instead of refusing.
    fresh = train(config.replace(lr=0.05), data, tmp_path, resume=False)
    assert load_torch(fresh.checkpoint_path)["config"]["lr"] == 0.05


def test_checkpoint_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tiny_config()
    data = tiny_data()
    train(config, data, tmp_path, stop_after_epoch=1)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
    checkpoint_bytes = (tmp_path / "checkpoint.pt").read_bytes()
    history_bytes = (tmp_path / "history.json").read_bytes()
    real_save = torch.save

    def failing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        Path(f).write_bytes(b"half a checkpoint")  # the crash happens mid-write
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        train(config, data, tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == checkpoint_bytes
    assert (tmp_path / "history.json").read_bytes() == history_bytes
    assert not list(tmp_path.glob(".*.tmp"))

    monkeypatch.setattr(torch, "save", real_save)
    resumed = train(config, data, tmp_path)
    assert [h["epoch"] for h in resumed.history] == [1, 2]


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    data = tiny_data()
    with pytest.raises(ValueError, match="train_images must be a uint8"):
        train_model(
            tiny_config(),
            data.train_images.float(),
            data.train_labels,
            data.test_images,
            data.test_labels,
            tmp_path,
            augment=False,
        )
    with pytest.raises(ValueError, match="test_labels"):
        train_model(
            tiny_config(),
            data.train_images,
            data.train_labels,
            data.test_images,
            data.test_labels[:-1],
            tmp_path,
            augment=False,
        )


def test_load_trained_model_rebuilds_the_network(tmp_path: Path) -> None:
    data = tiny_data()
    result = train(tiny_config(), data, tmp_path)
    model = load_trained_model(result.checkpoint_path)
    assert not model.training
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    a = predict(model, data.test_images, data.test_labels)
    b = predict(result.model, data.test_images, data.test_labels)
    assert torch.equal(a.logits, b.logits)


def test_progress_bar_runs(tmp_path: Path) -> None:
    # The bar writes to stderr; this only checks that the enabled path works end to end.
    result = train(tiny_config(epochs=1), tiny_data(), tmp_path, progress=True)
    assert len(result.history) == 1


# --- a whole stage ---------------------------------------------------------------------------------


def test_run_training_stage_writes_outputs_and_does_not_retrain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunDir(tmp_path / "run")
    config = tiny_config()
    data = tiny_data()
    result = run_training_stage(run, config, data, "baseline")
    assert run.is_complete("baseline")
    stage_dir = run.stage_dir("baseline")
    assert sorted(p.name for p in stage_dir.iterdir()) == sorted([*STAGES["baseline"].outputs, MANIFEST_NAME])

    metrics = json.loads((stage_dir / "metrics.json").read_text())
    assert set(metrics) == {
        "test_accuracy",
        "train_accuracy",
        "train_test_gap",
        "per_class_accuracy",
        "confusion_matrix",
        "train_seconds",
        "epochs",
        "images_per_second",
    }
    predictions = Predictions.load(stage_dir / "predictions.pt")
    assert predictions.logits.shape == (60, 10)
    assert metrics["test_accuracy"] == pytest.approx((predictions.preds == data.test_labels).double().mean())
    matrix = torch.tensor(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 60
    assert torch.equal(matrix.sum(1), torch.bincount(data.test_labels, minlength=10))
    assert list(metrics["per_class_accuracy"]) == CLASSES
    assert metrics["train_test_gap"] == pytest.approx(metrics["train_accuracy"] - metrics["test_accuracy"])
    assert metrics["epochs"] == 2 and metrics["images_per_second"] > 0
    assert metrics["test_accuracy"] == pytest.approx(result.history[-1]["test_acc"])
    history = load_json(stage_dir / "history.json")
    assert history["complete"] and history["config"] == config.to_dict()

    def no_training(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a finished stage must not be retrained")

    monkeypatch.setattr(training, "train_model", no_training)
    before = {p.name: p.stat().st_mtime_ns for p in stage_dir.iterdir()}
    again = run_training_stage(run, config, data, "baseline")
    assert {p.name: p.stat().st_mtime_ns for p in stage_dir.iterdir()} == before
    assert without_seconds(again.history) == without_seconds(result.history)
    assert again.train_seconds == pytest.approx(metrics["train_seconds"])
    for key, value in result.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[key].cpu(), value.cpu()), key
    # A finished stage trained with other settings is not silently returned.
    with pytest.raises(CheckpointMismatchError, match="epochs"):
        run_training_stage(run, config.replace(epochs=3), data, "baseline")


def test_augmented_stage_differs_from_baseline_only_by_augmentation(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    config = tiny_config(epochs=1)
    data = tiny_data()
    base = run_training_stage(run, config, data, "baseline")
    aug = run_training_stage(run, config, data, "augmented")
    assert run.is_complete("augmented")
    assert load_torch(run.path("augmented", "checkpoint.pt"))["run"]["augment"] is True
    assert load_torch(run.path("baseline", "checkpoint.pt"))["run"]["augment"] is False
    assert not torch.equal(base.model.conv1.weight, aug.model.conv1.weight)
    # With nothing to augment (no padding, no flip) the augmented stage reproduces the baseline.
    same = RunDir(tmp_path / "same")
    plain = config.replace(crop_padding=0, flip=False)
    a = run_training_stage(same, plain, data, "baseline")
    b = run_training_stage(same, plain, data, "augmented")
    assert torch.equal(a.model.conv1.weight, b.model.conv1.weight)


def test_fp16_trains_with_a_gradient_scaler_and_resumes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The path auto chooses on pre-Ampere GPUs, run here on the CPU (torch autocasts fp16 there too).
    calls: list[str] = []
    original_step = torch.amp.GradScaler.step

    def spy_step(self: torch.amp.GradScaler, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("scaler.step")
        return original_step(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "step", spy_step)
    config = tiny_config(precision="fp16", epochs=2)
    data = tiny_data()
    part = train(config, data, tmp_path / "run", stop_after_epoch=1)
    assert len(calls) == 4  # every optimizer step went through the scaler
    checkpoint = load_torch(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["scaler"]["scale"] > 0
    resumed = train(config, data, tmp_path / "run")
    assert len(calls) == 8 and len(resumed.history) == 2
    assert all(math.isfinite(h["train_loss"]) for h in resumed.history)
    assert not torch.equal(part.model.conv1.weight, resumed.model.conv1.weight)
    environment = load_json(tmp_path / "run" / "history.json")["environment"]
    assert environment["precision"] == "fp16" and environment["bf16"] is False


def test_fp32_and_bf16_train_without_a_scaler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_scaler(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("GradScaler used outside fp16")

    monkeypatch.setattr(torch.amp, "GradScaler", no_scaler)
    train(tiny_config(epochs=1), tiny_data(), tmp_path / "fp32")
    assert "scaler" not in load_torch(tmp_path / "fp32" / "checkpoint.pt")
    assert load_json(tmp_path / "fp32" / "history.json")["environment"]["precision"] == "fp32"
