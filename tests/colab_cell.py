#!/usr/bin/env python
"""The first code cell of every notebook, kept here once: on Colab it fetches the project and installs it.

The library is not installed yet when the cell runs, so each notebook carries its own copy;
``tests/test_colab_cell.py`` checks that all of them equal :data:`CELL`. After editing it (e.g. the
repository URL), copy it into the notebooks with ``python tests/colab_cell.py``.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"

CELL = """\
# Colab only: fetch the project and install it. Elsewhere this cell does nothing.
# Your fork or copy: set CIFAR_STRESS_REPO to its git URL or folder, or upload it to /content/cifar-stress.
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    repo = os.environ.get("CIFAR_STRESS_REPO") or "https://github.com/cifar-stress/cifar-stress.git"
    # A folder holding the project is used in place; anything else (a URL, a bare repository) is cloned.
    project = repo if os.path.isfile(os.path.join(repo, "pyproject.toml")) else "/content/cifar-stress"
    if not os.path.isdir(project):
        clone = subprocess.run(["git", "clone", "-q", "--depth", "1", repo, project])
        if clone.returncode != 0:
            sys.exit(
                f"Cloning {repo} failed: set os.environ['CIFAR_STRESS_REPO'] to your fork's URL or to an "
                f"uploaded folder (or upload the project to {project}), then run this cell again"
            )
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", project], check=True)
    sys.path.insert(0, project)  # an editable install's path hook is read at start-up, not by this kernel
    os.chdir(os.path.join(project, "notebooks"))"""


def first_code_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook's first code cell (the Colab cell)."""
    return next(cell for cell in nb.cells if cell.cell_type == "code")


def write_cells() -> None:
    """Copy :data:`CELL` into the first code cell of every numbered notebook."""
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        first_code_cell(nb).source = CELL
        nbformat.write(nb, path)


if __name__ == "__main__":
    write_cells()
