"""A stage never silently replaces results that later stages read (issue 11, item 5): a rerun with
another configuration is refused naming the keys, ``force`` sets the old results aside, and a stage
whose inputs changed since it ran is noticed by its readers and by run_all.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from cifar_helpers.rundir import lineage
from cifar_helpers.rundir.artifacts import (
    RunDir,
    StaleStageError,
    load_json,
    save_json,
    save_torch,
)
from cifar_helpers.rundir.config import ConfigError, make_config
from cifar_helpers.rundir.lineage import stage_is_finished, stale_stages
from cifar_helpers.rundir.registry import STAGES
from cifar_helpers.workflow.stages import open_stage


def write_outputs(run: RunDir, stage: str, marker: object) -> None:
    """Placeholder outputs of ``stage`` whose contents depend on ``marker``."""
    for name in STAGES[stage].outputs:
        if name.endswith(".pt"):
            save_torch(run.path(stage, name), {"marker": str(marker)})
        elif (stage, name) != ("setup", "config.json"):
            save_json(run.path(stage, name), {"marker": marker})


def finished_run(root: Path, threshold: float = 0.5) -> RunDir:
    """A smoke run in which every stage ran through open_stage, failures with ``threshold``."""
    run = RunDir(root)
    make_config("smoke", seed=42).save(run.config_path)
    write_outputs(run, "setup", "setup")
    for stage in ("baseline", "failures", "gradcam", "augmented", "reevaluation", "stress"):
        knobs = {"confidence_threshold": threshold} if stage == "failures" else {}
        open_stage(stage, root, profile="smoke", **knobs)
        write_outputs(run, stage, threshold)
    return run


def test_every_stage_records_the_outputs_it_read(tmp_path):
    run = finished_run(tmp_path)
    recorded = load_json(run.path("gradcam", "inputs.json"))
    assert set(recorded) == {"setup", "baseline", "failures"}
    assert set(recorded["failures"]) == set(STAGES["failures"].outputs)
    assert "environment.json" not in recorded["setup"]  # rewritten whenever setup reopens
    assert all(stage_is_finished(run, stage) for stage in STAGES)
    assert stale_stages(run, set()) == []


def test_a_rerun_with_another_configuration_is_refused_naming_the_keys(tmp_path):
    run = finished_run(tmp_path, threshold=0.5)
    before = run.path("failures", "failures.json").read_bytes()
    with pytest.raises(ConfigError) as refused:
        open_stage("failures", tmp_path, profile="smoke", confidence_threshold=0.9)
    message = str(refused.value)
    assert "confidence_threshold=0.5 (this notebook asks for 0.9)" in message
    assert "confidence_threshold = 0.5" in message and "force = True" in message
    assert "gradcam" in message  # the stages that read these results
    assert run.path("failures", "failures.json").read_bytes() == before
    assert load_json(run.path("failures", "config.json"))["confidence_threshold"] == 0.5
    # The same configuration again is a plain rerun.
    open_stage("failures", tmp_path, profile="smoke", confidence_threshold=0.5)


def test_force_sets_the_old_results_aside_and_later_stages_become_out_of_date(tmp_path, capsys):
    run = finished_run(tmp_path, threshold=0.5)
    open_stage("failures", tmp_path, profile="smoke", confidence_threshold=0.9, force=True)
    printed = capsys.readouterr().out
    assert "failures.previous" in printed and "gradcam, reevaluation, stress" in printed
    assert load_json(tmp_path / "failures.previous" / "failures.json") == {"marker": 0.5}
    write_outputs(run, "failures", 0.9)

    assert lineage.out_of_date(run, "gradcam") == ["failures"]
    assert lineage.out_of_date(run, "reevaluation") == ["failures"]
    assert lineage.out_of_date(run, "augmented") == []
    assert not stage_is_finished(run, "gradcam") and stage_is_finished(run, "augmented")
    assert stale_stages(run, set()) == ["gradcam", "reevaluation", "stress"]

    # 05 opened now would compare the new failures with heatmaps of the old ones: refused, with the fix.
    with pytest.raises(StaleStageError) as refused:
        open_stage("reevaluation", tmp_path, profile="smoke")
    message = str(refused.value)
    assert "'gradcam'" in message and "'failures'" in message and "03_gradcam.ipynb" in message
    # Rerunning 03 (and then 05) on the new failures brings the run back in order.
    open_stage("gradcam", tmp_path, profile="smoke")
    write_outputs(run, "gradcam", 0.9)
    open_stage("reevaluation", tmp_path, profile="smoke")
    write_outputs(run, "reevaluation", 0.9)
    assert stale_stages(run, set()) == ["stress"]  # it still holds results of the old failures
    open_stage("stress", tmp_path, profile="smoke")
    write_outputs(run, "stress", 0.9)
    assert stale_stages(run, set()) == [] and all(stage_is_finished(run, s) for s in STAGES)


def test_a_run_without_recorded_inputs_is_pinned_before_force(tmp_path):
    """Runs written before inputs.json existed: force records what the later stages read first."""
    run = finished_run(tmp_path)
    for stage in STAGES:
        (run.stage_dir(stage) / lineage.INPUTS_NAME).unlink(missing_ok=True)
    assert lineage.out_of_date(run, "gradcam") == []  # unverified, not stale
    open_stage("baseline", tmp_path, profile="smoke", force=True)
    write_outputs(run, "baseline", "retrained")
    assert stale_stages(run, set()) == ["failures", "gradcam", "augmented", "reevaluation", "stress"]
    assert lineage.out_of_date(run, "reevaluation") == ["baseline"]


def test_an_unreadable_record_counts_as_changed(tmp_path):
    run = finished_run(tmp_path)
    run.path("gradcam", lineage.INPUTS_NAME).write_text("{not json", encoding="utf-8")
    assert lineage.out_of_date(run, "gradcam") == ["baseline", "failures"]


def test_readers_follow_the_data_flow():
    assert lineage.readers_of("failures") == ["gradcam", "reevaluation", "stress"]
    assert lineage.readers_of("augmented") == ["reevaluation", "stress"]
    assert lineage.readers_of("stress") == []
