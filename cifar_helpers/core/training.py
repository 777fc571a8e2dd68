"""The training loop (the assignment's recipe: SGD, warm-up then cosine, label smoothing), with
checkpoints and resume. No DataLoader: the uint8 images move to the training device once and each
batch is gathered, augmented, normalised and cast there. Every source of randomness is a seeded
``torch.Generator`` saved in the checkpoint, so a resumed run ends with the same weights, bit for bit,
as an uninterrupted one (same machine and thread count).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cifar_helpers.core.augment import random_crop_flip
from cifar_helpers.core.checks import check_images_and_labels
from cifar_helpers.core.data import CifarData
from cifar_helpers.core.evaluation import (
    accuracy,
    confusion_matrix,
    cross_entropy,
    per_class_accuracy,
    predict,
)
from cifar_helpers.core.models import resnet18
from cifar_helpers.core.normalization import normalize
from cifar_helpers.core.step_choice import (
    Step,
    StepChoice,
    candidate_steps,
    choose_step,
    compiled,
    optimizer_step,
    sync,
)
from cifar_helpers.rundir.artifacts import RunDir, load_json, load_torch, save_json, save_torch
from cifar_helpers.rundir.config import ConfigError, RunConfig
from cifar_helpers.rundir.reproducibility import environment_report

_CHECKPOINT_NAME = "checkpoint.pt"
_HISTORY_NAME = "history.json"
_PREDICTIONS_NAME = "predictions.pt"
_METRICS_NAME = "metrics.json"
_CHECKPOINT_FORMAT = 1

# Configuration keys that change the trained weights or the history: a checkpoint written under
# other values is refused. Execution details (device, threads, paths) and later stages' settings are
# left out, so a run can be resumed elsewhere or re-analysed; the data are compared by fingerprint.
_TRAINING_KEYS: tuple[str, ...] = (
    "seed",
    "train_per_class",
    "test_per_class",
    "holdout_per_class",
    "width",
    "zero_init_residual",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "nesterov",
    "weight_decay",
    "label_smoothing",
    "warmup_epochs",
    "crop_padding",
    "flip",
    "precision",
    "memory_format",
)

_WARMUP_START_FACTOR = 0.1

# The progress bar's postfix is refreshed this many times per epoch at most: reading the running
# loss forces a device synchronisation, which would stall a GPU if done every step.
_POSTFIX_UPDATES_PER_EPOCH = 20


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a run with different training settings or data than this one."""


class TrainingDivergedError(RuntimeError):
    """The training loss became inf or nan; the checkpoint of the last finished epoch is kept."""


@dataclass
class TrainResult:
    """What :func:`train_model` and :func:`run_training_stage` return: the trained network (eval
    mode), one history dict per finished epoch, the last checkpoint and the seconds spent in training
    steps over all epochs, resumed ones included."""

    model: nn.Module
    history: list[dict[str, Any]]
    checkpoint_path: Path
    train_seconds: float


def build_model(config: RunConfig, num_classes: int = 10, device: torch.device | None = None) -> nn.Module:
    """ResNet-18 of ``config.width`` on ``device`` (None: the configured one). The weights are drawn
    on the CPU under a private RNG seeded with ``config.seed`` (torch's global generator is left
    untouched), so both training stages, and CPU and GPU runs, start from the same initial weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = resnet18(
            num_classes=num_classes, width=config.width, zero_init_residual=config.zero_init_residual
        )
    model = model.to(config.resolved_device() if device is None else device)
    if config.use_channels_last():
        model = model.to(memory_format=torch.channels_last)
    return model


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Optimizer steps per epoch: ``ceil(num_images / batch_size)``, less a final batch of one image
    (BatchNorm cannot normalise it; each epoch's permutation skips a different image)."""
    if num_images < 2:
        raise ValueError(f"training needs at least 2 images (BatchNorm), got {num_images}")
    full, rest = divmod(num_images, batch_size)
    return full + (1 if rest >= 2 else 0)


def _learning_rates(config: RunConfig, num_train_images: int) -> list[float]:
    """The learning rate of every optimizer step of a run, in order: linear from ``lr * 0.1`` to
    ``lr`` over ``warmup_epochs`` worth of steps, then a half cosine from ``lr`` down towards 0."""
    steps = steps_per_epoch(num_train_images, config.batch_size)
    total = steps * config.epochs
    warmup, lr = min(round(config.warmup_epochs * steps), total), config.lr
    return [
        lr * (_WARMUP_START_FACTOR + (1.0 - _WARMUP_START_FACTOR) * s / warmup)
        if s < warmup
        else 0.5 * lr * (1.0 + math.cos(math.pi * ((s - warmup) / (total - warmup))))
        for s in range(total)
    ]


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.SGD:
    """SGD with momentum and weight decay on every parameter; Nesterov when ``config.nesterov`` and
    ``config.momentum > 0`` (Nesterov needs a non-zero momentum)."""
    return torch.optim.SGD(
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov and config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def _stream_seed(seed: int, stream: str) -> int:
    """Independent seeds for the batch order and the augmentation, derived from one run seed."""
    spawn_key = {"order": 1, "augment": 2}[stream]
    state = np.random.SeedSequence(seed, spawn_key=(spawn_key,)).generate_state(1, np.uint64)
    return int(state[0]) >> 1  # torch seeds are at most 2**63 - 1 on some builds


def _fingerprint(*tensors: torch.Tensor) -> str:
    """A hash of the tensors' contents, to notice a checkpoint trained on different data."""
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        array = t.detach().cpu().contiguous().numpy()
        h.update(str((array.dtype, array.shape)).encode())
        h.update(memoryview(array).cast("B"))
    return h.hexdigest()


def _run_facts(augment: bool, num_classes: int, *data: torch.Tensor) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it besides :data:`_TRAINING_KEYS`;
    ``data`` is the training images and labels, then the test images and labels."""
    train, test = _fingerprint(*data[:2]), _fingerprint(*data[2:])
    return {"augment": bool(augment), "num_classes": num_classes, "train_data": train, "test_data": test}


def _check_checkpoint_compatible(
    checkpoint: dict[str, Any], config: RunConfig, run_facts: dict[str, Any], path: str | os.PathLike[str]
) -> None:
    """Raise :class:`CheckpointMismatchError` naming every difference in :data:`_TRAINING_KEYS` and
    the run facts."""
    if checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointMismatchError(
            f"{path} has checkpoint format {checkpoint.get('format')!r}, expected {_CHECKPOINT_FORMAT}"
        )
    # No run fact is named like a configuration key, so one dict holds both.
    saved = {**checkpoint["config"], **checkpoint["run"]}
    current = config.to_dict()
    now = {**{key: current[key] for key in _TRAINING_KEYS}, **run_facts}
    differences = [
        f"{key}={saved.get(key)!r} in the checkpoint but {value!r} now"
        for key, value in now.items()
        if saved.get(key) != value
    ]
    if differences:
        raise CheckpointMismatchError(
            f"{path} was written by a different run and cannot be resumed: {'; '.join(differences)}. "
            "Delete it, pass resume=False, or train into another directory."
        )


@dataclass
class _TrainingState:
    """One training run: its settings and files, and everything it changes as it goes (what a
    checkpoint saves and restores)."""

    config: RunConfig
    checkpoint_path: Path
    history_path: Path
    run_facts: dict[str, Any]  # what a checkpoint must share with this run (_run_facts)
    steps: int  # optimizer steps per epoch
    model: nn.Module
    optimizer: torch.optim.SGD
    generators: dict[str, torch.Generator]
    scaler: torch.amp.GradScaler | None
    schedule: list[float]  # the learning rate of every step of the run
    device: torch.device
    memory_format: torch.memory_format = torch.contiguous_format  # the chosen step's (_use_step)
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    forward: Any = None  # the model, or its compiled wrapper (core.step_choice); None: the model
    train_step: dict[str, Any] = field(default_factory=dict)  # the chosen step's record
    environment: dict[str, Any] = field(default_factory=dict)  # history.json's (_environment)


def _new_state(
    config: RunConfig, out_dir: Path, run_facts: dict[str, Any], num_images: int
) -> _TrainingState:
    """A fresh network, optimiser and seeded generators on the configured device, for ``num_images``
    training images."""
    steps = steps_per_epoch(num_images, config.batch_size)
    device = config.resolved_device()
    model = build_model(config, run_facts["num_classes"])
    # The batch order is drawn on the CPU so that it is the same on every device; the augmentation
    # generator must live where the images are (random_crop_flip draws on their device).
    generators = {
        "order": torch.Generator().manual_seed(_stream_seed(config.seed, "order")),
        "augment": torch.Generator(device=device).manual_seed(_stream_seed(config.seed, "augment")),
    }
    return _TrainingState(
        config=config,
        checkpoint_path=out_dir / _CHECKPOINT_NAME,
        history_path=out_dir / _HISTORY_NAME,
        run_facts=run_facts,
        steps=steps,
        model=model,
        optimizer=make_optimizer(model, config),
        generators=generators,
        # fp16's narrow range underflows small gradients: scale the loss up, and the gradients back
        # down before the step (skipping steps whose gradients overflowed). bf16 and fp32 need none.
        scaler=torch.amp.GradScaler(device.type) if config.resolved_precision() == "fp16" else None,
        schedule=_learning_rates(config, num_images),
        device=device,
    )


def _resume(state: _TrainingState) -> dict[str, Any]:
    """Load the checkpoint into ``state``: weights, optimiser, step, history, every RNG state. Returns
    the record of the training step it used."""
    path = state.checkpoint_path
    checkpoint = load_torch(path)
    _check_checkpoint_compatible(checkpoint, state.config, state.run_facts, path)
    state.model.load_state_dict(checkpoint["model"])
    state.optimizer.load_state_dict(checkpoint["optimizer"])
    state.step = checkpoint["step"]
    state.history = list(checkpoint["history"])
    rng = checkpoint["rng"]
    for name, g in state.generators.items():
        g.set_state(rng[name])
    torch.set_rng_state(rng["torch_cpu"])
    if state.device.type == "cuda" and "torch_cuda" in rng:
        torch.cuda.set_rng_state(rng["torch_cuda"], state.device)
    if state.scaler is not None and "scaler" in checkpoint:
        state.scaler.load_state_dict(checkpoint["scaler"])
    if state.step != len(state.history) * state.steps:
        raise CheckpointMismatchError(
            f"{path} is inconsistent: step {state.step} after {len(state.history)} epochs of "
            f"{state.steps} steps"
        )
    return checkpoint.get("train_step", {})  # empty: from before steps were chosen


def _stop_if_diverged(state: _TrainingState, first_bad: int, epoch: int) -> None:
    """Raise :class:`TrainingDivergedError` when step ``first_bad`` (0-based, -1: none) of ``epoch``
    (0-based) had a non-finite loss. Nothing of the diverged epoch is saved."""
    if first_bad < 0:
        return
    kept = (
        f"the checkpoint of epoch {len(state.history)} in {state.checkpoint_path} is kept"
        if state.history and state.checkpoint_path.exists()
        else "no checkpoint was written"
    )
    raise TrainingDivergedError(
        f"training diverged: the loss became inf or nan at epoch {epoch + 1}, step {first_bad + 1} of "
        f"{state.steps} (learning rate {state.schedule[epoch * state.steps + first_bad]:.4g} at that "
        f"step); the learning rate is likely too high, try a smaller lr; {kept}"
    )


def _train_one_epoch(
    state: _TrainingState, train: tuple[torch.Tensor, torch.Tensor], epoch: int, *, augment: bool, bar: Any
) -> tuple[float, float, float]:
    """One pass over the training ``(images, labels)`` in a seeded order: ``(mean loss, accuracy,
    seconds)``, both running means over the epoch's (augmented) batches in train mode. Raises
    :class:`TrainingDivergedError` at the first non-finite loss, before anything of the epoch is saved.
    """
    model, optimizer, scaler, device = state.model, state.optimizer, state.scaler, state.device
    (x_train, y_train), config, steps = train, state.config, state.steps
    n, batch_size = x_train.shape[0], config.batch_size
    dtype = config.autocast_dtype()
    autocast = torch.autocast(device_type=device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    postfix_every = max(1, steps // _POSTFIX_UPDATES_PER_EPOCH)
    model.train()
    sync(device)
    start = time.perf_counter()
    order = torch.randperm(n, generator=state.generators["order"]).to(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    # Index of the epoch's first step with a non-finite loss (-1: none), kept on the device so the
    # loop does not wait for the GPU each step; read at every progress update and the epoch's end.
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)
    seen = 0
    for i in range(steps):
        index = order[i * batch_size : (i + 1) * batch_size]
        images, labels = x_train[index], y_train[index]
        if augment:
            images = random_crop_flip(
                images, padding=config.crop_padding, flip=config.flip, generator=state.generators["augment"]
            )
        inputs = normalize(images).contiguous(memory_format=state.memory_format)
        lr = state.schedule[state.step]
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast:
            # not `state.forward or model`: a compiled module's truth value calls len(), which fails
            logits = (model if state.forward is None else state.forward)(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=config.label_smoothing)
        optimizer_step(loss, optimizer, scaler)
        state.step += 1

        batch = labels.shape[0]
        seen += batch
        loss_sum += loss.detach().double() * batch
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), i, first_bad)
        bar.update(1)
        if (i + 1) % postfix_every == 0 or i + 1 == steps:
            _stop_if_diverged(state, int(first_bad), epoch)
            if not bar.disable:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}")
    sync(device)
    return loss_sum.item() / seen, correct.item() / seen, time.perf_counter() - start


def _save_checkpoint(state: _TrainingState, epoch: int) -> None:
    """Write the checkpoint of a finished ``epoch`` (1-based), atomically: everything :func:`_resume`
    needs to continue bit for bit."""
    rng: dict[str, Any] = {name: g.get_state() for name, g in state.generators.items()}
    rng["torch_cpu"] = torch.get_rng_state()
    if state.device.type == "cuda":
        rng["torch_cuda"] = torch.cuda.get_rng_state(state.device)
    save_torch(
        state.checkpoint_path,
        {
            "format": _CHECKPOINT_FORMAT,
            "model": state.model.state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "step": state.step,
            "epoch": epoch,
            "history": state.history,
            "config": state.config.to_dict(),
            "run": state.run_facts,
            "rng": rng,
            "train_step": state.train_step,
            **({"scaler": state.scaler.state_dict()} if state.scaler is not None else {}),
        },
    )


def _use_step(
    state: _TrainingState, train: tuple[torch.Tensor, torch.Tensor], planned_steps: int, saved: dict | None
) -> None:
    """Set ``state`` to train with the checkpoint's step (``saved``; one from before steps were chosen
    ran eagerly) when resuming, else with :func:`core.step_choice.choose_step`'s, timed on the first
    batch of ``train``."""
    (x_train, y_train), config = train, state.config
    if saved is not None:
        step = Step.from_dict(saved) if saved else Step(False, config.use_channels_last())
        if step not in candidate_steps(config):
            raise CheckpointMismatchError(
                f"{state.checkpoint_path} was trained with the {step.name} step, which "
                f"compile={config.compile!r} memory_format={config.memory_format!r} exclude; a resume "
                "must keep its step."
            )
        choice = StepChoice(step, "checkpoint")
    else:
        batch = slice(0, config.batch_size)
        inputs = normalize(x_train[batch])

        def on_probe(k: int, n: int, step: Step) -> None:
            # history.json while a candidate is timed, for the progress line (workflow.progress)
            what = f"choosing the training step: timing candidate {k} of {n} ({step.name})"
            document = {"complete": False, "epochs": [], "config": config.to_dict(), "probing": what}
            save_json(state.history_path, document)

        choice = choose_step(
            config, state.model, inputs, y_train[batch], planned_steps, make_optimizer, on_probe=on_probe
        )
    state.memory_format = torch.channels_last if choice.step.channels_last else torch.contiguous_format
    state.model = state.model.to(memory_format=state.memory_format)
    state.forward = compiled(state.model) if choice.step.compiled else None
    state.train_step = choice.record(config.batch_size)


def _environment(state: _TrainingState) -> dict[str, Any]:
    """``history.json``'s ``environment``: this machine, its versions, and how the run trains here."""
    precision = state.config.resolved_precision()
    return {
        **environment_report(),
        "device": str(state.device),
        "precision": precision,
        "bf16": precision == "bf16",
        "channels_last": state.memory_format == torch.channels_last,
        "train_step": {**state.train_step, "steps_per_epoch": state.steps},
    }


def _save_history(state: _TrainingState) -> None:
    """Write ``history.json``: the finished epochs, whether they are all, the configuration and the
    environment."""
    config = state.config
    document = {"complete": len(state.history) == config.epochs, "epochs": state.history}
    save_json(state.history_path, {**document, "config": config.to_dict(), "environment": state.environment})


def _run_epoch(
    state: _TrainingState,
    epoch: int,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    augment: bool,
    progress: bool,
) -> None:
    """Train epoch ``epoch`` (0-based) on ``train``, evaluate it on ``test``, then save its history
    entry, the checkpoint and the history."""
    config = state.config
    bar = tqdm(
        total=state.steps, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", disable=not progress
    )
    train_loss, train_acc, seconds = _train_one_epoch(state, train, epoch, augment=augment, bar=bar)
    tested = predict(state.model, *test, **config.eval_options())
    entry = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "train_acc": train_acc,
        "test_loss": cross_entropy(tested),
        "test_acc": accuracy(tested),
        "lr": state.schedule[state.step - 1],
        "seconds": seconds,
    }
    state.history.append(entry)
    bar.set_postfix(loss=f"{train_loss:.4f}", acc=f"{train_acc:.4f}", test_acc=f"{entry['test_acc']:.4f}")
    bar.close()
    _save_checkpoint(state, epoch + 1)
    _save_history(state)


def train_model(
    config: RunConfig,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    out_dir: str | os.PathLike[str],
    *,
    augment: bool,
    num_classes: int = 10,
    progress: bool = True,
    resume: bool = True,
    stop_after_epoch: int | None = None,
) -> TrainResult:
    """Train ResNet-18 with the configured recipe, checkpointing every epoch into ``out_dir``.

    The training images uint8 (N, 3, 32, 32) and labels int64 (N,) move to the training device once;
    the test images (M, 3, 32, 32) and labels (M,) are evaluated after every epoch. ``augment`` applies
    :func:`random_crop_flip` to every training batch. With ``resume`` a run continues from its
    checkpoint (one written with other training settings or data raises
    :class:`CheckpointMismatchError`). ``stop_after_epoch`` interrupts a run on purpose.

    Each history entry is ``{"epoch" (1-based), "train_loss", "train_acc"`` (running means over the
    epoch's augmented batches, in train mode), ``"test_loss", "test_acc"`` (eval mode), ``"lr"`` (of
    the epoch's last step), ``"seconds"`` (the epoch's training steps, evaluation excluded)``}``.
    """
    check_images_and_labels(train_images, train_labels, num_classes, prefix="train")
    check_images_and_labels(test_images, test_labels, num_classes, prefix="test")
    if stop_after_epoch is not None and stop_after_epoch < 1:
        raise ValueError(f"stop_after_epoch must be >= 1 or None, got {stop_after_epoch!r}")
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)

    run_facts = _run_facts(augment, num_classes, train_images, train_labels, test_images, test_labels)
    state = _new_state(config, Path(out_dir), run_facts, train_images.shape[0])
    saved_step = _resume(state) if resume and state.checkpoint_path.exists() else None
    train = train_images.to(state.device), train_labels.to(state.device)
    test = test_images.to(state.device), test_labels.to(state.device)
    last_epoch = config.epochs if stop_after_epoch is None else min(stop_after_epoch, config.epochs)
    planned = (last_epoch - len(state.history)) * state.steps
    _use_step(state, train, planned, saved_step)
    state.environment = _environment(state)
    if planned > 0 and not state.history:
        _save_history(state)  # before the first epoch ends, the progress display reads the measured step rate
    for epoch in range(len(state.history), last_epoch):
        _run_epoch(state, epoch, train, test, augment=augment, progress=progress)
    if not state.history_path.exists():
        # A run finished before this call still gets a history.json beside its checkpoint.
        _save_history(state)
    state.model.eval()
    seconds = float(sum(h["seconds"] for h in state.history))
    return TrainResult(state.model, state.history, state.checkpoint_path, seconds)


def load_trained_model(
    checkpoint_path: str | os.PathLike[str], device: str | torch.device | None = None
) -> nn.Module:
    """The network saved in a :func:`train_model` checkpoint, rebuilt from its configuration, eval mode,
    on ``device`` (None: the checkpoint configuration's device when this machine has it, else the CPU).
    """
    checkpoint = load_torch(checkpoint_path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{checkpoint_path} is not a checkpoint written by cifar_helpers.core.training")
    return _model_from_checkpoint(checkpoint, device)


def _model_from_checkpoint(checkpoint: dict[str, Any], device: str | torch.device | None) -> nn.Module:
    config = RunConfig.from_dict(checkpoint["config"])
    if device is None:
        try:
            device = config.resolved_device()
        except ConfigError:
            device = torch.device("cpu")
    model = build_model(config, checkpoint["run"]["num_classes"], torch.device(device))
    model.load_state_dict(checkpoint["model"])
    return model.eval()


def run_training_stage(
    run: RunDir,
    config: RunConfig,
    data: CifarData,
    stage: Literal["baseline", "augmented"],
) -> TrainResult:
    """Notebooks 01 and 04 in one call: train, evaluate, and write the stage's outputs.

    ``baseline`` trains without augmentation, ``augmented`` with random crop + flip; both start from
    the same initial weights and see the same batch order, so they differ only by the augmentation.
    Writes ``checkpoint.pt`` and ``history.json`` (:func:`train_model`), ``predictions.pt`` (the test
    set's) and ``metrics.json`` (accuracies, per-class accuracy, confusion matrix with rows true,
    training time and throughput). A finished stage is loaded, not retrained (its checkpoint must
    still match ``config`` and ``data``, else :class:`CheckpointMismatchError`).
    """
    if stage not in ("baseline", "augmented"):
        raise ValueError(f"stage must be 'baseline' or 'augmented', got {stage!r}")
    out_dir = run.stage_dir(stage)
    checkpoint_path = out_dir / _CHECKPOINT_NAME
    metrics_path = out_dir / _METRICS_NAME
    num_classes = len(data.classes)
    augment = stage == "augmented"
    tensors = (data.train_images, data.train_labels, data.test_images, data.test_labels)

    if run.is_complete(stage) and load_json(out_dir / _HISTORY_NAME).get("complete"):
        checkpoint = load_torch(checkpoint_path)
        run_facts = _run_facts(augment, num_classes, *tensors)
        _check_checkpoint_compatible(checkpoint, config, run_facts, checkpoint_path)
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        model = _model_from_checkpoint(checkpoint, config.resolved_device())
        seconds = float(load_json(metrics_path)["train_seconds"])
        return TrainResult(model, checkpoint["history"], checkpoint_path, seconds)

    result = train_model(config, *tensors, out_dir, augment=augment, num_classes=num_classes, resume=True)
    test = predict(result.model, data.test_images, data.test_labels, **config.eval_options())
    train = predict(result.model, data.train_images, data.train_labels, **config.eval_options())
    test.save(out_dir / _PREDICTIONS_NAME)
    test_accuracy, train_accuracy = accuracy(test), accuracy(train)
    per_class = per_class_accuracy(test.preds, test.labels, num_classes)
    n, batch_size = data.train_images.shape[0], config.batch_size
    seen = min(n, steps_per_epoch(n, batch_size) * batch_size) * config.epochs  # images trained on
    save_json(
        metrics_path,
        {
            "test_accuracy": test_accuracy,
            "train_accuracy": train_accuracy,
            "train_test_gap": train_accuracy - test_accuracy,
            "per_class_accuracy": {name: per_class[i].item() for i, name in enumerate(data.classes)},
            "confusion_matrix": confusion_matrix(test.preds, test.labels, num_classes).tolist(),
            "train_seconds": result.train_seconds,
            "epochs": config.epochs,
            "images_per_second": seen / result.train_seconds if result.train_seconds > 0 else None,
        },
    )
    return result
