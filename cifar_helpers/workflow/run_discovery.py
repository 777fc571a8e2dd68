"""Which run a notebook opened by hand (``run_dir = None``, ``profile = "auto"``) means: the runs under
``runs/`` and what each has finished (after ``run_all.py --profile smoke`` it is ``runs/smoke``)."""

from __future__ import annotations

import os
from pathlib import Path

from cifar_helpers.rundir.artifacts import RunDir
from cifar_helpers.rundir.registry import STAGES


def _last_modified(run: RunDir) -> float:
    """The latest modification time of the run's configuration files and stage folders."""
    paths = [run.config_path, *(run.stage_dir(stage) for stage in STAGES if stage != "setup")]
    return max((p.stat().st_mtime for p in paths if p.exists()), default=0.0)


def _list_runs(runs_root: str | os.PathLike[str]) -> list[RunDir]:
    """Run directories (folders with a ``config.json``) under ``runs_root``, most recently modified first."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and (p / "config.json").exists()]
    return sorted(runs, key=_last_modified, reverse=True)


def most_recent_run_with(runs_root: str | os.PathLike[str], needed: tuple[str, ...]) -> RunDir | None:
    """The most recently modified run under ``runs_root`` in which every stage of ``needed`` finished."""
    for run in _list_runs(runs_root):
        if all(run.has(stage) for stage in needed):
            return run
    return None


def describe_runs(runs_root: str | os.PathLike[str]) -> str:
    """One line naming the runs that exist and what to set in a notebook's parameters cell to use one."""
    runs = _list_runs(runs_root)
    if not runs:
        return f"there is no run under {runs_root} yet: run `python run_all.py` (or 00_setup.ipynb) first"
    finished = {run: [s for s in STAGES if run.has(s)] for run in runs}
    listed = "; ".join(f"{run.root.name} (finished: {', '.join(finished[run]) or 'nothing'})" for run in runs)
    example = runs[0].root
    return (
        f"runs under {runs_root}: {listed}. To use one, set in the parameters cell "
        f'profile = "{example.name}" (for {example}) or run_dir = "{example}"'
    )
