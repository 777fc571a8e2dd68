"""A one-page HTML report of a run, built only from what the stages saved in the run directory.

``write_report(run_dir)`` writes ``<run_dir>/report.html``: one self-contained file (inline CSS,
every figure embedded as a base64 PNG data URI, no scripts, nothing fetched from the network) that
can be mailed, archived or opened years later. It reads the JSON files of
:data:`~cifar_helpers.artifacts.STAGE_OUTPUTS` and the PNG figures each stage saved beside them, in
pipeline order; a stage that has not run yet shows "stage not run", and a file that cannot be read
shows why, so a report can be written at any point of a run.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from .artifacts import STAGE_OUTPUTS, STAGES, RunDir, atomic_path, load_json
from .human_labels import CATEGORIES, human_labels_summary
from .registry import STAGE_SPECS
from .replicate_layout import REPLICATES_NOTEBOOK, REPLICATES_OUTPUTS, find_seed_dirs, replicates_dir

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


# --- formatting -----------------------------------------------------------------------------------


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt_pct(value: Any) -> str:
    """A fraction as a percentage with two decimals (``0.9123`` -> ``"91.23%"``); ``"n/a"`` if missing."""
    if not _is_number(value) or math.isnan(value):
        return "n/a"
    return f"{100 * value:.2f}%"


def fmt_num(value: Any) -> str:
    """A number with four significant digits (integers in full); other values as text."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, allow_nan=True)
    return str(value)


def _caption(path: Path) -> str:
    text = path.stem.replace("_", " ").replace("-", " ").strip()
    return text[:1].upper() + text[1:] if text else path.name


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool] | None = None
) -> str:
    """Rows of already formatted cells -> an HTML table (every cell escaped)."""
    rows = list(rows)
    if not rows:
        return '<p class="note">(nothing to show)</p>'
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="num"' if i < len(numeric) and numeric[i] else ""
            cells.append(f"<td{cls}>{_esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv_table(pairs: Iterable[tuple[str, str]], columns: int = 1) -> str:
    """Quantity/value pairs as a table; ``columns`` > 1 sets that many pairs side by side (long lists)."""
    pairs = list(pairs)
    rows_needed = max(1, math.ceil(len(pairs) / columns))
    chunks = [pairs[i * rows_needed : (i + 1) * rows_needed] for i in range(columns)]
    rows = []
    for r in range(rows_needed):
        row: list[str] = []
        for chunk in chunks:
            row.extend(chunk[r] if r < len(chunk) else ("", ""))
        rows.append(row)
    return _table(("quantity", "value") * columns, rows if pairs else [], numeric=(False, True) * columns)


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Scalars (and short scalar lists) of a nested JSON value as ``("a.b.c", value)`` pairs."""
    if isinstance(obj, dict):
        pairs: list[tuple[str, Any]] = []
        for key, value in obj.items():
            pairs.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return pairs
    if isinstance(obj, list):
        if len(obj) <= 10 and all(_is_number(v) or isinstance(v, (str, bool)) or v is None for v in obj):
            return [(prefix, ", ".join(fmt_num(v) for v in obj))]
        return [(prefix, f"[{len(obj)} entries]")]
    return [(prefix, obj)]


def _generic(data: Any) -> str:
    pairs = _flatten(data)
    shown = [(key, fmt_num(value)) for key, value in pairs[:MAX_GENERIC_ROWS]]
    more = len(pairs) - len(shown)
    note = f'<p class="note">{more} more values in the file.</p>' if more > 0 else ""
    return _kv_table(shown) + note


# --- per-file summaries ---------------------------------------------------------------------------


def _config_summary(config: dict[str, Any]) -> str:
    return _kv_table(((key, fmt_num(value)) for key, value in config.items()), columns=3)


def _data_summary(summary: dict[str, Any]) -> str:
    rows = [
        ("source", fmt_num(summary.get("source"))),
        ("root", fmt_num(summary.get("root"))),
        ("classes", ", ".join(map(str, summary.get("classes") or [])) or "n/a"),
    ]
    counts = summary.get("num_images")
    if isinstance(counts, dict):
        rows += [(f"{split} images", fmt_num(n)) for split, n in counts.items()]
    rows.append(("fingerprint", fmt_num(summary.get("fingerprint"))))
    return _kv_table(rows)


def _metrics_summary(metrics: dict[str, Any]) -> str:
    rows = [
        ("test accuracy", fmt_pct(metrics.get("test_accuracy"))),
        ("train accuracy", fmt_pct(metrics.get("train_accuracy"))),
        ("train-test gap (eval mode, no augmentation)", fmt_pct(metrics.get("train_test_gap"))),
        ("epochs", fmt_num(metrics.get("epochs"))),
        ("training time (s)", fmt_num(metrics.get("train_seconds"))),
        ("images per second", fmt_num(metrics.get("images_per_second"))),
    ]
    html_out = _kv_table(rows)
    per_class = metrics.get("per_class_accuracy")
    if isinstance(per_class, dict) and per_class:
        html_out += "<h4>Per-class test accuracy</h4>" + _table(
            ("class", "accuracy"), ((name, fmt_pct(acc)) for name, acc in per_class.items()), (False, True)
        )
    return html_out


def _history_summary(history: dict[str, Any]) -> str:
    epochs = history.get("epochs")
    if not isinstance(epochs, list):
        return _generic(history)
    last = epochs[-1] if epochs and isinstance(epochs[-1], dict) else {}
    rows = [
        ("epochs finished", fmt_num(len(epochs))),
        ("training complete", fmt_num(history.get("complete"))),
        ("last epoch: train loss", fmt_num(last.get("train_loss"))),
        ("last epoch: train accuracy (augmented batches)", fmt_pct(last.get("train_acc"))),
        ("last epoch: test loss", fmt_num(last.get("test_loss"))),
        ("last epoch: test accuracy", fmt_pct(last.get("test_acc"))),
    ]
    return _kv_table(rows)


def _failure_list_summary(failures: dict[str, Any]) -> str:
    indices = failures.get("indices")
    rows = [
        ("confidence threshold", fmt_num(failures.get("threshold"))),
        ("images evaluated", fmt_num(failures.get("num_images"))),
        ("errors", fmt_num(failures.get("num_errors"))),
        ("high-confidence failures listed", fmt_num(len(indices) if isinstance(indices, list) else None)),
    ]
    return _kv_table(rows)


def _failure_summary(summary: dict[str, Any]) -> str:
    rows = [
        ("confidence threshold", fmt_num(summary.get("threshold"))),
        ("test images", fmt_num(summary.get("num_images"))),
        ("accuracy", fmt_pct(summary.get("accuracy"))),
        ("errors", fmt_num(summary.get("num_errors"))),
        ("high-confidence failures", fmt_num(summary.get("num_high_confidence"))),
        ("share of errors that are high-confidence", fmt_pct(summary.get("share_of_errors_high_confidence"))),
    ]
    html_out = _kv_table(rows)
    pairs = summary.get("most_confused_pairs")
    if isinstance(pairs, list) and pairs and all(isinstance(p, dict) for p in pairs):
        columns = list(pairs[0])
        html_out += "<h4>Most confused pairs</h4>" + _table(
            columns, ([fmt_num(p.get(c)) for c in columns] for p in pairs[:10])
        )
    return html_out


def _comparison_summary(comparison: dict[str, Any]) -> str:
    counts = comparison.get("counts") or {}
    kept = [counts.get("kept_same"), counts.get("kept_different")]
    total_kept = sum(kept) if all(_is_number(k) for k in kept) else None
    rows = [
        ("confidence threshold", fmt_num(comparison.get("threshold"))),
        ("baseline high-confidence failures", fmt_num(counts.get("baseline_failures"))),
        ("fixed by the augmented model", fmt_num(counts.get("fixed"))),
        ("kept, same wrong class", fmt_num(counts.get("kept_same"))),
        ("kept, different wrong class", fmt_num(counts.get("kept_different"))),
        ("kept in total", fmt_num(total_kept)),
        ("new high-confidence failures", fmt_num(counts.get("new"))),
        ("augmented high-confidence failures", fmt_num(counts.get("augmented_failures"))),
        ("baseline test accuracy", fmt_pct(comparison.get("baseline_accuracy"))),
        ("augmented test accuracy", fmt_pct(comparison.get("augmented_accuracy"))),
    ]
    return _kv_table(rows)


def _per_model(data: Any, marker: str) -> dict[str, Any]:
    """``{model: result}`` from a file holding either that or a single result (which has ``marker``)."""
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        return data["models"]
    if isinstance(data, dict) and marker in data:
        return {"model": data}
    if isinstance(data, dict):
        return {name: value for name, value in data.items() if isinstance(value, dict) and marker in value}
    return {}


def _corruptions_summary(data: Any) -> str:
    models = _per_model(data, "clean_accuracy")
    if not models:
        return _generic(data)
    names = list(models)
    rows = [
        ["clean accuracy", *(fmt_pct(models[m].get("clean_accuracy")) for m in names)],
        [
            "mean accuracy under corruption",
            *(fmt_pct(models[m].get("mean_corruption_accuracy")) for m in names),
        ],
        ["absolute drop", *(fmt_pct(models[m].get("absolute_drop")) for m in names)],
        ["relative drop", *(fmt_pct(models[m].get("relative_drop")) for m in names)],
    ]
    html_out = _table(["", *names], rows, [False] + [True] * len(names))
    corruptions: list[str] = []
    for m in names:
        for c in models[m].get("corruptions") or {}:
            if c not in corruptions:
                corruptions.append(c)
    if corruptions:
        severities = next((models[m].get("severities") for m in names if models[m].get("severities")), None)
        header = ["corruption", *(f"{m}: mean" for m in names)]
        if severities:
            header += [f"{m}: severity {', '.join(map(str, severities))}" for m in names]
        table_rows = []
        for c in corruptions:
            cells = [_get(models[m], "corruptions", c) or {} for m in names]
            row = [c, *(fmt_pct(cell.get("mean_accuracy")) for cell in cells)]
            if severities:
                row += [" / ".join(fmt_pct(a) for a in cell.get("accuracy") or []) for cell in cells]
            table_rows.append(row)
        html_out += "<h4>Accuracy per corruption</h4>" + _table(header, table_rows)
    return html_out


def _calibration_summary(data: Any) -> str:
    models = _per_model(data, "temperature")
    if not models:
        return _generic(data)
    names = list(models)

    def row(label: str, get: Callable[[dict[str, Any]], Any], fmt: Callable[[Any], str]) -> list[str]:
        return [label, *(fmt(get(models[m])) for m in names)]

    rows = [
        row("temperature T (fitted on the hold-out split)", lambda r: r.get("temperature"), fmt_num),
        row("ECE before", lambda r: _get(r, "before", "ece"), fmt_num),
        row("ECE after", lambda r: _get(r, "after", "ece"), fmt_num),
        row("NLL before", lambda r: _get(r, "before", "nll"), fmt_num),
        row("NLL after", lambda r: _get(r, "after", "nll"), fmt_num),
        row("test accuracy", lambda r: _get(r, "before", "accuracy"), fmt_pct),
        row("confidence threshold", lambda r: r.get("threshold"), fmt_num),
        row(
            "failures above it before scaling",
            lambda r: _get(r, "high_confidence_failures", "before"),
            fmt_num,
        ),
        row(
            "...still above it after scaling",
            lambda r: _get(r, "high_confidence_failures", "still_above_after"),
            fmt_num,
        ),
        row(
            "failures above it after scaling", lambda r: _get(r, "high_confidence_failures", "after"), fmt_num
        ),
    ]
    return _table(["", *names], rows, [False] + [True] * len(names))


def _sanity_summary(data: Any) -> str:
    steps = _get(data, "steps")
    means = _get(data, "spearman_mean")
    stds = _get(data, "spearman_std")
    if not (isinstance(steps, list) and isinstance(means, list) and len(means) == len(steps)):
        return _generic(data)
    stds = stds if isinstance(stds, list) and len(stds) == len(steps) else [None] * len(steps)
    note = (
        '<p class="note">Spearman rank correlation between the trained model\'s Grad-CAM maps and '
        "those of copies whose layers are re-initialised cumulatively from the top (Adebayo et al., "
        "2018). Maps that do not change as the weights are destroyed would not explain the model.</p>"
    )
    rows = [(step, fmt_num(m), fmt_num(s)) for step, m, s in zip(steps, means, stds, strict=True)]
    return note + _table(("randomised up to", "mean Spearman", "std"), rows, (False, True, True))


def _positive_control_summary(data: Any) -> str:
    tied, untied = _get(data, "tied"), _get(data, "untied")
    if not (isinstance(tied, dict) and isinstance(untied, dict)):
        return _generic(data)
    note = (
        '<p class="note">Two models trained on generated data: one whose training backgrounds give the '
        "class away (correlation {}), one whose do not. On test images with random backgrounds, the "
        "Grad-CAM maps of the first model's high-confidence failures should lie mostly off the object."
        "</p>"
    ).format(_esc(fmt_num(data.get("correlation"))))
    rows = [
        ("test accuracy", fmt_pct(tied.get("test_accuracy")), fmt_pct(untied.get("test_accuracy"))),
        ("train accuracy", fmt_pct(tied.get("train_accuracy")), fmt_pct(untied.get("train_accuracy"))),
        ("high-confidence failures", fmt_num(tied.get("num_failures")), fmt_num(untied.get("num_failures"))),
        ("mean mask share (failures)", fmt_num(tied.get("mask_share")), fmt_num(untied.get("mask_share"))),
        (
            "pointing game (failures)",
            fmt_pct(tied.get("pointing_game")),
            fmt_pct(untied.get("pointing_game")),
        ),
        (
            "mean mask share (all test images)",
            fmt_num(tied.get("mask_share_all")),
            fmt_num(untied.get("mask_share_all")),
        ),
    ]
    extra = [
        ("confidence threshold used", fmt_num(data.get("threshold"))),
        ("mask-share gap (untied - tied)", fmt_num(data.get("mask_share_gap"))),
        ("pointing-game gap (untied - tied)", fmt_pct(data.get("pointing_game_gap"))),
        ("object area (chance level of the mask share)", fmt_num(data.get("object_area_fraction"))),
    ]
    road = "".join(
        f"<h4>ROAD on the {name} model's failures (object = the true object mask as the map)</h4>"
        + _road_table_html(entry["road"])
        for name, entry in (("tied", tied), ("untied", untied))
        if isinstance(entry.get("road"), dict)
    )
    return (
        note
        + _table(("", "tied backgrounds", "untied backgrounds"), rows, (False, True, True))
        + _kv_table(extra)
        + road
    )


def _road_table_html(table: Any, label: str = "") -> str:
    """One ROAD table (:func:`cifar_helpers.faithfulness.road_table`) as HTML: a row per map."""
    rows, fractions = _get(table, "rows"), _get(table, "fractions")
    if not (isinstance(rows, dict) and isinstance(fractions, list)):
        return _generic(table)
    header = [
        f"{label}map".strip(),
        *(f"most first {100 * f:.0f}%" for f in fractions),
        *(f"least first {100 * f:.0f}%" for f in fractions),
        "combined",
    ]
    body = [
        [
            name,
            *(fmt_num(v) for v in row.get("most_relevant_first") or []),
            *(fmt_num(v) for v in row.get("least_relevant_first") or []),
            fmt_num(row.get("combined")),
        ]
        for name, row in rows.items()
    ]
    return _table(header, body, [False] + [True] * (len(header) - 1))


ROAD_NOTE = (
    '<p class="note">ROAD (Rong et al., 2022): the change in the explained class\'s probability after '
    "removing a share of the pixels, most or least relevant first by the map, and imputing them from "
    "their neighbours. Faithful maps fall fast most-relevant-first and stay flat least-relevant-first; "
    "combined = mean of (least - most) / 2, higher is more faithful; a random map is the floor.</p>"
)


def _road_summary(data: Any) -> str:
    if isinstance(_get(data, "models"), dict):
        return ROAD_NOTE + "".join(
            f"<h4>{_esc(name)}</h4>" + _road_table_html(table) for name, table in data["models"].items()
        )
    if not isinstance(_get(data, "rows"), dict):
        return _generic(data)
    extra = [
        ("failures scored (most confident first)", fmt_num(data.get("num_images"))),
        ("most faithful Grad-CAM layer", _esc(data.get("best_layer"))),
        (f"most faithful explainer at {data.get('explainer_layer')}", _esc(data.get("best_explainer"))),
    ]
    return ROAD_NOTE + _road_table_html(data) + _kv_table(extra)


# Which summary renders which file; files without one get the generic table of their values.
SUMMARIES: dict[tuple[str, str], Callable[[Any], str]] = {
    ("setup", "config.json"): _config_summary,
    ("setup", "environment.json"): _config_summary,
    ("setup", "data_summary.json"): _data_summary,
    ("baseline", "history.json"): _history_summary,
    ("baseline", "metrics.json"): _metrics_summary,
    ("augmented", "history.json"): _history_summary,
    ("augmented", "metrics.json"): _metrics_summary,
    ("failures", "failures.json"): _failure_list_summary,
    ("failures", "summary.json"): _failure_summary,
    ("reevaluation", "comparison.json"): _comparison_summary,
    ("stress", "corruptions.json"): _corruptions_summary,
    ("stress", "calibration.json"): _calibration_summary,
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
        return f'<p class="error">could not read figure {_esc(path.name)}: {_esc(error)}</p>'
    problem = png_problem(data)
    if problem is not None:
        # A truncated or mislabelled file would show as a broken image; say what is wrong instead.
        return f'<p class="error">{_esc(path.name)} {_esc(problem)}; not embedded</p>'
    encoded = base64.b64encode(data).decode("ascii")
    caption = _caption(path)
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{_esc(caption)}">'
        f'<figcaption>{_esc(caption)} <span class="note">({_esc(path.name)})</span></figcaption></figure>'
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
        f'<section id="stage-{_esc(stage)}"><h2>{_esc(STAGE_TITLES.get(stage, stage))} '
        f'<span class="status {css}">{_esc(status)}</span></h2>'
    ]
    if status == "not run":
        parts.append(
            f'<p class="note">stage not run: run {_esc(STAGES[stage][1])} to produce '
            f"{_esc(', '.join(STAGE_OUTPUTS[stage]))}.</p></section>"
        )
        return "".join(parts)
    if missing:
        parts.append(f'<p class="note">missing: {_esc(", ".join(missing))}</p>')
    json_names = [name for name in STAGE_OUTPUTS[stage] if name.endswith(".json")]
    for name in json_names:
        path = base / name
        if not path.exists():
            continue
        data, error = _read_json(path)
        parts.append(f'<h3>{_esc(FILE_TITLES.get(name, name))} <span class="note">({_esc(name)})</span></h3>')
        if error is not None:
            parts.append(f'<p class="error">{_esc(error)}</p>')
            continue
        render = SUMMARIES.get((stage, name), _generic)
        try:
            parts.append(render(data))
        except Exception as failure:  # a malformed file must not take the whole report down
            parts.append(f'<p class="error">could not summarise {_esc(name)}: {_esc(failure)}</p>')
            parts.append(_generic(data) if isinstance(data, (dict, list)) else "")
    figures = sorted(base.glob("*.png"))
    if figures:
        parts.append("<h3>Figures</h3>")
        parts.extend(_embed_png(path) for path in figures)
    parts.append("</section>")
    return "".join(parts)


def _overview(run: RunDir) -> str:
    """The numbers a reader wants first: both models' accuracies and gaps, failures, fixed/kept/new."""

    def read(stage: str, name: str) -> dict[str, Any]:
        path = run.root / STAGES[stage][0] / name
        if not path.exists():
            return {}
        data, _ = _read_json(path)
        return data if isinstance(data, dict) else {}

    rows = []
    for stage in ("baseline", "augmented"):
        metrics = read(stage, "metrics.json")
        rows.append(
            (
                stage,
                fmt_pct(metrics.get("test_accuracy")),
                fmt_pct(metrics.get("train_accuracy")),
                fmt_pct(metrics.get("train_test_gap")),
            )
        )
    html_out = _table(
        ("model", "test accuracy", "train accuracy", "train-test gap (eval mode)"),
        rows,
        (False, True, True, True),
    )
    failures = read("failures", "summary.json")
    counts = read("reevaluation", "comparison.json").get("counts") or {}
    facts = [
        ("high-confidence failures of the baseline", fmt_num(failures.get("num_high_confidence"))),
        ("confidence threshold", fmt_num(failures.get("threshold"))),
        (
            "fixed / kept (same) / kept (different) / new",
            " / ".join(fmt_num(counts.get(k)) for k in ("fixed", "kept_same", "kept_different", "new")),
        ),
    ]
    return html_out + _kv_table(facts)


def _human_labels_section(run: RunDir) -> str:
    """Confident failures by category (both models, with enrichment), fixed/kept/new by category and
    the CIFAR-10H cross-entropy, or the one line saying why no human labels apply."""
    summary = human_labels_summary(run.root)
    head = "<h2>Is it the model or the label? (human labels)</h2>"
    if not summary.get("applies"):
        return head + f'<p class="note">no human labels apply: {_esc(summary.get("reason"))}</p>'
    models = [m for m in ("baseline", "augmented") if m in summary]

    def cell(model: str, category: str) -> str:
        m = summary[model]
        factor = m["enrichment"][category]
        return (
            f"{m['counts'][category]} (x{factor:.1f})" if factor is not None else str(m["counts"][category])
        )

    parts = [
        head,
        '<p class="note">Categories of the confident failures (CIFAR-10H, Peterson et al. 2019; verified '
        f"label errors, Northcutt et al. 2021; ambiguous: given label's human share &lt; "
        f"{_esc(summary['ambiguity_threshold'])}). In brackets: enrichment against the test set.</p>",
        _table(
            ("category", *models),
            [(c, *(cell(m, c) for m in models)) for c in CATEGORIES],
            (False, *(True for _ in models)),
        ),
    ]
    by_category = summary.get("by_category")
    if by_category:
        groups = ("fixed", "kept_same", "kept_different", "new")
        parts.append(
            _table(
                ("category", "fixed", "kept (same)", "kept (different)", "new"),
                [(c, *(str(by_category[g][c]) for g in groups)) for c in CATEGORIES],
                (False, True, True, True, True),
            )
        )
        if summary.get("fixed_label_errors"):
            parts.append(
                f'<p class="error">{summary["fixed_label_errors"]} "fixed" failure(s) are verified label '
                "errors: the augmented model now agrees with a wrong label.</p>"
            )
    plurality = summary["accuracy_vs_human_plurality"]
    facts = [(f"{m}: accuracy against the human plurality label", fmt_pct(plurality.get(m))) for m in models]
    calibration_path = run.root / STAGES["stress"][0] / "human_calibration.json"
    if calibration_path.exists():
        calibration, _ = _read_json(calibration_path)
        if isinstance(calibration, dict) and calibration.get("applies"):
            for name, m in calibration["models"].items():
                facts.append(
                    (
                        f"{name}: CIFAR-10H cross-entropy, as trained / temperature-scaled",
                        f"{fmt_num(m['before'])} / {fmt_num(m['after'])}",
                    )
                )
    return "".join(parts) + _kv_table(facts)


def _page_head(title: str) -> str:
    """The opening of a report page: doctype, head with the stylesheet, and the page's title."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1>"
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
        f'<li><a href="#stage-{_esc(s)}">{_esc(STAGE_TITLES.get(s, s))}</a> '
        f"({_esc(_stage_status(run, s)[0])})</li>"
        for s in STAGES
    )
    sections = "".join(_stage_section(run, stage) for stage in STAGES)
    return (
        _page_head(title)
        + f'<p class="note">Run directory: {_esc(run.root)}. Built from the files the stages saved there.</p>'
        f"<h2>Overview</h2>{_overview(run)}"
        f"{_human_labels_section(run)}"
        f"<nav><h2>Stages</h2><ul>{nav}</ul></nav>"
        f"{sections}</body></html>\n"
    )


def write_report(run_dir: str | os.PathLike[str]) -> Path:
    """Write ``<run_dir>/report.html`` atomically and return its path.

    Args:
        run_dir: a run directory (see :mod:`cifar_helpers.artifacts`); stages that have not run are
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


def _interval_row(label: str, entry: dict[str, Any]) -> tuple[str, ...]:
    low, high = entry.get("low"), entry.get("high")
    interval = f"[{fmt_pct(low)}, {fmt_pct(high)}]" if low is not None else "n/a (one seed)"
    return (label, fmt_pct(entry.get("mean")), fmt_pct(entry.get("sd")), interval)


def replicates_section(root: str | os.PathLike[str]) -> str:
    """The replicate stage's section: accuracy over seeds, the noise floor table, failure stability
    and the figures, read from ``<root>/replicates/``."""
    base = replicates_dir(root)
    missing = [name for name in REPLICATES_OUTPUTS if not (base / name).exists()]
    head = f'<section id="stage-replicates"><h2>{_esc(REPLICATES_TITLE)} '
    if missing:
        return (
            head + '<span class="status notrun">not run</span></h2><p class="note">stage not run: '
            f"run {_esc(REPLICATES_NOTEBOOK)} (run_all.py --seeds) to produce {_esc(', '.join(missing))}."
            "</p></section>"
        )
    parts = [head + '<span class="status complete">complete</span></h2>']
    accuracy, error = _read_json(base / "accuracy.json")
    if error:
        parts.append(f'<p class="error">{_esc(error)}</p>')
    else:
        difference = accuracy["difference"]
        p_value = difference.get("p_value")
        parts.append("<h3>Test accuracy over seeds (95 % t-interval)</h3>")
        parts.append(
            _table(
                ("", "mean", "sd", "95 % interval"),
                [
                    _interval_row("baseline", accuracy["baseline"]),
                    _interval_row("augmented", accuracy["augmented"]),
                    _interval_row("augmented − baseline (paired)", difference),
                ],
                (False, True, True, True),
            )
        )
        parts.append(
            f'<p class="note">seeds {_esc(", ".join(map(str, accuracy["seeds"])))}; paired t-test '
            f"p = {_esc(fmt_num(p_value))}</p>"
        )
    floor, error = _read_json(base / "noise_floor.json")
    if error:
        parts.append(f'<p class="error">{_esc(error)}</p>')
    else:
        keys = ("fixed", "kept_same", "kept_different", "new")
        parts.append("<h3>The noise floor: a reseed against augmentation</h3>")
        rows = [
            (f"{row['from']} → {row['to']}", *(fmt_num(row[k]) for k in keys))
            for row in floor["reseed"] + floor["augmentation"]
        ]
        parts.append(_table(("comparison", *keys), rows, (False, True, True, True, True)))
    stability, error = _read_json(base / "stability.json")
    if error:
        parts.append(f'<p class="error">{_esc(error)}</p>')
    else:
        parts.append("<h3>Failure stability (baseline)</h3>")
        facts = [
            ("confident failures per seed", fmt_num(stability["failures_per_seed"])),
            ("images failing in k seeds", fmt_num(stability["images_failing_in_k_seeds"])),
            ("mean Jaccard overlap between seeds", fmt_num(stability["mean_jaccard"])),
            (
                f"consistent failures (in ≥ {stability['consistent_min_seeds']} seeds)",
                fmt_num(len(stability["consistent"])),
            ),
        ]
        parts.append(_kv_table(facts))
    mix_path = base / "category_mix.json"  # replicate runs made before it existed have none
    mix, error = _read_json(mix_path) if mix_path.exists() else ({}, None)
    if error:
        parts.append(f'<p class="error">{_esc(error)}</p>')
    elif mix and not mix.get("applies"):
        parts.append(f'<p class="note">No human labels apply: {_esc(mix.get("reason", ""))}</p>')
    elif mix:
        groups = ("consistent", "one_seed")
        totals = {g: sum(mix[g].values()) for g in groups}
        rows = [
            (
                category,
                *(
                    f"{mix[g].get(category, 0)} ({fmt_pct(mix[g].get(category, 0) / totals[g])})"
                    if totals[g]
                    else "0"
                    for g in groups
                ),
            )
            for category in sorted({c for g in groups for c in mix[g]})
        ]
        parts.append("<h3>Human-label categories: consistent failures against one-seed failures</h3>")
        parts.append(_table(("category", "consistent", "one seed only"), rows, (False, True, True)))
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
        (False, True, True, False),
    )
    return (
        _page_head(title)
        + f'<p class="note">Replicate run: {_esc(root)}. Built from the seed-&lt;k&gt;/ run directories '
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
