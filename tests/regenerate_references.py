#!/usr/bin/env python
"""Regenerate tests/references/: run every notebook on the smoke profile with the generated dataset.

    python tests/regenerate_references.py

Run it after an intended change to a notebook or to a number one prints, and commit the result.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_references import REFERENCE_DIR, SMOKE_PARAMETERS, declared_parameters, source_notebooks


def strip_images(path: Path) -> None:
    """Drop image data from a reference: nbval does not compare images, and they are most of its size."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for key in [k for k in output.get("data", {}) if k.startswith("image/")]:
                del output["data"][key]
    nbformat.write(nb, path)


def main() -> int:
    os.environ["CIFAR_STRESS_HEADLESS"] = "1"
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cifar-stress-refs-") as tmp:
        parameters = {**SMOKE_PARAMETERS, "run_dir": str(Path(tmp) / "run")}
        for source in source_notebooks():
            names = declared_parameters(nbformat.read(source, as_version=4))
            out = REFERENCE_DIR / source.name
            print(f"executing {source.name} ...", flush=True)
            papermill.execute_notebook(
                str(source),
                str(out),
                parameters={k: v for k, v in parameters.items() if k in names},
                progress_bar=False,
                cwd=str(source.parent),
            )
            strip_images(out)
    print(f"references written to {REFERENCE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
