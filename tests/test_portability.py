"""The package on a platform without POSIX-only modules (Windows): every module imports, and a smoke run
can be set up and a stage opened. Run in a subprocess in which ``fcntl``, ``resource``, ``pwd`` and
``termios`` cannot be imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_WITHOUT_POSIX = """
import sys
# IPython imports pexpect (and so termios) on POSIX only; on Windows it takes its win32 path.
import IPython
for name in ("fcntl", "resource", "pwd", "termios"):
    sys.modules[name] = None  # `import name` now raises ImportError, as on Windows

import importlib, pkgutil
import cifar_helpers

for module in pkgutil.walk_packages(cifar_helpers.__path__, "cifar_helpers."):
    importlib.import_module(module.name)

from cifar_helpers.rundir.artifacts import save_json
from cifar_helpers.workflow.stages import open_stage, setup_run

run_dir = sys.argv[1]
setup = setup_run(run_dir, profile="smoke", seed=42, data_source="synthetic")
save_json(setup.run.root / "data_summary.json", {"fingerprint": setup.data.fingerprint})
stage = open_stage("baseline", run_dir, profile="smoke", seed=42)
print("opened", stage.name, len(stage.data.train_labels))
"""


def test_every_module_imports_and_a_stage_opens_without_posix_modules(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_POSIX, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("opened baseline ")
