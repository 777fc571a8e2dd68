#!/usr/bin/env python
"""Regenerate tests/references/: run every notebook on the smoke profile with the generated dataset.

    python tests/regenerate_references.py                      # all of them
    python tests/regenerate_references.py 00_setup 07_replicates  # only these

Run it after an intended change to a notebook or to a number one prints, and commit the result.
The replicate notebook (07) needs a replicate run: it is made with ``run_all.py --seeds 42,43``.
Regenerating all of them also rewrites ``measured.json``, the numbers from training that the notebook
test compares with a tolerance (see ``notebook_references``). A new machine needs no new references.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_references import (
    MEASURED_FILE,
    REFERENCE_DIR,
    REPO_ROOT,
    SMOKE_PARAMETERS,
    declared_parameters,
    is_replicate_notebook,
    read_measured,
    source_notebooks,
)

REPLICATE_SEEDS = "42,43"


def strip_images(path: Path) -> None:
    """Drop image data from a reference: nbval does not compare images, and they are most of its size."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for key in [k for k in output.get("data", {}) if k.startswith("image/")]:
                del output["data"][key]
    nbformat.write(nb, path)


def make_replicate_run(root: Path) -> None:
    """The two-seed smoke replicate run that notebook 07's reference is executed on."""
    print(f"running the replicate run (seeds {REPLICATE_SEEDS}) ...", flush=True)
    command = [sys.executable, str(REPO_ROOT / "run_all.py"), "--profile", "smoke", "--run-dir", str(root)]
    command += ["-p", "data_source=synthetic", "--seeds", REPLICATE_SEEDS]
    subprocess.run(command, cwd=REPO_ROOT, check=True)


def main(names: list[str]) -> int:
    os.environ["CIFAR_STRESS_HEADLESS"] = "1"
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    notebooks = source_notebooks()
    asked = set(names) or {p.stem for p in notebooks}
    unknown = sorted(asked - {p.stem for p in notebooks})
    if unknown:
        print(f"unknown notebook(s) {', '.join(unknown)}; known: {', '.join(p.stem for p in notebooks)}")
        return 2
    # A notebook reads what the earlier ones wrote, so those run too (only the references asked for
    # are replaced); the replicate notebook has its own replicate run and needs none of them.
    single = [p for p in notebooks if not is_replicate_notebook(p)]
    last = max((i for i, p in enumerate(single) if p.stem in asked), default=-1)
    notebooks = single[: last + 1] + [p for p in notebooks if is_replicate_notebook(p) and p.stem in asked]
    with tempfile.TemporaryDirectory(prefix="cifar-stress-refs-") as tmp:
        parameters = {**SMOKE_PARAMETERS, "run_dir": str(Path(tmp) / "run")}
        for source in notebooks:
            names_declared = declared_parameters(nbformat.read(source, as_version=4))
            run_dir = parameters["run_dir"]
            if is_replicate_notebook(source):
                run_dir = str(Path(tmp) / "replicates")
                make_replicate_run(Path(run_dir))
            keep = source.stem in asked
            out = REFERENCE_DIR / source.name if keep else Path(tmp) / source.name
            print(f"executing {source.name} ...", flush=True)
            papermill.execute_notebook(
                str(source),
                str(out),
                parameters={
                    k: v for k, v in {**parameters, "run_dir": run_dir}.items() if k in names_declared
                },
                progress_bar=False,
                cwd=str(source.parent),
            )
            if keep:
                strip_images(out)
        if not names:
            measured = read_measured({"run": Path(tmp) / "run", "replicates": Path(tmp) / "replicates"})
            MEASURED_FILE.write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
    print(f"references written to {REFERENCE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
