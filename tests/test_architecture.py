"""The library's shape: modules depend only downward (no import cycle, function-level imports
included), and every stage is defined once, in the registry."""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from pathlib import Path

from cifar_helpers.rundir import artifacts
from cifar_helpers.rundir.registry import STAGE_REGISTRY, STAGE_SPECS, stage_number
from cifar_helpers.workflow import progress

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
                # "from cifar_helpers.rundir import manifest" imports the submodule, not the __init__
                candidates = [m for m in submodules if m in modules] or [target]
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
    assert "cifar_helpers.analysis.stress" in graph and "cifar_helpers.views.plotting.common" in graph
    assert {"cifar_helpers.analysis.gradcam.cam", "cifar_helpers.analysis.gradcam.stage_reports"} <= set(
        graph
    )
    assert "cifar_helpers.core.data.folders" in graph
    assert cycles(graph) == []


# docs/architecture.md's layers, bottom first: each is a folder of the package, and a module imports
# from its own folder or the ones below.
LAYERS: tuple[str, ...] = ("rundir", "core", "analysis", "views", "workflow")


def layer_of(module: str) -> int:
    return LAYERS.index(module.removeprefix("cifar_helpers.").split(".")[0])


def test_every_module_lives_in_a_layer_folder_and_imports_only_from_its_layer_or_below():
    graph = import_graph()
    modules = {m for m in graph if m != "cifar_helpers"}
    assert {m.removeprefix("cifar_helpers.").split(".")[0] for m in modules} == set(LAYERS)
    upward = [(m, t) for m in sorted(modules) for t in sorted(graph[m]) if layer_of(t) > layer_of(m)]
    assert upward == []


def test_the_registry_and_the_leaves_import_nothing_above_them():
    graph = import_graph()
    assert graph["cifar_helpers.rundir.registry"] == set()
    assert graph["cifar_helpers.rundir.artifacts"] <= {
        "cifar_helpers.rundir.manifest",
        "cifar_helpers.rundir.registry",
    }


def test_the_data_readers_share_only_common():
    # data/: the readers and the generated set know nothing of each other; loading dispatches to them.
    graph = import_graph()
    inside = {m: {t for t in graph[m] if t.startswith("cifar_helpers.core.data")} for m in graph}
    assert inside["cifar_helpers.core.data.common"] == set()
    for reader in ("batches", "folders", "generated"):
        assert inside[f"cifar_helpers.core.data.{reader}"] == {"cifar_helpers.core.data.common"}


def test_every_view_of_the_stages_reads_the_registry():
    names = [spec.name for spec in STAGE_SPECS]
    assert list(STAGE_REGISTRY) == names == list(artifacts.STAGES) == list(artifacts.STAGE_OUTPUTS)
    for spec in STAGE_SPECS:
        assert artifacts.STAGES[spec.name] == (spec.directory, spec.notebook)
        assert artifacts.STAGE_INPUTS[spec.name] == spec.inputs
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


MAX_FUNCTION_CODE_LINES = 80  # a function longer than a screen of code hides more than one job


def code_lines_per_function(path: Path, root: Path = PACKAGE.parent) -> dict[str, int]:
    """``{"file:line name": lines of code}`` for every function in ``path``: lines holding a token,
    docstrings, comments and blank lines not counted."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    skip = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    code: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            code.update(range(token.start[0], token.end[0] + 1))
    code -= docstrings
    return {
        f"{path.relative_to(root)}:{node.lineno} {node.name}": sum(
            node.lineno <= line <= node.end_lineno for line in code
        )
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }


def test_the_line_counter_skips_docstrings_comments_and_blank_lines(tmp_path):
    (tmp_path / "m.py").write_text(
        'def f(x):\n    """Doc.\n\n    More."""\n    # why\n\n    return (x +\n  1)\n'
    )
    assert code_lines_per_function(tmp_path / "m.py", tmp_path) == {"m.py:1 f": 3}


def test_no_function_is_longer_than_a_screen_of_code():
    lengths = {k: v for p in PACKAGE.rglob("*.py") for k, v in code_lines_per_function(p).items()}
    assert {k: v for k, v in lengths.items() if v > MAX_FUNCTION_CODE_LINES} == {}


def test_run_all_parses_arguments_and_calls_the_workflow():
    # run_all.py is the top of the stack: it reads arguments and takes the run's lock, and leaves the
    # stages' life cycle to workflow (pipeline.run_pipeline, replicates.run_from_arguments).
    path = PACKAGE.parent / "run_all.py"
    imported = {
        node.module
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cifar_helpers")
    }
    assert imported and {m.split(".")[1] for m in imported} <= {"rundir", "workflow"}, imported
    lengths = code_lines_per_function(path)
    assert max(lengths.values()) <= 40, lengths
