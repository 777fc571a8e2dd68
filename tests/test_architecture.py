"""The library's shape: modules depend only downward (no import cycle, function-level imports
included), and every stage is defined once, in the registry."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from cifar_helpers import artifacts, progress, report
from cifar_helpers.registry import STAGE_REGISTRY, STAGE_SPECS, stage_number

PACKAGE = Path(__file__).resolve().parents[1] / "cifar_helpers"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, counting every import statement in the file
    (module level, inside functions, under ``TYPE_CHECKING``)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                submodules = [f"{target}.{alias.name}" for alias in node.names]
                # "from . import manifest" imports the submodule, not the package's __init__
                candidates = submodules if node.module is None else [target, *submodules]
            elif isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(c for c in candidates if c in modules and c != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_library_has_no_import_cycle():
    graph = import_graph()
    assert "cifar_helpers.stress" in graph and "cifar_helpers.plotting.core" in graph
    assert {"cifar_helpers.gradcam.cam", "cifar_helpers.gradcam.stage_reports"} <= set(graph)
    assert "cifar_helpers.data.folders" in graph
    assert cycles(graph) == []


# docs/architecture.md's layers, bottom first: a module imports from its own layer or the ones below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("registry", "checks", "models", "augment", "normalization", "reproducibility", "safe_load", "manifest"),
    ("config", "artifacts", "lineage", "runlock", "replicate_layout"),
    (
        "data",
        "training",
        "evaluation",
        "failures",
        "human_labels",
        "gradcam",
        "faithfulness",
        "stress",
        "calibration",
        "sanity",
        "seed_analysis",
    ),
    ("plotting", "tables", "widgets", "report"),
    ("stages", "pipeline", "progress", "kernel", "run_discovery", "replicates"),
)


def layer_of(module: str) -> int:
    name = module.removeprefix("cifar_helpers.").split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_every_module_imports_only_from_its_layer_or_below():
    graph = import_graph()
    modules = {m for m in graph if m != "cifar_helpers"}
    named = {n for layer in LAYERS for n in layer}
    assert {m.removeprefix("cifar_helpers.").split(".")[0] for m in modules} == named
    upward = [(m, t) for m in sorted(modules) for t in sorted(graph[m]) if layer_of(t) > layer_of(m)]
    assert upward == []


def test_the_registry_and_the_leaves_import_nothing_above_them():
    graph = import_graph()
    assert graph["cifar_helpers.registry"] == set()
    assert graph["cifar_helpers.artifacts"] <= {"cifar_helpers.manifest", "cifar_helpers.registry"}


def test_the_data_readers_share_only_core():
    # data/: the readers and the generated set know nothing of each other; loading dispatches to them.
    graph = import_graph()
    inside = {m: {t for t in graph[m] if t.startswith("cifar_helpers.data")} for m in graph}
    assert inside["cifar_helpers.data.core"] == set()
    for reader in ("batches", "folders", "generated"):
        assert inside[f"cifar_helpers.data.{reader}"] == {"cifar_helpers.data.core"}


def test_every_view_of_the_stages_reads_the_registry():
    names = [spec.name for spec in STAGE_SPECS]
    assert list(STAGE_REGISTRY) == names == list(artifacts.STAGES) == list(artifacts.STAGE_OUTPUTS)
    for spec in STAGE_SPECS:
        assert artifacts.STAGES[spec.name] == (spec.directory, spec.notebook)
        assert artifacts.STAGE_INPUTS[spec.name] == spec.inputs
        assert report.STAGE_TITLES[spec.name] == spec.title
        assert all(stage_number(s) < stage_number(spec.name) for s in spec.inputs)  # inputs come first
        for profile, seconds in progress.EXPECTED_SECONDS.items():
            assert seconds[spec.name] == spec.expected_seconds[profile]
    notebooks = sorted(p.name for p in (PACKAGE.parent / "notebooks").glob("0[0-6]_*.ipynb"))
    assert sorted(spec.notebook for spec in STAGE_SPECS) == notebooks


def public_definitions() -> dict[str, str]:
    """``{name: module file}`` of every public top-level function and class of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                found[node.name] = str(path.relative_to(PACKAGE.parent))
    return found


def names_used(source: str) -> set[str]:
    """Names read and attributes taken in Python source (imports and definitions do not count)."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
    return used


def test_every_public_function_is_used_outside_the_tests():
    # Used: by the library, run_all.py, a benchmark or a notebook's code cells. A function only the
    # tests call is dead code that the tests keep alive.
    root = PACKAGE.parent
    used: set[str] = set()
    for path in [*PACKAGE.rglob("*.py"), root / "run_all.py", *(root / "benchmarks").rglob("*.py")]:
        used |= names_used(path.read_text(encoding="utf-8"))
    for notebook in (root / "notebooks").glob("*.ipynb"):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        used |= set(re.findall(r"\w+", code))
    unused = {name: module for name, module in public_definitions().items() if name not in used}
    assert unused == {}
