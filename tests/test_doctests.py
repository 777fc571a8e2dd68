"""The examples in the library's docstrings still hold.

Only the modules that have examples are imported (``--doctest-modules`` on the package would import
every module, notebooks' widgets and Ray included, for a handful of examples).
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_helpers"
WITH_EXAMPLES = sorted(
    ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    for path in PACKAGE.rglob("*.py")
    if ">>>" in path.read_text(encoding="utf-8")
)


def test_some_module_has_examples() -> None:
    # Guards the discovery above: an empty list would make the test below pass vacuously.
    assert "cifar_helpers.rundir.config" in WITH_EXAMPLES


@pytest.mark.parametrize("module_name", WITH_EXAMPLES)
def test_docstring_examples(module_name: str) -> None:
    result = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result
