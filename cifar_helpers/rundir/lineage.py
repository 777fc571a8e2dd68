"""What each stage read, and whether it still holds: ``<stage>/inputs.json``.

A stage records the SHA-256 of each output it reads; it is *out of date* when a recorded digest no
longer matches, or when a stage it reads is itself out of date. Without ``inputs.json``: never stale.
"""

from __future__ import annotations

from typing import Any

from cifar_helpers.rundir import manifest
from cifar_helpers.rundir.artifacts import STAGE_INPUTS, STAGE_OUTPUTS, STAGES, RunDir, load_json, save_json

INPUTS_NAME = "inputs.json"
# Rewritten each time 00_setup reopens the run (the machine's report), without changing any result.
_NOT_AN_INPUT = frozenset({"environment.json"})


def _input_digests(run: RunDir, stage: str) -> dict[str, dict[str, str]]:
    """``{input stage: {output name: sha256}}`` of the outputs ``stage`` reads, as they are now (those
    with a manifest entry)."""
    digests: dict[str, dict[str, str]] = {}
    for source in STAGE_INPUTS[stage]:
        files = manifest.read_manifest(run.stage_dir(source))
        digests[source] = {
            name: files[name]["sha256"]
            for name in STAGE_OUTPUTS[source]
            if name not in _NOT_AN_INPUT and isinstance(files.get(name), dict) and "sha256" in files[name]
        }
    return digests


def record_inputs(run: RunDir, stage: str) -> None:
    """Write ``<stage>/inputs.json``: what ``stage`` reads, as it is now (called when it opens)."""
    save_json(run.path(stage, INPUTS_NAME), _input_digests(run, stage))


def has_outputs(run: RunDir, stage: str) -> bool:
    """Whether any of ``stage``'s outputs exist (a finished or a partly written stage)."""
    base = run.stage_dir(stage)
    return any((base / name).exists() for name in STAGE_OUTPUTS[stage])


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
        return [s for s in STAGE_INPUTS[stage] if s != "setup"]
    now = _input_digests(run, stage)
    return [s for s in STAGE_INPUTS[stage] if s in recorded and recorded[s] != now[s]]


def out_of_date(run: RunDir, stage: str) -> list[str]:
    """Why ``stage``'s results no longer follow from its inputs: the stages at fault (inputs changed
    since, or the stages at fault upstream of an out-of-date input), in pipeline order; empty if none."""
    if not has_outputs(run, stage):
        return []
    at_fault = set(_changed_inputs(run, stage))
    for source in STAGE_INPUTS[stage]:
        if source not in at_fault and source != "setup":
            at_fault.update(out_of_date(run, source))
    return [s for s in STAGES if s in at_fault]


def readers_of(stage: str) -> list[str]:
    """The stages that read ``stage``'s outputs, directly or through other stages, in pipeline order."""
    readers: list[str] = []
    for later in STAGES:
        if any(source == stage or source in readers for source in STAGE_INPUTS[later]):
            readers.append(later)
    return readers


def pin_readers(run: RunDir, stage: str) -> list[str]:
    """Before ``stage`` is recomputed: record the inputs of each later stage with results but no record,
    so the recomputation makes it out of date; returns those later stages with results."""
    affected = [later for later in readers_of(stage) if has_outputs(run, later)]
    for later in affected:
        if not (run.stage_dir(later) / INPUTS_NAME).exists():
            record_inputs(run, later)
    return affected
