"""Seed replicates (``run_all.py --seeds 42,43,44`` or ``42-46``): the pipeline once per seed, then stage 07.

Each seed is one Ray task running the single-seed ``run_all.py`` on ``<root>/seed-<k>`` as a subprocess,
so a crash in one seed cannot take the others down. Every seed gets the same ``data_seed`` (the first
seed unless ``-p data_seed`` says otherwise), so seeds can be compared image by image. Ray is imported
only here.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cifar_helpers.analysis.seed_analysis import ReplicateSummary
from cifar_helpers.rundir.artifacts import RunDir, load_json, save_json
from cifar_helpers.rundir.lineage import failure_marker, stage_is_finished
from cifar_helpers.rundir.registry import REPLICATES_SPEC, STAGES
from cifar_helpers.rundir.replicate_layout import replicates_complete, replicates_dir, seed_run_dir
from cifar_helpers.views.report import write_replicates_report
from cifar_helpers.views.tables import describe_replicates
from cifar_helpers.workflow.pipeline import PipelineRequest, StageFailed, requested_config, run_stage
from cifar_helpers.workflow.stages import default_run_dir

_REPO_ROOT = Path(__file__).resolve().parents[2]
_RAY_START_ATTEMPTS = 3  # a loaded machine can take longer than Ray's start-up wait to start its agents
# What the single-seed run_all.py prints when a stage is done (workflow.pipeline.run_pipeline).
_STAGE_DONE = re.compile(r"\[(\w+)\] [\w.]+\.ipynb: (complete, skipped|done in)")


class ReplicateArgumentError(ValueError):
    """A bad ``--seeds`` value or a parameter that conflicts with it (exit status 2)."""


def parse_seeds(spec: str) -> list[int]:
    """``"42,43,44"``, ``"42-46"`` or a mix (``"1,5-7"``) -> sorted distinct seeds."""
    seeds: set[int] = set()
    for part in (p.strip() for p in spec.split(",")):
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise ReplicateArgumentError(
                f"--seeds: cannot read {part!r}; use non-negative integers and ranges, e.g. 42,43,44 or 42-46"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ReplicateArgumentError(f"--seeds: range {part!r} runs backwards; write {high}-{low}")
        seeds.update(range(low, high + 1))
    return sorted(seeds)


@dataclass(frozen=True)
class _ReplicateRequest:
    """What ``run_all.py --seeds`` was asked to do: every seed's pipeline, and the seeds."""

    pipeline: PipelineRequest  # the single-seed run_all.py each seed runs (its seed aside)
    seeds: list[int]
    root: Path
    data_seed: int  # every seed's (``-p data_seed``, else the first seed)
    ray_address: str | None = None


def _seed_command(request: _ReplicateRequest, seed: int) -> list[str]:
    """The single-seed ``run_all.py`` command line that computes ``seed``'s run of a replicate run."""
    pipeline = request.pipeline
    command = [
        "run_all.py",
        "--profile",
        pipeline.profile,
        "--run-dir",
        str(seed_run_dir(request.root, seed)),
    ]
    command += ["-p", f"seed={seed}"]
    # data_seed is a setup parameter: run_all.py refuses it when setup is not selected.
    command += ["-p", f"data_seed={request.data_seed}"] if "setup" in pipeline.stages else []
    command += ["--data-dir", pipeline.data_dir] if pipeline.data_dir is not None else []
    command += ["--stages", pipeline.stages_spec] if pipeline.stages_spec is not None else []
    command += ["--force"] if pipeline.force else []
    parameters = [item for item in pipeline.parameters if not item.startswith("data_seed=")]
    return command + [arg for item in parameters for arg in ("-p", item)]


@dataclass
class _SeedOutcome:
    """How one seed's run ended: exit status, the stage that failed (if any) and why."""

    seed: int
    returncode: int
    failed_stage: str | None = None
    message: str = ""
    log: str = ""
    seconds: float = 0.0
    ran: bool = False  # whether this invocation ran a stage (rather than skip them all)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _error_lines(log_text: str, limit: int = 6) -> str:
    """The lines of a failed run's output that say what went wrong (the FAILED block, else the tail)."""
    lines = [line for line in log_text.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "FAILED" in line or line.startswith("run_all.py: error"):
            return "\n".join(lines[i : i + limit])
    return "\n".join(lines[-limit:])


def _run_seed(seed: int, root: Path, command: list[str], stages: list[str], progress: Any) -> _SeedOutcome:
    """The Ray task of one seed: its single-seed ``run_all.py`` on ``root`` as a subprocess (output in
    ``<root>/run_all.log``), its line for each stage done or skipped put on the ``progress`` queue."""
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "run_all.log"
    start = time.perf_counter()
    done: dict[str, bool] = {}  # stage -> whether it ran (else it was skipped)
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            [sys.executable, *command],
            cwd=_REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
        )
        for line in process.stdout:
            log.write(line)
            match = _STAGE_DONE.match(line)
            if match is not None and match.group(1) in stages:
                done[match.group(1)] = match.group(2) == "done in"
                progress.put((seed, line.rstrip()))
        process.wait()
    seconds = time.perf_counter() - start
    outcome = _SeedOutcome(
        seed, process.returncode, log=str(log_path), seconds=seconds, ran=any(done.values())
    )
    if not outcome.ok:
        marked = [s for s in stages if failure_marker(root, s).exists()]
        unfinished = [s for s in stages if s not in done]
        outcome.failed_stage = (marked or unfinished or [None])[0]
        outcome.message = _error_lines(log_path.read_text(encoding="utf-8", errors="replace"))
    return outcome


def _start_ray(address: str | None) -> str:
    """Connect to the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), else start one on this machine;
    returns where the seeds will run, in words."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        ray.init(address=address, log_to_driver=False)
        return f"Ray cluster at {address}"
    import torch

    gpus = torch.cuda.device_count()
    for attempt in range(1, _RAY_START_ATTEMPTS + 1):
        before = _descendants()
        try:
            ray.init(
                num_cpus=os.cpu_count() or 1, num_gpus=gpus, include_dashboard=False, log_to_driver=False
            )
            break
        except Exception as e:  # Ray raises a bare Exception when its processes start too slowly
            # A failed start leaves the processes it did start (GCS, monitors) running: end them.
            _shut_down_ray(before)
            if attempt == _RAY_START_ATTEMPTS:
                raise RuntimeError(f"Ray did not start on this machine ({attempt} attempts): {e}") from e
            print(f"Ray did not start ({e}); trying again", flush=True)
    return f"Ray on this machine ({os.cpu_count()} CPUs, {gpus} GPUs)"


def _descendants() -> dict[int, Any]:
    """This process's descendants (psutil processes by PID): the whole tree, as a seed's run_all.py and
    its notebook kernels run below Ray's workers."""
    import psutil  # vendored by Ray (ray/thirdparty_files), importable once ray is imported

    return {process.pid: process for process in psutil.Process().children(recursive=True)}


def _shut_down_ray(before: dict[int, Any]) -> None:
    """``ray.shutdown()``, then end every process started since ``before`` (:func:`_descendants`) that
    outlived it: the tree is taken first, as a process whose parent died leaves it."""
    import psutil
    import ray

    started = [p for pid, p in _descendants().items() if pid not in before]
    ray.shutdown()
    for process in started:
        with contextlib.suppress(psutil.Error):
            process.kill()


def _task_resources(num_threads: int | None, cluster: dict[str, float], largest_node_cpus: float) -> dict:
    """Ray resources of one seed's task: a GPU each where there are GPUs, else its CPU threads
    (``num_threads`` None: torch's default, all cores, so the task asks for a whole machine)."""
    if cluster.get("GPU", 0) >= 1:
        return {"num_gpus": 1, "num_cpus": num_threads or 1}
    return {"num_cpus": num_threads or max(1, int(largest_node_cpus))}


def _run_replicates(request: _ReplicateRequest) -> int:
    """Run every seed as a Ray task, then stage 07; print progress; return the exit status (0 or 1)."""
    import ray

    num_threads = requested_config(request.pipeline.profile, request.pipeline.overrides).num_threads
    root = request.root
    seeds = request.seeds
    root.mkdir(parents=True, exist_ok=True)
    print(f"Replicate run: {root} (seeds {', '.join(map(str, seeds))}, data_seed {request.data_seed})")
    before = _descendants()
    where = _start_ray(request.ray_address)
    try:
        cluster = ray.cluster_resources()
        largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=1)
        resources = _task_resources(num_threads, cluster, largest)
        print(f"{where}; each seed's task asks for {resources}", flush=True)
        outcomes = _run_seed_tasks(request, resources)
    finally:  # also on Ctrl-C
        _shut_down_ray(before)

    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        notebook = STAGES[o.failed_stage].notebook if o.failed_stage in STAGES else "run_all.py"
        stage = f" (stage '{o.failed_stage}')" if o.failed_stage else ""
        details = o.message.replace("\n", "\n  ")
        _say(f"seed {o.seed} FAILED in {notebook}{stage}; its output: {o.log}\n  {details}", error=True)
    status = 1 if failed else 0
    replicates_status = "not run"
    if failed:
        _say(
            f"stage 07 not run: {len(failed)} of {len(seeds)} seeds failed; fix the cause and rerun the same "
            "command (finished stages are skipped)",
            error=True,
        )
    elif len(seeds) < 2:
        _say(
            "stage 07 compares seeds and needs at least two: add more, e.g. "
            f"--seeds {seeds[0]}-{seeds[0] + 2} (seeds already done are skipped)"
        )
    elif incomplete := [
        s for s in seeds if not all(stage_is_finished(RunDir(seed_run_dir(root, s)), st) for st in STAGES)
    ]:
        _say(
            f"stage 07 not run: the runs of seed(s) {', '.join(map(str, incomplete))} do not have every "
            "stage yet; run without --stages to complete them"
        )
    elif not any(o.ran for o in outcomes) and not request.pipeline.force and replicates_complete(root, seeds):
        _say(f"[{REPLICATES_SPEC.name}] {REPLICATES_SPEC.notebook}: complete, skipped")
        replicates_status = "skipped"
    else:
        replicates_status = _run_replicates_notebook(request)
        if replicates_status == "failed":
            status = 1
    summary = _replicate_run_summary(root, outcomes, replicates_status)
    save_json(root / "summary.json", summary)
    print("\n" + _format_replicate_summary(summary))
    if replicates_status in ("ran", "skipped"):
        print(f"\nReport: {write_replicates_report(root)}")
    return status


def _say(message: str, error: bool = False) -> None:
    print(message, file=sys.stderr if error else sys.stdout, flush=True)


def _run_seed_tasks(request: _ReplicateRequest, resources: dict) -> list[_SeedOutcome]:
    import ray
    from ray.util.queue import Empty, Queue

    progress = Queue(actor_options={"num_cpus": 0})
    task = ray.remote(max_retries=0, **resources)(_run_seed)
    pending = {}
    for seed in request.seeds:
        run_dir = seed_run_dir(request.root, seed)
        command = _seed_command(request, seed)
        pending[task.remote(seed, run_dir, command, request.pipeline.stages, progress)] = seed
    total = len(request.seeds) * len(request.pipeline.stages)
    accounted = 0

    def drain() -> None:
        nonlocal accounted
        while True:
            try:
                seed, line = progress.get_nowait()
            except Empty:
                return
            accounted += 1
            _say(f"[seed {seed}] {line}  ({accounted}/{total} stages)")

    outcomes: dict[int, _SeedOutcome] = {}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        drain()
        for ref in ready:
            seed = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as e:  # the task itself died (worker lost, node gone)
                outcome = _SeedOutcome(seed, 1, message=f"Ray task failed: {str(e).splitlines()[0]}")
            outcomes[seed] = outcome
            state = "finished" if outcome.ok else "FAILED"
            minutes = outcome.seconds / 60
            _say(
                f"[seed {seed}] {state} after {minutes:.2f} min ({len(outcomes)}/{len(request.seeds)} seeds)"
            )
    drain()
    return [outcomes[s] for s in request.seeds]


def _run_replicates_notebook(request: _ReplicateRequest) -> str:
    """Execute 07_replicates.ipynb on the replicate run; "ran" or "failed" (the reason is printed)."""
    spec = REPLICATES_SPEC
    seeds = request.seeds
    parameters = {
        "run_dir": str(request.root),
        "profile": request.pipeline.profile,
        "seed": seeds[0],
        "seeds": seeds,
    }
    print(f"[{spec.name}] {spec.notebook}: running ...", flush=True)
    try:
        result = run_stage(spec, request.root, parameters)
    except StageFailed as e:
        _say(f"[{spec.name}] FAILED\n{e}", error=True)
        return "failed"
    print(f"[{spec.name}] {spec.notebook}: done in {result.seconds / 60:.2f} min", flush=True)
    return "ran"


def _replicate_run_summary(
    root: Path, outcomes: Sequence[_SeedOutcome], replicates_status: str
) -> dict[str, Any]:
    """``<root>/summary.json``: each seed's status and headline numbers, and stage 07's summary."""
    seeds: dict[str, Any] = {}
    for outcome in outcomes:
        run_dir = seed_run_dir(root, outcome.seed)
        path = run_dir / "summary.json"
        seed_summary = load_json(path) if outcome.ok and path.exists() else {}
        seeds[str(outcome.seed)] = {
            "status": "ok" if outcome.ok else "failed",
            "failed_stage": outcome.failed_stage,
            "run_dir": str(run_dir),
            "minutes": round(outcome.seconds / 60, 2),
            "test_accuracy": {
                m: (seed_summary.get(m) or {}).get("test_accuracy") for m in ("baseline", "augmented")
            },
            "high_confidence_failures": seed_summary.get("high_confidence_failures"),
            "comparison": seed_summary.get("comparison", {}),
        }
    path = replicates_dir(root) / "summary.json"
    replicates = load_json(path) if replicates_status in ("ran", "skipped") and path.exists() else None
    return {
        "run_dir": str(root),
        "seeds": seeds,
        "replicates_stage": replicates_status,
        "replicates": replicates,
    }


def _format_replicate_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of :func:`_replicate_run_summary`'s numbers."""

    def pct(x: Any) -> str:
        return f"{100 * x:6.2f} %" if isinstance(x, (int, float)) else "     -  "

    lines = [
        f"Replicate run: {summary['run_dir']}",
        "",
        f"{'seed':<8}{'status':<8}{'baseline':>10}{'augmented':>11}{'failures':>10}{'fixed':>7}{'new':>5}{'minutes':>9}",
    ]
    for seed, info in summary["seeds"].items():
        counts = info["comparison"] or {}
        failures = info["high_confidence_failures"]
        lines.append(
            f"{seed:<8}{info['status']:<8}{pct(info['test_accuracy']['baseline']):>10}"
            f"{pct(info['test_accuracy']['augmented']):>11}{failures if failures is not None else '-':>10}"
            f"{counts.get('fixed', '-'):>7}{counts.get('new', '-'):>5}{info['minutes']:>9.2f}"
        )
    if summary.get("replicates"):
        lines += ["", describe_replicates(ReplicateSummary.from_dict(summary["replicates"]))]
    else:
        lines += ["", f"stage 07 (replicates): {summary['replicates_stage']}"]
    return "\n".join(lines)


def run_from_arguments(args: Any, pipeline: PipelineRequest) -> int:
    """``run_all.py --seeds ...``: the parsed command line (``pipeline``: its checked arguments) ->
    :func:`_run_replicates` -> exit status; :class:`ReplicateArgumentError` for a bad ``--seeds`` or
    a conflicting option."""
    if args.seeds is None:
        raise ReplicateArgumentError("--ray-address runs seed replicates: add --seeds, e.g. --seeds 42-44")
    overrides = pipeline.overrides
    if "seed" in overrides:
        raise ReplicateArgumentError("-p seed cannot be combined with --seeds: the seeds come from --seeds")
    root = (
        Path(args.run_dir).expanduser() if args.run_dir else default_run_dir(pipeline.profile, cwd=Path.cwd())
    )
    seeds = parse_seeds(args.seeds)
    request = _ReplicateRequest(
        pipeline=pipeline,
        seeds=seeds,
        root=root.resolve(),
        data_seed=seeds[0] if overrides.get("data_seed") is None else overrides["data_seed"],
        ray_address=args.ray_address,
    )
    return _run_replicates(request)
