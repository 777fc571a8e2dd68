"""Size and SHA-256 of every artifact, recorded when it is written and checked when it is read.

Each directory :mod:`cifar_helpers.rundir.artifacts` writes into gets a ``manifest.json``:
``{"files": {"checkpoint.pt": {"bytes": 1234567, "sha256": "9f86d0..."}, ...}}``; a file without an
entry is unverified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20

# (path, size, mtime_ns, inode) -> sha256: a completeness check reads the same large checkpoints
# several times per run_all.py invocation; a file changed since has another size, mtime or inode.
_digest_cache: dict[tuple[str, int, int, int], str] = {}


def _file_digest(path: str | os.PathLike[str]) -> tuple[int, str]:
    """``(size in bytes, sha256 hex digest)`` of a file."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _digest_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        _digest_cache[key] = h.hexdigest()
    return st.st_size, _digest_cache[key]


@dataclass(frozen=True)
class FileRecord:
    """A manifest entry: what :func:`record` wrote down about a file as it was written."""

    bytes: int  # its size
    sha256: str  # its SHA-256, hex


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, FileRecord]:
    """``{file name: its record}`` from ``directory``'s manifest; empty when there is none or it is
    unreadable, which leaves its files unverified. A malformed entry is dropped alone, so
    :func:`record` keeps the others."""
    try:
        with open(Path(directory) / MANIFEST_NAME, encoding="utf-8") as f:
            entries = json.load(f)["files"].items()
    except (OSError, ValueError, LookupError, TypeError, AttributeError):
        return {}
    return {
        name: FileRecord(entry["bytes"], entry["sha256"])
        for name, entry in entries
        if isinstance(entry, dict)
        and entry.keys() == {"bytes", "sha256"}
        and type(entry["bytes"]) is int
        and isinstance(entry["sha256"], str)
    }


def record(path: str | os.PathLike[str]) -> None:
    """Record the size and SHA-256 of ``path`` (just written) in its directory's manifest, atomically."""
    path = Path(path)
    files = {**read_manifest(path.parent), path.name: FileRecord(*_file_digest(path))}
    entries = {name: asdict(entry) for name, entry in sorted(files.items())}
    text = json.dumps({"files": entries}, indent=2) + "\n"
    with atomic_path(path.parent / MANIFEST_NAME) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``, on error delete it,
    so a reader never sees a half-written file. Usage: ``with atomic_path(p) as tmp: torch.save(obj, tmp)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give artifacts the permissions any new file would get.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def damage(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` no longer matches its manifest entry, or None (it matches, or has no entry)."""
    path = Path(path)
    entry = read_manifest(path.parent).get(path.name)  # None: no entry, the file is unverified
    if entry is None or not path.is_file():
        return None
    size = path.stat().st_size
    if size != entry.bytes:
        return f"{size} bytes, but {entry.bytes} were written"
    if _file_digest(path)[1] != entry.sha256:
        return "its contents differ from what was written (SHA-256 mismatch)"
    return None
