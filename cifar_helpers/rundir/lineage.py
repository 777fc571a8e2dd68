"""A stage's life cycle in a run directory: has results, out of date, finished, set aside.

A stage records the SHA-256 of each output it reads (``<stage>/inputs.json``) and is *out of date* when
one no longer matches, or when a stage it reads is out of date (without ``inputs.json``: never).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from cifar_helpers.rundir import manifest
from cifar_helpers.rundir.artifacts import RunDir, load_json, save_json
from cifar_helpers.rundir.registry import STAGES

INPUTS_NAME = "inputs.json"
# Rewritten each time 00_setup reopens the run (the machine's report), without changing any result.
_NOT_AN_INPUT = frozenset({"environment.json"})


def failure_marker(root: str | os.PathLike[str], stage: str) -> Path:
    """The file that marks ``stage`` of the run in ``root`` (a pipeline stage, or 07's ``"replicates"``)
    as started by ``run_all.py`` and not finished: ``<root>/executed/<stage>.incomplete``."""
    return Path(root) / "executed" / f"{stage}.incomplete"


def _input_digests(run: RunDir, stage: str) -> dict[str, dict[str, str]]:
    """``{input stage: {output name: sha256}}`` of the outputs ``stage`` reads, as they are now (those
    with a manifest entry)."""
    digests: dict[str, dict[str, str]] = {}
    for source in STAGES[stage].inputs:
        files = manifest.read_manifest(run.stage_dir(source))
        outputs = [name for name in STAGES[source].outputs if name in files and name not in _NOT_AN_INPUT]
        digests[source] = {name: files[name].sha256 for name in outputs}
    return digests


def record_inputs(run: RunDir, stage: str) -> None:
    """Write ``<stage>/inputs.json``: what ``stage`` reads, as it is now (called when it opens)."""
    save_json(run.path(stage, INPUTS_NAME), _input_digests(run, stage))


def has_outputs(run: RunDir, stage: str) -> bool:
    """Whether any of ``stage``'s outputs exist (a finished or a partly written stage)."""
    base = run.stage_dir(stage)
    return any((base / name).exists() for name in STAGES[stage].outputs)


def _changed_inputs(run: RunDir, stage: str) -> list[str]:
    """The input stages whose outputs differ from what ``stage`` read when it ran, in pipeline order
    (none without an ``inputs.json``)."""
    path = run.stage_dir(stage) / INPUTS_NAME
    if stage == "setup" or not path.exists():
        return []
    try:
        recorded: Any = load_json(path)
    except OSError:  # damaged (artifacts.DamagedArtifactError) or unreadable
        recorded = None
    if not isinstance(recorded, dict):  # unreadable: what the stage read is unknown, so assume changed
        return [s for s in STAGES[stage].inputs if s != "setup"]
    now = _input_digests(run, stage)
    return [s for s in STAGES[stage].inputs if s in recorded and recorded[s] != now[s]]


def out_of_date(run: RunDir, stage: str) -> list[str]:
    """Why ``stage``'s results no longer follow from its inputs: the stages at fault (inputs changed
    since, or the stages at fault upstream of an out-of-date input), in pipeline order; empty if none."""
    if not has_outputs(run, stage):
        return []
    at_fault = set(_changed_inputs(run, stage))
    for source in STAGES[stage].inputs:
        if source not in at_fault and source != "setup":
            at_fault.update(out_of_date(run, source))
    return [s for s in STAGES if s in at_fault]


def stage_has_results(run: RunDir, stage: str) -> bool:
    """All of the stage's outputs exist, intact, and no run_all.py execution of it failed or stopped."""
    return run.is_complete(stage) and not failure_marker(run.root, stage).exists()


def stage_is_finished(run: RunDir, stage: str) -> bool:
    """It has its results (:func:`stage_has_results`), and they follow from its inputs as they are now."""
    return stage_has_results(run, stage) and not out_of_date(run, stage)


def stale_stages(run: RunDir, ran: set[str]) -> list[str]:
    """Stages with results that read (directly or not) from a stage rerun in this invocation but were
    not rerun themselves, or whose recorded inputs (``inputs.json``) have changed since they ran."""
    stale: list[str] = []
    for stage, spec in STAGES.items():
        if stage in ran or not stage_has_results(run, stage):
            continue
        upstream = [source for source in spec.inputs if source != "setup"]
        if any(source in ran or source in stale for source in upstream) or out_of_date(run, stage):
            stale.append(stage)
    return stale


def readers_of(stage: str) -> list[str]:
    """The stages that read ``stage``'s outputs, directly or through other stages, in pipeline order."""
    readers: list[str] = []
    for later, spec in STAGES.items():
        if any(source == stage or source in readers for source in spec.inputs):
            readers.append(later)
    return readers


def set_aside(run: RunDir, stage: str) -> tuple[Path | None, list[str]]:
    """Before ``stage`` is recomputed: record the inputs of each later stage with results but no record,
    so the recomputation makes it out of date; then move the stage's directory to ``<dir>.previous``
    (replacing an older one), so the stage, which resumes from whatever it finds, starts afresh.

    Returns the new location (None: nothing there, or setup, which lives in the run's root and is
    idempotent) and the later stages with results, which now hold results of the old ones."""
    affected = [later for later in readers_of(stage) if has_outputs(run, later)]
    for later in affected:
        if not (run.stage_dir(later) / INPUTS_NAME).exists():
            record_inputs(run, later)
    current = run.stage_dir(stage)
    if stage == "setup" or not current.exists():
        return None, affected
    previous = current.with_name(current.name + ".previous")
    if previous.exists():
        shutil.rmtree(previous)
    current.rename(previous)
    return previous, affected
