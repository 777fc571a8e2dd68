"""Reference outputs for the notebooks: how they are made and how nbval checks against them.

The notebooks in ``notebooks/`` stay clean (no outputs). The references in ``tests/references/``
are the same notebooks executed on the ``smoke`` profile with the generated dataset; the replicate
notebook (07) on a replicate run of seeds 42 and 43 (``run_all.py --seeds 42,43``). To check,
each source notebook is merged with its reference's outputs (source cells from ``notebooks/``,
outputs from ``tests/references/``) and the smoke parameters are injected after the ``parameters``
cell, the way papermill does; nbval then executes the merged notebook and compares. So a changed
default in a notebook (say, the confidence threshold) changes what the merged notebook prints, and
the check fails until the references are regenerated with ``python tests/regenerate_references.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import nbformat

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
REFERENCE_DIR = REPO_ROOT / "tests" / "references"
SANITIZE_FILE = REPO_ROOT / "tests" / "nbval_sanitize.cfg"

# What the references were executed with (besides run_dir, which is a temporary directory).
SMOKE_PARAMETERS: dict[str, Any] = {"profile": "smoke", "seed": 42, "data_source": "synthetic"}


def is_replicate_notebook(path: Path) -> bool:
    """Whether ``path`` is the replicate stage's notebook, which runs on a replicate run, not on one run."""
    from cifar_helpers.workflow.replicates import REPLICATES_NOTEBOOK

    return path.name == REPLICATES_NOTEBOOK


def source_notebooks() -> list[Path]:
    """The numbered notebooks, in pipeline order."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def _is_injected(cell: Any) -> bool:
    return "injected-parameters" in cell.get("metadata", {}).get("tags", [])


def _parameters_cell_index(nb: Any) -> int:
    for i, cell in enumerate(nb.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    raise ValueError("notebook has no cell tagged 'parameters'")


def declared_parameters(nb: Any) -> set[str]:
    """Names assigned at the top level of the notebook's parameters cell."""
    import ast

    tree = ast.parse(nb.cells[_parameters_cell_index(nb)].source)
    assigned = (t for node in tree.body if isinstance(node, ast.Assign) for t in node.targets)
    return {t.id for t in assigned if isinstance(t, ast.Name)}


def injected_cell(nb: Any, parameters: dict[str, Any]) -> Any:
    """A papermill-style cell assigning the parameters this notebook declares."""
    names = declared_parameters(nb)
    lines = ["# Parameters injected for the reference check"]
    lines += [f"{k} = {v!r}" for k, v in parameters.items() if k in names]
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    return cell


def merge_with_reference(source: Path, reference: Path, parameters: dict[str, Any]) -> Any:
    """The source notebook's cells carrying the reference's outputs, with ``parameters`` injected."""
    src = nbformat.read(source, as_version=4)
    ref = nbformat.read(reference, as_version=4)
    ref_cells = [c for c in ref.cells if not _is_injected(c)]
    if len(ref_cells) != len(src.cells) or any(
        a.cell_type != b.cell_type for a, b in zip(ref_cells, src.cells, strict=True)
    ):
        raise ValueError(
            f"{source.name} has {len(src.cells)} cells but its reference has {len(ref_cells)} (or their "
            "kinds differ): the notebook changed shape; run python tests/regenerate_references.py"
        )
    merged = copy.deepcopy(src)
    for cell, ref_cell in zip(merged.cells, ref_cells, strict=True):
        if cell.cell_type == "code":
            cell.outputs = copy.deepcopy(ref_cell.get("outputs", []))
            cell.execution_count = ref_cell.get("execution_count")
    index = _parameters_cell_index(merged)
    merged.cells.insert(index + 1, injected_cell(merged, parameters))
    return merged
