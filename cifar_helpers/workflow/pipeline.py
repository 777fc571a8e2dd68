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

from cifar_helpers.analysis.claims.ledger import read_ledger
from cifar_helpers.analysis.claims.rules import ClaimResult
from cifar_helpers.rundir.artifacts import DamagedArtifactError, RunDir, save_json
from cifar_helpers.rundir.config import RunConfig, make_config
from cifar_helpers.rundir.lineage import (
    failure_marker,
    out_of_date,
    set_aside,
    stage_has_results,
    stage_is_finished,
    stale_stages,
)
from cifar_helpers.rundir.registry import HEADLESS_ENV, STAGES, StageSpec, stage_number
from cifar_helpers.views.report import format_run_summary, read_run_summary, write_report
from cifar_helpers.views.tables import claims_text
from cifar_helpers.workflow.kernel import LocalKernelManager
from cifar_helpers.workflow.progress import RunProgress, StageProgress
from cifar_helpers.workflow.stages import check_run_identity

_NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


class PipelineArgumentError(ValueError):
    """A bad stage selection or parameter; ``run_all.py`` turns it into exit status 2."""


class StageFailed(RuntimeError):
    """A notebook raised; the message names the notebook, the cell, the error and the executed copy."""


def _parse_stages(spec: str | None) -> list[str]:
    """``"3-5"``, ``"0,2"``, ``"gradcam,reevaluation"``, ``"all"`` or None -> stage names, in order."""
    names = list(STAGES)
    if spec is None or spec.strip() in ("", "all"):
        return names
    chosen: set[int] = set()
    last = len(names) - 1
    for part in (p.strip() for p in spec.split(",")):
        try:
            if part in STAGES:
                chosen.add(stage_number(part))
                continue
            bounds = [int(x) for x in part.split("-", 1)]  # a range "3-5" or one number "3"
            lo, hi = bounds[0], bounds[-1]
            if not 0 <= lo <= hi <= last:
                raise ValueError
            chosen.update(range(lo, hi + 1))
        except ValueError:
            raise PipelineArgumentError(
                f"--stages: cannot read {part!r}; use numbers 0-{last}, ranges like 3-5, or names "
                f"({', '.join(names)})"
            ) from None
    return [names[i] for i in sorted(chosen)]


def _notebook_parameters(stage: str) -> dict[str, Any]:
    """The parameters cell of ``stage``'s notebook as ``{name: default value}`` (defaults parsed as
    literals)."""
    import papermill

    declared = papermill.inspect_notebook(str(_NOTEBOOK_DIR / STAGES[stage].notebook))
    return {name: _literal(info["default"]) for name, info in declared.items()}


def _literal(text: str) -> Any:
    """``text`` as a Python literal (``3``, ``0.8``, ``None``, ``"a"``), or the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_parameter(item: str) -> tuple[str, Any]:
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


def _check_parameters(
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
    try:
        requested_config(profile, overrides)
    except ValueError as e:
        raise PipelineArgumentError(f"-p: {e}") from None


def requested_config(profile: str, overrides: dict[str, Any]) -> RunConfig:
    """The configuration ``-p`` asks for: the profile's, with the configuration keys among ``overrides``
    (a value of None keeps the profile's; ``profile`` is the argument's)."""
    keys = {f.name for f in dataclasses.fields(RunConfig)} - {"profile"}
    return make_config(profile, **{k: v for k, v in overrides.items() if k in keys and v is not None})


@dataclass(frozen=True)
class PipelineRequest:
    """What ``run_all.py`` was asked to run, its arguments checked (:func:`read_request`)."""

    stages: list[str]  # the selected stages, in pipeline order
    stages_spec: str | None  # --stages as given
    profile: str  # resolved, never "auto"
    parameters: list[str]  # the -p KEY=VALUE items
    overrides: dict[str, Any]  # the same, parsed
    declared: dict[str, dict[str, Any]]  # each selected stage's parameters cell
    data_dir: str | None  # absolute
    force: bool


def read_request(args: Any) -> PipelineRequest:
    """``run_all.py``'s parsed arguments (``profile`` resolved), checked: :class:`PipelineArgumentError`
    names a bad stage selection, parameter or data directory."""
    stages = _parse_stages(args.stages)
    overrides = dict(_parse_parameter(item) for item in args.parameters)
    data_dir = None if args.data_dir is None else Path(args.data_dir).expanduser().resolve()
    if data_dir is not None and not data_dir.exists():
        raise PipelineArgumentError(f"--data-dir {args.data_dir}: no such directory")
    declared = {stage: _notebook_parameters(stage) for stage in stages}
    _check_parameters(overrides, declared, args.profile)
    return PipelineRequest(
        stages=stages,
        stages_spec=args.stages,
        profile=args.profile,
        parameters=list(args.parameters),
        overrides=overrides,
        declared=declared,
        data_dir=None if data_dir is None else str(data_dir),
        force=args.force,
    )


def check_request(run: RunDir, request: PipelineRequest) -> None:
    """Refuse now what the notebooks would refuse later (inputs neither selected nor finished, another
    ``profile`` or ``seed``, invalid knobs), before ``--force`` sets any result aside."""
    for stage in request.stages:
        for needed in STAGES[stage].inputs:
            if needed in request.stages or stage_is_finished(run, needed):
                continue
            damaged = run.damaged(needed)
            if damaged:
                state = f"has a damaged {damaged[0][0]} ({damaged[0][1]})"
            elif stage_has_results(run, needed):  # so it is out of date
                state = f"was computed from earlier results of {', '.join(out_of_date(run, needed))}"
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
        for stage in request.stages:
            if stage == "setup":  # setup_run compares its whole configuration before writing anything
                continue
            declared = request.declared[stage]
            seed = request.overrides.get("seed", declared.get("seed", config.seed))
            check_run_identity(run, config, request.profile, seed)
            knobs = {k: v for k, v in request.overrides.items() if k in declared and k in config_keys}
            config.replace(**{k: v for k, v in knobs.items() if v is not None})
    except ValueError as e:  # ConfigError
        raise PipelineArgumentError(str(e)) from None


@dataclass
class StageResult:
    """What happened to one stage in a run."""

    stage: str
    status: str  # "ran" | "skipped"
    seconds: float


def run_stage(
    spec: StageSpec,
    root: Path,
    parameters: dict[str, Any],
    *,
    notebook_dir: Path = _NOTEBOOK_DIR,
    progress: StageProgress | None = None,
) -> StageResult:
    """Execute the notebook of ``spec`` (a stage of the run at ``root``, or 07 of the replicate run
    there) with papermill into ``<root>/executed/`` (``progress`` shows what it does); raise
    :class:`StageFailed` on error. The stage's failure marker exists while it runs and stays when it
    fails, so the stage does not count as finished."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebook_dir / spec.notebook
    executed = root / "executed" / spec.notebook
    marker = failure_marker(root, spec.name)
    executed.parent.mkdir(parents=True, exist_ok=True)
    os.environ[HEADLESS_ENV] = "1"
    marker.write_text("running or failed; rerun this stage\n", encoding="utf-8")
    hooks = {}
    if progress is not None:
        progress.use_notebook(source)
        hooks["on_cell_start"] = progress.on_cell_start
    start = time.perf_counter()
    try:
        options = {"progress_bar": False, "cwd": str(source.parent), **hooks}
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
            f"stage '{spec.name}' failed: {source.name}, cell {e.cell_index + 1} of the executed notebook "
            f"(starting {first_line[:60]!r}): {e.ename}: {e.evalue}\n"
            f"open {executed} to see the whole traceback"
        ) from None
    marker.unlink()
    return StageResult(spec.name, "ran", time.perf_counter() - start)


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
    ledger = claims_text([ClaimResult.from_dict(row) for row in summary["claims"]])
    return format_run_summary(summary) + "\n\n" + ledger


def run_pipeline(run: RunDir, request: PipelineRequest) -> int:
    """``run_all.py``'s single-seed run: the requested stages of ``run`` in order (a finished one is
    skipped unless ``force`` or a stage it reads runs now), then the summary and the report; each
    ``-p`` parameter goes to the notebooks that declare it. Returns 0, or 1 when a stage failed or a
    result file is damaged."""
    common = {"run_dir": str(run.root), "profile": request.profile}
    if request.data_dir is not None:
        common["data_dir"] = request.data_dir
    results: list[StageResult] = []
    print(f"Run directory: {run.root}", flush=True)
    # A stage reading one that runs now would hold results of the old outputs: it runs too.
    to_run: list[str] = []
    for stage in request.stages:
        upstream = STAGES[stage].inputs
        if request.force or not stage_is_finished(run, stage) or any(s in to_run for s in upstream):
            to_run.append(stage)
    progress = RunProgress(request.profile, to_run)
    for stage in request.stages:
        notebook = STAGES[stage].notebook
        if stage not in to_run:
            given = sorted(set(request.overrides) & set(request.declared[stage]))
            hint = f" (-p {', '.join(given)} not applied: add --force)" if given else ""
            print(f"[{stage}] {notebook}: complete, skipped{hint}", flush=True)
            results.append(StageResult(stage, "skipped", 0.0))
            continue
        damaged = run.damaged(stage)
        at_fault = out_of_date(run, stage)
        if damaged:
            name, problem = damaged[0]
            print(f"[{stage}] {name} is damaged ({problem}): running the stage again", flush=True)
        elif at_fault:
            print(
                f"[{stage}] holds results of earlier outputs of {', '.join(at_fault)}: running it again",
                flush=True,
            )
        if request.force or damaged or at_fault or stage_has_results(run, stage):
            moved, _ = set_aside(run, stage)  # later stages not rerun now will count as out of date
            if moved is not None:
                print(f"[{stage}] previous results moved to {moved.name}/", flush=True)
        declared = request.declared[stage]
        parameters = {k: v for k, v in {**common, **request.overrides}.items() if k in declared}
        print(f"[{stage}] {notebook}: running ...", flush=True)
        try:
            with StageProgress(progress, stage, run) as stage_progress:
                result = run_stage(STAGES[stage], run.root, parameters, progress=stage_progress)
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
    save_json(run.root / "summary.json", summary)
    print("\n" + format_summary(summary))
    print(f"\nReport: {write_report(run.root)}")
    for problem in summary["damaged"]:  # summary and report hold everything else
        print(f"run_all.py: {problem}", file=sys.stderr)
    return 1 if summary["damaged"] else 0
