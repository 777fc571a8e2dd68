#!/usr/bin/env python
"""Run the cifar-stress notebooks in order with papermill, then print a summary of the run.

    python run_all.py                          # profile auto: full on a GPU, cpu otherwise
    python run_all.py --profile smoke          # the whole pipeline in a few minutes
    python run_all.py --stages 3-5 --force     # rerun stages 3 to 5 of an existing run
    python run_all.py -p confidence_threshold=0.8 -p epochs=10
    python run_all.py --profile smoke --seeds 42-44   # one run per seed on Ray, then 07_replicates

Executed notebooks go to <run-dir>/executed/, the summary to <run-dir>/summary.json and the
one-page report to <run-dir>/report.html. A stage whose outputs are complete is skipped unless
--force is given, so an interrupted run picks up where it stopped.
Exit status: 0 success, 1 a stage failed, a result file is damaged, the run directory is in use by
another run or cannot be written (read-only, full, no permission), 2 bad arguments, 130 interrupted
(Ctrl-C; the same command resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import signal
import sys
from pathlib import Path
from typing import NoReturn

from cifar_helpers.rundir.artifacts import RunDir
from cifar_helpers.rundir.config import PROFILE_NAMES, resolve_profile
from cifar_helpers.rundir.lineage import stage_is_finished
from cifar_helpers.rundir.registry import STAGES
from cifar_helpers.rundir.replicate_layout import seed_run_dir
from cifar_helpers.rundir.runlock import LOCK_NAME, RunLock, RunLockedError
from cifar_helpers.workflow.pipeline import PipelineArgumentError, check_request, read_request, run_pipeline
from cifar_helpers.workflow.stages import default_run_dir

# Errors of the machine, not of the code: reported in one line (path and cause), exit status 1.
ENVIRONMENT_ERRNOS = {errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EPERM, errno.EDQUOT}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the reason is what a user needs; --help has the rest.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    stage_list = ", ".join(f"{i}={name}" for i, name in enumerate(STAGES))
    parser = _Parser(
        prog="run_all.py",
        description="Run the cifar-stress notebooks in order with papermill.",
        epilog=f"Stages: {stage_list}.",
    )
    parser.add_argument("--profile", choices=PROFILE_NAMES, default="auto", help="profile (default: auto)")
    parser.add_argument("--data-dir", help="CIFAR-10 location (default: $CIFAR10_ROOT, then ./data)")
    parser.add_argument("--run-dir", help="run directory (default: runs/<profile>)")
    parser.add_argument("--stages", help="stages to run: numbers, ranges or names, e.g. 3-5 or gradcam")
    parser.add_argument(
        "-p",
        dest="parameters",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a notebook parameter (repeatable); checked against the notebooks' parameters cells",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="rerun selected stages even if complete (their old results move to <stage>.previous/)",
    )
    parser.add_argument(
        "--seeds",
        help="run the pipeline once per seed (e.g. 42,43,44 or 42-46) as Ray tasks, each in "
        "<run-dir>/seed-<k>/, then the replicate stage 07_replicates",
    )
    parser.add_argument(
        "--ray-address",
        help="with --seeds: the Ray cluster to run the seeds on (default: $RAY_ADDRESS, else a Ray "
        "instance started on this machine)",
    )
    return parser


def _run_root(args: argparse.Namespace) -> Path:
    """The run directory the arguments name (``--run-dir``, else the profile's default)."""
    return Path(args.run_dir) if args.run_dir else default_run_dir(args.profile, cwd=Path.cwd())


def _finished_stages(args: argparse.Namespace) -> str:
    """The stages finished in the run directory (each seed's, for ``--seeds``), in words."""
    if args.seeds is None:
        runs = {"": _run_root(args)}
    else:
        from cifar_helpers.workflow.replicates import parse_seeds  # no Ray import

        runs = {f"seed {seed}: ": seed_run_dir(_run_root(args), seed) for seed in parse_seeds(args.seeds)}
    return "; ".join(
        label + (", ".join(s for s in STAGES if stage_is_finished(RunDir(path), s)) or "none")
        for label, path in runs.items()
    )


def _interrupted(signum: int, frame: object) -> None:
    """Ctrl-C: the kernels die with the run, so silence the loggers that would report each death
    (nbclient's "Kernel died", asyncio's unretrieved task) before the one line ``main`` prints."""
    logging.disable(logging.CRITICAL)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the selected stages; the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Resolved once, here: the stages, the notebooks' parameters and the progress line all get the
    # profile "auto" stands for on this machine.
    args.profile = resolve_profile(args.profile)
    with contextlib.ExitStack() as cleanup:  # releases the run directory's lock, however main ends
        previous = signal.signal(signal.SIGINT, _interrupted)
        cleanup.callback(signal.signal, signal.SIGINT, previous)
        try:
            return _run(parser, args, cleanup)
        except KeyboardInterrupt:
            # What is done stays done: finished stages are skipped by the same command (papermill and
            # Ray end the processes they started on their way out of the interrupted wait).
            print(
                f"\nrun_all.py: interrupted; finished stages: {_finished_stages(args)}; run the same "
                "command to resume (finished stages are skipped)",
                file=sys.stderr,
            )
            return 130
        except RunLockedError as e:
            print(f"run_all.py: {e}", file=sys.stderr)
            return 1
        except OSError as e:
            if e.errno not in ENVIRONMENT_ERRNOS:
                raise
            where = e.filename if e.filename is not None else "the run directory"
            print(f"run_all.py: cannot write {where}: {e.strerror}", file=sys.stderr)
            return 1


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    try:
        request = read_request(args)
    except PipelineArgumentError as e:
        parser.error(str(e))
    if args.seeds is not None or args.ray_address is not None:
        # Imported here: single-seed runs never import (or start) Ray.
        from cifar_helpers.workflow.replicates import ReplicateArgumentError, run_from_arguments

        try:
            return run_from_arguments(args, request)
        except ReplicateArgumentError as e:
            parser.error(str(e))

    run = RunDir(_run_root(args))
    fresh = not run.root.exists()
    lock = cleanup.enter_context(RunLock(run.root))
    try:
        check_request(run, request)
    except PipelineArgumentError as e:
        if fresh:  # leave no trace of a refused request
            lock.release()
            (run.root / LOCK_NAME).unlink()
            run.root.rmdir()
        parser.error(str(e))
    return run_pipeline(run, request)


if __name__ == "__main__":
    sys.exit(main())
