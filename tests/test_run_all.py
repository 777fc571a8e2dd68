"""run_all.py: argument handling, stage selection, and the whole smoke pipeline on the shared data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_all

from cifar_helpers.rundir.artifacts import RunDir, save_json
from cifar_helpers.rundir.lineage import stale_stages
from cifar_helpers.rundir.registry import STAGES
from cifar_helpers.workflow.pipeline import (
    PipelineArgumentError,
    StageFailed,
    _parse_parameter,
    _parse_stages,
    run_stage,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--profile", "bogus"], "invalid choice: 'bogus'"),
        (["-p", "nonsense=1"], "unknown parameter"),
        (["-p", "epochs=0"], "epochs must be >= 1"),
        (["-p", "confidence_threshold=high"], "confidence_threshold"),
        (["--stages", "9"], "--stages"),
        (["-p", "epochs"], "expected KEY=VALUE"),
        (["--data-dir", "/no/such/dir"], "no such directory"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, fragment):
    completed = run_all("--run-dir", str(tmp_path / "run"), *args)
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert fragment in lines[0] and "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()  # nothing ran


def test_unknown_parameter_lists_the_known_ones(tmp_path):
    line = run_all("--run-dir", str(tmp_path), "-p", "nonsense=1").stderr
    assert "confidence_threshold" in line and "epochs" in line


def test_parse_stages():
    names = list(STAGES)
    assert _parse_stages(None) == names
    assert _parse_stages("3-5") == names[3:6]
    assert _parse_stages("gradcam,0") == ["setup", "gradcam"]
    with pytest.raises(PipelineArgumentError):
        _parse_stages("5-3")
    with pytest.raises(PipelineArgumentError):
        _parse_stages("nonsense")


def test_parse_parameter_reads_literals_and_strings():
    assert _parse_parameter("epochs=3") == ("epochs", 3)
    assert _parse_parameter("confidence_threshold=0.8") == ("confidence_threshold", 0.8)
    assert _parse_parameter("data_dir=None") == ("data_dir", None)
    assert _parse_parameter("gradcam_layer=layer3.1") == ("gradcam_layer", "layer3.1")


def test_stale_stages_follow_the_data_flow(tmp_path):
    run = RunDir(tmp_path)
    for stage, spec in STAGES.items():
        for name in spec.outputs:
            save_json(run.path(stage, name), {})
    assert stale_stages(run, {"failures"}) == ["gradcam", "reevaluation", "stress"]
    assert stale_stages(run, {"augmented"}) == ["reevaluation", "stress"]
    assert stale_stages(run, {"stress"}) == []


@pytest.mark.slow
@pytest.mark.shared_data
def test_smoke_pipeline_on_the_rebuilt_batches(tmp_path, batches_root, human_labels_root, monkeypatch):
    """Real users' default path: torchvision's pickled batches, the whole test set in its original
    order, so the human labels apply and every failure gets a category."""
    monkeypatch.setenv("CIFAR10H_ROOT", str(human_labels_root))
    run_dir = tmp_path / "run"
    # 1,000 per class is the whole test set, in its order; a lower threshold gives the weak smoke
    # model enough confident failures for every category to be exercised.
    common = ("--profile", "smoke", "--data-dir", str(batches_root), "--run-dir", str(run_dir))
    first = run_all(*common, "-p", "test_per_class=1000", "-p", "confidence_threshold=0.5", timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "[augmented] epoch 6/6" in first.stdout and "without encryption" not in first.stderr
    executed = sorted(p.name for p in (run_dir / "executed").glob("*.ipynb"))
    assert executed == [spec.notebook for spec in STAGES.values()]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 < summary["baseline"]["test_accuracy"] < 1 and 0 < summary["augmented"]["test_accuracy"] < 1
    assert set(summary["comparison"]) >= {"fixed", "kept_same", "kept_different", "new"}
    assert (run_dir / "report.html").exists()
    data_summary = json.loads((run_dir / "data_summary.json").read_text())
    assert data_summary["source"] == "cifar10" and data_summary["num_images"]["test"] == 10_000

    human = summary["human_labels"]
    assert human["applies"], human
    baseline_counts = human["baseline"]["counts"]
    assert set(baseline_counts) == {"verified label error", "ambiguous", "model error"}
    assert sum(baseline_counts.values()) == summary["high_confidence_failures"]
    assert baseline_counts["ambiguous"] > 0 and baseline_counts["model error"] > 0
    groups = ("fixed", "kept_same", "kept_different", "new")
    assert {g: sum(human["by_category"][g].values()) for g in groups} == {
        g: summary["comparison"][g] for g in groups
    }
    assert "confident failures by category" in first.stdout and "verified label error" in first.stdout
    assert "Is it the model or the label?" in (run_dir / "report.html").read_text()
    calibration = json.loads((run_dir / "stress" / "human_calibration.json").read_text())
    assert calibration["applies"] and set(calibration["models"]) == {"baseline", "augmented"}

    again = run_all(*common)
    assert again.returncode == 0
    assert again.stdout.count("complete, skipped") == len(STAGES)

    last = run_all(*common, "--stages", "5", "--force", timeout=300)
    assert last.returncode == 0, last.stderr[-3000:]
    assert last.stdout.count(": running ...") == 1
    assert "[reevaluation] 05_reevaluation.ipynb: running" in last.stdout
    assert (run_dir / "reevaluation.previous").is_dir()
    assert (run_dir / "reevaluation" / "comparison.json").exists()

    # Issue 11, item 5: 02 rerun by hand with its default threshold (0.9) on this run made with 0.5.
    def by_hand(stage: str, **parameters: object) -> None:
        # Executed copies and the failure marker go to by-hand/, not to the run's executed/.
        run_stage(
            STAGES[stage], tmp_path / "by-hand", {"run_dir": str(run_dir), "profile": "smoke", **parameters}
        )

    failures_before = (run_dir / "failures" / "failures.json").read_bytes()
    with pytest.raises(StageFailed) as refused:
        by_hand("failures")
    assert "confidence_threshold=0.5 (this notebook asks for 0.9)" in str(refused.value)
    assert (run_dir / "failures" / "failures.json").read_bytes() == failures_before
    by_hand("failures", force=True)
    assert (run_dir / "failures.previous" / "failures.json").read_bytes() == failures_before
    assert json.loads((run_dir / "failures" / "config.json").read_text())["confidence_threshold"] == 0.9
    # 05 now reads new failures and heatmaps of the old ones: it says so instead of crashing.
    with pytest.raises(StageFailed) as stale:
        by_hand("reevaluation")
    assert "StaleStageError" in str(stale.value) and "03_gradcam.ipynb" in str(stale.value)
    # run_all.py reruns exactly the stages that read the recomputed failures.
    refresh = run_all(*common, timeout=600)
    assert refresh.returncode == 0, refresh.stdout[-3000:] + refresh.stderr[-3000:]
    reran = [s for s, spec in STAGES.items() if f"[{s}] {spec.notebook}: running" in refresh.stdout]
    assert reran == ["gradcam", "reevaluation", "stress"], refresh.stdout
    assert json.loads((run_dir / "summary.json").read_text())["confidence_threshold"] == 0.9


@pytest.mark.slow
def test_terminal_shows_live_progress_and_no_kernel_transport_warning(tmp_path):
    """Output redirected (as in CI): plain progress lines, one per epoch, with loss, accuracy and ETAs."""
    completed = run_all(
        "--profile",
        "smoke",
        "-p",
        "data_source=synthetic",
        "--run-dir",
        str(tmp_path / "run"),
        "--stages",
        "0-1",
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    out = completed.stdout
    epochs = [line for line in out.splitlines() if line.startswith("[baseline] epoch ")]
    assert [line.split()[2] for line in epochs] == [f"{k}/6" for k in range(1, 7)]
    assert all(
        "loss " in line and "test acc " in line and "stage ETA " in line and "run ETA " in line
        for line in epochs
    )
    assert "without encryption" not in completed.stderr + out
    assert "WARNING" not in completed.stderr


def test_a_stage_that_fails_after_writing_its_outputs_is_not_finished(tmp_path):
    import nbformat

    from cifar_helpers.rundir.lineage import stage_is_finished

    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    source = nbformat.v4.new_code_cell('run_dir = ""')
    source.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "from pathlib import Path\n"
        "out = Path(run_dir) / 'failures'\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "for name in ('failures.json', 'summary.json'):\n"
        "    (out / name).write_text('{}')\n"
        "raise RuntimeError('a plot failed')"
    )
    nb = nbformat.v4.new_notebook(cells=[source, body])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebooks / STAGES["failures"].notebook)
    run = RunDir(tmp_path / "run")
    with pytest.raises(
        StageFailed, match=r"02_failure_detection\.ipynb, cell 3 .*from pathlib.*RuntimeError: a plot failed"
    ):
        run_stage(STAGES["failures"], run.root, {"run_dir": str(run.root)}, notebook_dir=notebooks)
    assert run.is_complete("failures")  # every output is there ...
    assert not stage_is_finished(run, "failures")  # ... but the stage did not finish


@pytest.mark.slow
@pytest.mark.shared_data
def test_the_quick_profile_finds_hundreds_of_confident_failures_on_real_data(
    tmp_path, batches_root, human_labels_root, monkeypatch
):
    """Issue 11, item 3: the README's quick try (minutes on a laptop) populates the failure browser,
    on the whole test set in its order so the human labels apply (the smoke profile finds none)."""
    monkeypatch.setenv("CIFAR10H_ROOT", str(human_labels_root))
    run_dir = tmp_path / "quick"
    common = ("--profile", "quick", "--data-dir", str(batches_root), "--run-dir", str(run_dir))
    completed = run_all(*common, "--stages", "0-2", timeout=1500)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "[baseline] epoch 20/20" in completed.stdout
    failures = json.loads((run_dir / "failures" / "summary.json").read_text())
    assert failures["threshold"] == 0.9 and failures["num_high_confidence"] >= 100, failures
    human = json.loads((run_dir / "failures" / "human_labels.json").read_text())
    assert human["applies"] and sum(human["counts"].values()) == failures["num_high_confidence"]
    metrics = json.loads((run_dir / "baseline" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.4 and metrics["train_accuracy"] > 0.9  # it overfits, as meant
