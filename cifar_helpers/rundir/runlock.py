"""One writer per run directory: an OS file lock on ``<run>/.run.lock``, held by ``run_all.py`` for a run.

:mod:`filelock`'s native lock, which the OS releases when its holder exits in any way, so a stale lock
file never blocks a later run. The notebooks a run starts inherit :data:`LOCK_HOLDER_ENV` and pass
:func:`check_not_locked`; anyone else is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

LOCK_NAME = ".run.lock"
# Set by the lock holder for the processes it starts: "<pid of the holder>".
LOCK_HOLDER_ENV = "CIFAR_STRESS_RUN_LOCK_HOLDER"
# A probe by check_not_locked holds the lock for an instant, a run for minutes.
_WAIT_SECONDS = 0.5


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""


def _write_pid(fd: int) -> None:
    # Windows locks byte 0 against other readers, so the PID starts at byte 1 (see _holder_pid).
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"\n{os.getpid()}\n".encode())


def _holder_pid(lock_path: Path) -> str:
    try:
        with open(lock_path, "rb") as f:
            f.seek(1)
            text = f.read().decode("ascii", errors="replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _locked_error(root: Path, pid: str) -> RunLockedError:
    return RunLockedError(
        f"run directory {root} is in use by run_all.py (PID {pid}); wait for it to finish, "
        "or use another run directory"
    )


class RunLock:
    """Exclusive lock on a run directory (a context manager). ``RunLock(root).acquire()`` raises
    :class:`RunLockedError` naming the holder's PID when another process holds it; while held,
    :data:`LOCK_HOLDER_ENV` names this process, so the notebooks it starts may write to the run."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        # The file stays on release: deleting it would let two processes lock two files.
        self._lock = FileLock(
            self.path, timeout=_WAIT_SECONDS, preserve_lock_file=True, on_acquired=_write_pid
        )
        self._previous_env: str | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` (OSError for an unwritable directory)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise _locked_error(self.root, _holder_pid(self.path)) from None
        self._previous_env = os.environ.get(LOCK_HOLDER_ENV)
        os.environ[LOCK_HOLDER_ENV] = str(os.getpid())
        return self

    def release(self) -> None:
        """Give the lock up."""
        if not self._lock.is_locked:
            return
        if self._previous_env is None:
            os.environ.pop(LOCK_HOLDER_ENV, None)
        else:
            os.environ[LOCK_HOLDER_ENV] = self._previous_env
        self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def check_not_locked(root: str | os.PathLike[str]) -> None:
    """Raise :class:`RunLockedError` if a process other than this one's launcher holds ``root``'s lock."""
    root = Path(root)
    lock_path = root / LOCK_NAME
    if not lock_path.exists():
        return  # never locked
    pid = _holder_pid(lock_path)
    if pid != "unknown" and os.environ.get(LOCK_HOLDER_ENV) == pid:
        return
    try:
        with FileLock(lock_path, timeout=_WAIT_SECONDS, preserve_lock_file=True):
            return
    except Timeout:
        raise _locked_error(root, _holder_pid(lock_path)) from None
