"""Every result the project prints, as rows: one source for the notebooks' text, ``run_all.py``'s
summary and the HTML report.

A builder (``*_table``) turns a saved result into a :class:`Table` of cells that still carry their
kind (a :class:`Percent`, a :class:`Signed` difference, a count, a plain number or text); the text
and HTML renderings format them for their medium. The text keeps counts as counts and rates to one
decimal: these are fixed by the seed on any CPU, so the nbval reference outputs stay valid across
machines, where 8-digit losses would not. The report shows two decimals and four significant digits.

Builders read results leniently (a missing key is an empty cell), because the report is also built
from the files of a run that is still going, or was written by an older version.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cifar_helpers.analysis.human_labels import (
    AGREED,
    AMBIGUOUS,
    CATEGORIES,
    LABEL_ERROR,
    MODEL_ERROR,
    NUM_TEST_IMAGES,
)
from cifar_helpers.analysis.seed_analysis import COUNT_KEYS
from cifar_helpers.rundir.config import PROFILES, RunConfig


@dataclass(frozen=True)
class Percent:
    """A fraction shown as a percentage (in text with ``digits`` decimals)."""

    value: float | None
    digits: int = 1


@dataclass(frozen=True)
class Signed:
    """A difference, shown with its sign."""

    value: float | None


@dataclass(frozen=True)
class Times:
    """An enrichment factor (``x2.3``)."""

    value: float | None


Cell = str | int | float | bool | Percent | Signed | Times | None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _missing(value: Any) -> bool:
    return not _is_number(value) or (isinstance(value, float) and math.isnan(value))


def fmt_pct(value: Any) -> str:
    """A fraction as a percentage with two decimals (``0.9123`` -> ``"91.23%"``); ``"n/a"`` if missing."""
    return "n/a" if _missing(value) else f"{100 * value:.2f}%"


def fmt_num(value: Any) -> str:
    """A number with four significant digits (integers in full); other values as text."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, allow_nan=True)
    return str(value)


def _pct(x: Any, digits: int = 1) -> str:
    return "-" if _missing(x) else f"{100 * x:.{digits}f} %"


def text_cell(cell: Cell) -> str:
    """A cell as the notebooks and ``run_all.py`` print it: rates to one decimal, ``-`` when missing."""
    if isinstance(cell, Percent):
        return _pct(cell.value, cell.digits)
    if isinstance(cell, Signed):
        return "-" if _missing(cell.value) else f"{cell.value:+.2f}"
    if isinstance(cell, Times):
        return "-" if _missing(cell.value) else f"x{cell.value:.1f}"
    if cell is None:
        return "-"
    if isinstance(cell, float):
        return "-" if math.isnan(cell) else f"{cell:.2f}"
    return fmt_num(cell)


def html_cell(cell: Cell) -> str:
    """A cell as the report shows it (not yet escaped): two decimals, four significant digits."""
    if isinstance(cell, Percent):
        return fmt_pct(cell.value)
    if isinstance(cell, Signed):
        return "n/a" if _missing(cell.value) else f"{cell.value:+.4g}"
    if isinstance(cell, Times):
        return "n/a" if _missing(cell.value) else f"x{cell.value:.1f}"
    return fmt_num(cell)


def esc(value: Any) -> str:
    """Text made safe for HTML (quotes included)."""
    return html.escape(str(value), quote=True)


NUMERIC = ' class="num"'


@dataclass(frozen=True)
class Table:
    """A result as a titled table: ``header`` names the columns (empty: a list of quantity/value rows),
    ``rows`` hold the cells, ``notes`` are sentences shown after it. The first column is a label; the
    others are values, right-aligned."""

    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        """Aligned plain text: the title, the header, a line per row, then the notes. Values are
        right-aligned under a header; a table without one is a list of ``label  value`` lines."""
        cells = [list(self.header)] if self.header else []
        cells += [[text_cell(c) for c in row] for row in self.rows]
        width = max((len(row) for row in cells), default=0)
        widths = [max((len(row[i]) for row in cells if i < len(row)), default=0) for i in range(width)]
        align = ">" if self.header else "<"
        lines = [self.title] if self.title else []
        for row in cells:
            values = "".join(f"  {c:{align}{w}}" for c, w in zip(row[1:], widths[1:], strict=False))
            lines.append((row[0].ljust(widths[0]) + values).rstrip())
        return "\n".join([*lines, *self.notes])

    def html(self, level: int = 4) -> str:
        """An HTML table (every cell escaped) under an ``<h{level}>`` title, the notes as paragraphs."""
        title = f"<h{level}>{esc(self.title)}</h{level}>" if self.title else ""
        notes = "".join(f'<p class="note">{esc(note)}</p>' for note in self.notes)
        if not self.rows:
            return f'{title}<p class="note">(nothing to show)</p>{notes}'
        header = self.header or ("quantity", "value")
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join(
            "<tr>"
            + "".join(f"<td{NUMERIC if i else ''}>{esc(html_cell(c))}</td>" for i, c in enumerate(row))
            + "</tr>"
            for row in self.rows
        )
        return f"{title}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}"


def get(obj: Any, *keys: str | int) -> Any:
    """``obj[k1][k2]...`` or None where a level is missing or not a container (lenient reading)."""
    for key in keys:
        if isinstance(obj, dict):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def _value(value: Any) -> Cell:
    return value


# A row of a results table: its label, the kind of its cells (Percent, Signed or _value) and the keys
# that lead to the value in each source.
RowSpec = tuple[Any, ...]


def spec_rows(sources: Sequence[Any], spec: Sequence[RowSpec]) -> tuple[tuple[Cell, ...], ...]:
    """A row per ``(label, kind, *keys)`` of ``spec``: the label, then each source's value at ``keys``."""
    return tuple((label, *(kind(get(source, *keys)) for source in sources)) for label, kind, *keys in spec)


def texts(tables: Sequence[Table]) -> str:
    """Several tables as text, a blank line between them."""
    return "\n\n".join(t.text() for t in tables)


# --- text only: notebook narration without a report counterpart ------------------------------------


def describe_config(config: RunConfig) -> str:
    """The run configuration as aligned ``key: value`` lines, marking values that differ from the profile."""
    defaults = {**RunConfig().to_dict(), **PROFILES.get(config.profile, {})}
    lines = []
    for key, value in config.to_dict().items():
        if key == "extra" and not value:
            continue
        mark = "  (changed)" if key != "profile" and defaults.get(key) != value else ""
        lines.append(f"{key:<22}{value!r}{mark}")
    return "\n".join(lines)


def data_table(summary: dict[str, Any], provenance: bool = False) -> Table:
    """A dataset in a few rows, from :meth:`cifar_helpers.core.data.CifarData.summary`; with
    ``provenance``, also where it was read from and its fingerprint (machine-specific, so the
    notebooks leave them out)."""
    classes, n = summary.get("classes") or [], summary.get("num_images") or {}
    per_class = list((get(summary, "counts", "train") or {}).values())
    low, high = (min(per_class), max(per_class)) if per_class else (None, None)
    rows: list[tuple[Cell, ...]] = [
        ("source", summary.get("source")),
        (f"{len(classes)} classes", ", ".join(map(str, classes))),
        ("training images", n.get("train")),
        ("held out for calibration", n.get("holdout")),
        ("test images", n.get("test")),
        ("training images per class", low if high == low else f"{low} to {high}"),
    ]
    if provenance:
        rows += [("root", summary.get("root")), ("fingerprint", summary.get("fingerprint"))]
    return Table("", (), tuple(rows))


def describe_data(summary: dict[str, Any]) -> str:
    """A dataset in a few lines (:func:`data_table`)."""
    return data_table(summary).text()


def comparison_table(rows: Sequence[dict[str, Any]], max_rows: int = 20) -> str:
    """The baseline failures with both models' answers (rows of ``FailureComparison.table``)."""
    header = f"{'image':>6}  {'true':<11}{'baseline':<19}{'augmented':<19}status"
    lines = [header]
    for row in rows[:max_rows]:
        base = f"{row['baseline_predicted']} ({_pct(row['baseline_confidence'])})"
        aug = f"{row['augmented_predicted']} ({_pct(row['augmented_confidence'])})"
        lines.append(f"{row['index']:>6}  {row['true']:<11}{base:<19}{aug:<19}{row['status']}")
    if len(rows) > max_rows:
        lines.append(f"... and {len(rows) - max_rows} more (all in comparison.json)")
    return "\n".join(lines)


def _share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def describe_attention(measures: dict[str, Any]) -> str:
    """Notebook 03's measures (:func:`cifar_helpers.analysis.gradcam.failure_attention_report`) in words."""
    if measures["num_failures"] == 0:
        return "no high-confidence failures to explain"
    periphery = measures["periphery"]
    center = measures["center"]
    lines = [
        f"Grad-CAM mass outside the central {center}x{center} pixels (a uniform map puts 75 % there):",
        f"  high-confidence failures:             median {_share(periphery['failures']['median'])}",
        f"  correct images of matched confidence: median {_share(periphery['controls']['median'])}",
    ]
    if periphery["share_failure_higher"] is not None:
        lines.append(
            f"  the failure's map is more peripheral than its control's in "
            f"{_share(periphery['share_failure_higher'])} of {periphery['pairs']} pairs"
        )
    deletion = measures["deletion"]
    if deletion is not None:
        lines += [
            "mean-blanking deletion (area under the predicted class's probability as pixels are set to the "
            f"mean): most attended first {deletion['attended_auc']:.2f}, random {deletion['random_auc']:.2f}",
            "  not a faithfulness verdict: scattered mean-valued pixels are out of distribution themselves "
            "and destroy the prediction whatever their order; ROAD (below) removes pixels without it",
        ]
    return "\n".join(lines)


def describe_attention_change(
    measures: dict[str, Any], names: tuple[str, str] = ("baseline", "augmented")
) -> str:
    """Notebook 05's periphery comparison (:func:`analysis.gradcam.compare_attention`) in words."""
    before, after = names
    if measures["pairs"] == 0:
        return "no pairs of non-empty heatmaps to compare"
    return "\n".join(
        [
            f"Grad-CAM mass outside the central {measures['center']}x{measures['center']} pixels, "
            f"on the baseline's failures ({measures['pairs']} images):",
            f"  {before:<10} median {_share(measures[before]['median'])}",
            f"  {after:<10} median {_share(measures[after]['median'])}",
            f"attention moved towards the centre on {_share(measures['share_moved_inward'])} of the images",
        ]
    )


# --- the rows shared by the notebooks, run_all.py and the report -----------------------------------


def accuracy_table(
    metrics: dict[str, Any], num_test: int | None = None, num_train: int | None = None
) -> Table:
    """Test and train accuracy and their gap, from a stage's ``metrics.json``; with the image counts,
    also how many images each model got right."""
    test, train = metrics.get("test_accuracy"), metrics.get("train_accuracy")
    gap = ("train - test gap", Percent(metrics.get("train_test_gap")))
    note = ("both evaluated in eval mode, without augmentation",)
    if num_test is None or num_train is None:
        return Table(
            "", (), (("test accuracy", Percent(test)), ("train accuracy", Percent(train)), gap), note
        )

    def correct(accuracy: Any, n: int) -> str | None:
        return None if _missing(accuracy) else f"{round(accuracy * n)}/{n}"

    rows = (
        ("test", correct(test, num_test), Percent(test)),
        ("train", correct(train, num_train), Percent(train)),
        (gap[0], None, gap[1]),
    )
    return Table("", ("images", "correct", "accuracy"), rows, note)


def describe_metrics(metrics: dict[str, Any], num_test: int, num_train: int) -> str:
    """Accuracy as counts and percentages, and the train-test gap (:func:`accuracy_table`)."""
    return accuracy_table(metrics, num_test, num_train).text()


def per_class_table(per_class: dict[str, dict[str, float | None]]) -> Table:
    """Per-class accuracy of one or more models: ``{model: {class: accuracy}}``, a row per class."""
    models = list(per_class)
    classes = list(next(iter(per_class.values()), {}))
    rows = tuple((name, *(Percent(get(per_class, m, name)) for m in models)) for name in classes)
    return Table("", ("class", *models), rows)


def failure_tables(summary: dict[str, Any], max_pairs: int = 5) -> list[Table]:
    """The failure counts of :func:`cifar_helpers.analysis.failures.failure_summary` and the most frequent
    confident confusions."""
    facts = Table(
        "",
        (),
        (
            ("test images", summary.get("num_images")),
            ("accuracy", Percent(summary.get("accuracy"))),
            ("misclassified", summary.get("num_errors")),
            (f"of them with confidence > {summary.get('threshold')}", summary.get("num_high_confidence")),
            (
                "share of errors made with high confidence",
                Percent(summary.get("share_of_errors_high_confidence")),
            ),
        ),
    )
    pairs = [p for p in summary.get("most_confused_pairs") or [] if isinstance(p, dict)][:max_pairs]
    if not pairs:
        return [facts]
    confusions = Table(
        "most frequent high-confidence confusions",
        ("true", "predicted", "count"),
        tuple((p.get("true"), p.get("predicted"), p.get("count")) for p in pairs),
    )
    return [facts, confusions]


def describe_failures(summary: dict[str, Any]) -> str:
    """The failure counts of :func:`analysis.failures.failure_summary` (:func:`failure_tables`)."""
    return texts(failure_tables(summary))


def comparison_tables(comparison: dict[str, Any]) -> list[Table]:
    """Both models' accuracy and gap, and what became of the baseline's confident failures
    (``FailureComparison.to_dict()``)."""
    counts = comparison.get("counts") or {}
    models = Table(
        "",
        ("model", "test accuracy", "train - test gap"),
        tuple(
            (m, Percent(comparison.get(f"{m}_accuracy")), Percent(comparison.get(f"{m}_gap")))
            for m in ("baseline", "augmented")
        ),
    )
    fate = Table(
        f"of the baseline's {counts.get('baseline_failures', '-')} high-confidence failures "
        f"(confidence > {comparison.get('threshold')}), the augmented model",
        (),
        (
            ("fixed", counts.get("fixed")),
            ("kept, same wrong class", counts.get("kept_same")),
            ("kept, another wrong class", counts.get("kept_different")),
            ("new high-confidence failures", counts.get("new")),
            ("its high-confidence failures in all", counts.get("augmented_failures")),
        ),
    )
    return [models, fate]


def describe_comparison(comparison: dict[str, Any]) -> str:
    """The baseline -> augmented comparison (:func:`comparison_tables`)."""
    return texts(comparison_tables(comparison))


def per_model(data: Any, marker: str) -> dict[str, Any]:
    """``{model: result}`` from a file holding either that or a single result (which has ``marker``)."""
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        return data["models"]
    if isinstance(data, dict) and marker in data:
        return {"model": data}
    if isinstance(data, dict):
        return {name: value for name, value in data.items() if isinstance(value, dict) and marker in value}
    return {}


CORRUPTION_ROWS: tuple[RowSpec, ...] = (
    ("clean", Percent, "clean_accuracy"),
    ("mean corrupted", Percent, "mean_corruption_accuracy"),
    ("absolute drop", Percent, "absolute_drop"),
    ("relative drop", Percent, "relative_drop"),
)


def corruption_tables(result: dict[str, Any], severities: bool = False) -> list[Table]:
    """Each model's clean and corrupted accuracy, and its accuracy per corruption (mean over the
    severities; with ``severities``, each severity's too), from ``corruptions.json``."""
    models = per_model(result, "clean_accuracy")
    names = list(models)
    num_images, kinds, levels = (result.get(k) for k in ("num_images", "corruption_names", "severities"))
    title = (
        f"{num_images} test images, {len(kinds)} corruptions x {len(levels)} severities"
        if num_images is not None and isinstance(kinds, list) and isinstance(levels, list)
        else ""
    )
    overall = Table(title, ("", *names), spec_rows(list(models.values()), CORRUPTION_ROWS))
    corruptions = list(dict.fromkeys(c for m in names for c in models[m].get("corruptions") or {}))
    header = ["corruption", *names]
    if severities:
        header += [f"{m}: by severity" for m in names]
    rows = []
    for c in corruptions:
        cells = [get(models[m], "corruptions", c) or {} for m in names]
        row: list[Cell] = [c, *(Percent(cell.get("mean_accuracy")) for cell in cells)]
        if severities:
            row += [" / ".join(fmt_pct(a) for a in cell.get("accuracy") or []) for cell in cells]
        rows.append(tuple(row))
    return [overall, Table("accuracy per corruption (mean over severities)", tuple(header), tuple(rows))]


def describe_corruptions(result: dict[str, Any]) -> str:
    """Accuracy under each corruption per model (:func:`corruption_tables`)."""
    return texts(corruption_tables(result))


CALIBRATION_ROWS: tuple[RowSpec, ...] = (
    ("temperature", _value, "temperature"),
    ("ECE before", Percent, "before", "ece"),
    ("ECE after", Percent, "after", "ece"),
    ("NLL before", _value, "before", "nll"),
    ("NLL after", _value, "after", "nll"),
    ("test accuracy", Percent, "before", "accuracy"),
    ("confidence threshold", _value, "threshold"),
    ("failures above it before scaling", _value, "high_confidence_failures", "before"),
    ("... still above it after scaling", _value, "high_confidence_failures", "still_above_after"),
    ("failures above it after scaling", _value, "high_confidence_failures", "after"),
)


def calibration_table(reports: dict[str, Any]) -> Table:
    """ECE and NLL before and after temperature scaling, and the confident failures that stay
    confident, per model, from ``calibration.json``."""
    models = per_model(reports, "temperature")
    skipped = tuple(f"{name}: skipped ({report})" for name, report in reports.items() if name not in models)
    holdout = ", ".join(map(str, dict.fromkeys(get(m, "num_holdout") for m in models.values())))
    return Table(
        f"temperature fitted on {holdout} held-out training images" if models else "",
        ("", *models),
        spec_rows(list(models.values()), CALIBRATION_ROWS) if models else (),
        skipped,
    )


def describe_calibration(reports: dict[str, Any]) -> str:
    """ECE and NLL before and after temperature scaling per model (:func:`calibration_table`)."""
    return calibration_table(reports).text()


def randomisation_table(result: dict[str, Any]) -> Table:
    """Spearman correlation of Grad-CAM maps as layers are re-initialised, from ``sanity.json``."""
    steps = result.get("steps") or []
    means = result.get("spearman_mean") or [None] * len(steps)
    stds = result.get("spearman_std") or [None] * len(steps)
    n = result.get("num_images")
    return Table(
        "Spearman correlation with the trained model's maps" + ("" if n is None else f" ({n} images)"),
        ("randomised up to", "mean", "std"),
        tuple((step, Signed(m), s) for step, m, s in zip(steps, means, stds, strict=True)),
    )


def describe_randomisation(result: dict[str, Any]) -> str:
    """The model-parameter randomisation test (:func:`randomisation_table`)."""
    return randomisation_table(result).text()


POSITIVE_CONTROL_ROWS: tuple[RowSpec, ...] = (
    ("test accuracy", Percent, "test_accuracy"),
    ("train accuracy", Percent, "train_accuracy"),
    ("failures", _value, "num_failures"),
    ("mask share (failures)", _value, "mask_share"),
    ("pointing game (failures)", Percent, "pointing_game"),
    ("mask share (all test images)", _value, "mask_share_all"),
)


def positive_control_table(result: dict[str, Any]) -> Table:
    """Accuracy, failures, mask share and pointing game of the tied and untied models, from
    ``positive_control.json``."""
    correlation = result.get("correlation")
    return Table(
        "generated data, backgrounds tied to the class in "
        f"{'-' if _missing(correlation) else f'{100 * correlation:.0f} %'} of training images (none at "
        f"test); failures above confidence {result.get('threshold')}",
        ("", "tied", "untied"),
        spec_rows([result.get("tied") or {}, result.get("untied") or {}], POSITIVE_CONTROL_ROWS),
        (f"a uniform map's mask share: {text_cell(result.get('object_area_fraction'))}",),
    )


def describe_positive_control(result: dict[str, Any]) -> str:
    """The background-shortcut positive control (:func:`positive_control_table`)."""
    return positive_control_table(result).text()


def road_table(
    table: dict[str, Any],
    names: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    title: str = "",
) -> Table:
    """A ROAD table (:func:`cifar_helpers.analysis.faithfulness.road_table`), a row per map: the change in the
    explained class's probability with each share of pixels removed, most then least relevant first,
    and the combined score. ``names`` picks and orders the maps (default: all), ``labels`` renames them."""
    rows, fractions = table.get("rows") or {}, table.get("fractions") or []
    names = list(rows) if names is None else list(names)
    header = (
        "map",
        *(f"most {100 * f:.0f}%" for f in fractions),
        *(f"least {100 * f:.0f}%" for f in fractions),
        "combined",
    )
    body = tuple(
        (
            label,
            *(Signed(v) for v in get(rows, name, "most_relevant_first") or []),
            *(Signed(v) for v in get(rows, name, "least_relevant_first") or []),
            Signed(get(rows, name, "combined")),
        )
        for name, label in zip(names, labels or names, strict=True)
    )
    return Table(title, header, body)


ROAD_EXPLAINED = (
    "ROAD (Rong et al., 2022): the change in the explained class's probability after removing a share of "
    "the pixels, most or least relevant first by the map, and imputing them from their neighbours; a "
    "faithful map falls fast most-relevant-first and stays flat least-relevant-first; combined = mean of "
    "(least - most) / 2, higher is more faithful; a random map is the floor"
)


def failure_road_table(report: dict[str, Any]) -> Table:
    """Notebook 03's ROAD table (:func:`analysis.faithfulness.failure_faithfulness`): Grad-CAM at
    each layer, each explainer at the compared layer and a random map (the floor), with the verdicts."""
    layer = report.get("explainer_layer")
    names = [f"gradcam@{name}" for name in report.get("layers") or []]
    names += [f"{e}@{layer}" for e in report.get("explainers") or [] if f"{e}@{layer}" not in names]
    rows = report.get("rows") or {}
    names = [name for name in [*names, "random"] if name in rows] or list(rows)
    notes = []
    if report.get("best_layer") is not None:
        notes.append(f"most faithful Grad-CAM layer: {report['best_layer']}")
    if report.get("best_explainer") is not None:
        notes.append(f"most faithful explainer at {layer}: {report['best_explainer']}")
    title = (
        f"ROAD on the {report.get('num_images')} most confident of {report.get('num_failures')} failures: "
        "change in the predicted class's probability"
    )
    table = road_table(report, names)
    return Table(title, table.header, table.rows, tuple(notes))


def describe_road(report: dict[str, Any]) -> str:
    """Notebook 03's ROAD table (:func:`failure_road_table`)."""
    if report["num_images"] == 0:
        return "no failures to score"
    return failure_road_table(report).text()


def road_by_model_table(result: dict[str, Any]) -> Table:
    """Each model's Grad-CAM against the random floor by ROAD (``faithfulness.road_by_model``)."""
    header: tuple[str, ...] = ()
    rows: list[tuple[Cell, ...]] = []
    for name, table in (result.get("models") or {}).items():
        part = road_table(table, ["gradcam", "random"], [f"{name} Grad-CAM", f"{name} random"])
        header, rows = part.header, [*rows, *part.rows]
    return Table(
        f"ROAD on {result.get('num_images')} images, each model's maps of its own prediction: change in "
        "that class's probability",
        header,
        tuple(rows),
    )


def describe_road_by_model(result: dict[str, Any]) -> str:
    """Each model's Grad-CAM against the random floor by ROAD (:func:`road_by_model_table`)."""
    if result["num_images"] == 0:
        return "no images to score"
    return road_by_model_table(result).text()


def positive_control_road_table(result: dict[str, Any]) -> Table | None:
    """ROAD's combined score of the positive control's two models (``positive_control.json``): Grad-CAM,
    a random map and the object mask as the map; None for a result computed before ROAD was added."""
    roads = {name: get(result, name, "road") for name in ("tied", "untied")}
    if any(not isinstance(road, dict) for road in roads.values()):
        return None
    return Table(
        "ROAD combined score on each model's failures (higher: removing what the map ranks first hurts "
        "more than removing what it ranks last)",
        ("", "images", "Grad-CAM", "random", "object mask"),
        tuple(
            (
                name,
                road.get("num_images"),
                *(Signed(get(road, "rows", r, "combined")) for r in ("gradcam", "random", "object")),
            )
            for name, road in roads.items()
        ),
        ("object mask as the map: how much more the prediction rests on the object than on the background",),
    )


def describe_positive_control_road(result: dict[str, Any]) -> str:
    """ROAD of the positive control's two models (:func:`positive_control_road_table`)."""
    table = positive_control_road_table(result)
    return "no ROAD numbers in this result (computed by an older version)" if table is None else table.text()


# --- the run's summary: run_all.py's last words and the top of the report -------------------------


def run_summary_tables(summary: dict[str, Any]) -> list[Table]:
    """The numbers a reader wants first (``summary.json``): both models' accuracy and gap, the
    confident failures and what the augmented model did with them."""
    models = Table(
        "",
        ("model", "test accuracy", "train accuracy", "train - test gap"),
        tuple(
            (
                m,
                *(
                    Percent(get(summary, m, key))
                    for key in ("test_accuracy", "train_accuracy", "train_test_gap")
                ),
            )
            for m in ("baseline", "augmented")
        ),
        ("gap: train minus test accuracy, both evaluated in eval mode without augmentation",),
    )
    threshold = summary.get("confidence_threshold")
    counts = summary.get("comparison") or {}
    failures = Table(
        "",
        (),
        (
            (
                "high-confidence failures of the baseline"
                + ("" if threshold is None else f" (confidence > {threshold})"),
                summary.get("high_confidence_failures"),
            ),
            ("fixed by the augmented model", counts.get("fixed")),
            ("kept, same wrong class", counts.get("kept_same")),
            ("kept, another wrong class", counts.get("kept_different")),
            ("new high-confidence failures", counts.get("new")),
        ),
    )
    return [models, failures]


def human_label_tables(summary: dict[str, Any]) -> list[Table]:
    """:func:`cifar_helpers.analysis.human_labels.human_labels_summary` as tables: each model's confident
    failures by category (with enrichment) and fixed / kept / new by category. Empty when no human
    labels apply (:func:`no_human_labels` says why)."""
    if not summary.get("applies"):
        return []
    models = [m for m in ("baseline", "augmented") if m in summary]

    def cell(model: str, category: str) -> str:
        counts, factor = get(summary, model, "counts", category), get(summary, model, "enrichment", category)
        return f"{counts} ({text_cell(Times(factor))})"

    tables = [
        Table(
            "confident failures by category (in brackets: enrichment against the test set)",
            ("category", *models),
            tuple((c, *(cell(m, c) for m in models)) for c in CATEGORIES),
        )
    ]
    by_category = summary.get("by_category")
    if by_category:
        groups = ("fixed", "kept_same", "kept_different", "new")
        flagged = summary.get("fixed_label_errors")
        tables.append(
            Table(
                "the confident failures by category: fixed, kept or new in the augmented model",
                ("category", "fixed", "kept (same)", "kept (different)", "new"),
                tuple((c, *(get(by_category, g, c) for g in groups)) for c in CATEGORIES),
                (
                    f"{flagged} 'fixed' failure(s) are verified label errors: the augmented model now "
                    "agrees with a wrong label",
                )
                if flagged
                else (),
            )
        )
    plurality = summary.get("accuracy_vs_human_plurality") or {}
    tables.append(
        Table(
            "",
            (),
            tuple(
                (f"{m}: accuracy against the human plurality label", Percent(plurality.get(m)))
                for m in models
            ),
        )
    )
    return tables


def no_human_labels(summary: dict[str, Any]) -> str | None:
    """The one line saying why no human labels apply, or None when they do."""
    return None if summary.get("applies") else f"no human labels apply: {summary.get('reason')}"


def format_run_summary(summary: dict[str, Any]) -> str:
    """``summary.json`` as ``run_all.py`` prints it at the end: the run summary's tables, the human
    labels and each stage's status and minutes."""
    parts = [f"Run: {summary['run_dir']}", texts(run_summary_tables(summary))]
    human = summary.get("human_labels") or {}
    if human:
        parts.append(no_human_labels(human) or texts(human_label_tables(human)))
    stages = summary.get("stages")
    if stages:
        parts.append(
            Table(
                "",
                ("stage", "status", "minutes"),
                tuple((name, info["status"], float(info["minutes"])) for name, info in stages.items()),
            ).text()
        )
    return "\n\n".join(parts)


# --- human labels (notebooks 02, 05, 06) ------------------------------------------------------------


def human_failure_table(report: dict[str, Any], title: str = "") -> Table:
    """:func:`cifar_helpers.analysis.human_labels.human_failure_report` (applying): the confident failures by
    category, their share, the category's share of the test set and the enrichment."""
    counts, n, base = report.get("counts") or {}, report.get("num_failures"), report.get("base_counts") or {}
    base_for = {LABEL_ERROR: LABEL_ERROR, AMBIGUOUS: AMBIGUOUS, MODEL_ERROR: AGREED}
    rho = report.get("spearman_confidence_vs_human_share")
    return Table(
        title
        or f"the {n} confident failures by category (ambiguous: the given label's human share "
        f"< {report.get('ambiguity_threshold')})",
        ("category", "failures", "share", "in the test set", "enrichment"),
        tuple(
            (
                c,
                counts.get(c),
                Percent(counts.get(c, 0) / n if n else None),
                Percent(
                    get(base, base_for[c]) / NUM_TEST_IMAGES
                    if c in base_for and base_for[c] in base
                    else None
                ),
                Times(get(report, "enrichment", c)),
            )
            for c in CATEGORIES
        ),
        (
            f"accuracy against the given labels {_pct(report.get('accuracy'))}, against the human "
            f"plurality {_pct(report.get('accuracy_vs_human_plurality'))}",
            "rank correlation of the model's confidence with the human share of its prediction: "
            + text_cell(rho),
        ),
    )


def describe_human_failures(report: dict[str, Any]) -> str:
    """Notebook 02's human-label report (:func:`human_failure_table`), or why no human labels apply."""
    return no_human_labels(report) or human_failure_table(report).text()


def human_comparison_tables(result: dict[str, Any]) -> list[Table]:
    """:func:`cifar_helpers.analysis.human_labels.comparison_by_category` (applying): the augmented model's
    failures by category, and fixed / kept / new by category with every fixed verified label error."""
    flagged = result.get("fixed_label_errors") or []
    notes = (
        (
            f"WARNING: {len(flagged)} 'fixed' failure(s) are verified label errors: the augmented model "
            "now agrees with a wrong label:",
            *(
                f"  image {f['index']}: labelled '{f['given']}', humans say '{f['human_plurality']}' (given "
                f"label's share {f['given_share']:.2f}, verification {f['mturk_given_votes']} for it)"
                for f in flagged
            ),
        )
        if flagged
        else ("no verified label error among the fixed failures",)
    )
    augmented = result.get("augmented") or {}
    return [
        human_failure_table(
            augmented, f"augmented model: its {augmented.get('num_failures')} confident failures"
        ),
        Table(
            "the baseline's failures, fixed / kept, and the augmented model's new ones, by category",
            ("category", "fixed", "kept (same)", "kept (different)", "new"),
            tuple((c, *(get(result, "by_category", g, c) for g in COUNT_KEYS)) for c in CATEGORIES),
            notes,
        ),
    ]


def describe_human_comparison(result: dict[str, Any]) -> str:
    """Notebook 05's categories (:func:`human_comparison_tables`), or why no human labels apply."""
    return no_human_labels(result) or texts(human_comparison_tables(result))


def human_calibration_table(result: dict[str, Any]) -> Table:
    """:func:`cifar_helpers.analysis.human_labels.calibration_against_humans` (applying): each model's
    cross-entropy against the CIFAR-10H votes, as trained and temperature-scaled. Three decimals:
    temperature scaling moves it by hundredths."""

    def nats(x: Any) -> str:
        return "-" if _missing(x) else f"{x:.3f}"

    return Table(
        "cross-entropy against the CIFAR-10H vote distribution (nats, lower = more human-like "
        f"uncertainty; the humans' own entropy is {nats(result.get('human_entropy'))})",
        ("model", "as trained", "temperature", "scaled"),
        tuple(
            (name, nats(m.get("before")), m.get("temperature"), nats(m.get("after")))
            for name, m in (result.get("models") or {}).items()
        ),
    )


def describe_human_calibration(result: dict[str, Any]) -> str:
    """Notebook 06's cross-entropy against humans (:func:`human_calibration_table`)."""
    return no_human_labels(result) or human_calibration_table(result).text()


# --- seed replicates (notebook 07, the replicate report) ---------------------------------------------


def seed_accuracy_table(accuracy: dict[str, Any]) -> Table:
    """Both models' test accuracy over seeds and their paired difference: mean, standard deviation and
    95 % t-interval (``accuracy.json``, or the replicate summary). Two decimals in text too: a seed
    changes accuracy by tenths of a point, the size of the differences these numbers weigh."""
    difference = accuracy.get("difference") or {}

    def interval(entry: dict[str, Any]) -> str:
        if entry.get("sd") is None:
            return "n/a (one seed)"
        return f"[{_pct(entry.get('low'), 2)}, {_pct(entry.get('high'), 2)}]"

    rows = tuple(
        (
            label,
            Percent(get(accuracy, key, "mean"), 2),
            Percent(get(accuracy, key, "sd"), 2),
            interval(accuracy.get(key) or {}),
        )
        for label, key in (
            ("baseline", "baseline"),
            ("augmented", "augmented"),
            ("augmented - baseline", "difference"),
        )
    )
    p_value = difference.get("p_value")
    return Table(
        f"test accuracy over seeds {', '.join(map(str, accuracy.get('seeds') or []))}",
        ("", "mean", "sd", "95 % interval"),
        rows,
        () if p_value is None else (f"paired t-test on the difference: p = {p_value:.3g}",),
    )


def noise_floor_table(means: dict[str, Any]) -> Table:
    """Mean fixed / kept / new between two baseline seeds (the reseed) beside baseline -> augmented
    (``noise_floor.json``'s ``mean``)."""
    return Table(
        "mean fixed / kept / new: a reseed of the baseline against augmentation",
        ("comparison", "fixed", "kept (same)", "kept (different)", "new"),
        tuple(
            (kind, *(get(means, kind, k) for k in COUNT_KEYS))
            for kind in ("reseed", "augmentation")
            if kind in means
        ),
    )


def describe_replicates(summary: dict[str, Any]) -> str:
    """:func:`analysis.seed_analysis.replicate_summary`'s numbers: accuracy over seeds, the noise
    floor and how much the failure sets overlap."""
    parts = [seed_accuracy_table(summary).text()]
    floor, excess = summary.get("noise_floor") or {}, summary.get("excess_over_reseed") or {}
    if "reseed" in floor:
        fixed = text_cell(Signed(excess.get("fixed")))
        parts.append(
            f"{noise_floor_table(floor)}\nfixed beyond what a reseed alone gives: {fixed} images on average"
        )
    if summary.get("mean_jaccard") is not None:
        parts.append(
            f"failure sets overlap (mean Jaccard between seeds): {summary['mean_jaccard']:.2f}; "
            f"{summary['consistent_failures']} of {summary['ever_failing']} ever-failing images fail in at "
            "least half the seeds (and two at least)"
        )
    return "\n\n".join(parts)


def category_mix_table(mix: dict[str, Any]) -> Table:
    """:meth:`workflow.stages.Replicates.human_label_mix` (applying): the count and share of each
    category among the consistent and among the one-seed failures."""
    groups = ("consistent", "one_seed")
    totals = {g: sum((mix.get(g) or {}).values()) for g in groups}

    def cell(group: str, category: str) -> str:
        n = get(mix, group, category) or 0
        return f"{n} ({_share(n / totals[group])})" if totals[group] else "0"

    categories = sorted({c for g in groups for c in mix.get(g) or {}})
    return Table(
        "",
        ("category", "consistent", "one seed only"),
        (*((c, *(cell(g, c) for g in groups)) for c in categories), ("all", *(totals[g] for g in groups))),
    )


def describe_category_mix(mix: dict[str, Any]) -> str:
    """Notebook 07's categories of consistent and one-seed failures (:func:`category_mix_table`)."""
    return no_human_labels(mix) or category_mix_table(mix).text()
