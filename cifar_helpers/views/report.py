"""A one-page HTML report of a run, built only from what the stages saved in the run directory.

``write_report(run_dir)`` writes ``<run_dir>/report.html``: one self-contained file (inline CSS,
every figure embedded as a base64 PNG data URI, no scripts, nothing fetched from the network) that
can be mailed, archived or opened years later. It reads the JSON files of
:data:`rundir.artifacts.STAGE_OUTPUTS` and the PNG figures each stage saved beside them, in
pipeline order; a stage that has not run yet shows "stage not run", and a file that cannot be read
shows why, so a report can be written at any point of a run.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from cifar_helpers.analysis.human_labels import human_labels_summary
from cifar_helpers.analysis.seed_analysis import COUNT_KEYS
from cifar_helpers.rundir.artifacts import STAGE_OUTPUTS, STAGES, RunDir, atomic_path, load_json
from cifar_helpers.rundir.registry import STAGE_SPECS
from cifar_helpers.rundir.replicate_layout import (
    REPLICATES_NOTEBOOK,
    REPLICATES_OUTPUTS,
    find_seed_dirs,
    replicates_dir,
)
from cifar_helpers.views.tables import (
    ROAD_EXPLAINED,
    Cell,
    Percent,
    Table,
    accuracy_table,
    calibration_table,
    category_mix_table,
    comparison_tables,
    corruption_tables,
    data_table,
    esc,
    failure_road_table,
    failure_tables,
    fmt_num,
    fmt_pct,
    get,
    human_calibration_table,
    human_label_tables,
    no_human_labels,
    noise_floor_table,
    per_class_table,
    positive_control_road_table,
    positive_control_table,
    randomisation_table,
    road_by_model_table,
    run_summary_tables,
    seed_accuracy_table,
)

REPORT_NAME = "report.html"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Rows shown for a JSON file without a dedicated summary; the file itself holds the rest.
MAX_GENERIC_ROWS = 40

STAGE_TITLES: dict[str, str] = {spec.name: spec.title for spec in STAGE_SPECS}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 3px solid #345; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; padding-bottom: .15em; }
h3 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: .1em .6em; border-radius: .8em; font-size: .85em; }
.complete { background: #d8f0dc; } .incomplete { background: #fdf0c8; } .notrun { background: #eee; }
.note { color: #666; font-size: .9em; }
.error { color: #a00; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .9em; }
nav ul { columns: 2; }
"""


# --- formatting: the rows come from tables, this module only lays them out --------------------------


def _caption(path: Path) -> str:
    text = path.stem.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else path.name


def _table(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """Rows of cells under a header -> an HTML table (every cell escaped)."""
    return Table("", tuple(header), tuple(tuple(row) for row in rows)).html()


def _kv_table(pairs: Iterable[tuple[str, Cell]], columns: int = 1) -> str:
    """Quantity/value pairs as a table; ``columns`` > 1 sets that many pairs side by side (long lists)."""
    pairs = list(pairs)
    rows_needed = max(1, math.ceil(len(pairs) / columns))
    chunks = [pairs[i * rows_needed : (i + 1) * rows_needed] for i in range(columns)]
    rows = []
    for r in range(rows_needed):
        row: list[Cell] = []
        for chunk in chunks:
            row.extend(chunk[r] if r < len(chunk) else ("", ""))
        rows.append(row)
    return _table(("quantity", "value") * columns, rows if pairs else [])


def _html(tables: Iterable[Table]) -> str:
    return "".join(table.html() for table in tables)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalars (and short scalar lists) of a nested JSON value as ``("a.b.c", value)`` pairs."""
    if isinstance(obj, dict):
        pairs: list[tuple[str, Any]] = []
        for key, value in obj.items():
            pairs.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return pairs
    if isinstance(obj, list):
        if len(obj) <= 10 and all(isinstance(v, (int, float, str, bool)) or v is None for v in obj):
            return [(prefix, ", ".join(fmt_num(v) for v in obj))]
        return [(prefix, f"[{len(obj)} entries]")]
    return [(prefix, obj)]


def _generic(data: Any) -> str:
    pairs = _flatten(data)
    shown = [(key, fmt_num(value)) for key, value in pairs[:MAX_GENERIC_ROWS]]
    more = len(pairs) - len(shown)
    note = f'<p class="note">{more} more values in the file.</p>' if more > 0 else ""
    return _kv_table(shown) + note


# --- per-file summaries: the report-only rows, and the shared tables ---------------------------------


def _config_summary(config: dict[str, Any]) -> str:
    return _kv_table(((key, fmt_num(value)) for key, value in config.items()), columns=3)


def _metrics_summary(metrics: dict[str, Any]) -> str:
    training = [
        ("epochs", metrics.get("epochs")),
        ("training time (s)", metrics.get("train_seconds")),
        ("images per second", metrics.get("images_per_second")),
    ]
    html_out = accuracy_table(metrics).html() + _kv_table(training)
    per_class = metrics.get("per_class_accuracy")
    if isinstance(per_class, dict) and per_class:
        html_out += "<h4>Per-class test accuracy</h4>" + per_class_table({"accuracy": per_class}).html()
    return html_out


def _history_summary(history: dict[str, Any]) -> str:
    epochs = history.get("epochs")
    if not isinstance(epochs, list):
        return _generic(history)
    last = epochs[-1] if epochs and isinstance(epochs[-1], dict) else {}
    rows = [
        ("epochs finished", len(epochs)),
        ("training complete", history.get("complete")),
        ("last epoch: train loss", last.get("train_loss")),
        ("last epoch: train accuracy (augmented batches)", Percent(last.get("train_acc"))),
        ("last epoch: test loss", last.get("test_loss")),
        ("last epoch: test accuracy", Percent(last.get("test_acc"))),
    ]
    return _kv_table(rows)


def _failure_list_summary(failures: dict[str, Any]) -> str:
    indices = failures.get("indices")
    rows = [
        ("confidence threshold", failures.get("threshold")),
        ("images evaluated", failures.get("num_images")),
        ("errors", failures.get("num_errors")),
        ("high-confidence failures listed", len(indices) if isinstance(indices, list) else None),
    ]
    return _kv_table(rows)


def _positive_control_summary(data: Any) -> str:
    note = (
        '<p class="note">Two models trained on generated data: one whose training backgrounds give the '
        "class away, one whose do not. On test images with random backgrounds, the Grad-CAM maps of the "
        "first model's high-confidence failures should lie mostly off the object.</p>"
    )
    extra = [
        ("mask-share gap (untied - tied)", data.get("mask_share_gap")),
        ("pointing-game gap (untied - tied)", Percent(data.get("pointing_game_gap"))),
    ]
    road = positive_control_road_table(data)
    return (
        note + positive_control_table(data).html() + _kv_table(extra) + ("" if road is None else road.html())
    )


def _sanity_summary(data: Any) -> str:
    note = (
        '<p class="note">Spearman rank correlation between the trained model\'s Grad-CAM maps and '
        "those of copies whose layers are re-initialised cumulatively from the top (Adebayo et al., "
        "2018). Maps that do not change as the weights are destroyed would not explain the model.</p>"
    )
    return note + randomisation_table(data).html()


def _road_summary(data: Any) -> str:
    note = f'<p class="note">{esc(ROAD_EXPLAINED)}.</p>'
    if isinstance(get(data, "models"), dict):
        return note + road_by_model_table(data).html()
    return note + failure_road_table(data).html()


# Which summary renders which file; files without one get the generic table of their values.
SUMMARIES: dict[tuple[str, str], Callable[[Any], str]] = {
    ("setup", "config.json"): _config_summary,
    ("setup", "environment.json"): _config_summary,
    ("setup", "data_summary.json"): lambda data: data_table(data, provenance=True).html(),
    ("baseline", "history.json"): _history_summary,
    ("baseline", "metrics.json"): _metrics_summary,
    ("augmented", "history.json"): _history_summary,
    ("augmented", "metrics.json"): _metrics_summary,
    ("failures", "failures.json"): _failure_list_summary,
    ("failures", "summary.json"): lambda data: _html(failure_tables(data, max_pairs=10)),
    ("reevaluation", "comparison.json"): lambda data: _html(comparison_tables(data)),
    ("stress", "corruptions.json"): lambda data: _html(corruption_tables(data, severities=True)),
    ("stress", "calibration.json"): lambda data: calibration_table(data).html(),
    ("stress", "sanity.json"): _sanity_summary,
    ("stress", "positive_control.json"): _positive_control_summary,
    ("gradcam", "road.json"): _road_summary,
    ("reevaluation", "road.json"): _road_summary,
}

FILE_TITLES: dict[str, str] = {
    "config.json": "Configuration",
    "environment.json": "Environment",
    "data_summary.json": "Data",
    "metrics.json": "Accuracy",
    "history.json": "Training history",
    "failures.json": "Failure list",
    "summary.json": "Failure summary",
    "measures.json": "Attention measures",
    "comparison.json": "Baseline vs augmented failures",
    "corruptions.json": "Corruption stress test",
    "calibration.json": "Calibration and temperature scaling",
    "sanity.json": "Grad-CAM sanity check (model-parameter randomisation)",
    "positive_control.json": "Positive control: background shortcut",
    "road.json": "Faithfulness of the heatmaps (ROAD)",
}


# --- the page -------------------------------------------------------------------------------------


def _read_json(path: Path) -> tuple[Any, str | None]:
    try:
        return load_json(path), None
    except (OSError, ValueError) as error:
        return None, f"could not read {path.name}: {error}"


def png_problem(data: bytes) -> str | None:
    """Why ``data`` is not an intact PNG file, or None when it is one.

    Pillow's ``verify`` walks the chunks and checks each one's CRC without decoding; a fresh ``load``
    then decodes the pixels, which catches image data that is cut short or does not decompress: what
    a browser needs to show the figure.
    """
    if not data.startswith(PNG_SIGNATURE):
        return "is not a PNG file"
    try:
        # verify() leaves the image unusable, hence a second open for load().
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.verify()
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            image.load()
    except UnidentifiedImageError:
        return "is a damaged PNG file (its header cannot be read)"
    except (OSError, SyntaxError, EOFError, ValueError, Image.DecompressionBombError) as error:
        # Pillow reports a short file as an OSError or EOFError that says so; anything else is damage.
        if isinstance(error, EOFError) or "truncated" in str(error).lower():
            return "is a truncated PNG file"
        return f"is a damaged PNG file ({error})"
    return None


def _embed_png(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as error:
        return f'<p class="error">could not read figure {esc(path.name)}: {esc(error)}</p>'
    problem = png_problem(data)
    if problem is not None:
        # A truncated or mislabelled file would show as a broken image; say what is wrong instead.
        return f'<p class="error">{esc(path.name)} {esc(problem)}; not embedded</p>'
    encoded = base64.b64encode(data).decode("ascii")
    caption = _caption(path)
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{esc(caption)}">'
        f'<figcaption>{esc(caption)} <span class="note">({esc(path.name)})</span></figcaption></figure>'
    )


def _stage_status(run: RunDir, stage: str) -> tuple[str, list[str]]:
    base = run.root / STAGES[stage][0]
    missing = [name for name in STAGE_OUTPUTS[stage] if not (base / name).exists()]
    if not missing:
        return "complete", []
    if len(missing) == len(STAGE_OUTPUTS[stage]):
        return "not run", missing
    return "incomplete", missing


def _stage_section(run: RunDir, stage: str) -> str:
    base = run.root / STAGES[stage][0]
    status, missing = _stage_status(run, stage)
    css = {"complete": "complete", "incomplete": "incomplete", "not run": "notrun"}[status]
    parts = [
        f'<section id="stage-{esc(stage)}"><h2>{esc(STAGE_TITLES.get(stage, stage))} '
        f'<span class="status {css}">{esc(status)}</span></h2>'
    ]
    if status == "not run":
        parts.append(
            f'<p class="note">stage not run: run {esc(STAGES[stage][1])} to produce '
            f"{esc(', '.join(STAGE_OUTPUTS[stage]))}.</p></section>"
        )
        return "".join(parts)
    if missing:
        parts.append(f'<p class="note">missing: {esc(", ".join(missing))}</p>')
    json_names = [name for name in STAGE_OUTPUTS[stage] if name.endswith(".json")]
    for name in json_names:
        path = base / name
        if not path.exists():
            continue
        data, error = _read_json(path)
        parts.append(f'<h3>{esc(FILE_TITLES.get(name, name))} <span class="note">({esc(name)})</span></h3>')
        if error is not None:
            parts.append(f'<p class="error">{esc(error)}</p>')
            continue
        render = SUMMARIES.get((stage, name), _generic)
        try:
            parts.append(render(data))
        except Exception as failure:  # a malformed file must not take the whole report down
            parts.append(f'<p class="error">could not summarise {esc(name)}: {esc(failure)}</p>')
            parts.append(_generic(data) if isinstance(data, (dict, list)) else "")
    figures = sorted(base.glob("*.png"))
    if figures:
        parts.append("<h3>Figures</h3>")
        parts.extend(_embed_png(path) for path in figures)
    parts.append("</section>")
    return "".join(parts)


def summarize_run(run: RunDir) -> dict[str, Any]:
    """The numbers a reader wants first (``summary.json``): accuracies, gaps, failure counts,
    fixed/kept/new, and the human-label categories."""

    def read(stage: str, name: str) -> dict[str, Any]:
        path = run.stage_dir(stage, create=False) / name
        if not path.exists():
            return {}
        data, _ = _read_json(path)
        return data if isinstance(data, dict) else {}

    summary: dict[str, Any] = {"run_dir": str(run.root)}
    for stage in ("baseline", "augmented"):
        metrics = read(stage, "metrics.json")
        summary[stage] = {
            key: metrics.get(key)
            for key in ("test_accuracy", "train_accuracy", "train_test_gap", "train_seconds")
        }
    failures = read("failures", "summary.json")
    summary["high_confidence_failures"] = failures.get("num_high_confidence")
    summary["confidence_threshold"] = failures.get("threshold")
    summary["comparison"] = read("reevaluation", "comparison.json").get("counts", {})
    summary["human_labels"] = human_labels_summary(run.root)
    return summary


def _overview(summary: dict[str, Any]) -> str:
    """The run summary's tables (the same rows ``run_all.py`` prints at the end)."""
    return _html(run_summary_tables(summary))


def _human_labels_section(run: RunDir, summary: dict[str, Any]) -> str:
    """Confident failures by category (both models, with enrichment), fixed/kept/new by category and
    the CIFAR-10H cross-entropy, or the one line saying why no human labels apply."""
    head = "<h2>Is it the model or the label? (human labels)</h2>"
    reason = no_human_labels(summary)
    if reason is not None:
        return head + f'<p class="note">{esc(reason)}</p>'
    note = (
        '<p class="note">CIFAR-10H, Peterson et al. 2019; verified label errors, Northcutt et al. 2021; '
        f"ambiguous: the given label's human share &lt; {esc(summary['ambiguity_threshold'])}.</p>"
    )
    calibration_path = run.path("stress", "human_calibration.json")
    calibration, _ = _read_json(calibration_path) if calibration_path.exists() else ({}, None)
    against_humans = (
        human_calibration_table(calibration).html()
        if isinstance(calibration, dict) and calibration.get("applies")
        else ""
    )
    return head + note + _html(human_label_tables(summary)) + against_humans


def _page_head(title: str) -> str:
    """The opening of a report page: doctype, head with the stylesheet, and the page's title."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1>"
    )


def render_report(run_dir: str | os.PathLike[str]) -> str:
    """The report's HTML as a string (see :func:`write_report`)."""
    run = RunDir(run_dir)
    if not run.root.is_dir():
        raise FileNotFoundError(
            f"run directory {run.root} does not exist; pass the directory a run wrote into"
        )
    title = f"cifar-stress run report: {run.root.name}"
    nav = "".join(
        f'<li><a href="#stage-{esc(s)}">{esc(STAGE_TITLES.get(s, s))}</a> '
        f"({esc(_stage_status(run, s)[0])})</li>"
        for s in STAGES
    )
    sections = "".join(_stage_section(run, stage) for stage in STAGES)
    summary = summarize_run(run)
    return (
        _page_head(title)
        + f'<p class="note">Run directory: {esc(run.root)}. Built from the files the stages saved there.</p>'
        f"<h2>Overview</h2>{_overview(summary)}"
        f"{_human_labels_section(run, summary.get('human_labels') or {})}"
        f"<nav><h2>Stages</h2><ul>{nav}</ul></nav>"
        f"{sections}</body></html>\n"
    )


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``<run_dir>/report.html`` atomically and return its path.

    Args:
        run_dir: a run directory (see :mod:`cifar_helpers.rundir.artifacts`); stages that have not run are
            shown as "stage not run".

    Returns:
        The path of the report. The page is self-contained: figures are base64 PNG data URIs, the CSS
        is inline, there is no script and no external resource.
    """
    page = render_report(run_dir)
    path = RunDir(run_dir).root / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


# --- the replicate run (run_all.py --seeds) -------------------------------------------------------------

REPLICATES_TITLE = "07 Replicates: accuracy over seeds, the reseed noise floor, failure stability"


def _noise_floor(floor: dict[str, Any]) -> str:
    pairs = [
        (f"{row['from']} → {row['to']}", *(row[k] for k in COUNT_KEYS))
        for row in floor["reseed"] + floor["augmentation"]
    ]
    return noise_floor_table(floor["mean"]).html() + _table(("each pair", *COUNT_KEYS), pairs)


def _stability(stability: dict[str, Any]) -> str:
    return _kv_table(
        [
            ("confident failures per seed", fmt_num(stability["failures_per_seed"])),
            ("images failing in k seeds", fmt_num(stability["images_failing_in_k_seeds"])),
            ("mean Jaccard overlap between seeds", stability["mean_jaccard"]),
            (
                f"consistent failures (in ≥ {stability['consistent_min_seeds']} seeds)",
                len(stability["consistent"]),
            ),
        ]
    )


# The replicate section's parts: file in replicates/, heading, how its numbers are shown.
REPLICATE_SECTIONS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    (
        "accuracy.json",
        "Test accuracy over seeds (95 % t-interval)",
        lambda data: seed_accuracy_table(data).html(),
    ),
    ("noise_floor.json", "The noise floor: a reseed against augmentation", _noise_floor),
    ("stability.json", "Failure stability (baseline)", _stability),
    (
        "category_mix.json",
        "Human-label categories: consistent failures against one-seed failures",
        lambda data: category_mix_table(data).html(),
    ),
)


def replicates_section(root: str | os.PathLike[str]) -> str:
    """The replicate stage's section: accuracy over seeds, the noise floor table, failure stability
    and the figures, read from ``<root>/replicates/``."""
    base = replicates_dir(root)
    missing = [name for name in REPLICATES_OUTPUTS if not (base / name).exists()]
    head = f'<section id="stage-replicates"><h2>{esc(REPLICATES_TITLE)} '
    if missing:
        return (
            head + '<span class="status notrun">not run</span></h2><p class="note">stage not run: '
            f"run {esc(REPLICATES_NOTEBOOK)} (run_all.py --seeds) to produce {esc(', '.join(missing))}."
            "</p></section>"
        )
    parts = [head + '<span class="status complete">complete</span></h2>']
    for name, heading, render in REPLICATE_SECTIONS:
        path = base / name
        if not path.exists():  # category_mix.json: replicate runs made before it existed have none
            continue
        data, error = _read_json(path)
        reason = no_human_labels(data) if name == "category_mix.json" and data else None
        parts.append(f"<h3>{esc(heading)}</h3>")
        parts.append(
            f'<p class="error">{esc(error)}</p>'
            if error
            else f'<p class="note">{esc(reason)}</p>'
            if reason
            else render(data)
        )
    parts.append("<h3>Figures</h3>")
    parts.extend(_embed_png(path) for path in sorted(base.glob("*.png")))
    parts.append("</section>")
    return "".join(parts)


def render_replicates_report(root: str | os.PathLike[str]) -> str:
    """The replicate run's report page: each seed's headline numbers and the replicate section."""
    root = Path(root).expanduser().resolve()
    title = f"cifar-stress replicate report: {root.name}"
    rows = []
    for seed, directory in find_seed_dirs(root).items():
        metrics = {}
        for model in ("baseline", "augmented"):
            path = directory / model / "metrics.json"
            data, _ = _read_json(path) if path.exists() else ({}, None)
            metrics[model] = data if isinstance(data, dict) else {}
        report = directory / REPORT_NAME
        rows.append(
            (
                str(seed),
                fmt_pct(metrics["baseline"].get("test_accuracy")),
                fmt_pct(metrics["augmented"].get("test_accuracy")),
                f"{directory.name}/{REPORT_NAME}" if report.exists() else "no report",
            )
        )
    seeds_table = _table(
        ("seed", "baseline test accuracy", "augmented test accuracy", "the seed's own report"),
        rows,
    )
    return (
        _page_head(title)
        + f'<p class="note">Replicate run: {esc(root)}. Built from the seed-&lt;k&gt;/ run directories '
        "and replicates/.</p>"
        f"<h2>Seeds</h2>{seeds_table}{replicates_section(root)}</body></html>\n"
    )


def write_replicates_report(root: str | os.PathLike[str]) -> Path:
    """Write ``<root>/report.html`` of a replicate run atomically and return its path."""
    page = render_replicates_report(root)
    path = Path(root).expanduser().resolve() / REPORT_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
