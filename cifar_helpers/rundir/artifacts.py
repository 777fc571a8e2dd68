"""The run directory: where each stage writes, atomic writes recorded in the manifests, and loading
what earlier stages wrote (a damaged file is reported with the stage to rerun)."""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cifar_helpers.rundir import manifest
from cifar_helpers.rundir.manifest import atomic_path
from cifar_helpers.rundir.registry import STAGES, stage_number


class MissingStageError(FileNotFoundError):
    """An artifact that an earlier stage should have written is not in the run directory."""


class DamagedArtifactError(MissingStageError):
    """An artifact exists but is not what its stage wrote (truncated, altered, or unsafe to load)."""


class StaleStageError(MissingStageError):
    """A stage's results were computed from outputs of an earlier stage that have changed since."""


def rerun_hint(path: str | os.PathLike[str]) -> str:
    """What to do about a bad artifact at ``path``: the stage (and notebook) that writes it, if known."""
    path = Path(path)
    spec = next((s for s in STAGES.values() if s.directory != "." and s.directory == path.parent.name), None)
    if spec is None and path.name in STAGES["setup"].outputs:
        spec = STAGES["setup"]
    if spec is None:
        return "write it again"
    return (
        f"rerun stage '{spec.name}' ({spec.notebook}; run_all.py --stages {stage_number(spec.name)} "
        "--force) to write it again"
    )


def _to_jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # tensors, NumPy arrays and scalars
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write an object of type {type(obj).__name__} to JSON")


def _save(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """``write`` a temporary file, renamed onto ``path`` when done (:func:`atomic_path`), then record
    ``path`` in its directory's manifest."""
    with atomic_path(path) as tmp:
        write(tmp)
    manifest.record(path)
    return Path(path)


def save_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically, and record it in the manifest. Tensors and NumPy
    arrays become lists; NaN (an undefined measure, e.g. a mean over no images) is kept."""
    text = json.dumps(obj, indent=2, default=_to_jsonable, allow_nan=True) + "\n"
    return _save(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_json(path: str | os.PathLike[str], object_hook: Any = None) -> Any:
    """Read a JSON file written by :func:`save_json` (``object_hook`` as for ``json.loads``); raises
    :class:`DamagedArtifactError` (one line, naming the stage to rerun) for a file that does not match
    its manifest entry or is not JSON."""
    problem = manifest.damage(path)
    if problem is None:
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"), object_hook=object_hook)
        except ValueError as err:  # bad JSON or bad UTF-8 in a file the manifest does not know
            problem = f"not JSON: {err}"
    raise DamagedArtifactError(f"{path} is damaged ({problem}): {rerun_hint(path)}")


def save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` atomically, recorded in the manifest; ``obj`` holds only tensors and plain values."""
    return _save(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` onto the CPU with ``weights_only=True`` (a crafted file cannot run code); raises
    :class:`DamagedArtifactError` (one line, naming the stage to rerun) for a file that does not match
    its manifest entry, cannot be read, or holds anything but tensors and plain values."""
    problem = manifest.damage(path)
    if problem is not None:
        raise DamagedArtifactError(f"{path} is damaged ({problem}): {rerun_hint(path)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"it would run {found.group(1)}" if found else "it holds objects other than plain values"
        raise DamagedArtifactError(
            f"refusing to load {path}: {what}, and this project's files hold only tensors and plain "
            f"values; {rerun_hint(path)}"
        ) from None
    except (RuntimeError, EOFError, ValueError) as err:
        # torch's own text runs to several sentences; its first names the problem.
        first = str(err).split(". ")[0].splitlines()[0] if str(err) else type(err).__name__
        raise DamagedArtifactError(f"{path} cannot be read ({first}): {rerun_hint(path)}") from None


def save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a matplotlib figure as PNG atomically, recorded in the manifest."""
    return _save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


class RunDir:
    """Paths of one run, and checks that an earlier stage has written what a later one needs."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def stage_dir(self, stage: str) -> Path:
        """Directory of ``stage`` (a key of :data:`STAGES`); the writers create it (:func:`atomic_path`)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; known stages: {', '.join(STAGES)}")
        return self.root / STAGES[stage].directory

    def path(self, stage: str, name: str) -> Path:
        """Path of artifact ``name`` of ``stage``; reading it creates nothing."""
        return self.stage_dir(stage) / name

    def require(self, stage: str, *names: str) -> list[Path]:
        """Paths of artifacts of ``stage``; raise :class:`MissingStageError` naming the notebook to run."""
        base = self.stage_dir(stage)
        missing = [n for n in names if not (base / n).exists()]
        if missing:
            raise MissingStageError(
                f"{', '.join(missing)} not found in {base}: run {STAGES[stage].notebook} (stage '{stage}') "
                f"with run_dir={str(self.root)!r} first"
            )
        for name, problem in self.damaged(stage, *names):
            raise DamagedArtifactError(f"{base / name} is damaged ({problem}): {rerun_hint(base / name)}")
        return [base / n for n in names]

    def has(self, stage: str) -> bool:
        """Whether every output of ``stage`` exists."""
        base = self.stage_dir(stage)
        return all((base / n).exists() for n in STAGES[stage].outputs)

    def damaged(self, stage: str, *names: str) -> list[tuple[str, str]]:
        """``(name, problem)`` for each artifact ``names`` of ``stage`` (default: its outputs) that
        exists but no longer matches the size and SHA-256 recorded when it was written."""
        base = self.stage_dir(stage)
        found = ((n, manifest.damage(base / n)) for n in names or STAGES[stage].outputs)
        return [(n, problem) for n, problem in found if problem is not None]

    def is_complete(self, stage: str) -> bool:
        """Whether ``stage`` has written every one of its outputs, each as it was written."""
        return self.has(stage) and not self.damaged(stage)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"
