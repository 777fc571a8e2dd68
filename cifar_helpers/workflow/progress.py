"""Live progress of ``run_all.py`` in the terminal: what each stage is doing, and how long is left.

The terminal learns what a notebook's kernel does from the cell papermill starts (shown as its section
heading) and the trainer's per-epoch ``history.json``, polled from a thread. On a terminal each stage
is one updating tqdm line; elsewhere, one plain line per epoch and per long section.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

from cifar_helpers.rundir.artifacts import RunDir, load_json
from cifar_helpers.rundir.registry import STAGES

_TRAINING_STAGES = ("baseline", "augmented")
PLAIN_SECTION_SECONDS = 5.0  # a section shorter than this gets no line of its own in plain output
_POLL_SECONDS = 1.0
_NEARLY_DONE_SHARE = 0.05  # of its estimate: the least a running non-training stage is said to have left


def _format_duration(seconds: float) -> str:
    """``75`` -> ``"1m15s"``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _section_titles(notebook: dict[str, Any]) -> dict[str, str]:
    """``{code cell id: the last ``##`` heading above it}`` for a notebook (an nbformat dict); cells
    above the first heading belong to "opening the stage"."""
    titles: dict[str, str] = {}
    current = "opening the stage"
    for cell in notebook.get("cells", []):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if cell.get("cell_type") == "markdown":
            for line in source.splitlines():
                if line.startswith("##"):
                    current = line.lstrip("#").strip()
                    break
        elif cell.get("cell_type") == "code" and cell.get("id"):
            titles[cell["id"]] = current
    return titles


class RunProgress:
    """Progress of one ``run_all.py`` invocation over ``stages`` (in order) of a ``profile`` run, written
    to ``stream`` (stdout) as one updating tqdm line per stage when ``live`` (None: on a terminal)."""

    def __init__(
        self, profile: str, stages: Iterable[str], *, stream: TextIO | None = None, live: bool | None = None
    ) -> None:
        self.expected = {name: spec.expected_seconds[profile] for name, spec in STAGES.items()}
        self.pending = list(stages)
        self.stream = stream if stream is not None else sys.stdout
        self.live = self.stream.isatty() if live is None else live
        self.actual: dict[str, float] = {}  # seconds of the stages finished in this invocation
        self.epoch_seconds: float | None = None  # measured wall time per epoch, eval included
        self.epochs: dict[str, int] = {}

    def speed(self) -> float:
        """Measured / expected seconds over the non-training stages finished so far (1.0 before
        any), clamped. Training runs at another pace (compute, not I/O) and is estimated apart."""
        done = [s for s in self.actual if s not in _TRAINING_STAGES]
        if not done:
            return 1.0
        ratio = sum(self.actual[s] for s in done) / max(sum(self.expected[s] for s in done), 1e-9)
        return min(max(ratio, 0.1), 20.0)

    def estimate(self, stage: str) -> float | None:
        """Expected seconds of a stage not yet started; None for a training stage before any
        training was measured."""
        # Both training stages run the same number of epochs over the same data.
        epochs = self.epochs.get(stage) or max(self.epochs.values(), default=None)
        if stage in _TRAINING_STAGES:
            return epochs * self.epoch_seconds if self.epoch_seconds is not None and epochs else None
        return self.expected[stage] * self.speed()

    def run_eta(self, current: str | None = None, current_left: float | None = None) -> float | None:
        """Seconds left in the run: the current stage's remainder plus the stages after it (None
        while a training stage among them is not measured yet)."""
        later = [self.estimate(s) for s in self.pending if s != current]
        if None in later or (current in _TRAINING_STAGES and current_left is None):
            return None
        return sum(later) + (current_left or 0.0)

    def finished(self, stage: str, seconds: float) -> None:
        """Record a finished stage's duration (refines the estimates of the stages after it)."""
        self.actual[stage] = seconds
        if stage in self.pending:
            self.pending.remove(stage)

    def write(self, line: str) -> None:
        """Print a plain line (through tqdm on a terminal, so live lines are not broken)."""
        if self.live:
            tqdm.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)


class StageProgress:
    """One stage's line: its current section or epoch, its ETA and the run's. Use as a context manager
    while papermill runs the stage (:meth:`use_notebook`, then ``on_cell_start`` as its hook)."""

    def __init__(self, run_progress: RunProgress, stage: str, run: RunDir) -> None:
        self.progress = run_progress
        self.stage = stage
        self.run = run
        self.titles: dict[str, str] = {}
        self.section: str | None = None
        self.section_start = 0.0
        self.section_reported = True
        self.epochs_seen = 0
        self.epoch_times: list[float] = []
        self.last_epoch: dict[str, Any] | None = None
        self.probing: str | None = None  # what the training step's probe is timing, before epoch 1
        self.total_epochs = run_progress.epochs.get(stage)
        self.start = time.perf_counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar: Any = None
        self._history = run.stage_dir(stage) / "history.json"
        self._last_mtime: float | None = None
        self._first_count = 0

    def on_cell_start(self, cell: Any = None, cell_index: int | None = None, **_: Any) -> None:
        """nbclient's ``on_cell_start`` hook: note the section the starting cell belongs to."""
        cell_id = cell.get("id") if cell is not None else None
        title = self.titles.get(cell_id) if cell_id else None
        if title is None:  # papermill's injected parameters cell, or a notebook without ids
            title = self.section or "opening the stage"
        with self._lock:
            if title != self.section:
                self.section = title
                self.section_start = time.perf_counter()
                self.section_reported = False
        self._render()

    def poll(self) -> None:
        """Read ``history.json`` if it changed; a new epoch updates the line (or prints one)."""
        try:
            mtime = self._history.stat().st_mtime
        except OSError:
            return
        if mtime == self._last_mtime:
            return
        try:  # no manifest check (load_json): it fails between the file's rename and its manifest
            # entry, and an epoch would go unshown; the file is written atomically, so it is whole
            document = json.loads(self._history.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        self._last_mtime = mtime
        epochs = document["epochs"]
        now = time.perf_counter()
        with self._lock:
            self.probing = document.get("probing")  # optional: only while the step is being chosen
            self.total_epochs = document["config"]["epochs"]
            self.progress.epochs[self.stage] = self.total_epochs
            step = (document.get("environment") or {}).get("train_step") or {}
            if not epochs and self.progress.epoch_seconds is None and step.get("seconds_per_step"):
                # Measured before training (core.step_choice); plus a share for the test evaluation.
                self.progress.epoch_seconds = 1.1 * step["seconds_per_step"] * step["steps_per_epoch"]
            if len(epochs) <= self.epochs_seen:
                return
            if not self.epoch_times:
                self._first_count = self.epochs_seen
            self.epoch_times.append(now)
            self.epochs_seen = len(epochs)
            self.last_epoch = epochs[-1]
            counted = self.epochs_seen - self._first_count - 1
            if len(self.epoch_times) >= 2 and counted > 0:
                # Wall time between history updates: training, test evaluation and checkpointing.
                self.progress.epoch_seconds = (self.epoch_times[-1] - self.epoch_times[0]) / counted
            elif self.progress.epoch_seconds is None:
                # One epoch seen: its training time plus a share for the test evaluation.
                self.progress.epoch_seconds = 1.1 * epochs[-1]["seconds"] or None
        if not self.progress.live:
            self.progress.write(self.describe())
        self._render()

    def stage_left(self) -> float | None:
        """Seconds left in this stage: the epochs left at the measured epoch time, else the estimate
        less the time spent, at least :data:`_NEARLY_DONE_SHARE` of it (None: a training stage not
        measured yet)."""
        if self.stage in _TRAINING_STAGES:
            if not (self.total_epochs and self.progress.epoch_seconds):
                return None
            return max(self.total_epochs - self.epochs_seen, 0) * self.progress.epoch_seconds
        estimate = self.progress.estimate(self.stage)
        # A stage past its estimate is nearly done, not done: say so rather than "0s" while it runs.
        return max(estimate - (time.perf_counter() - self.start), _NEARLY_DONE_SHARE * estimate)

    def describe(self) -> str:
        """The current state as one line of text."""
        elapsed, left, epoch = time.perf_counter() - self.start, self.stage_left(), self.last_epoch
        training = self.stage in _TRAINING_STAGES and self.total_epochs
        what = self.section or "starting the kernel"
        if training and epoch is not None:
            what = f"epoch {self.epochs_seen}/{self.total_epochs}  loss {epoch['train_loss']:.3f}  "
            what += f"test acc {100 * epoch['test_acc']:.1f} %"
        elif training:
            what = f"{self.probing or what} (0/{self.total_epochs} epochs done)"
        run_left = self.progress.run_eta(self.stage, left)
        unmeasured = "not measured yet (training speed)"
        stage_eta = unmeasured if left is None else _format_duration(left)
        run_eta = unmeasured if run_left is None else _format_duration(run_left)
        times = f"elapsed {_format_duration(elapsed)} | stage ETA {stage_eta} | run ETA {run_eta}"
        return f"[{self.stage}] {what} | {times}"

    def _render(self) -> None:
        if self._bar is not None:
            self._bar.set_description_str(self.describe(), refresh=True)

    def _plain_section_line(self) -> None:
        with self._lock:
            due = (
                not self.section_reported
                and self.section is not None
                and time.perf_counter() - self.section_start >= PLAIN_SECTION_SECONDS
            )
            if due:
                self.section_reported = True
        if due and (self.stage not in _TRAINING_STAGES or self.last_epoch is None):
            self.progress.write(self.describe())

    def _loop(self) -> None:
        while not self._stop.wait(_POLL_SECONDS):
            self.poll()
            if self.progress.live:
                self._render()
            else:
                self._plain_section_line()

    def __enter__(self) -> StageProgress:
        # A stage resumed from a checkpoint already has epochs in its history: count from there.
        self.poll()
        self.epoch_times = []
        if self.stage in _TRAINING_STAGES and self.total_epochs is None and self.run.config_path.exists():
            self.total_epochs = load_json(self.run.config_path)["epochs"]
        if self.progress.live:
            self._bar = tqdm(total=None, bar_format="{desc}", file=self.progress.stream, leave=False)
            self._render()
        self._thread = threading.Thread(target=self._loop, name=f"progress-{self.stage}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.poll()
        if self._bar is not None:
            self._bar.close()
        self.progress.finished(self.stage, time.perf_counter() - self.start)

    def use_notebook(self, path: Path) -> None:
        """Read the section headings of the notebook being run."""
        self.titles = _section_titles(load_json(path))
