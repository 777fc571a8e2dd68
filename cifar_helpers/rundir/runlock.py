"""One writer per run directory: an advisory lock held by ``run_all.py`` for the length of a run.

The lock is ``fcntl.flock`` on ``<run>/.run.lock``, which records the holder's PID for the messages.
The kernel releases a flock when its holder exits in any way, SIGKILL included, so a stale lock
file never blocks a later run: only a live process holds the lock.

The notebooks a run starts (papermill kernels) inherit :data:`LOCK_HOLDER_ENV`, set to the runner's
PID; :func:`check_not_locked` lets those through and refuses anyone else, e.g. a notebook opened in
JupyterLab that would write into a run directory while ``run_all.py`` is running on it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".run.lock"
# Set by the lock holder for the processes it starts: "<pid of the holder>".
LOCK_HOLDER_ENV = "CIFAR_STRESS_RUN_LOCK_HOLDER"
_ATTEMPTS = 5


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""


def _holder_pid(lock_path: Path) -> str:
    try:
        text = lock_path.read_text(encoding="utf-8").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


def _locked_message(root: Path, pid: str) -> str:
    return (
        f"run directory {root} is in use by run_all.py (PID {pid}); wait for it to finish, "
        "or use another run directory"
    )


class RunLock:
    """Exclusive lock on a run directory (a context manager); :meth:`acquire` never waits.

    ``RunLock(root).acquire()`` raises :class:`RunLockedError` naming the holder's PID when another
    process holds it. While held, :data:`LOCK_HOLDER_ENV` names this process, so the notebooks it
    starts may write to the run.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None
        self._previous_env: str | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` (OSError for an unwritable directory)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # A few short retries: check_not_locked holds a shared lock for an instant, a run for minutes.
        for attempt in range(_ATTEMPTS):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or attempt == _ATTEMPTS - 1:
                    os.close(fd)
                    if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                        raise RunLockedError(_locked_message(self.root, _holder_pid(self.path))) from None
                    raise
                time.sleep(0.1)
        # The PID is written only once the lock is ours, so it always names the live holder.
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as err:  # e.g. a full disk; os.write's error names no file
            os.close(fd)
            raise OSError(err.errno, err.strerror, str(self.path)) from None
        self._fd = fd
        self._previous_env = os.environ.get(LOCK_HOLDER_ENV)
        os.environ[LOCK_HOLDER_ENV] = str(os.getpid())
        return self

    def release(self) -> None:
        """Give the lock up (the lock file stays: deleting it would let two processes lock two files)."""
        if self._fd is None:
            return
        if self._previous_env is None:
            os.environ.pop(LOCK_HOLDER_ENV, None)
        else:
            os.environ[LOCK_HOLDER_ENV] = self._previous_env
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def check_not_locked(root: str | os.PathLike[str]) -> None:
    """Raise :class:`RunLockedError` if a process other than this one's launcher holds ``root``'s lock.

    Called before a notebook writes to a run. A process started by the holder (its PID in
    :data:`LOCK_HOLDER_ENV`) and the holder itself pass.
    """
    root = Path(root)
    lock_path = root / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return  # never locked
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _holder_pid(lock_path)
            if pid != "unknown" and os.environ.get(LOCK_HOLDER_ENV) == pid:
                return
            raise RunLockedError(_locked_message(root, pid)) from None
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
