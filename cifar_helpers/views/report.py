"""A one-page, self-contained HTML report of a run (inline CSS, figures as data URIs, no script), built
only from the run directory's files (the outputs of :data:`rundir.registry.STAGES`) with the tables of
:mod:`views.tables` and ``templates/report.html.j2``. A stage not run yet or a file that cannot be read
says so in its section, so a report can be written at any point of a run.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from PIL import Image, UnidentifiedImageError

from cifar_helpers.analysis.calibration import Calibration
from cifar_helpers.analysis.claims.ledger import read_ledger
from cifar_helpers.analysis.claims.probes import TileShuffle
from cifar_helpers.analysis.claims.rules import BENCH, ClaimResult
from cifar_helpers.analysis.failures import FailureSummary
from cifar_helpers.analysis.faithfulness import FailureRoad, RoadByModel
from cifar_helpers.analysis.human_labels import (
    HumanCalibration,
    HumanLabelsSummary,
    NotApplicable,
    human_labels_summary,
    result_from_dict,
)
from cifar_helpers.analysis.positive_control import PositiveControl
from cifar_helpers.analysis.sanity import RandomisationSummary
from cifar_helpers.analysis.seed_analysis import (
    COUNT_KEYS,
    AccuracyOverSeeds,
    CategoryMix,
    FailureStability,
    NoiseFloor,
    ReplicateSummary,
)
from cifar_helpers.analysis.stress import StressResult
from cifar_helpers.rundir.artifacts import (
    DamagedArtifactError,
    RunDir,
    atomic_path,
    load_json,
)
from cifar_helpers.rundir.records import Record
from cifar_helpers.rundir.registry import REPLICATES_SPEC, STAGES, StageSpec
from cifar_helpers.rundir.replicate_layout import find_seeds, replicates_dir, seed_run_dir
from cifar_helpers.views import tables as t

REPORT_NAME = "report.html"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Rows shown for a JSON file without a dedicated summary; the file itself holds the rest.
_MAX_GENERIC_ROWS = 40
_TEMPLATE = jinja2.Environment(
    loader=jinja2.PackageLoader("cifar_helpers.views", "templates"), autoescape=True, trim_blocks=True
).get_template("report.html.j2")


class _MissingKey(KeyError):
    """A key a result file lacks; the message names the file and the key."""

    def __str__(self) -> str:
        return str(self.args[0])


def _read_result(path: Path) -> Any:
    """A JSON file whose objects raise :class:`_MissingKey`, naming the file, for a missing key."""

    class Strict(dict):
        def __missing__(self, key: Any) -> Any:
            raise _MissingKey(f"{path.parent.name}/{path.name} has no key {key!r}")

    return load_json(path, object_hook=Strict)


def _html(frames: pd.DataFrame | list[pd.DataFrame]) -> str:
    return "".join(
        t.to_html(frame, precise=True) for frame in ([frames] if isinstance(frames, pd.DataFrame) else frames)
    )


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalars (and short scalar lists) of a nested JSON value as ``("a.b.c", value)`` pairs."""
    if isinstance(obj, dict):
        return [pair for key, value in obj.items() for pair in _flatten(value, f"{prefix}.{key}".strip("."))]
    if isinstance(obj, list):
        if len(obj) <= 10 and all(isinstance(v, (int, float, str, bool)) or v is None for v in obj):
            return [(prefix, ", ".join(t.fmt(v, precise=True) for v in obj))]
        return [(prefix, f"[{len(obj)} entries]")]
    return [(prefix, obj)]


def _generic(data: Any) -> list[pd.DataFrame]:
    pairs = _flatten(data)
    more = len(pairs) - _MAX_GENERIC_ROWS
    return [t.table(t.KV, pairs[:_MAX_GENERIC_ROWS], notes=[f"{more} more values in the file."] * (more > 0))]


# --- per-file summaries: the report-only rows, and the shared tables ---------------------------------


def _metrics(metrics: dict[str, Any]) -> list[pd.DataFrame]:
    training = [(k, metrics[k]) for k in ("epochs", "train_seconds", "images_per_second")]
    per_class = t.per_class_table({"accuracy": metrics["per_class_accuracy"]}, "Per-class test accuracy")
    return [t.accuracy_table(metrics), t.table(t.KV, training), per_class]


def _history(history: dict[str, Any]) -> list[pd.DataFrame]:
    what = {"train loss": "train_loss", "train accuracy (augmented batches)": "train_acc"}
    what |= {"test loss": "test_loss", "test accuracy": "test_acc"}
    rows = [("epochs finished", len(history["epochs"])), ("training complete", history["complete"])]
    rows += [(f"last epoch: {w}", history["epochs"][-1][k]) for w, k in what.items()]
    last = t.table(t.KV, rows, formats={rows[3][0]: "pct", rows[5][0]: "pct"})
    return [last, t.train_step_table(history["environment"]["train_step"])]


def _failure_list(failures: dict[str, Any]) -> list[pd.DataFrame]:
    spec = [
        ("confidence threshold", None, "threshold"),
        ("images evaluated", None, "num_images"),
        ("errors", None, "num_errors"),
    ]
    frame = t.spec_table({"value": failures}, spec)
    frame.loc[len(frame)] = ("high-confidence failures listed", len(failures["indices"]))
    return [frame]


def _positive_control(data: dict[str, Any]) -> list[pd.DataFrame]:
    control = PositiveControl.from_dict(data)
    spec = [
        ("mask-share gap (untied - tied)", None, "mask_share_gap"),
        ("pointing-game gap (untied - tied)", "pct", "pointing_game_gap"),
    ]
    gaps = t.spec_table({"value": control.to_dict()}, spec)
    return [t.positive_control_table(control), gaps, t.positive_control_road_table(control)]


def _replicate_summary(saved: dict[str, Any]) -> list[pd.DataFrame]:
    summary = ReplicateSummary.from_dict(saved)
    floor = [t.noise_floor_table(summary.noise_floor)] if "reseed" in summary.noise_floor else []
    return [t.seed_accuracy_table(summary.accuracy), *floor]


def _ledger(run: RunDir) -> str:
    rows = read_ledger(run.root)
    return _html([t.claims_table(rows, title=""), t.bench_table(rows)])


def _stage_claims(saved: list[dict[str, Any]]) -> list[pd.DataFrame]:
    """A stage's ``claims.json``: the bench's matrix, or its rows before the bench's gate."""
    rows = [ClaimResult.from_dict(row) for row in saved]
    if any(r.population.startswith(BENCH) for r in rows):
        return [t.bench_table(rows)]
    title = "as this stage tested them, before the bench's gate (the ledger has the verdicts)"
    return [t.claims_table(rows, title=title)]


# Each file's heading and its table(s), by "<folder>/<name>" where a name means different files in
# different stages, else by name; a file not listed gets the table of its values. The template adds
# the prose that explains some of them.
_FILES: dict[str, tuple[str, Callable[[Any], pd.DataFrame | list[pd.DataFrame]]]] = {
    "config.json": ("Configuration", lambda data: t.table(t.KV, data.items())),
    "environment.json": ("Environment", lambda data: t.table(t.KV, data.items())),
    "data_summary.json": ("Data", lambda data: t.data_table(data, provenance=True)),
    "metrics.json": ("Accuracy", _metrics),
    "history.json": ("Training history", _history),
    "failures.json": ("Failure list", _failure_list),
    "summary.json": (
        "Failure summary",
        lambda data: t.failure_tables(FailureSummary.from_dict(data), max_pairs=10),
    ),
    "measures.json": ("Attention measures", _generic),
    "comparison.json": ("Baseline vs augmented failures", t.comparison_tables),
    "corruptions.json": (
        "Corruption stress test",
        lambda data: t.corruption_tables(StressResult.from_dict(data), severities=True),
    ),
    "calibration.json": (
        "Calibration and temperature scaling",
        lambda data: t.calibration_table(Calibration.from_dict(data)),
    ),
    "sanity.json": (
        "Grad-CAM sanity check (model-parameter randomisation)",
        lambda data: t.randomisation_table(RandomisationSummary.from_dict(data)),
    ),
    "positive_control.json": ("Positive control: background shortcut", _positive_control),
    "road.json": (
        "Faithfulness of the heatmaps (ROAD)",
        lambda data: t.failure_road_table(FailureRoad.from_dict(data)),
    ),
    "reevaluation/road.json": (
        "Faithfulness of the heatmaps (ROAD)",
        lambda data: t.road_by_model_table(RoadByModel.from_dict(data)),
    ),
    "claims.json": ("Claims tested here", _stage_claims),
    "tile_shuffle.json": (
        "Accuracy on tile-shuffled images",
        lambda data: t.tile_shuffle_table({m: TileShuffle.from_dict(r) for m, r in data.items()}),
    ),
    # replicates/
    "replicates/summary.json": ("Replicates at a glance", _replicate_summary),
    "accuracy.json": (
        "Test accuracy over seeds (95 % t-interval)",
        lambda data: t.seed_accuracy_table(AccuracyOverSeeds.from_dict(data).summary()),
    ),
    "noise_floor.json": (
        "The noise floor: a reseed against augmentation",
        lambda data: t.noise_floor_tables(NoiseFloor.from_dict(data)),
    ),
    "stability.json": (
        "Failure stability (baseline)",
        lambda data: t.stability_table(FailureStability.from_dict(data)),
    ),
    "category_mix.json": (
        "Human-label categories: consistent failures against one-seed failures",
        lambda data: t.category_mix_table(result_from_dict(data, CategoryMix)),
    ),
}


# --- the page -------------------------------------------------------------------------------------


def _file_part(path: Path) -> dict[str, str]:
    """A file's tables, or why they cannot be shown (with its values if it could be read)."""
    # optional by design: a file _FILES does not list gets the table of its values
    heading, render = _FILES.get(f"{path.parent.name}/{path.name}") or _FILES.get(
        path.name, (path.name, _generic)
    )
    part = {"heading": heading, "name": path.name}
    try:
        data = _read_result(path)
    except (OSError, ValueError) as error:
        return {**part, "error": f"could not read {path.name}: {error}"}
    try:
        return {**part, "html": _html(render(data))}
    except Exception as failure:  # a malformed file must not take the whole report down
        shown = _html(_generic(data)) if isinstance(data, (dict, list)) else ""
        return {**part, "error": f"could not summarise {path.name}: {failure}", "html": shown}


def png_problem(data: bytes) -> str | None:
    """Why ``data`` is not an intact PNG file (chunk CRCs by ``verify``, pixels by ``load``), or None."""
    if not data.startswith(_PNG_SIGNATURE):
        return "is not a PNG file"
    try:
        for check in ("verify", "load"):  # verify() leaves the image unusable: a fresh open for load()
            with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
                getattr(image, check)()
    except UnidentifiedImageError:
        return "is a damaged PNG file (its header cannot be read)"
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as error:
        # Pillow reports a short file as an OSError or EOFError that says so; anything else is damage.
        if isinstance(error, EOFError) or "truncated" in str(error).lower():
            return "is a truncated PNG file"
        return f"is a damaged PNG file ({error})"
    return None


def _figure(path: Path) -> dict[str, str]:
    """A PNG's base64 data and caption, or why it is not embedded (it would show as a broken image)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        return {"name": path.name, "error": f"could not be read ({error})"}
    problem = png_problem(data)
    if problem:
        return {"name": path.name, "error": problem}
    caption = path.stem.replace("_", " ").replace("-", " ").strip()
    return {
        "name": path.name,
        "caption": caption[:1].upper() + caption[1:],
        "data": base64.b64encode(data).decode(),
    }


def _section(spec: StageSpec, base: Path, notebook: str) -> dict[str, Any]:
    """A stage's section: its status, each JSON file's tables and the figures in ``base``."""
    names = spec.outputs
    missing = [name for name in names if not (base / name).exists()]
    status = "complete" if not missing else "not run" if len(missing) == len(names) else "incomplete"
    section = {"id": spec.name, "title": spec.title, "status": status}
    if status == "not run":
        return {**section, "notes": [f"stage not run: run {notebook} to produce {', '.join(names)}."]}
    json_files = [base / name for name in names if name.endswith(".json") and (base / name).exists()]
    notes = [f"missing: {', '.join(missing)}"] * bool(missing)
    figures = [_figure(path) for path in sorted(base.glob("*.png"))]
    return {**section, "notes": notes, "parts": [_file_part(path) for path in json_files], "figures": figures}


_METRICS = ("test_accuracy", "train_accuracy", "train_test_gap", "train_seconds")


@dataclass(frozen=True)
class RunSummary(Record):
    """The numbers a reader wants first (the report's overview, ``summary.json``), read from the stages'
    files; a number is None for a stage not run yet or a damaged file, which ``damaged`` lists (one
    line each, naming the stage to rerun)."""

    run_dir: str
    baseline: dict[str, float | None]
    augmented: dict[str, float | None]
    high_confidence_failures: int | None
    confidence_threshold: float | None
    comparison: dict[str, int | None]
    human_labels: HumanLabelsSummary | NotApplicable
    damaged: tuple[str, ...]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> RunSummary:
        """Rebuild from :meth:`to_dict`'s output (keys the runner added are left); a missing key raises
        a KeyError naming it."""
        human_labels = result_from_dict(values["human_labels"], HumanLabelsSummary)
        return replace(super().from_dict(values), human_labels=human_labels)


def read_run_summary(run: RunDir) -> RunSummary:
    """The run's :class:`RunSummary`, read from its stages' files."""
    damaged: list[str] = []

    def read(stage: str, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
        path = run.stage_dir(stage) / name
        try:
            data = _read_result(path) if path.exists() else dict.fromkeys(keys)
        except DamagedArtifactError as error:
            damaged.append(str(error))
            data = dict.fromkeys(keys)
        return {key: data[key] for key in keys}

    try:
        human_labels = human_labels_summary(run.root)
    except DamagedArtifactError as error:
        damaged.append(str(error))
        human_labels = NotApplicable(str(error))

    failures = read("failures", "summary.json", ("num_high_confidence", "threshold"))
    return RunSummary(
        run_dir=str(run.root),
        baseline=read("baseline", "metrics.json", _METRICS),
        augmented=read("augmented", "metrics.json", _METRICS),
        high_confidence_failures=failures["num_high_confidence"],
        confidence_threshold=failures["threshold"],
        comparison=read("reevaluation", "comparison.json", ("counts",))["counts"]
        or dict.fromkeys(COUNT_KEYS),
        human_labels=human_labels,
        damaged=tuple(damaged),
    )


def _overview_tables(summary: RunSummary) -> list[pd.DataFrame]:
    """Both models' accuracy and gap, the confident failures and what the augmented model did with them."""
    columns = ("model", "test accuracy", "train accuracy", "train - test gap")
    keys = ("test_accuracy", "train_accuracy", "train_test_gap")
    rows = [(m, *(getattr(summary, m)[k] for k in keys)) for m in ("baseline", "augmented")]
    note_ = ["gap: train minus test accuracy, both evaluated in eval mode without augmentation"]
    threshold = summary.confidence_threshold
    above = "" if threshold is None else f" (confidence > {threshold})"
    spec = [
        (f"high-confidence failures of the baseline{above}", None, "high_confidence_failures"),
        ("fixed by the augmented model", None, "comparison", "fixed"),
        ("kept, same wrong class", None, "comparison", "kept_same"),
        ("kept, another wrong class", None, "comparison", "kept_different"),
        ("new high-confidence failures", None, "comparison", "new"),
    ]
    models = t.table(columns, rows, notes=note_, formats=dict.fromkeys(columns[1:], "pct"))
    # The fields as read (not to_dict's copies), so that a missing key raises _MissingKey, naming its file.
    return [models, t.spec_table({"value": vars(summary)}, spec)]


def format_run_summary(summary: Mapping[str, Any]) -> str:
    """``summary.json`` (:meth:`RunSummary.to_dict`, with ``stages`` when this invocation of
    ``run_all.py`` ran stages) as ``run_all.py`` prints it at the end."""
    overview = RunSummary.from_dict(summary)
    frames = [*_overview_tables(overview), *t.human_label_tables(overview.human_labels)]
    if "stages" in summary:  # optional by design: only when this invocation ran stages
        rows = [(name, info["status"], float(info["minutes"])) for name, info in summary["stages"].items()]
        frames.append(t.table(("stage", "status", "minutes"), rows))
    return "\n\n".join([f"Run: {overview.run_dir}", *map(t.text, frames)])


def _human_labels(run: RunDir) -> str:
    """The human-label tables with stage 06's CIFAR-10H cross-entropy, or why no human labels apply."""
    summary = human_labels_summary(run.root)
    frames = t.human_label_tables(summary)
    if not isinstance(summary, NotApplicable):
        path = run.path("stress", "human_calibration.json")
        calibration = []  # stage 06's table, once it has run
        if path.exists():
            calibration = [t.human_calibration_table(result_from_dict(_read_result(path), HumanCalibration))]
        sources = "CIFAR-10H, Peterson et al. 2019; verified label errors, Northcutt et al. 2021"
        about = f"{sources}; ambiguous: the given label's human share < {summary.ambiguity_threshold}."
        frames = [t.note(about), *frames, *calibration]
    return _html(frames)


def _block(heading: str, render: Callable[[], str]) -> dict[str, str]:
    """A block of the page; an error in it is shown there instead of taking the page down."""
    try:
        return {"heading": heading, "html": render()}
    except Exception as failure:
        return {"heading": heading, "error": f"could not summarise the run: {failure}"}


def render_report(run_dir: str | os.PathLike[str]) -> str:
    """The report's HTML as a string (see :func:`write_report`)."""
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise FileNotFoundError(
            f"run directory {run.root} does not exist; pass the directory a run wrote into"
        )
    sections = [_section(spec, run.root / spec.directory, spec.notebook) for spec in STAGES.values()]
    blocks = [
        _block("Overview", lambda: _html(_overview_tables(read_run_summary(run)))),
        _block("The claims ledger", lambda: _ledger(run)),
        _block("Is it the model or the label? (human labels)", lambda: _human_labels(run)),
    ]
    title, intro = (
        f"cifar-stress run report: {run.root.name}",
        f"Run directory: {run.root}. Built from the files the stages saved there.",
    )
    return _TEMPLATE.render(title=title, intro=intro, blocks=blocks, nav=True, sections=sections)


def _write(path: Path, page: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``<run_dir>/report.html`` atomically and return its path."""
    return _write(RunDir(run_dir).root / REPORT_NAME, render_report(run_dir))


# --- the replicate run (run_all.py --seeds) -------------------------------------------------------------


def _seeds(root: Path) -> str:
    """Each seed's test accuracies and a link to its own report."""
    rows = []
    for seed in find_seeds(root):
        directory = seed_run_dir(root, seed)
        paths = [directory / model / "metrics.json" for model in ("baseline", "augmented")]
        accuracy = [_read_result(path)["test_accuracy"] if path.exists() else None for path in paths]
        report = f"{directory.name}/{REPORT_NAME}" if (directory / REPORT_NAME).exists() else "no report"
        rows.append((str(seed), *accuracy, report))
    columns = ("seed", "baseline test accuracy", "augmented test accuracy", "the seed's own report")
    return _html(t.table(columns, rows, formats=dict.fromkeys(columns[1:3], "pct")))


def render_replicates_report(root: str | os.PathLike[str]) -> str:
    """The replicate run's page: each seed's accuracies and the section of ``replicates/``."""
    root = Path(root).expanduser().resolve()
    notebook = f"{REPLICATES_SPEC.notebook} (run_all.py --seeds)"
    return _TEMPLATE.render(
        title=f"cifar-stress replicate report: {root.name}",
        intro=f"Replicate run: {root}. Built from the seed-<k>/ run directories and replicates/.",
        blocks=[_block("Seeds", lambda: _seeds(root))],
        sections=[_section(REPLICATES_SPEC, replicates_dir(root), notebook)],
    )


def write_replicates_report(root: str | os.PathLike[str]) -> Path:
    """Write ``<root>/report.html`` of a replicate run atomically and return its path."""
    return _write(Path(root).expanduser().resolve() / REPORT_NAME, render_replicates_report(root))
