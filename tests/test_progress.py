"""Live progress of run_all.py: the terminal lines of a stage, from its notebook and its history."""

from __future__ import annotations

import io

import pytest

from cifar_helpers.rundir.artifacts import RunDir, save_json
from cifar_helpers.workflow.progress import RunProgress, StageProgress, _format_duration, _section_titles


def history(epochs: int, done: int) -> dict:
    rows = [
        {
            "epoch": i + 1,
            "train_loss": 2.0 / (i + 1),
            "train_acc": 0.1 * (i + 1),
            "test_loss": 1.0,
            "test_acc": 0.05 * (i + 1),
            "lr": 0.1,
            "seconds": 2.0,
        }
        for i in range(done)
    ]
    return {"complete": done == epochs, "epochs": rows, "config": {"epochs": epochs}}


def test_format_duration():
    assert _format_duration(7.4) == "7s"
    assert _format_duration(75) == "1m15s"
    assert _format_duration(3 * 3600 + 120) == "3h02m"


def test_section_titles_follow_the_markdown_headings():
    notebook = {
        "cells": [
            {"cell_type": "markdown", "source": "# 03 · Title", "id": "a"},
            {"cell_type": "code", "source": "x = 1", "id": "b"},
            {"cell_type": "markdown", "source": ["## Heatmaps for every failure\n", "text"], "id": "c"},
            {"cell_type": "code", "source": "y = 2", "id": "d"},
            {"cell_type": "markdown", "source": "Plain text, no heading", "id": "e"},
            {"cell_type": "code", "source": "z = 3", "id": "f"},
        ]
    }
    assert _section_titles(notebook) == {
        "b": "opening the stage",
        "d": "Heatmaps for every failure",
        "f": "Heatmaps for every failure",
    }


def test_training_stage_prints_one_plain_line_per_epoch_with_loss_accuracy_and_etas(tmp_path):
    run = RunDir(tmp_path)
    out = io.StringIO()
    progress = RunProgress("smoke", ["baseline", "failures"], stream=out, live=False)
    with StageProgress(progress, "baseline", run) as stage:
        stage.on_cell_start(cell={"id": "x", "metadata": {}}, cell_index=3)
        for done in (1, 2, 3):
            save_json(run.path("baseline", "history.json"), history(3, done))
            stage.poll()
    lines = out.getvalue().splitlines()
    epoch_lines = [line for line in lines if "epoch " in line]
    assert [line.split("|")[0].strip() for line in epoch_lines] == [
        "[baseline] epoch 1/3  loss 2.000  test acc 5.0 %",
        "[baseline] epoch 2/3  loss 1.000  test acc 10.0 %",
        "[baseline] epoch 3/3  loss 0.667  test acc 15.0 %",
    ]
    assert all("stage ETA" in line and "run ETA" in line for line in epoch_lines)
    assert epoch_lines[-1].split("stage ETA ")[1].startswith("0s")
    assert progress.epoch_seconds is not None and "baseline" in progress.actual
    assert progress.pending == ["failures"]


def test_run_eta_is_rescaled_by_the_measured_speed(tmp_path):
    progress = RunProgress("smoke", ["setup", "baseline", "failures"], live=False, stream=io.StringIO())
    before = progress.run_eta()
    progress.finished("setup", 4 * progress.expected["setup"])  # this machine is 4x slower
    assert progress.speed() == pytest.approx(4.0)
    # Training is never rescaled by another kind of stage: before it is measured there is no number.
    assert before is None and progress.run_eta() is None and progress.estimate("baseline") is None
    assert progress.estimate("failures") == pytest.approx(4 * progress.expected["failures"])
    progress.epochs["baseline"] = 10
    progress.epoch_seconds = 1.5  # a measured epoch time is what training stages are estimated from
    assert progress.estimate("baseline") == pytest.approx(15.0)
    assert progress.estimate("augmented") == pytest.approx(15.0)
    assert progress.run_eta() == pytest.approx(15.0 + 4 * progress.expected["failures"])
    progress.finished("baseline", 1000.0)  # a training stage's time does not rescale the others
    assert progress.speed() == pytest.approx(4.0)


def test_training_eta_comes_from_the_step_rate_measured_before_the_first_epoch(tmp_path):
    run = RunDir(tmp_path)
    out = io.StringIO()
    progress = RunProgress("cpu", ["baseline", "failures"], stream=out, live=False)
    with StageProgress(progress, "baseline", run) as stage:
        assert "stage ETA not measured yet" in stage.describe()
        document = history(3, 0)
        document["environment"] = {"train_step": {"seconds_per_step": 0.5, "steps_per_epoch": 100}}
        save_json(run.path("baseline", "history.json"), document)
        stage.poll()
        assert progress.epoch_seconds == pytest.approx(55.0)
        assert "stage ETA 2m45s" in stage.describe()


def test_a_cold_step_probe_says_which_candidate_it_is_timing(tmp_path):
    run = RunDir(tmp_path)
    progress = RunProgress("cpu", ["baseline"], stream=io.StringIO(), live=False)
    with StageProgress(progress, "baseline", run) as stage:
        probing = "choosing the training step: timing candidate 3 of 4 (compiled channels_last)"
        save_json(run.path("baseline", "history.json"), {**history(19, 0), "probing": probing})
        stage.poll()
        assert f"[baseline] {probing} (0/19 epochs done) |" in stage.describe()
        save_json(run.path("baseline", "history.json"), history(19, 0))  # the step chosen: gone
        stage.poll()
        assert "timing candidate" not in stage.describe()


def test_a_stage_past_its_estimate_is_nearly_done_not_done(tmp_path):
    progress = RunProgress("cpu", ["stress"], live=False, stream=io.StringIO())
    stage = StageProgress(progress, "stress", RunDir(tmp_path))
    estimate = progress.estimate("stress")
    stage.start -= estimate - 30.0  # 30 s left by the estimate: shown as is
    assert stage.stage_left() == pytest.approx(30.0, abs=5.0)  # a slow machine may lose a second or two
    stage.start -= 60.0  # 30 s past the estimate, still running: a small remainder, never "0s"
    assert stage.stage_left() == pytest.approx(0.05 * estimate)
    assert progress.run_eta("stress", stage.stage_left()) > 0


def test_a_long_section_gets_a_plain_line_and_a_short_one_does_not(tmp_path, monkeypatch):
    import cifar_helpers.workflow.progress as progress_module

    run = RunDir(tmp_path)
    out = io.StringIO()
    progress = RunProgress("smoke", ["gradcam"], stream=out, live=False)
    stage = StageProgress(progress, "gradcam", run)
    stage.titles = {"a": "opening the stage", "b": "Heatmaps for every failure", "c": "Measured"}
    stage.on_cell_start(cell={"id": "a"}, cell_index=0)
    stage.on_cell_start(cell={"id": "b"}, cell_index=1)
    monkeypatch.setattr(progress_module, "PLAIN_SECTION_SECONDS", 0.0)
    stage._plain_section_line()
    stage._plain_section_line()  # once per section
    assert out.getvalue().count("\n") == 1 and "[gradcam] Heatmaps for every failure" in out.getvalue()


def test_live_mode_draws_one_updating_line(tmp_path):
    run = RunDir(tmp_path)
    out = io.StringIO()
    progress = RunProgress("smoke", ["baseline"], stream=out, live=True)
    with StageProgress(progress, "baseline", run) as stage:
        save_json(run.path("baseline", "history.json"), history(2, 1))
        stage.poll()
    text = out.getvalue()
    assert "\r" in text and "epoch 1/2" in text
    assert "\n" not in text  # redrawn in place with carriage returns; no plain lines
