"""The fastest training step on the machine at hand (eager or compiled, NCHW or channels-last),
chosen by timing a few steps of each candidate on the real model; over a run of ``planned_steps`` a
candidate costs ``setup_seconds + planned_steps * seconds_per_step``, so a short run does not compile.
The measurements are cached per machine and versions in the user cache, so the probe is paid once; a
cache that cannot be read or written costs a new measurement and one line naming it, never a run.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from cifar_helpers.rundir.artifacts import atomic_path
from cifar_helpers.rundir.config import RunConfig

_CACHE_FORMAT = 1
_PROBE_WARMUP_STEPS = 3  # untimed: the first calls pick kernels (and compile)
_PROBE_TIMED_STEPS = 10
# Before this machine ever compiled the model: a guess of the compile time and of the most compiling
# can gain, to tell whether a run is long enough to try.
_COMPILE_SECONDS_GUESS = 60.0
_MAX_COMPILE_SPEEDUP = 2.0
_MAX_CACHE_BYTES = 1 << 20  # a few hundred entries; anything larger is not this library's cache
_CACHE_LOCK_SECONDS = 10.0  # two runs saving at once: the second waits for the first, then adds its entry
# The code a measured step runs: a change to any of them is another step, measured again.
STEP_SOURCES = tuple(Path(__file__).with_name(f"{name}.py") for name in ("step_choice", "training", "models"))


@dataclass(frozen=True)
class Step:
    """How the training step runs: compiled or eager, channels-last or NCHW tensors."""

    compiled: bool
    channels_last: bool

    @property
    def name(self) -> str:
        """``"compiled channels_last"``, ``"eager NCHW"``, ..."""
        return (
            f"{'compiled' if self.compiled else 'eager'} {'channels_last' if self.channels_last else 'NCHW'}"
        )

    def to_dict(self) -> dict[str, Any]:
        """``{"step": name, "compiled", "channels_last"}``, the head of every record of a step."""
        return {"step": self.name, "compiled": self.compiled, "channels_last": self.channels_last}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Step:
        """The step saved by :meth:`to_dict`; ValueError unless both fields are booleans."""
        flags = values["compiled"], values["channels_last"]
        if not all(isinstance(flag, bool) for flag in flags):
            raise ValueError(f"compiled and channels_last must be true or false, not {flags}")
        return cls(*flags)


def _seconds(value: Any, name: str, *, positive: bool) -> float:
    """``value`` if it is a finite number of seconds (> 0 when ``positive``, else >= 0); else ValueError."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} {value!r} is not a finite {'positive' if positive else 'nonnegative'} time")
    return float(value)


@dataclass
class Measurement:
    """One candidate's probe: seconds per step once warm, and the one-off cost of its first calls
    beyond a step's (the compilation). ``seconds_per_step`` is None when it failed (``error``) or was
    not tried."""

    step: Step
    seconds_per_step: float | None
    setup_seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the step's name."""
        return {
            **self.step.to_dict(),
            "seconds_per_step": self.seconds_per_step,
            "setup_seconds": self.setup_seconds,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_dict`; ValueError, KeyError or TypeError for what it did not write."""
        rate, error = values["seconds_per_step"], values["error"]
        if error is not None and not isinstance(error, str):
            raise ValueError(f"error {error!r} is not text")
        return cls(
            Step.from_dict(values),
            None if rate is None else _seconds(rate, "seconds_per_step", positive=True),
            _seconds(values["setup_seconds"], "setup_seconds", positive=False),
            error,
        )


@dataclass
class StepChoice:
    """The step a training run uses and why: ``how`` is ``forced`` (the configuration names one),
    ``measured`` (probed now), ``cached`` (probed earlier on this machine), ``checkpoint`` (a resumed
    run keeps its step)."""

    step: Step
    how: str
    measurements: list[Measurement] = field(default_factory=list)
    probe_seconds: float = 0.0
    planned_steps: int = 0

    def record(self, batch_size: int) -> dict[str, Any]:
        """What the run's records say: the step, how it was chosen, each candidate's rate."""
        rate = next((m.seconds_per_step for m in self.measurements if m.step == self.step), None)
        return {
            **self.step.to_dict(),
            "how": self.how,
            "planned_steps": self.planned_steps,
            "probe_seconds": self.probe_seconds,
            "seconds_per_step": rate,
            "candidates": [
                {
                    **m.to_dict(),
                    "images_per_second": batch_size / m.seconds_per_step if m.seconds_per_step else None,
                }
                for m in self.measurements
            ],
        }


def candidate_steps(config: RunConfig) -> list[Step]:
    """The steps ``config`` allows, the default (eager, in ``use_channels_last``'s format) first."""
    formats = {"channels_last": [True], "contiguous": [False]}.get(config.memory_format, [True, False])
    compiles = [config.compile] if isinstance(config.compile, bool) else [False, True]
    default = Step(compiled=compiles[0], channels_last=config.use_channels_last())
    others = [Step(c, cl) for c in compiles for cl in formats]
    return [default] + [s for s in others if s != default] if default in others else others


def _decide(measurements: list[Measurement], planned_steps: int) -> Step:
    """The step with the least ``setup_seconds + planned_steps * seconds_per_step``; the first on a
    tie (the default)."""
    usable = [m for m in measurements if m.seconds_per_step is not None]
    if not usable:
        errors = "; ".join(f"{m.step.name}: {m.error}" for m in measurements)
        raise ValueError(f"no candidate step could be measured ({errors})")
    return min(usable, key=lambda m: m.setup_seconds + planned_steps * m.seconds_per_step).step


def _machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def _code_version(sources: tuple[Path, ...]) -> str:
    """A hash of the training step's source: the package version stays 0.1.0 while its code changes."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _cache_key(config: RunConfig) -> str:
    """What a measurement depends on: the machine, the versions, and the step's shape and arithmetic."""
    device = config.resolved_device()
    parts = {
        "machine": _machine_name(device),
        "device": device.type,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "cifar_helpers": _code_version(STEP_SOURCES),
        "precision": config.resolved_precision(),
        "width": config.width,
        "batch_size": config.batch_size,
    }
    return json.dumps(parts, sort_keys=True)


def _cache_path() -> Path:
    """The cache file of the measurements; platformdirs honours ``XDG_CACHE_HOME``."""
    return Path(platformdirs.user_cache_dir("cifar-stress")) / "train_steps.json"


def _read_cache(path: Path) -> dict[str, Any]:
    """The cache's entries, unchecked; OSError or ValueError when there is no readable cache."""
    if path.stat().st_size > _MAX_CACHE_BYTES:
        raise ValueError(f"{path.stat().st_size} bytes, more than a cache of measurements holds")
    document = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("format") != _CACHE_FORMAT:
        raise ValueError(f"not a format-{_CACHE_FORMAT} cache of measured training steps")
    if not isinstance(document.get("entries"), dict):
        raise ValueError("its entries are not a JSON object")
    return document["entries"]


def _cache_problem(path: Path, problem: str) -> None:
    # One line on stderr (the notebook's output): the run goes on, measuring instead of reading.
    print(f"training-step cache {path}: {problem}", file=sys.stderr, flush=True)


def _cached_measurements(key: str) -> list[Measurement]:
    """The measurements saved under ``key``; none when there are none or the file is unusable (said in
    one line)."""
    path = _cache_path()
    try:
        return [Measurement.from_dict(m) for m in _read_cache(path).get(key, [])]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"{type(error).__name__}: {error}"
        _cache_problem(path, f"cannot be used ({problem}); ignored, replaced by the next measurement")
        return []


def _save_measurements(key: str, measurements: list[Measurement]) -> None:
    """Add ``measurements`` under ``key`` to the cache, atomically and under a lock (two runs saving at
    once keep both entries). A cache that cannot be written is said in one line; the run goes on."""
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock", timeout=_CACHE_LOCK_SECONDS):
            try:
                entries = _read_cache(path)
            except (OSError, ValueError):  # none yet, or unusable (said when it was read): start anew
                entries = {}
            entries[key] = [m.to_dict() for m in measurements]
            with atomic_path(path) as tmp:
                text = json.dumps({"format": _CACHE_FORMAT, "entries": entries}, indent=1)
                tmp.write_text(text, encoding="utf-8")
    except OSError as error:  # filelock's Timeout is one too
        _cache_problem(path, f"cannot be written ({error}); make its folder writable to keep measurements")


def compiled(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` through ``torch.compile``, from a clean compiler state: every run compiles the same
    graphs in the same order (a compile cache filled by earlier runs, or dynamo's recompile limit,
    must not change which kernels a run gets). One static graph per batch size."""
    torch._dynamo.reset()
    return torch.compile(model, dynamic=False)


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued kernels (CUDA runs them asynchronously) before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None
) -> None:
    """One update from the scalar ``loss``, through ``scaler`` when fp16 needs one. The trainer and the
    probe share it, so the probe times the real step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()


def _time_step(
    config: RunConfig,
    model: nn.Module,
    step: Step,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    make_optimizer: Callable[[nn.Module, RunConfig], torch.optim.Optimizer],
) -> Measurement:
    """Measure one candidate on a copy of ``model`` (left untouched): ``_PROBE_WARMUP_STEPS`` untimed
    steps, then ``_PROBE_TIMED_STEPS`` timed ones. ``inputs``: normalised float (B, 3, 32, 32)."""
    device = inputs.device
    probe = copy.deepcopy(model).train()
    memory_format = torch.channels_last if step.channels_last else torch.contiguous_format
    probe = probe.to(memory_format=memory_format)
    inputs = inputs.contiguous(memory_format=memory_format)
    forward = compiled(probe) if step.compiled else probe
    optimizer = make_optimizer(probe, config)
    dtype = config.autocast_dtype()
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def one_step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = forward(inputs)
        optimizer_step(F.cross_entropy(logits.float(), labels), optimizer, scaler)

    def timed(count: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(count):
            one_step()
        sync(device)
        return time.perf_counter() - start

    try:
        warmup = timed(_PROBE_WARMUP_STEPS)
        seconds = timed(_PROBE_TIMED_STEPS) / _PROBE_TIMED_STEPS
    except Exception as error:
        return Measurement(step, None, error=f"{type(error).__name__}: {error}".splitlines()[0][:300])
    finally:
        if step.compiled:
            torch._dynamo.reset()
    return Measurement(step, seconds, setup_seconds=max(warmup - _PROBE_WARMUP_STEPS * seconds, 0.0))


def _worth_compiling(eager: list[Measurement], planned_steps: int, known: list[Measurement]) -> bool:
    """Whether ``planned_steps`` are enough for a compiled step to repay its compilation even at
    :data:`_MAX_COMPILE_SPEEDUP` (compile time: the cached one of this machine, else a guess)."""
    compile_seconds = max((m.setup_seconds for m in known if m.step.compiled), default=_COMPILE_SECONDS_GUESS)
    fastest = min((m.seconds_per_step for m in eager if m.seconds_per_step is not None), default=0.0)
    return planned_steps * fastest * (1 - 1 / _MAX_COMPILE_SPEEDUP) > compile_seconds


def choose_step(
    config: RunConfig,
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    planned_steps: int,
    make_optimizer: Callable[[nn.Module, RunConfig], torch.optim.Optimizer],
    on_probe: Callable[[int, int, Step], None] | None = None,
) -> StepChoice:
    """The training step for ``planned_steps`` steps of ``model`` on batches like ``inputs``
    (normalised float (B, 3, 32, 32) on the training device) and ``labels`` (B,).

    A configuration that names one step gets it. Else the cached measurements decide, or the
    candidates are timed now: eager first, the compiled ones only when the run is long enough to repay
    compiling. The probe leaves ``model`` and every random generator as they were. ``on_probe(k, n,
    step)`` is called before candidate ``k`` of ``n`` is timed (a cold probe compiles for minutes).
    """
    candidates = candidate_steps(config)
    key = _cache_key(config)
    known = {m.step: m for m in _cached_measurements(key)}
    if len(candidates) == 1:
        return StepChoice(candidates[0], "forced", [m for m in known.values() if m.step == candidates[0]])
    if all(s in known for s in candidates):
        measured = [known[s] for s in candidates]
        return StepChoice(_decide(measured, planned_steps), "cached", measured, planned_steps=planned_steps)
    start = time.perf_counter()

    def probe(steps: list[Step]) -> list[Measurement]:
        measured = []
        for step in steps:
            if on_probe is not None:
                on_probe(candidates.index(step) + 1, len(candidates), step)
            measured.append(_time_step(config, model, step, inputs, labels, make_optimizer))
        return measured

    with torch.random.fork_rng(devices=[inputs.device] if inputs.device.type == "cuda" else []):
        measured = probe([s for s in candidates if not s.compiled])
        later = [s for s in candidates if s.compiled]
        if not measured or _worth_compiling(measured, planned_steps, list(known.values())):
            measured += probe(later)
            _save_measurements(key, measured)
        else:
            measured += [
                Measurement(s, None, error="not tried: too few steps to repay compiling") for s in later
            ]
    return StepChoice(
        _decide(measured, planned_steps), "measured", measured, time.perf_counter() - start, planned_steps
    )
