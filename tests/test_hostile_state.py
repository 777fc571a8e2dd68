"""What the run keeps beside its notebooks, read strictly (issue 29): the training-step cache in the
user's home, the ledger files the summary reads, the run lock, and Ctrl-C. Each case ends in one line
that names the file (or what finished) and what to do, and loses nothing already written."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import cifar_helpers.core.step_choice as step_choice
import run_all
from cifar_helpers.analysis.claims.ledger import read_ledger
from cifar_helpers.core.step_choice import Measurement, Step, _cache_key, choose_step
from cifar_helpers.core.training import build_model, make_optimizer
from cifar_helpers.rundir import runlock
from cifar_helpers.rundir.artifacts import DamagedArtifactError, RunDir, save_json, save_torch
from cifar_helpers.rundir.config import make_config
from cifar_helpers.rundir.registry import STAGES
from cifar_helpers.rundir.runlock import LOCK_NAME, RunLock, RunLockedError

REPO = Path(__file__).resolve().parents[1]
EAGER_CL, EAGER_NCHW = Step(False, True), Step(False, False)
COMPILED_CL, COMPILED_NCHW = Step(True, True), Step(True, False)
RATES = {EAGER_CL: 0.10, EAGER_NCHW: 0.12, COMPILED_CL: 0.07, COMPILED_NCHW: 0.09}
CONFIG = make_config("cpu", device="cpu", precision="bf16", width=4, batch_size=8)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


# --- the training-step cache ---------------------------------------------------------------------


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache file, and a probe that returns :data:`RATES` (a list of the steps it timed)."""
    path = tmp_path / "cache" / "train_steps.json"
    monkeypatch.setattr(step_choice, "_cache_path", lambda: path)
    return path


def fake_probe(monkeypatch: pytest.MonkeyPatch, errors: dict[Step, str] | None = None) -> list[Step]:
    calls: list[Step] = []

    def fake(config: Any, model: Any, step: Step, *args: Any) -> Measurement:
        calls.append(step)
        if errors and step in errors:
            return Measurement(step, None, error=errors[step])
        return Measurement(step, RATES[step], setup_seconds=60.0 if step.compiled else 0.0)

    monkeypatch.setattr(step_choice, "_time_step", fake)
    return calls


def choose(config: Any = CONFIG) -> step_choice.StepChoice:
    inputs, labels = torch.zeros(8, 3, 32, 32), torch.zeros(8, dtype=torch.long)
    return choose_step(config, build_model(config), inputs, labels, 10_000, make_optimizer)


def entry(**changes: Any) -> str:
    """A cache holding this machine's four candidates, the fastest one changed by ``changes``."""
    rows = [Measurement(s, r, 60.0 if s.compiled else 0.0).to_dict() for s, r in RATES.items()]
    rows[2].update(changes)
    return json.dumps({"format": 1, "entries": {_cache_key(CONFIG): rows}})


@pytest.mark.parametrize(
    "contents",
    [
        "[]",
        "{",
        '{"format": 1, "entries": []}',
        entry(seconds_per_step=float("nan")),
        entry(seconds_per_step=float("inf")),
        entry(seconds_per_step=-0.01),
        entry(seconds_per_step=0),
        entry(setup_seconds=float("nan")),
        entry(compiled="false"),
        entry(error=7),
        entry(seconds_per_step=0.07, padding="x" * (2 << 20)),  # a huge file
    ],
    ids=[
        "list",
        "bad-json",
        "entries-list",
        "nan",
        "inf",
        "negative",
        "zero",
        "nan-setup",
        "str-bool",
        "error-int",
        "huge",
    ],
)
def test_whatever_is_in_the_step_cache_costs_one_measurement_and_one_line(
    contents: str, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text(contents, encoding="utf-8")
    calls = fake_probe(monkeypatch)
    choice = choose()
    assert choice.how == "measured" and len(calls) == 4 and choice.step == COMPILED_CL
    assert str(cache) in one_line(capsys.readouterr().err)
    # The measurement replaced what could not be used: the next run reads it, silently.
    calls.clear()
    assert choose().how == "cached" and calls == [] and capsys.readouterr().err == ""


@pytest.mark.parametrize("place", ["directory", "parent-is-a-file"])
def test_a_cache_that_cannot_be_written_costs_one_line_not_the_run(
    place: str, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if place == "directory":
        (cache / "kept").mkdir(parents=True)  # a directory in the file's place
    else:
        cache.parent.parent.mkdir(parents=True, exist_ok=True)
        cache.parent.write_text("kept")  # the cache's folder is a file
    calls = fake_probe(monkeypatch)
    assert choose().step == COMPILED_CL and len(calls) == 4
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and all(str(cache) in line for line in lines) and "Traceback" not in "".join(lines)
    assert "cannot be written" in lines[-1]
    assert (cache / "kept").is_dir() if place == "directory" else cache.parent.read_text() == "kept"


_SAVER = """
import sys
from pathlib import Path
from cifar_helpers.core import step_choice
from cifar_helpers.core.step_choice import Measurement, Step
step_choice._cache_path = lambda: Path(sys.argv[1])
step_choice._save_measurements("second", [Measurement(Step(False, False), 0.5)])
"""


def test_two_runs_saving_the_cache_at_once_keep_both_entries(cache: Path) -> None:
    from filelock import FileLock

    cache.parent.mkdir(parents=True)
    first = FileLock(f"{cache}.lock")
    with first:  # the first run is between reading the cache and writing it back
        second = subprocess.Popen([sys.executable, "-c", _SAVER, str(cache)], cwd=REPO)
        time.sleep(3)
        assert second.poll() is None and not cache.exists()  # the second run waits
        cache.write_text(json.dumps({"format": 1, "entries": {"first": []}}))
    assert second.wait(timeout=120) == 0
    assert set(json.loads(cache.read_text())["entries"]) == {"first", "second"}


def test_a_failed_candidate_keeps_its_error_and_is_tried_again_after_a_version_change(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = CONFIG.replace(compile=True)
    errors = {s: "BackendCompilerFailed: no C compiler" for s in (COMPILED_CL, COMPILED_NCHW)}
    calls = fake_probe(monkeypatch, errors)
    for _ in range(2):  # measured, then read from the cache: the reason is said both times
        with pytest.raises(ValueError, match="no C compiler"):
            choose(config)
    assert len(calls) == 2
    monkeypatch.setattr(torch, "__version__", "99.0")
    with pytest.raises(ValueError, match="no C compiler"):
        choose(config)
    assert len(calls) == 4


def test_the_cache_key_changes_with_the_training_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "training.py"
    source.write_text("def step(): return 1\n")
    monkeypatch.setattr(step_choice, "STEP_SOURCES", (source,))
    key = _cache_key(CONFIG)
    source.write_text("def step(): return 2\n")
    step_choice._code_version.cache_clear()  # computed once per process; a change is a new process
    assert _cache_key(CONFIG) != key
    assert "0.1.0" not in key


# --- the ledger files the summary reads --------------------------------------------------------------


def finished_run(root: Path) -> RunDir:
    """A run in which every stage counts as finished, with the numbers the summary reads."""
    run = RunDir(root)
    make_config("smoke", seed=42, data_source="synthetic").save(run.config_path)
    metrics = {"test_accuracy": 0.8, "train_accuracy": 0.9, "train_test_gap": 0.1, "train_seconds": 1.0}
    counts = {"fixed": 1, "kept_same": 2, "kept_different": 0, "new": 1}
    contents = {
        "metrics.json": metrics,
        "summary.json": {"num_high_confidence": 3, "threshold": 0.9},
        "comparison.json": {"counts": counts},
        "claims.json": [],
    }
    for stage, spec in STAGES.items():
        for name in spec.outputs:
            if name.endswith(".pt"):
                save_torch(run.path(stage, name), {"w": [0]})
            elif (stage, name) != ("setup", "config.json"):
                save_json(run.path(stage, name), contents.get(name, {}))
    return run


@pytest.mark.parametrize("contents", ["{", "[{]", "{}"])
def test_a_damaged_ledger_file_names_its_stage_and_the_summary_is_still_written(
    contents: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = finished_run(tmp_path / "run")
    claims = run.path("gradcam", "claims.json")
    claims.write_text(contents)
    assert run_all.main(["--profile", "smoke", "--run-dir", str(run.root), "--stages", "0"]) == 1
    line = one_line(capsys.readouterr().err)
    assert str(claims) in line and "rerun stage 'gradcam'" in line and "--stages 3 --force" in line
    assert claims.read_text() == contents  # nothing moved or rewritten
    summary = json.loads((run.root / "summary.json").read_text())
    assert summary["baseline"]["test_accuracy"] == 0.8 and summary["damaged"] == [line[len("run_all.py: ") :]]
    assert "gradcam/claims.json is damaged" in (run.root / "report.html").read_text()


def test_a_ledger_saved_as_an_object_is_not_an_empty_ledger(tmp_path: Path) -> None:
    run = finished_run(tmp_path / "run")
    save_json(run.path("gradcam", "claims.json"), {})  # recorded in the manifest: only its shape is wrong
    with pytest.raises(DamagedArtifactError, match=r"not a list of claims\): rerun stage 'gradcam'"):
        read_ledger(run.root)


# --- the run lock ----------------------------------------------------------------------------------

_HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1], preserve_lock_file=True)  # locks without rewriting the file
lock.acquire()
print("locked", flush=True)
time.sleep(120)
"""
_HOLD_RUN = """
import sys, time
from cifar_helpers.rundir.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _held(script: str, target: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.parametrize("written", ["12345\n", "\n12345\n"])
def test_a_lock_file_of_an_earlier_format_names_its_pid(written: str, tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    (root / LOCK_NAME).write_text(written)
    holder = _held(_HOLD, root / LOCK_NAME)
    try:
        with pytest.raises(RunLockedError, match=r"\(PID 12345 on host unknown\)"):
            RunLock(root).acquire()
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_names_host_and_pid(tmp_path: Path) -> None:
    holder = _held(_HOLD_RUN, tmp_path / "run")
    try:
        with pytest.raises(RunLockedError, match=rf"\(PID {holder.pid} on host {socket.gethostname()}\)"):
            RunLock(tmp_path / "run").acquire()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK])
def test_a_filesystem_that_cannot_lock_is_one_line_and_exit_1(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class NoFlock(runlock.FileLock):  # type: ignore[misc,valid-type]
        def acquire(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError(code, os.strerror(code))

    monkeypatch.setattr(runlock, "FileLock", NoFlock)
    run = finished_run(tmp_path / "run")
    before = sorted(p.relative_to(run.root) for p in run.root.rglob("*"))
    assert run_all.main(["--profile", "smoke", "--run-dir", str(run.root)]) == 1
    line = one_line(capsys.readouterr().err)
    assert str(run.root) in line and "cannot lock files" in line and "--run-dir" in line
    assert sorted(p.relative_to(run.root) for p in run.root.rglob("*")) == before


# --- Ctrl-C ----------------------------------------------------------------------------------------


def _tree(pid: int) -> set[int]:
    """``pid``'s descendants, from ``ps`` (POSIX)."""
    table = [
        line.split()
        for line in subprocess.run(
            ["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True
        ).stdout.splitlines()
    ]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {int(p) for p, parent in table if int(parent) in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout
    return bool(state.strip()) and not state.strip().startswith("Z")  # a zombie has ended


_WORKER = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("up", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="ps")
def test_the_replicate_cleanup_ends_the_whole_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    ray = pytest.importorskip("ray")
    from cifar_helpers.workflow import replicates

    before = replicates._descendants()
    worker = subprocess.Popen([sys.executable, "-c", _WORKER], stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None and worker.stdout.readline().strip() == "up"
    below = _tree(worker.pid)  # a seed's run_all.py below a Ray worker
    # Ray ends its own workers, not what they started.
    monkeypatch.setattr(ray, "shutdown", lambda: (worker.kill(), worker.wait()))
    replicates._shut_down_ray(before)
    time.sleep(1)
    assert below and not [pid for pid in below if _alive(pid)]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process group is POSIX")
def test_ctrl_c_is_one_line_exit_130_and_ends_every_process(tmp_path: Path) -> None:
    root = tmp_path / "run"
    command = [sys.executable, "run_all.py", "--profile", "smoke", "--run-dir", str(root),
               "-p", "data_source=synthetic"]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env, start_new_session=True)  # fmt: skip
    assert run.stdout is not None
    for line in run.stdout:  # interrupt while the baseline trains, as a terminal's Ctrl-C does
        if "[baseline]" in line and "running" in line:
            break
    time.sleep(8)  # the kernel is up and busy
    started = _tree(run.pid)
    assert started, "run_all.py started no kernel"
    os.killpg(run.pid, signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    line = one_line(err)
    assert "interrupted; finished stages: setup;" in line and "run the same command to resume" in line
    time.sleep(2)
    assert not [pid for pid in started if _alive(pid)]
    assert (root / "config.json").exists()  # what was done stays
