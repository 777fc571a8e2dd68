"""run_all.py guarding its run directory (issue 10, items 4-7): one writer at a time, environment
errors in one line, damaged outputs rerun, and requests validated before anything is set aside."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import run_all
from cifar_helpers.rundir.artifacts import RunDir, save_json, save_torch
from cifar_helpers.rundir.config import make_config
from cifar_helpers.rundir.registry import STAGES, StageSpec
from cifar_helpers.rundir.runlock import LOCK_HOLDER_ENV, LOCK_NAME, RunLock, RunLockedError, check_not_locked
from cifar_helpers.workflow import pipeline
from cifar_helpers.workflow.pipeline import StageResult
from cifar_helpers.workflow.stages import open_stage, setup_run

REPO = Path(__file__).resolve().parents[1]


def complete_run(root: Path) -> RunDir:
    """A run directory in which every stage counts as complete (placeholder outputs)."""
    run = RunDir(root)
    make_config("smoke", seed=42).save(run.config_path)
    for stage, spec in STAGES.items():
        for name in spec.outputs:
            if name.endswith(".pt"):
                save_torch(run.path(stage, name), {"w": list(range(1000))})
            elif (stage, name) != ("setup", "config.json"):
                save_json(run.path(stage, name), {})
    return run


@pytest.fixture
def no_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """The placeholder outputs are not a real run (results read strictly would name their missing
    keys): skip the summary's numbers and the HTML report."""
    monkeypatch.setattr(pipeline, "write_report", lambda root: Path(root) / "report.html")
    monkeypatch.setattr(
        pipeline, "summarize_run", lambda run, results: {"run_dir": str(run.root), "damaged": []}
    )
    monkeypatch.setattr(pipeline, "format_summary", lambda summary: summary["run_dir"])


def stderr_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- 4. one writer per run directory ----------------------------------------------------------------

_HOLDER = """
import sys, time
from cifar_helpers.rundir.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()  # held while the object lives
print("locked", flush=True)
time.sleep(120)
"""


def _start_holder(root: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_naming_the_holder_until_it_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "run"
    monkeypatch.delenv(LOCK_HOLDER_ENV, raising=False)
    holder = _start_holder(root)
    try:
        second = subprocess.run(
            [sys.executable, str(REPO / "run_all.py"), "--profile", "smoke", "--run-dir", str(root)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"PID {holder.pid}" in lines[0] and str(root) in lines[0]
        assert sorted(p.name for p in root.iterdir()) == [LOCK_NAME]  # nothing was written

        # A notebook opened by hand (JupyterLab) is refused before it writes ...
        with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
            setup_run(root, profile="smoke", seed=42, data_source="synthetic")
        with pytest.raises(RunLockedError, match=f"PID {holder.pid}"):
            open_stage("baseline", root, profile="smoke", seed=42)
        assert not (root / "config.json").exists()
        # ... but a kernel the holder started (it inherits the holder's PID) may write.
        monkeypatch.setenv(LOCK_HOLDER_ENV, str(holder.pid))
        check_not_locked(root)
        monkeypatch.setenv(LOCK_HOLDER_ENV, "1")
        with pytest.raises(RunLockedError):
            check_not_locked(root)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # SIGKILL releases the lock: the next run may start.
    monkeypatch.delenv(LOCK_HOLDER_ENV, raising=False)
    check_not_locked(root)
    with RunLock(root):
        assert (root / LOCK_NAME).read_text().strip() == f"{socket.gethostname()}:{os.getpid()}"
        assert os.environ[LOCK_HOLDER_ENV] == str(os.getpid())
    assert LOCK_HOLDER_ENV not in os.environ


@pytest.mark.slow
def test_two_run_all_processes_on_one_run_directory(tmp_path: Path) -> None:
    root = tmp_path / "run"
    command = [sys.executable, str(REPO / "run_all.py"), "--profile", "smoke", "--run-dir", str(root)]
    command += ["--stages", "0", "-p", "data_source=synthetic"]
    env = {k: v for k, v in os.environ.items() if k != LOCK_HOLDER_ENV}
    first = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the first run holds the lock
        lock = root / LOCK_NAME
        if lock.exists() and lock.read_text().strip() == f"{socket.gethostname()}:{first.pid}":
            break
        time.sleep(0.1)
    second = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, out + err
    assert second.returncode == 1
    assert second.stderr.strip() == (
        f"run_all.py: run directory {root} is in use by run_all.py (PID {first.pid} on host "
        f"{socket.gethostname()}); wait for it to finish, or use another run directory"
    )
    assert "running" not in second.stdout


# --- 5. environment errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cause"), [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")]
)
def test_an_unwritable_run_directory_is_one_line_and_exit_1(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_report: None,
    code: int,
    cause: str,
) -> None:
    run = complete_run(tmp_path / "run")
    summary = save_json(run.root / "summary.json", {"old": True})

    def fails(self: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(code, os.strerror(code), str(self))

    # Every stage is complete, so the first write is summary.json's (to its temporary name).
    monkeypatch.setattr(Path, "write_text", fails)
    assert run_all.main(["--profile", "smoke", "--run-dir", str(run.root)]) == 1
    line = stderr_line(capsys)
    assert line.startswith(f"run_all.py: cannot write {run.root}/.summary.json.") and line.endswith(cause)
    assert summary.read_text() == '{\n  "old": true\n}\n'  # nothing half-written
    assert not list(run.root.glob(".*.tmp"))


def test_a_full_disk_during_a_stage_is_one_line_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = complete_run(tmp_path / "run")

    def no_space(spec: StageSpec, root: Path, parameters: dict[str, Any], **kwargs: Any) -> StageResult:
        raise OSError(errno.ENOSPC, "No space left on device", str(root / "executed" / "x.ipynb"))

    monkeypatch.setattr(pipeline, "run_stage", no_space)
    assert run_all.main(["--profile", "smoke", "--run-dir", str(run.root), "--stages", "6", "--force"]) == 1
    assert stderr_line(capsys) == (
        f"run_all.py: cannot write {run.root}/executed/x.ipynb: No space left on device"
    )


# --- 6. damaged outputs -----------------------------------------------------------------------------


def test_a_truncated_checkpoint_makes_its_stage_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_report: None
) -> None:
    run = complete_run(tmp_path / "run")
    checkpoint = run.path("baseline", "checkpoint.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])
    ran: list[str] = []

    def pretend(spec: StageSpec, root: Path, parameters: dict[str, Any], **kwargs: Any) -> StageResult:
        ran.append(spec.name)
        return StageResult(spec.name, "ran", 0.0)

    monkeypatch.setattr(pipeline, "run_stage", pretend)
    assert run_all.main(["--profile", "smoke", "--run-dir", str(run.root)]) == 0
    # Every later stage read the damaged baseline: they run again on the new one.
    assert ran == ["baseline", "failures", "gradcam", "augmented", "reevaluation", "stress"]
    out = capsys.readouterr().out
    assert "[baseline] checkpoint.pt is damaged (" in out and "running the stage again" in out
    assert (run.root / "baseline.previous" / "checkpoint.pt").exists()  # kept, set aside


def test_a_stage_reading_a_damaged_input_is_refused_before_anything_moves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = complete_run(tmp_path / "run")
    checkpoint = run.path("baseline", "checkpoint.pt")
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(SystemExit) as info:
        run_all.main(["--profile", "smoke", "--run-dir", str(run.root), "--stages", "2", "--force"])
    assert info.value.code == 2
    line = stderr_line(capsys)
    assert "stage 'failures' reads stage 'baseline', which has a damaged checkpoint.pt" in line
    assert "add 1 to --stages" in line
    assert (run.root / "failures" / "failures.json").exists() and not (
        run.root / "failures.previous"
    ).exists()


# --- 7. validate first, then set aside ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-p", "seed=1"], "set up with seed=42, but this notebook asks for seed=1"),
        (["--profile", "cpu"], "set up with profile='smoke', but this notebook asks for profile='cpu'"),
    ],
)
def test_force_with_a_request_the_run_refuses_moves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    run = complete_run(tmp_path / "run")
    argv = ["--profile", "smoke", "--run-dir", str(run.root), "--stages", "2", "--force", *args]
    with pytest.raises(SystemExit) as info:
        run_all.main(argv)
    assert info.value.code == 2
    assert fragment in stderr_line(capsys)
    assert (run.root / "failures" / "failures.json").exists() and not (
        run.root / "failures.previous"
    ).exists()
    assert all(run.is_complete(stage) for stage in STAGES)


def test_a_refused_request_on_a_new_directory_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "new"
    with pytest.raises(SystemExit):
        run_all.main(["--profile", "smoke", "--run-dir", str(root), "--stages", "3"])
    assert "stage 'gradcam' reads stage 'setup', which is not complete" in stderr_line(capsys)
    assert not root.exists()
