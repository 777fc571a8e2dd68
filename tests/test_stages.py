import json

import pytest

from cifar_helpers.rundir.artifacts import MissingStageError, RunDir, save_json
from cifar_helpers.rundir.config import ConfigError, RunConfig
from cifar_helpers.rundir.registry import STAGES
from cifar_helpers.workflow.stages import default_run_dir, open_stage, setup_run


def test_setup_writes_config_and_environment(tmp_path):
    stage = setup_run(tmp_path / "run", profile="smoke", seed=3, epochs=1, width=None)
    assert stage.config.epochs == 1 and stage.config.width == 8  # None keeps the profile's value
    assert RunConfig.load(tmp_path / "run" / "config.json") == stage.config
    assert (tmp_path / "run" / "environment.json").exists()


def test_setup_refuses_to_change_an_existing_run(tmp_path):
    setup_run(tmp_path, profile="smoke", seed=3)
    setup_run(tmp_path, profile="smoke", seed=3)  # same configuration: reopening is fine
    with pytest.raises(ConfigError, match=r"epochs: 6 -> 5"):
        setup_run(tmp_path, profile="smoke", seed=3, epochs=5)


def test_open_stage_out_of_order_names_the_missing_notebook(tmp_path):
    with pytest.raises(MissingStageError, match=r"00_setup\.ipynb"):
        open_stage("baseline", tmp_path, profile="smoke", seed=42)
    setup_run(tmp_path, profile="smoke", seed=42)
    save_json(tmp_path / "data_summary.json", {})
    with pytest.raises(MissingStageError, match=r"01_baseline_training\.ipynb"):
        open_stage("failures", tmp_path, profile="smoke", seed=42)


def test_open_stage_checks_profile_and_seed_and_saves_knobs(tmp_path):
    setup_run(tmp_path, profile="smoke", seed=42)
    save_json(tmp_path / "data_summary.json", {})
    with pytest.raises(ConfigError, match="seed=42"):
        open_stage("baseline", tmp_path, profile="smoke", seed=1)
    with pytest.raises(ConfigError, match="profile='smoke'"):
        open_stage("baseline", tmp_path, profile="full", seed=42)
    stage = open_stage("baseline", tmp_path, profile="smoke", seed=42, confidence_threshold=0.8)
    assert stage.config.confidence_threshold == 0.8
    assert RunConfig.load(RunDir(tmp_path).path("baseline", "config.json")).confidence_threshold == 0.8
    with pytest.raises(ConfigError, match="confidence_threshold"):
        open_stage("baseline", tmp_path, profile="smoke", seed=42, confidence_threshold=2.0)


def test_default_run_dir_is_at_the_project_root(tmp_path):
    assert default_run_dir("smoke", cwd=tmp_path / "notebooks") == tmp_path / "runs" / "smoke"
    assert default_run_dir("smoke", cwd=tmp_path) == tmp_path / "runs" / "smoke"


def test_default_data_dir_is_the_project_data_folder_from_notebooks_too(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR10_ROOT", raising=False)
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    stage = setup_run(tmp_path / "run", profile="smoke", seed=42)
    assert stage.config.data_dir == str((tmp_path / "data").resolve())
    generated = setup_run(tmp_path / "run2", profile="smoke", seed=42, data_source="synthetic")
    assert generated.config.data_dir is None  # no folder involved
    monkeypatch.setenv("CIFAR10_ROOT", "/somewhere/else")
    assert setup_run(tmp_path / "run3", profile="smoke", seed=42).config.data_dir is None


def test_setup_records_the_resolved_precision_in_the_environment(tmp_path):
    stage = setup_run(tmp_path / "run", profile="smoke", data_source="synthetic")
    environment = json.loads((tmp_path / "run" / "environment.json").read_text())
    assert environment["precision"] == stage.config.resolved_precision() == "fp32"
    assert environment["device"] == "cpu"


def _finished_run(root, profile, stages):
    """A run folder whose ``stages`` have all their outputs (contents do not matter here)."""
    setup_run(root, profile=profile, data_source="synthetic")
    run = RunDir(root)
    save_json(run.root / "data_summary.json", {})  # written by notebook 00 itself
    for stage in stages:
        for name in STAGES[stage].outputs:
            save_json(run.path(stage, name), {})
    return run


def test_a_notebook_opened_by_hand_finds_the_most_recent_run_it_can_use(tmp_path, monkeypatch, capsys):
    import os

    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # where JupyterLab runs a notebook
    smoke = _finished_run(tmp_path / "runs" / "smoke", "smoke", ["baseline"])
    older = _finished_run(tmp_path / "runs" / "other", "smoke", ["baseline"])
    for path in [older.config_path, older.stage_dir("baseline")]:
        os.utime(path, (1, 1))  # long ago
    stage = open_stage("failures", None)  # the notebook's defaults: profile "auto", run_dir None
    assert stage.run.root == smoke.root and stage.config.profile == "smoke"
    assert f"Using the run in {smoke.root}" in capsys.readouterr().out


def test_without_a_usable_run_the_error_names_the_runs_and_the_parameter_to_set(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    _finished_run(tmp_path / "runs" / "smoke", "smoke", [])  # set up, nothing trained
    with pytest.raises(MissingStageError) as info:
        open_stage("failures", None)
    message = str(info.value)
    assert "00_setup.ipynb" in message  # what to run first (runs/cpu, auto on this machine), as before
    assert "smoke (finished: setup)" in message
    assert 'profile = "smoke"' in message and "parameters cell" in message
    # an explicit profile keeps the exact path runs/<profile> (run_all.py and papermill are unchanged)
    with pytest.raises(MissingStageError, match=r"runs/cpu"):
        open_stage("failures", None, profile="cpu")


def test_a_setting_an_earlier_stage_ran_with_holds_in_the_stages_that_read_it(tmp_path):
    # 02 finds the failures at 0.7 instead of the profile's 0.9: 06 (calibration, the positive
    # control) reads 02's threshold, not the run's; 04, which does not read 02, keeps the run's.
    run = _finished_run(tmp_path / "run", "smoke", ["baseline", "augmented"])
    failures = open_stage("failures", run.root, profile="smoke", seed=42, confidence_threshold=0.7)
    for name in STAGES["failures"].outputs:
        save_json(failures.path(name), {})
    assert RunConfig.load(run.config_path).confidence_threshold == 0.9
    assert open_stage("stress", run.root, profile="smoke", seed=42).config.confidence_threshold == 0.7
    assert open_stage("augmented", run.root, profile="smoke", seed=42).config.confidence_threshold == 0.9
    # The stage's own knob still wins.
    stress = open_stage("stress", run.root, profile="smoke", seed=42, force=True, confidence_threshold=0.8)
    assert stress.config.confidence_threshold == 0.8
