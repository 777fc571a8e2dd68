"""Running the numbered notebooks in order with papermill: what ``run_all.py`` does, as functions.

Stages are selected by number, range or name; ``KEY=VALUE`` parameters are checked against the
notebooks' ``parameters`` cells and :class:`RunConfig` before anything runs.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar_helpers.analysis.claims import ClaimResult, read_ledger
from cifar_helpers.rundir import lineage
from cifar_helpers.rundir.artifacts import (
    STAGE_INPUTS,
    STAGES,
    DamagedArtifactError,
    RunDir,
    failure_marker,
    save_json,
    set_aside_stage,
)
from cifar_helpers.rundir.config import RunConfig, make_config
from cifar_helpers.rundir.registry import HEADLESS_ENV, stage_number
from cifar_helpers.views.report import format_run_summary, read_run_summary, write_report
from cifar_helpers.views.tables import claims_text
from cifar_helpers.workflow.kernel import LocalKernelManager
from cifar_helpers.workflow.progress import RunProgress, StageProgress
from cifar_helpers.workflow.stages import check_run_identity

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
STAGE_NAMES: tuple[str, ...] = tuple(STAGES)


class PipelineArgumentError(ValueError):
    """A bad stage selection or parameter; ``run_all.py`` turns it into exit status 2."""


class StageFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell, the error and the executed copy."""


def parse_stages(spec: str | None) -> list[str]:
    """``"3-5"``, ``"0,2"``, ``"gradcam,reevaluation"``, ``"all"`` or None -> stage names, in order."""
    if spec is None or spec.strip() in ("", "all"):
        return list(STAGE_NAMES)
    chosen: set[int] = set()
    last = len(STAGE_NAMES) - 1
    for part in (p.strip() for p in spec.split(",")):
        try:
            if part in STAGE_NAMES:
                chosen.add(STAGE_NAMES.index(part))
                continue
            bounds = [int(x) for x in part.split("-", 1)]  # a range "3-5" or one number "3"
            lo, hi = bounds[0], bounds[-1]
            if not 0 <= lo <= hi <= last:
                raise ValueError
            chosen.update(range(lo, hi + 1))
        except ValueError:
            raise PipelineArgumentError(
                f"--stages: cannot read {part!r}; use numbers 0-{last}, ranges like 3-5, or names "
                f"({', '.join(STAGE_NAMES)})"
            ) from None
    return [STAGE_NAMES[i] for i in sorted(chosen)]


def notebook_path(stage: str, notebook_dir: Path = NOTEBOOK_DIR) -> Path:
    """The notebook that runs ``stage``."""
    return notebook_dir / STAGES[stage][1]


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The parameters cell of a notebook as ``{name: default value}`` (defaults parsed as literals)."""
    import papermill

    return {name: _literal(info["default"]) for name, info in papermill.inspect_notebook(str(path)).items()}


def _literal(text: str) -> Any:
    """``text`` as a Python literal (``3``, ``0.8``, ``None``, ``"a"``), or the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_parameter(item: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> (key, value); VALUE is a Python literal (``3``, ``0.8``, ``None``) or a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise PipelineArgumentError(f"-p {item!r}: expected KEY=VALUE, e.g. -p epochs=3")
    return key, _literal(raw)


def _type_matches(value: Any, default: Any) -> bool:
    if default is None or value is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, type(default))


def check_parameters(
    overrides: dict[str, Any], parameters_by_stage: dict[str, dict[str, Any]], profile: str
) -> None:
    """Refuse unknown keys and values of the wrong type; validate configuration keys with RunConfig."""
    known = {key: value for params in parameters_by_stage.values() for key, value in params.items()}
    for key, value in overrides.items():
        if key not in known:
            raise PipelineArgumentError(
                f"-p {key}: unknown parameter for the selected stages; known: {', '.join(sorted(known))}"
            )
        if not _type_matches(value, known[key]):
            raise PipelineArgumentError(
                f"-p {key}={value!r}: expected a value like the default {known[key]!r} "
                f"({type(known[key]).__name__})"
            )
    config_keys = {f.name for f in dataclasses.fields(RunConfig)}
    config_values = {k: v for k, v in overrides.items() if k in config_keys and v is not None}
    config_values.pop("profile", None)
    try:
        make_config(profile, **config_values)
    except ValueError as e:
        raise PipelineArgumentError(f"-p: {e}") from None


def check_request(
    run: RunDir,
    stages: list[str],
    profile: str,
    overrides: dict[str, Any],
    declared: dict[str, dict[str, Any]],
) -> None:
    """Refuse now what the notebooks would refuse later (inputs neither selected nor finished, another
    ``profile`` or ``seed``, invalid knobs), before ``--force`` sets any result aside."""
    for stage in stages:
        for needed in STAGE_INPUTS[stage]:
            if needed in stages or stage_is_finished(run, needed):
                continue
            damaged = run.damaged(needed)
            at_fault = lineage.out_of_date(run, needed) if stage_has_results(run, needed) else []
            if damaged:
                state = f"has a damaged {damaged[0][0]} ({damaged[0][1]})"
            elif at_fault:
                state = f"was computed from earlier results of {', '.join(at_fault)}"
            else:
                state = "is not complete"
            raise PipelineArgumentError(
                f"stage '{stage}' reads stage '{needed}', which {state} in {run.root}: "
                f"add {stage_number(needed)} to --stages"
            )
    if not run.config_path.exists():
        return
    try:
        config = RunConfig.load(run.config_path)
        config_keys = {f.name for f in dataclasses.fields(RunConfig)} - {"profile", "seed"}
        for stage in stages:
            if stage == "setup":  # setup_run compares its whole configuration before writing anything
                continue
            seed = overrides.get("seed", declared[stage].get("seed", config.seed))
            check_run_identity(run, config, profile, seed)
            knobs = {k: v for k, v in overrides.items() if k in declared[stage] and k in config_keys}
            config.replace(**{k: v for k, v in knobs.items() if v is not None})
    except ValueError as e:  # ConfigError
        raise PipelineArgumentError(str(e)) from None


def stale_stages(run: RunDir, ran: set[str]) -> list[str]:
    """Stages with results that read (directly or not) from a stage rerun in this invocation but were
    not rerun themselves, or whose recorded inputs (``inputs.json``) have changed since they ran."""
    stale: list[str] = []
    for stage in STAGE_NAMES:
        if stage in ran or not stage_has_results(run, stage):
            continue
        upstream = [source for source in STAGE_INPUTS[stage] if source != "setup"]
        if any(source in ran or source in stale for source in upstream) or lineage.out_of_date(run, stage):
            stale.append(stage)
    return stale


@dataclass
class StageResult:
    """What happened to one stage in a run."""

    stage: str
    status: str  # "ran" | "skipped" | "failed"
    seconds: float
    executed_notebook: Path | None


def run_stage(
    stage: str,
    run: RunDir,
    parameters: dict[str, Any],
    *,
    notebook_dir: Path = NOTEBOOK_DIR,
    kernel_name: str | None = None,
    progress: StageProgress | None = None,
) -> StageResult:
    """Execute one notebook with papermill into ``<run>/executed/`` (``progress`` shows what it does);
    raise :class:`StageFailed` on error."""
    source = notebook_path(stage, notebook_dir)
    executed = run.root / "executed" / source.name
    options = {"label": f"stage '{stage}'", "kernel_name": kernel_name, "progress": progress}
    seconds = execute_notebook(source, executed, parameters, failure_marker(run.root, stage), **options)
    return StageResult(stage, "ran", seconds, executed)


def execute_notebook(
    source: Path,
    executed: Path,
    parameters: dict[str, Any],
    marker: Path,
    *,
    label: str,
    kernel_name: str | None = None,
    progress: StageProgress | None = None,
) -> float:
    """Execute ``source`` with papermill into ``executed``; seconds taken, or :class:`StageFailed`.
    ``marker`` exists while it runs and stays when it fails, so the stage does not count as complete."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    executed.parent.mkdir(parents=True, exist_ok=True)
    os.environ[HEADLESS_ENV] = "1"
    marker.write_text("running or failed; rerun this stage\n", encoding="utf-8")
    hooks = {}
    if progress is not None:
        progress.use_notebook(source)
        hooks["on_cell_start"] = progress.on_cell_start
    start = time.perf_counter()
    try:
        options = {"kernel_name": kernel_name, "progress_bar": False, "cwd": str(source.parent), **hooks}
        # Killed with its process group, not asked to exit: on Ctrl-C a kernel asked to exit mid-cell
        # prints a traceback to the terminal; every output is saved by the time the last cell ends.
        options["shutdown_kernel"] = "immediate"
        papermill.execute_notebook(
            str(source),
            str(executed),
            parameters=parameters,
            kernel_manager_class=LocalKernelManager,
            **options,
        )
    except PapermillExecutionError as e:
        first_line = next((line for line in e.source.splitlines() if line.strip()), "")
        raise StageFailed(
            f"{label} failed: {source.name}, cell {e.cell_index + 1} of the executed notebook "
            f"(starting {first_line[:60]!r}): {e.ename}: {e.evalue}\n"
            f"open {executed} to see the whole traceback"
        ) from None
    marker.unlink()
    return time.perf_counter() - start


def stage_has_results(run: RunDir, stage: str) -> bool:
    """All of the stage's outputs exist, intact, and no run_all.py execution of it failed or stopped."""
    return run.is_complete(stage) and not failure_marker(run.root, stage).exists()


def stage_is_finished(run: RunDir, stage: str) -> bool:
    """It has its results (:func:`stage_has_results`), and they follow from its inputs as they are now."""
    return stage_has_results(run, stage) and not lineage.out_of_date(run, stage)


def summarize_run(run: RunDir, results: list[StageResult] | None = None) -> dict[str, Any]:
    """The report's run summary (:func:`cifar_helpers.views.report.read_run_summary`), with each stage's
    status and minutes when this invocation ran stages."""
    summary = read_run_summary(run).to_dict()
    try:
        summary["claims"] = [row.to_dict() for row in read_ledger(run.root)]
    except DamagedArtifactError as error:
        summary["claims"] = []
        summary["damaged"].append(str(error))
    if results is not None:
        summary["stages"] = {
            r.stage: {"status": r.status, "minutes": round(r.seconds / 60, 2)} for r in results
        }
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """:func:`summarize_run`'s numbers as text (:func:`cifar_helpers.views.report.format_run_summary`),
    then the claims ledger for a 100-column terminal (:func:`cifar_helpers.views.tables.claims_text`)."""
    # .get: a summary.json written before the ledger existed has no "claims".
    ledger = claims_text([ClaimResult.from_dict(row) for row in summary.get("claims", [])])
    return format_run_summary(summary) + "\n\n" + ledger


def write_summary(run: RunDir, summary: dict[str, Any]) -> Path:
    """Save the run summary as ``summary.json`` in the run directory."""
    return save_json(run.root / "summary.json", summary)


def run_pipeline(
    run: RunDir,
    stages: list[str],
    *,
    profile: str,
    overrides: dict[str, Any],
    declared: dict[str, dict[str, Any]],
    data_dir: str | None = None,
    force: bool = False,
) -> int:
    """Run ``stages`` of ``run`` in order (a stage whose outputs are complete is skipped unless
    ``force``, or unless a stage it reads runs now), printing each step, then the summary and the
    report's path: ``run_all.py``'s single-seed run, ``profile`` resolved (never "auto").
    ``overrides`` are the ``-p`` parameters, each passed to the notebooks that declare it
    (``declared``: each stage's ``parameters`` cell).

    Returns the exit status: 0, or 1 when a stage failed or a result file is damaged.
    """
    common = {"run_dir": str(run.root), "profile": profile}
    if data_dir is not None:
        common["data_dir"] = str(Path(data_dir).expanduser().resolve())
    results: list[StageResult] = []
    print(f"Run directory: {run.root}", flush=True)
    # A stage reading one that runs now would hold results of the old outputs: it runs too.
    to_run: list[str] = []
    for stage in stages:
        upstream = STAGE_INPUTS[stage]
        if force or not stage_is_finished(run, stage) or any(s in to_run for s in upstream):
            to_run.append(stage)
    progress = RunProgress(profile, to_run)
    for stage in stages:
        notebook = notebook_path(stage).name
        if stage not in to_run:
            given = sorted(set(overrides) & set(declared[stage]))
            hint = f" (-p {', '.join(given)} not applied: add --force)" if given else ""
            print(f"[{stage}] {notebook}: complete, skipped{hint}", flush=True)
            results.append(StageResult(stage, "skipped", 0.0, None))
            continue
        damaged = run.damaged(stage)
        at_fault = lineage.out_of_date(run, stage)
        if damaged:
            name, problem = damaged[0]
            print(f"[{stage}] {name} is damaged ({problem}): running the stage again", flush=True)
        elif at_fault:
            print(
                f"[{stage}] holds results of earlier outputs of {', '.join(at_fault)}: running it again",
                flush=True,
            )
        if force or damaged or at_fault or stage_has_results(run, stage):
            lineage.pin_readers(run, stage)  # later stages not rerun now will count as out of date
            moved = set_aside_stage(run, stage)
            if moved is not None:
                print(f"[{stage}] previous results moved to {moved.name}/", flush=True)
        parameters = {k: v for k, v in {**common, **overrides}.items() if k in declared[stage]}
        print(f"[{stage}] {notebook}: running ...", flush=True)
        try:
            with progress.stage(stage, run) as stage_progress:
                result = run_stage(stage, run, parameters, progress=stage_progress)
        except StageFailed as e:
            print(f"[{stage}] FAILED\n{e}", file=sys.stderr, flush=True)
            return 1
        print(f"[{stage}] {notebook}: done in {result.seconds / 60:.2f} min", flush=True)
        results.append(result)

    stale = stale_stages(run, {r.stage for r in results if r.status == "ran"})
    if stale:
        numbers = ",".join(str(stage_number(s)) for s in stale)
        print(
            f"note: {', '.join(stale)} still hold results computed from the previous outputs of the "
            f"stages rerun now; refresh them with --stages {numbers}",
            flush=True,
        )
    summary = summarize_run(run, results)
    write_summary(run, summary)
    print("\n" + format_summary(summary))
    print(f"\nReport: {write_report(run.root)}")
    for problem in summary["damaged"]:  # summary and report hold everything else
        print(f"run_all.py: {problem}", file=sys.stderr)
    return 1 if summary["damaged"] else 0
