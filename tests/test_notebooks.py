"""The notebooks, executed on the smoke profile, against their committed reference outputs (nbval)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nbformat
import pytest
from notebook_references import (
    REFERENCE_DIR,
    SANITIZE_FILE,
    SMOKE_PARAMETERS,
    declared_parameters,
    is_replicate_notebook,
    merge_with_reference,
    source_notebooks,
)

from cifar_helpers.rundir.replicate_layout import find_seed_dirs

NOTEBOOKS = source_notebooks()


def test_every_stage_has_a_notebook_with_a_parameters_cell():
    names = [p.stem[:2] for p in NOTEBOOKS]
    assert names == [f"{i:02d}" for i in range(8)]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert {"run_dir", "profile", "seed"} <= declared_parameters(nb), path.name
        assert nb.cells[0].cell_type == "markdown", f"{path.name} should open with its question"


def test_user_notebooks_carry_no_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [(i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        dirty = [i for i, c in code if c.outputs or c.execution_count]
        assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them (references live in tests/)"


@pytest.mark.slow
def test_notebooks_reproduce_their_reference_outputs(tmp_path, smoke_replicates):
    run_dir = tmp_path / "run"
    parameters = {**SMOKE_PARAMETERS, "run_dir": str(run_dir)}
    # 07 compares seeds: it runs on a copy of the session's two-seed replicate run (seed-<k>/ only).
    assert smoke_replicates.completed.returncode == 0, smoke_replicates.completed.stderr[-3000:]
    replicate_root = tmp_path / "replicates"
    for directory in find_seed_dirs(smoke_replicates.root).values():
        shutil.copytree(directory, replicate_root / directory.name)
    merged_paths = []
    for source in NOTEBOOKS:
        reference = REFERENCE_DIR / source.name
        assert reference.exists(), f"no reference for {source.name}: run tests/regenerate_references.py"
        root = replicate_root if is_replicate_notebook(source) else run_dir
        merged = merge_with_reference(source, reference, {**parameters, "run_dir": str(root)})
        path = tmp_path / source.name
        nbformat.write(merged, path)
        merged_paths.append(str(path))
    env = {**os.environ, "CIFAR_STRESS_HEADLESS": "1"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "--nbval-current-env",
            f"--nbval-sanitize-with={SANITIZE_FILE}",
            "-p",
            "no:cacheprovider",
            "-q",
            "--rootdir",
            str(tmp_path),
            *merged_paths,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert completed.returncode == 0, (
        "notebook outputs differ from tests/references (if the change is intended, run "
        "python tests/regenerate_references.py):\n" + completed.stdout[-8000:] + completed.stderr[-2000:]
    )
