"""run_all.py --seeds: seeds as Ray tasks (a real embedded Ray), stage 07, failures, single-run identity."""

from __future__ import annotations

import json
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest
import torch
from conftest import REPLICATE_SEEDS
from conftest import run_all as run_all_py

from cifar_helpers.rundir.artifacts import RunDir, load_json
from cifar_helpers.rundir.config import make_config
from cifar_helpers.rundir.lineage import stage_is_finished
from cifar_helpers.rundir.registry import REPLICATES_SPEC, STAGES
from cifar_helpers.rundir.replicate_layout import find_seeds, seed_run_dir
from cifar_helpers.workflow.pipeline import read_request
from cifar_helpers.workflow.replicates import (
    ReplicateArgumentError,
    _ReplicateRequest,
    _seed_command,
    _task_resources,
    parse_seeds,
)

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = ("--profile", "smoke", "-p", "data_source=synthetic")


def run_all(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess[str]:
    """run_all.py with the time a replicate run needs."""
    return run_all_py(*args, timeout=timeout)


def test_parse_seeds_reads_lists_and_ranges():
    assert parse_seeds("42,43,44") == [42, 43, 44]
    assert parse_seeds("42-46") == [42, 43, 44, 45, 46]
    assert parse_seeds("7, 1-3,2") == [1, 2, 3, 7]
    for bad in ("", "a", "3-1", "-1", "1.5"):
        with pytest.raises(ReplicateArgumentError, match="--seeds"):
            parse_seeds(bad)


def test_seed_command_is_the_single_seed_command(tmp_path):
    def request(stages: str, *parameters: str, force: bool = False) -> _ReplicateRequest:
        args = Namespace(
            stages=stages, parameters=list(parameters), profile="smoke", data_dir=None, force=force
        )
        return _ReplicateRequest(read_request(args), seeds=[42, 43], root=tmp_path, data_seed=42)

    command = _seed_command(request("0-2", "epochs=2", force=True), 43)
    assert command[0] == "run_all.py"
    assert command[command.index("--run-dir") + 1] == str(tmp_path / "seed-43")
    assert "seed=43" in command and "data_seed=42" in command and "epochs=2" in command
    assert command[command.index("--stages") + 1] == "0-2" and "--force" in command
    assert "data_seed=42" not in _seed_command(request("3"), 43)


def test_find_seeds_in_seed_order(tmp_path):
    for seed in (10, 9, 100):
        seed_run_dir(tmp_path, seed).mkdir()
    (tmp_path / "seed-x").mkdir()
    (tmp_path / "replicates").mkdir()
    assert find_seeds(tmp_path) == [9, 10, 100]


def test_task_resources():
    assert _task_resources(1, {"CPU": 2.0}, 2) == {"num_cpus": 1}  # smoke: two seeds at once on 2 cores
    assert _task_resources(None, {"CPU": 16.0}, 8) == {"num_cpus": 8}  # a whole machine per seed
    assert _task_resources(None, {"CPU": 16.0, "GPU": 4.0}, 8) == {"num_gpus": 1, "num_cpus": 1}


def test_bad_replicate_arguments_exit_2(tmp_path):
    for args, fragment in (
        (["--seeds", "5-3"], "runs backwards"),
        (["--seeds", "1,2", "-p", "seed=3"], "-p seed cannot be combined"),
        (["--ray-address", "127.0.0.1:1"], "add --seeds"),
    ):
        completed = run_all("--run-dir", str(tmp_path / "run"), *args, timeout=300)
        assert completed.returncode == 2, completed.stderr
        assert fragment in completed.stderr and "Traceback" not in completed.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_replicate_run_on_ray_writes_every_seed_notebook_07_and_the_report(smoke_replicates):
    completed, root = smoke_replicates.completed, smoke_replicates.root
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    assert "Ray on this machine" in completed.stdout  # a real embedded Ray ran the seeds
    assert find_seeds(root) == list(REPLICATE_SEEDS)
    total = len(REPLICATE_SEEDS) * len(STAGES)
    for seed in REPLICATE_SEEDS:
        run = RunDir(seed_run_dir(root, seed))
        assert all(stage_is_finished(run, stage) for stage in STAGES)
        assert sorted(p.name for p in (run.root / "executed").glob("*.ipynb")) == sorted(
            spec.notebook for spec in STAGES.values()
        )
        for stage in STAGES:  # one progress line per seed per finished stage
            assert completed.stdout.count(f"[seed {seed}] [{stage}]") == 1, stage
    assert f"({total}/{total} stages)" in completed.stdout
    assert (root / "executed" / REPLICATES_SPEC.notebook).exists()
    assert all((root / "replicates" / name).exists() for name in REPLICATES_SPEC.outputs)
    summary = json.loads((root / "summary.json").read_text())
    assert {info["status"] for info in summary["seeds"].values()} == {"ok"}
    assert summary["replicates"]["seeds"] == list(REPLICATE_SEEDS)
    assert REPLICATES_SPEC.title in (root / "report.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_per_seed_results_equal_single_seed_runs(smoke_replicates, tmp_path):
    """The seed that did not run first, computed alone without Ray, gives the same numbers bit for bit."""
    assert smoke_replicates.completed.returncode == 0
    seed = REPLICATE_SEEDS[1]
    single = tmp_path / "single"
    args = ("-p", f"seed={seed}", "-p", f"data_seed={REPLICATE_SEEDS[0]}", "--run-dir", str(single))
    completed = run_all(*SYNTHETIC, *args, "--stages", "0-2,4")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    replicate = seed_run_dir(smoke_replicates.root, seed)
    assert load_json(single / "config.json") == load_json(replicate / "config.json")
    for model in ("baseline", "augmented"):
        a = torch.load(single / model / "predictions.pt")
        b = torch.load(replicate / model / "predictions.pt")
        assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["labels"], b["labels"])
        untimed = [
            {k: v for k, v in load_json(d / model / "metrics.json").items() if "second" not in k}
            for d in (single, replicate)
        ]
        assert untimed[0] == untimed[1]
    assert load_json(single / "failures" / "failures.json") == load_json(
        replicate / "failures" / "failures.json"
    )


@pytest.mark.slow
def test_a_failing_seed_is_reported_and_does_not_stop_the_others(tmp_path):
    root = tmp_path / "run"
    # Seed 44's directory already holds a run of another configuration: its setup stage must refuse it.
    make_config("smoke", seed=44, data_seed=42, data_source="synthetic", epochs=2).save(
        root / "seed-44" / "config.json"
    )
    completed = run_all(
        *SYNTHETIC, "-p", "epochs=1", "--seeds", "42,44", "--stages", "0-1", "--run-dir", str(root)
    )
    assert completed.returncode == 1, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "seed 44 FAILED in 00_setup.ipynb (stage 'setup')" in completed.stderr
    assert "different configuration" in completed.stderr  # the cause, from the seed's own output
    assert "seed 42 FAILED" not in completed.stderr
    assert "[seed 42] [baseline] 01_baseline_training.ipynb: done" in completed.stdout
    assert stage_is_finished(RunDir(seed_run_dir(root, 42)), "baseline")
    assert "stage 07 not run" in completed.stderr
    assert (seed_run_dir(root, 44) / "run_all.log").exists()
