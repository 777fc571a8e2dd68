"""The Colab cell every notebook starts with (tests/colab_cell.py): one source, and what it does on Colab,
run here with a stand-in ``google.colab`` module, a local repository and the pip install recorded."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import nbformat
import pytest
from colab_cell import CELL, NOTEBOOK_DIR, first_code_cell

NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_every_notebook_starts_with_the_one_colab_cell() -> None:
    assert len(NOTEBOOKS) == 8
    for path in NOTEBOOKS:
        assert first_code_cell(nbformat.read(path, as_version=4)).source == CELL, (
            f"{path.name}: its Colab cell differs from tests/colab_cell.py; run python tests/colab_cell.py"
        )


def _project(root: Path) -> Path:
    """A minimal copy of the project: what the cell installs and where it changes directory to."""
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "00_setup.ipynb").write_text("{}")
    (root / "pyproject.toml").write_text("[project]\nname = 'stand-in'\n")
    return root


def _git(*args: str | Path, cwd: Path | None = None) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", *identity, *map(str, args)], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def colab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Colab, as the cell sees it; returns the pip commands it would run (recorded, not run)."""
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIFAR_STRESS_REPO", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    installs: list[list[str]] = []
    real_run = subprocess.run

    def run(command: list[str], *args: Any, **kwargs: Any) -> Any:
        if command[1:3] == ["-m", "pip"]:
            installs.append(command)
            return subprocess.CompletedProcess(command, 0)
        return real_run(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    return installs


def _run_cell(content: Path) -> None:
    """Execute the cell with ``content`` standing in for Colab's /content."""
    exec(CELL.replace("/content", str(content)), {})


def test_the_cell_does_nothing_outside_colab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    _run_cell(tmp_path / "content")
    assert Path.cwd() == tmp_path and not (tmp_path / "content").exists()


def test_the_cell_clones_the_repository_installs_it_and_opens_its_notebooks(
    tmp_path: Path, colab: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _project(tmp_path / "work")
    _git("init", "-q", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "stand-in", cwd=work)
    _git("clone", "-q", "--bare", work, tmp_path / "fork.git")
    monkeypatch.setenv("CIFAR_STRESS_REPO", (tmp_path / "fork.git").as_uri())
    _run_cell(tmp_path / "content")
    project = tmp_path / "content" / "cifar-stress"
    assert (project / "pyproject.toml").exists()
    assert colab == [[sys.executable, "-m", "pip", "install", "-q", "-e", str(project)]]
    assert Path.cwd() == project / "notebooks"
    assert sys.path[0] == str(project)  # importable in this kernel, before any restart
    _run_cell(tmp_path / "content")  # run again: the clone is reused
    assert len(colab) == 2 and Path.cwd() == project / "notebooks"


def test_an_uploaded_folder_is_installed_in_place(
    tmp_path: Path, colab: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    uploaded = _project(tmp_path / "uploaded")
    monkeypatch.setenv("CIFAR_STRESS_REPO", str(uploaded))
    _run_cell(tmp_path / "content")
    assert colab == [[sys.executable, "-m", "pip", "install", "-q", "-e", str(uploaded)]]
    assert Path.cwd() == uploaded / "notebooks" and not (tmp_path / "content").exists()


def test_a_failed_clone_says_in_one_line_what_to_do(
    tmp_path: Path, colab: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIFAR_STRESS_REPO", str(tmp_path / "no-such-repository"))
    with pytest.raises(SystemExit) as info:
        _run_cell(tmp_path / "content")
    message = str(info.value.code)
    assert "\n" not in message and message.startswith(f"Cloning {tmp_path / 'no-such-repository'} failed")
    assert "CIFAR_STRESS_REPO" in message and colab == [] and Path.cwd() == tmp_path
    assert os.listdir(tmp_path) == []
