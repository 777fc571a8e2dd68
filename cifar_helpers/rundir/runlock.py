"""One writer per run directory: an OS file lock on ``<run>/.run.lock``, held by ``run_all.py`` for a run.

:mod:`filelock`'s native lock, which the OS releases when its holder exits in any way, so a stale lock
file never blocks a later run. The notebooks a run starts inherit :data:`LOCK_HOLDER_ENV` and pass
:func:`check_not_locked`; anyone else is refused.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from filelock import FileLock, Timeout

LOCK_NAME = ".run.lock"
# Set by the lock holder for the processes it starts: "<pid of the holder>".
LOCK_HOLDER_ENV = "CIFAR_STRESS_RUN_LOCK_HOLDER"
# A probe by check_not_locked holds the lock for an instant, a run for minutes.
_WAIT_SECONDS = 0.5


# flock's answers on a filesystem that cannot lock files (some FUSE and network mounts).
_CANNOT_LOCK = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK}


class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock, or its filesystem cannot lock files."""


def _write_holder(fd: int) -> None:
    # Windows locks byte 0 against other readers, so "host:pid" starts at byte 1 (see _holder).
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"\n{socket.gethostname()}:{os.getpid()}\n".encode())


def _holder(lock_path: Path) -> tuple[str, str]:
    """``(host, pid)`` of the lock file's last holder, ``"unknown"`` where it does not say; reads every
    format written: ``"\nhost:pid\n"``, ``"\npid\n"`` and the earliest ``"pid\n"``."""
    try:
        with open(lock_path, "rb") as f:
            try:
                data = f.read()
            except OSError:  # Windows: byte 0 of a held lock cannot be read
                f.seek(1)
                data = f.read()
    except OSError:
        return "unknown", "unknown"
    host, _, pid = data.decode("utf-8", errors="replace").strip().rpartition(":")
    return host or "unknown", pid if pid.isdigit() else "unknown"


def _take(lock: FileLock, root: Path) -> None:
    """Acquire ``lock`` on ``root``, or raise :class:`RunLockedError` naming its holder (host and PID)
    or saying that the filesystem cannot lock files."""
    try:
        lock.acquire()
    except Timeout:
        host, pid = _holder(Path(lock.lock_file))
        raise RunLockedError(
            f"run directory {root} is in use by run_all.py (PID {pid} on host {host}); wait for it to "
            "finish, or use another run directory"
        ) from None
    except OSError as e:
        if e.errno not in _CANNOT_LOCK:
            raise
        # A lock file without a lock would let two runs write at once: refuse, saying where to go.
        raise RunLockedError(
            f"run directory {root} is on a filesystem that cannot lock files ({e.strerror}); "
            "use a run directory on a local disk (--run-dir)"
        ) from None


class RunLock:
    """Exclusive lock on a run directory (a context manager). ``RunLock(root).acquire()`` raises
    :class:`RunLockedError` naming the holder's PID when another process holds it; while held,
    :data:`LOCK_HOLDER_ENV` names this process, so the notebooks it starts may write to the run."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        # The file stays on release: deleting it would let two processes lock two files.
        self._lock = FileLock(
            self.path, timeout=_WAIT_SECONDS, preserve_lock_file=True, on_acquired=_write_holder
        )
        self._previous_env: str | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunLockedError` (OSError for an unwritable directory)."""
        self.root.mkdir(parents=True, exist_ok=True)
        _take(self._lock, self.root)
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

    def __exit__(self, *exc: object) -> None:
        self.release()


def check_not_locked(root: str | os.PathLike[str]) -> None:
    """Raise :class:`RunLockedError` if a process other than this one's launcher holds ``root``'s lock."""
    root = Path(root)
    lock_path = root / LOCK_NAME
    if not lock_path.exists():
        return  # never locked
    host, pid = _holder(lock_path)
    # The holder's own kernels inherit its PID; "unknown": a lock file from before hosts were written.
    if os.environ.get(LOCK_HOLDER_ENV) == pid and host in ("unknown", socket.gethostname()):
        return
    probe = FileLock(lock_path, timeout=_WAIT_SECONDS, preserve_lock_file=True)
    _take(probe, root)
    probe.release()
