"""Every result the project prints, as a pandas DataFrame for the notebooks, ``run_all.py`` and the
report: cells hold numbers (percentages as fractions) or text, ``df.attrs`` the title, notes and a
:data:`_FORMATS` kind per column (or per row of a quantity/value table). Notebooks show one decimal
(stable across CPUs for nbval), the report (``precise``) more.
"""

from __future__ import annotations

import hashlib
import html
import math
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from functools import reduce
from operator import getitem
from typing import Any

import pandas as pd
from IPython.display import display
from pandas.io.formats.style import Styler

from cifar_helpers.analysis.calibration import Calibration
from cifar_helpers.analysis.claims.bench import CAUSE_OF_CLAIM, bench_gate
from cifar_helpers.analysis.claims.probes import TileShuffle
from cifar_helpers.analysis.claims.rules import ALL_FAILURES, ALL_IMAGES, BENCH, ClaimResult
from cifar_helpers.analysis.failures import FailureSummary
from cifar_helpers.analysis.faithfulness import FailureRoad, RoadByModel, RoadTable
from cifar_helpers.analysis.human_labels import (
    CATEGORIES,
    CategoryComparison,
    HumanCalibration,
    HumanFailureReport,
    HumanLabelsSummary,
    NotApplicable,
)
from cifar_helpers.analysis.positive_control import PositiveControl
from cifar_helpers.analysis.sanity import RandomisationSummary
from cifar_helpers.analysis.seed_analysis import (
    COUNT_KEYS,
    AccuracySummary,
    CategoryMix,
    FailureStability,
    NoiseFloor,
    ReplicateSummary,
)
from cifar_helpers.analysis.stress import StressResult
from cifar_helpers.rundir.config import PROFILES, RunConfig

# Display kinds; a float without a kind is "num", an int without one is shown in full.
_FORMATS = {
    "pct": "{:.1%}",
    "pct2": "{:.2%}",
    "share": "{:.0%}",
    "signed": "{:+.2f}",
    "times": "×{:.1f}",
    "num": "{:.2f}",
    "nats": "{:.3f}",
}
_PRECISE = {**_FORMATS, "pct": "{:.2%}", "signed": "{:+.4g}", "num": "{:.4g}"}  # the report's digits
KV = ("quantity", "value")  # the columns of a table of quantities, each row with its own format
_SEP = "\x1f"  # between the cells of Styler.to_string; never in a cell
# A table's look where no stylesheet sets it (JupyterLab, Colab); the report's page has its own.
_CSS = {
    "th, td": "padding: 0.2em 0.7em",
    "td": "text-align: right; font-variant-numeric: tabular-nums",
    "th": "text-align: right",
    "td:first-child, th:first-child": "text-align: left",
}
_CATEGORY_COUNTS = ("category", "fixed", "kept (same)", "kept (different)", "new")


def fmt(value: Any, kind: str | None = None, precise: bool = False) -> str:
    """One value as the tables show it: ``kind`` from :data:`_FORMATS`, ``-`` when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)) and not (isinstance(value, int) and kind is None):
        return (_PRECISE if precise else _FORMATS)[kind or "num"].format(value)
    return str(value)


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    title: str = "",
    notes: Iterable[str] = (),
    formats: dict[str, str] | None = None,
) -> pd.DataFrame:
    """A DataFrame of ``rows`` (object columns: an int stays an int beside a missing value) with its
    title, notes and display formats (``{column or row label: kind}``) in ``attrs``."""
    frame = pd.DataFrame([tuple(row) for row in rows], columns=list(columns), dtype=object)
    frame.attrs.update(title=title, notes=tuple(notes), formats=dict(formats or {}))
    return frame


def note(line: str) -> pd.DataFrame:
    """A table without rows that only says ``line`` (nothing to show, and why)."""
    return table((), (), notes=(line,))


def spec_table(
    sources: dict[str, Any], spec: Sequence[tuple[Any, ...]], title: str = "", notes: Iterable[str] = ()
) -> pd.DataFrame:
    """A row per ``(label, kind, *keys)`` of ``spec``: the label, then each source's value at ``keys``.
    One source named ``value`` makes a quantity/value table."""
    rows = [(label, *(reduce(getitem, keys, s) for s in sources.values())) for label, _, *keys in spec]
    first = KV[0] if list(sources) == [KV[1]] else ""
    return table((first, *sources), rows, title, notes, {label: kind for label, kind, *_ in spec if kind})


def _is_words(column: pd.Series) -> bool:
    """Whether a column holds only text (aligned left, unlike numbers)."""
    return bool(len(column)) and all(isinstance(v, str) for v in column)


def style(frame: pd.DataFrame, precise: bool = False, escape: bool = True) -> Styler:
    """The table as a ``Styler``; ``precise``: the report's digits."""
    formats = frame.attrs["formats"]

    def cell(kind: str | None) -> Any:
        return lambda v: html.escape(fmt(v, kind, precise)) if escape else fmt(v, kind, precise)

    # One id per table, the same every run: a page holds many tables, and their styles must not mix.
    uuid = hashlib.sha1(repr((frame.attrs["title"], list(frame.columns))).encode()).hexdigest()[:8]
    styler = Styler(frame, uuid=uuid, cell_ids=False).hide(axis="index")
    for column in frame.columns:
        styler.format(cell(formats.get(column)), subset=[column])  # optional: a column may have no kind
    labels = list(frame.iloc[:, 0]) if len(frame.columns) else []
    for key, kind in formats.items():
        rows = [i for i, label in enumerate(labels) if label == key and key not in frame.columns]
        if rows:  # a row's kind, in a table whose first column names quantities
            styler.format(cell(kind), subset=pd.IndexSlice[rows, frame.columns[1:]])
    if escape:
        styler.format_index(escape="html", axis="columns")
    # Words read left to right. A rule per column class: the cells have no ids (cell_ids=False), and
    # the report's page, which has its own stylesheet, keeps only these rules (``precise``).
    words = [c for c in frame.columns[1:] if tuple(frame.columns) != KV and _is_words(frame[c])]
    left = [{"selector": cell, "props": "text-align: left"} for cell in ("td", "th")]
    styler.set_table_styles({c: left for c in words})
    styles = [] if precise else [{"selector": selector, "props": props} for selector, props in _CSS.items()]
    return styler.set_table_styles(styles, overwrite=False)


def text(frame: pd.DataFrame) -> str:
    """Aligned plain text: title, header, rows, notes; a quantity/value table as ``label  value`` lines."""
    lines = [frame.attrs["title"]]
    if len(frame):
        kv = tuple(frame.columns) == KV
        rendered = style(frame, escape=False).to_string(delimiter=_SEP).splitlines()[1 if kv else 0 :]
        cells = [line.split(_SEP) for line in rendered]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        align = ["<" if kv or _is_words(frame.iloc[:, i]) else ">" for i in range(len(widths))]
        for row in cells:
            values = "".join(f"  {c:{a}{w}}" for c, w, a in zip(row[1:], widths[1:], align[1:], strict=True))
            lines.append((row[0].ljust(widths[0]) + values).rstrip())
    return "\n".join(line for line in [*lines, *frame.attrs["notes"]] if line)


def to_html(frame: pd.DataFrame, precise: bool = False) -> str:
    """The table as HTML with its title and notes; ``precise``: the report's digits and, since its page
    has a stylesheet, only the styles that say which columns hold words."""
    title = f"<h4>{html.escape(frame.attrs['title'])}</h4>" if frame.attrs["title"] else ""
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in frame.attrs["notes"])
    return title + (style(frame, precise).to_html() if len(frame.columns) else "") + notes


def show(*frames: pd.DataFrame) -> None:
    """Display tables in a notebook, as HTML and as text (for nbval)."""
    for frame in frames:
        display({"text/plain": text(frame), "text/html": to_html(frame)}, raw=True)


def describe_config(config: RunConfig) -> str:
    """The run configuration as aligned ``key: value`` lines, marking values that differ from the profile."""
    defaults = {**RunConfig().to_dict(), **PROFILES.get(config.profile, {})}  # optional: "auto" has none
    lines = []
    for key, value in config.to_dict().items():
        if key == "extra" and not value:
            continue
        mark = "  (changed)" if key != "profile" and defaults[key] != value else ""
        lines.append(f"{key:<22}{value!r}{mark}")
    return "\n".join(lines)


# --- the tables shared by the notebooks, run_all.py and the report ---------------------------------


def data_table(summary: dict[str, Any], provenance: bool = False) -> pd.DataFrame:
    """:meth:`core.data.CifarData.summary`; ``provenance``: its root and fingerprint too (per machine)."""
    classes, n, per_class = summary["classes"], summary["num_images"], summary["counts"]["train"].values()
    low, high = min(per_class), max(per_class)
    rows = [
        ("source", summary["source"]),
        (f"{len(classes)} classes", ", ".join(map(str, classes))),
        ("training images", n["train"]),
        ("held out for calibration", n["holdout"]),
        ("test images", n["test"]),
        ("training images per class", low if high == low else f"{low} to {high}"),
    ]
    return table(KV, rows + [("root", summary["root"]), ("fingerprint", summary["fingerprint"])] * provenance)


def accuracy_table(
    metrics: dict[str, Any], num_test: int | None = None, num_train: int | None = None
) -> pd.DataFrame:
    """Test and train accuracy and their gap (``metrics.json``); with the image counts, how many right."""
    notes = ("both evaluated in eval mode, without augmentation",)
    counts = {"test": num_test, "train": num_train, "train - test gap": None}
    keys = dict(zip(counts, ("test_accuracy", "train_accuracy", "train_test_gap"), strict=True))
    if num_test is None or num_train is None:
        spec = [(k if k.endswith("gap") else f"{k} accuracy", "pct", keys[k]) for k in counts]
        return spec_table({"value": metrics}, spec, notes=notes)
    rows = [
        (k, n if n is None else round(metrics[keys[k]] * n), n, metrics[keys[k]]) for k, n in counts.items()
    ]
    return table(("images", "correct", "of", "accuracy"), rows, notes=notes, formats={"accuracy": "pct"})


def per_class_table(per_class: dict[str, dict[str, float]], title: str = "") -> pd.DataFrame:
    """Per-class accuracy of one or more models: ``{model: {class: accuracy}}``, a row per class."""
    rows = [
        (name, *(by_class[name] for by_class in per_class.values()))
        for name in next(iter(per_class.values()))
    ]
    return table(("class", *per_class), rows, title, formats=dict.fromkeys(per_class, "pct"))


def failure_tables(summary: FailureSummary, max_pairs: int = 5) -> list[pd.DataFrame]:
    """:func:`analysis.failures.failure_summary`'s counts and most frequent confident confusions."""
    spec = [
        ("test images", None, "num_images"),
        ("accuracy", "pct", "accuracy"),
        ("misclassified", None, "num_errors"),
        (f"of them with confidence > {summary.threshold}", None, "num_high_confidence"),
        ("share of errors made with high confidence", "pct", "share_of_errors_high_confidence"),
    ]
    pairs = [(p.true, p.predicted, p.count) for p in summary.most_confused_pairs[:max_pairs]]
    title = "most frequent high-confidence confusions"
    return [spec_table({"value": summary.to_dict()}, spec)] + [
        table(("true", "predicted", "count"), pairs, title)
    ] * bool(pairs)


def comparison_tables(comparison: dict[str, Any]) -> list[pd.DataFrame]:
    """Both models' accuracy and gap, and what became of the baseline's confident failures."""
    columns = ("model", "test accuracy", "train - test gap")
    rows = [(m, comparison[f"{m}_accuracy"], comparison[f"{m}_gap"]) for m in ("baseline", "augmented")]
    counts = comparison["counts"]
    title = (
        f"of the baseline's {counts['baseline_failures']} high-confidence failures "
        f"(confidence > {comparison['threshold']}), the augmented model"
    )
    spec = [
        ("fixed", None, "fixed"),
        ("kept, same wrong class", None, "kept_same"),
        ("kept, another wrong class", None, "kept_different"),
        ("new high-confidence failures", None, "new"),
        ("its high-confidence failures in all", None, "augmented_failures"),
    ]
    return [
        table(columns, rows, formats=dict.fromkeys(columns[1:], "pct")),
        spec_table({"value": counts}, spec, title),
    ]


def comparison_table(rows: Sequence[dict[str, Any]], max_rows: int = 20) -> pd.DataFrame:
    """The baseline failures with both models' answers (rows of ``FailureComparison.table``)."""
    columns = ("image", "true", "baseline", "baseline conf.", "augmented", "augmented conf.", "status")
    keys = ("index", "true", "baseline_predicted", "baseline_confidence", "augmented_predicted")
    body = [[row[k] for k in (*keys, "augmented_confidence", "status")] for row in rows[:max_rows]]
    more = [f"... and {len(rows) - max_rows} more (all in comparison.json)"] * (len(rows) > max_rows)
    return table(columns, body, notes=more, formats=dict.fromkeys(columns[3:6:2], "pct"))


def corruption_tables(result: StressResult, severities: bool = False) -> list[pd.DataFrame]:
    """:func:`analysis.stress.run_stress_test`: each model's accuracy, clean and per corruption."""
    models, setup = result.models, result.setup
    kinds, levels = setup.corruption_names, setup.severities
    title = f"{setup.num_images} test images, {len(kinds)} corruptions x {len(levels)} severities"
    columns = ["corruption", *models, *(f"{m}: by severity" for m in models if severities)]
    rows = []
    for c in dict.fromkeys(c for m in models.values() for c in m.corruptions):
        cells = [m.corruptions[c] for m in models.values()]
        by_severity = [" / ".join(fmt(a, "pct2") for a in cell.accuracy) for cell in cells] * severities
        rows.append([c, *(cell.mean_accuracy for cell in cells), *by_severity])
    spec = [
        ("clean", "pct", "clean_accuracy"),
        ("mean corrupted", "pct", "mean_corruption_accuracy"),
        ("absolute drop", "pct", "absolute_drop"),
        ("relative drop", "pct", "relative_drop"),
    ]
    title2 = "accuracy per corruption (mean over severities)"
    return [
        spec_table({m: r.to_dict() for m, r in models.items()}, spec, title),
        table(columns, rows, title2, formats=dict.fromkeys(models, "pct")),
    ]


def calibration_table(result: Calibration) -> pd.DataFrame:
    """ECE, NLL and the confident failures before and after temperature scaling, per model
    (:func:`analysis.calibration.calibrate_models`, ``calibration.json``), or why it was skipped."""
    if result.skipped is not None:
        return note(f"skipped: skipped ({result.skipped})")
    spec = [
        ("temperature", None, "temperature"),
        ("ECE before", "pct", "before", "ece"),
        ("ECE after", "pct", "after", "ece"),
        ("NLL before", None, "before", "nll"),
        ("NLL after", None, "after", "nll"),
        ("test accuracy", "pct", "before", "accuracy"),
        ("confidence threshold", None, "threshold"),
        ("failures above it before scaling", None, "high_confidence_failures", "before"),
        ("... still above it after scaling", None, "high_confidence_failures", "still_above_after"),
        ("failures above it after scaling", None, "high_confidence_failures", "after"),
    ]
    holdout = ", ".join(map(str, dict.fromkeys(m.num_holdout for m in result.models.values())))
    models = {name: report.to_dict() for name, report in result.models.items()}
    return spec_table(models, spec, f"temperature fitted on {holdout} held-out training images")


def randomisation_table(result: RandomisationSummary) -> pd.DataFrame:
    """Spearman correlation of Grad-CAM maps as layers are re-initialised (``sanity.json``)."""
    rows = zip(result.steps, result.spearman_mean, result.spearman_std, strict=True)
    title = f"Spearman correlation with the trained model's maps ({result.num_images} images)"
    return table(("randomised up to", "mean", "std"), rows, title, formats={"mean": "signed"})


def positive_control_table(result: PositiveControl) -> pd.DataFrame:
    """The tied and untied models' accuracy, failures, mask share, pointing game (positive_control.json)."""
    title = (
        f"generated data, backgrounds tied to the class in {fmt(result.correlation, 'share')} of training "
        f"images (none at test); failures above confidence {result.threshold}"
    )
    spec = [
        ("test accuracy", "pct", "test_accuracy"),
        ("train accuracy", "pct", "train_accuracy"),
        ("failures", None, "num_failures"),
        ("mask share (failures)", None, "mask_share"),
        ("pointing game (failures)", "pct", "pointing_game"),
        ("mask share (all test images)", None, "mask_share_all"),
    ]
    notes = [f"a uniform map's mask share: {fmt(result.object_area_fraction)}"]
    return spec_table({m: entry.to_dict() for m, entry in result.models.items()}, spec, title, notes)


def _road_map_table(
    road: RoadTable, names: Sequence[str], labels: Sequence[str] | None = None
) -> pd.DataFrame:
    """A row per map of ``names`` (shown as ``labels``) of a ROAD table: the change in the class's
    probability per share of pixels removed, most then least relevant first."""
    shares = [f"{100 * f:.0f}%" for f in road.fractions]
    columns = ("map", *(f"most {s}" for s in shares), *(f"least {s}" for s in shares), "combined")
    body = [
        (label, *r.most_relevant_first, *r.least_relevant_first, r.combined)
        for label, r in zip(labels or names, (road.rows[name] for name in names), strict=True)
    ]
    return table(columns, body, formats=dict.fromkeys(columns[1:], "signed"))


def failure_road_table(report: FailureRoad) -> pd.DataFrame:
    """Notebook 03's ROAD table (:func:`analysis.faithfulness.failure_faithfulness`): Grad-CAM at
    each layer, each explainer at the compared layer and a random map (the floor), with the verdicts."""
    if report.num_images == 0:
        return note("no failures to score")
    layer = report.explainer_layer
    frame = _road_map_table(report, list(report.rows))  # in the order failure_faithfulness scored them
    frame.attrs["title"] = (
        f"ROAD on the {report.num_images} most confident of {report.num_failures} failures: "
        "change in the predicted class's probability"
    )
    best = {  # None where no layer or explainer was scored
        "most faithful Grad-CAM layer": report.best_layer,
        f"most faithful explainer at {layer}": report.best_explainer,
    }
    frame.attrs["notes"] = tuple(f"{what}: {name}" for what, name in best.items() if name is not None)
    return frame


def road_by_model_table(result: RoadByModel) -> pd.DataFrame:
    """Each model's Grad-CAM against the random floor by ROAD (``faithfulness.road_by_model``)."""
    if result.num_images == 0:
        return note("no images to score")
    parts = [
        _road_map_table(r, ["gradcam", "random"], [f"{m} Grad-CAM", f"{m} random"])
        for m, r in result.models.items()
    ]
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs.update(
        parts[0].attrs,
        title=f"ROAD on {result.num_images} images, each model's maps of its own prediction: change in "
        "that class's probability",
    )
    return frame


def positive_control_road_table(result: PositiveControl) -> pd.DataFrame:
    """ROAD's combined score of the positive control's models: Grad-CAM, a random map, the object mask."""
    columns = ("", "images", "Grad-CAM", "random", "object mask")
    roads = {name: entry.road for name, entry in result.models.items()}
    rows = [
        (n, r.num_images, *(r.rows[m].combined for m in ("gradcam", "random", "object")))
        for n, r in roads.items()
    ]
    title = (
        "ROAD combined score on each model's failures (higher: removing what the map ranks first hurts more "
        "than removing what it ranks last)"
    )
    notes = [
        "object mask as the map: how much more the prediction rests on the object than on the background"
    ]
    return table(columns, rows, title, notes, dict.fromkeys(columns[2:], "signed"))


def _by_category(by_category: dict[str, Any], title: str, notes: list[str]) -> pd.DataFrame:
    rows = [(c, *(by_category[g][c] for g in COUNT_KEYS)) for c in CATEGORIES]
    return table(_CATEGORY_COUNTS, rows, title, notes)


def human_label_tables(summary: HumanLabelsSummary | NotApplicable) -> list[pd.DataFrame]:
    """:func:`analysis.human_labels.human_labels_summary`: the failures by category, of each model."""
    if isinstance(summary, NotApplicable):
        return [note(str(summary))]
    models = summary.models()  # augmented: once stage 05 has run
    columns = ("category", *(f"{m}{s}" for m in models for s in ("", " enrichment")))
    rows = [(c, *(v for m in models.values() for v in (m.counts[c], m.enrichment[c]))) for c in CATEGORIES]
    title = "confident failures by category (enrichment: against the test set)"
    frames = [table(columns, rows, title, formats={f"{m} enrichment": "times" for m in models})]
    if summary.by_category is not None:  # once stage 05 has run
        flagged = summary.fixed_label_errors
        warning = f"{flagged} 'fixed' failure(s) are verified label errors: the augmented model now agrees "
        warning += "with a wrong label"
        title = "the confident failures by category: fixed, kept or new in the augmented model"
        frames.append(_by_category(summary.by_category, title, [warning] * bool(flagged)))
    spec = [(f"{m}: accuracy against the human plurality label", "pct", m) for m in models]
    return [*frames, spec_table({"value": summary.accuracy_vs_human_plurality}, spec)]


# --- human labels (notebooks 02, 05, 06) ------------------------------------------------------------


def human_failure_table(report: HumanFailureReport | NotApplicable, title: str = "") -> pd.DataFrame:
    """:func:`analysis.human_labels.human_failure_report`: the confident failures by category."""
    if isinstance(report, NotApplicable):
        return note(str(report))
    counts, n, base = report.counts, report.num_failures, report.base_shares()
    rows = [(c, counts[c], counts[c] / n if n else None, base[c], report.enrichment[c]) for c in CATEGORIES]
    title = title or (
        f"the {n} confident failures by category (ambiguous: the given label's human share "
        f"< {report.ambiguity_threshold})"
    )
    notes = (
        f"accuracy against the given labels {fmt(report.accuracy, 'pct')}, against the human "
        f"plurality {fmt(report.accuracy_vs_human_plurality, 'pct')}",
        "rank correlation of the model's confidence with the human share of its prediction: "
        + fmt(report.spearman_confidence_vs_human_share),
    )
    formats = {"share": "pct", "in the test set": "pct", "enrichment": "times"}
    return table(
        ("category", "failures", "share", "in the test set", "enrichment"), rows, title, notes, formats
    )


def human_comparison_tables(result: CategoryComparison | NotApplicable) -> list[pd.DataFrame]:
    """:func:`analysis.human_labels.comparison_by_category`: the augmented model's failures by
    category, and fixed / kept / new by category with every fixed verified label error."""
    if isinstance(result, NotApplicable):
        return [note(str(result))]
    flagged, augmented = result.fixed_label_errors, result.augmented
    notes = [
        f"WARNING: {len(flagged)} 'fixed' failure(s) are verified label errors: the augmented model "
        "now agrees with a wrong label:"
    ] * bool(flagged) + [
        f"  image {f.index}: labelled '{f.given}', humans say '{f.human_plurality}' (given "
        f"label's share {f.given_share:.2f}, verification {f.mturk_given_votes} for it)"
        for f in flagged
    ]
    title = "the baseline's failures, fixed / kept, and the augmented model's new ones, by category"
    return [
        human_failure_table(augmented, f"augmented model: its {augmented.num_failures} confident failures"),
        _by_category(
            result.by_category, title, notes or ["no verified label error among the fixed failures"]
        ),
    ]


def human_calibration_table(result: HumanCalibration | NotApplicable) -> pd.DataFrame:
    """:func:`analysis.human_labels.calibration_against_humans`: each model's cross-entropy against the
    CIFAR-10H votes, as trained and temperature-scaled, or why no human labels apply."""
    if isinstance(result, NotApplicable):
        return note(str(result))
    # temperature and "after" are None for a model the calibration skipped
    rows = [(name, m.before, m.temperature, m.after) for name, m in result.models.items()]
    title = (
        "cross-entropy against the CIFAR-10H vote distribution (nats, lower = more human-like "
        f"uncertainty; the humans' own entropy is {fmt(result.human_entropy, 'nats')})"
    )
    columns = ("model", "as trained", "temperature", "scaled")
    return table(columns, rows, title, formats={"as trained": "nats", "scaled": "nats"})


# --- seed replicates (notebook 07, the replicate report) ---------------------------------------------


def seed_accuracy_table(accuracy: AccuracySummary) -> pd.DataFrame:
    """Both models' test accuracy over seeds and their paired difference: mean, sd and 95 % t-interval,
    two decimals: seeds differ by tenths of a point."""
    columns = ("", "mean", "sd", "95 % interval from", "to")
    spreads = {
        "baseline": accuracy.baseline,
        "augmented": accuracy.augmented,
        "augmented - baseline": accuracy.difference,
    }
    rows = [(label, s.mean, s.sd, s.low, s.high) for label, s in spreads.items()]
    p_value = accuracy.difference.p_value  # sd, low, high and p_value are None with one seed
    notes = [
        "one seed: no interval" if p_value is None else f"paired t-test on the difference: p = {p_value:.3g}"
    ]
    title = f"test accuracy over seeds {', '.join(map(str, accuracy.seeds))}"
    return table(columns, rows, title, notes, dict.fromkeys(columns[1:], "pct2"))


def noise_floor_table(means: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Mean fixed / kept / new between two baseline seeds (the reseed, two seeds at least) beside
    baseline -> augmented (``noise_floor.json``'s ``mean``)."""
    rows = [
        (kind, *(means[kind][k] for k in COUNT_KEYS)) for kind in ("reseed", "augmentation") if kind in means
    ]
    title = "mean fixed / kept / new: a reseed of the baseline against augmentation"
    return table(("comparison", *_CATEGORY_COUNTS[1:]), rows, title)


def noise_floor_tables(floor: NoiseFloor) -> list[pd.DataFrame]:
    """:func:`analysis.seed_analysis.noise_floor`: the mean counts and each compared pair's counts."""
    pairs = [
        (f"{r.source} → {r.target}", *(r.counts[k] for k in COUNT_KEYS))
        for r in floor.reseed + floor.augmentation
    ]
    return [noise_floor_table(floor.mean), table(("each pair", *COUNT_KEYS), pairs)]


def stability_table(stability: FailureStability) -> pd.DataFrame:
    """:func:`analysis.seed_analysis.failure_stability` as a table of quantities."""
    rows = [
        ("confident failures per seed", stability.failures_per_seed),
        # keys as strings, as the file holds them
        ("images failing in k seeds", {str(k): n for k, n in stability.images_failing_in_k_seeds.items()}),
        ("mean Jaccard overlap between seeds", stability.mean_jaccard),
        (f"consistent failures (in ≥ {stability.consistent_min_seeds} seeds)", len(stability.consistent)),
    ]
    return table(KV, rows)


def describe_replicates(summary: ReplicateSummary) -> str:
    """:func:`analysis.seed_analysis.replicate_summary` in words: accuracy over seeds, the noise floor
    and how much the failure sets overlap."""
    parts = [text(seed_accuracy_table(summary.accuracy))]
    if "reseed" in summary.noise_floor:  # two seeds at least
        fixed = fmt(summary.excess_over_reseed["fixed"], "signed")
        parts.append(
            f"{text(noise_floor_table(summary.noise_floor))}\n"
            f"fixed beyond what a reseed alone gives: {fixed} images on average"
        )
    if summary.mean_jaccard is not None:  # two seeds at least
        parts.append(
            f"failure sets overlap (mean Jaccard between seeds): {summary.mean_jaccard:.2f}; "
            f"{summary.consistent_failures} of {summary.ever_failing} ever-failing images fail in at "
            "least half the seeds (and two at least)"
        )
    return "\n\n".join(parts)


def category_mix_table(mix: CategoryMix | NotApplicable) -> pd.DataFrame:
    """:meth:`workflow.stages.Replicates.human_label_mix`: the count and share of each category among
    the consistent and among the one-seed failures, or why no human labels apply."""
    if isinstance(mix, NotApplicable):
        return note(str(mix))
    groups = {"consistent": mix.consistent, "one_seed": mix.one_seed}
    totals = {g: sum(counts.values()) for g, counts in groups.items()}

    def count_and_share(group: str, category: str) -> tuple[int, float | None]:
        n = groups[group].get(category, 0)  # optional by design: a group lists only the categories it has
        return n, n / totals[group] if totals[group] else None

    categories = sorted({c for counts in groups.values() for c in counts})
    rows = [(c, *count_and_share("consistent", c), *count_and_share("one_seed", c)) for c in categories]
    rows.append(("all", totals["consistent"], None, totals["one_seed"], None))
    columns = ("category", "consistent", "consistent share", "one seed only", "one-seed share")
    return table(columns, rows, formats=dict.fromkeys(columns[2::2], "share"))


# --- the claims ledger (notebooks 05 and 07, run_all.py, the report) --------------------------------


def _claim_effect(r: ClaimResult) -> str:
    """``effect [low, high]``: a level (a claim with a band) in percent, a difference in points."""
    kind, scale, unit = ("{:.1%}", 1, "") if r.rule.band else ("{:+.1f}", 100, " pts")
    low, mid, high = (
        "-" if math.isnan(v) else kind.format(scale * v) for v in (r.ci_low, r.effect, r.ci_high)
    )
    return f"{mid}{unit if mid != '-' else ''} [{low}, {high}]"


def _on_real_data(rows: Sequence[ClaimResult]) -> list[ClaimResult]:
    return [r for r in rows if not r.population.startswith(BENCH)]


def claims_table(rows: Sequence[ClaimResult], title: str = "the claims ledger") -> pd.DataFrame:
    """The ledger (:mod:`cifar_helpers.analysis.claims`) on the run's data, a row per
    :class:`ClaimResult`; the bench's rows are :func:`bench_table`'s. The notes say which interval
    method and which verdict rule each claim uses, and how to read "inconclusive"."""
    rows = _on_real_data(rows)
    if not rows:
        return note("no claims tested yet: run 03_gradcam, 05_reevaluation and 06_stress_tests")

    def claims_by(key: Any) -> list[str]:
        groups: dict[str, list[str]] = {}
        for r in rows:
            number = r.claim.split(".")[0]
            if number not in groups.setdefault(key(r), []):
                groups[key(r)].append(number)
        return [f"{k} (claim {', '.join(v)})" for k, v in groups.items()]

    body = [
        (
            r.claim,
            r.test
            if r.primary and r.population in (ALL_IMAGES, ALL_FAILURES)
            else f"{r.test} [{r.population}{'' if r.primary else ', secondary'}]",
            r.control,
            _claim_effect(r),
            f"{r.verdict} ({r.precondition})" if r.precondition else r.verdict,
        )
        for r in rows
    ]
    notes = [
        "95 % intervals: " + "; ".join(claims_by(lambda r: r.method)),
        "verdicts, by rules fixed before any number: " + "; ".join(claims_by(lambda r: r.rule.describe())),
        "inconclusive: the interval is too wide to tell an effect that matters from none; more test "
        "images, failures or seeds may decide it. It is not evidence against the claim. A verdict with a "
        "reason in brackets was withheld: the test's instrument failed its own check, or the test did "
        "not pass the planted-cause bench. A claim is judged on its primary population, declared "
        "before the numbers (the model errors where human labels apply); secondary rows are context.",
    ]
    columns = ("claim", "test", "control", "effect [95 % CI]", "verdict")
    return table(columns, body, title, notes)


def claims_text(rows: Sequence[ClaimResult], width: int = 100) -> str:
    """The ledger for a terminal ``width`` columns wide (``run_all.py``'s summary): each claim's words
    once, then a line per test, and :func:`claims_table`'s notes, every line wrapped to ``width``."""
    bench = _bench_lines(rows)
    rows = _on_real_data(rows)
    frame = claims_table(rows)
    if not rows:
        return text(frame)
    effects = [_claim_effect(r) for r in rows]
    effect_width, verdict_width = max(map(len, effects)), max(len(r.verdict) for r in rows)
    left = width - 6 - effect_width - verdict_width  # the test's words; 2 spaces before each column
    lines, claim = [frame.attrs["title"]], None
    for r, test, effect in zip(rows, frame["test"], effects, strict=True):
        if r.claim != claim:
            lines += textwrap.wrap(r.claim, width)
            claim = r.claim
        words = textwrap.wrap(f"{test}, vs {r.control}", left)
        lines.append(f"  {words[0]:<{left}}  {effect:>{effect_width}}  {r.verdict}")
        lines += [f"    {w}" for w in textwrap.wrap(" ".join(words[1:]), left - 2)]
        if r.precondition:
            withheld = f"verdict withheld: {r.precondition}"
            lines += textwrap.wrap(withheld, width, initial_indent="    ", subsequent_indent="    ")
    notes = [*frame.attrs["notes"], *bench]
    return "\n".join([*lines, *(textwrap.fill(n, width, subsequent_indent="  ") for n in notes)])


def _bench_lines(rows: Sequence[ClaimResult]) -> list[str]:
    """Which claim tests passed the planted-cause bench among ``rows``, and why the others did not."""
    reasons = bench_gate(rows).reasons
    if not reasons:
        return ["planted-cause bench: not run yet (06_stress_tests)"]
    passed = [str(k) for k, reason in sorted(reasons.items()) if not reason]
    many = "s" if len(passed) > 1 else ""
    lines = [f"planted-cause bench: passed by the test{many} of claim{many} {', '.join(passed)}"]
    if not passed:
        lines = ["planted-cause bench: passed by no test"]
    return lines + [f"claim {k}: {reason}" for k, reason in sorted(reasons.items()) if reason]


def bench_table(rows: Sequence[ClaimResult]) -> pd.DataFrame:
    """The planted-cause bench (:mod:`cifar_helpers.analysis.claims.bench`) as a matrix: a row per
    claim test, a column per planted cause, each cell that test's verdict and effect on that cause."""
    bench = [r for r in rows if r.population.startswith(BENCH)]
    if not bench:
        return note("the planted-cause bench has not run yet: run 06_stress_tests")
    causes = list(dict.fromkeys(r.population.removeprefix(BENCH) for r in bench))
    cells = {(r.claim, r.population.removeprefix(BENCH)): f"{r.verdict}, {_claim_effect(r)}" for r in bench}
    claims = list(dict.fromkeys(r.claim for r in bench))
    # optional by design: "-" where a test did not run on a cause
    body = [(claim, *(cells.get((claim, cause), "-") for cause in causes)) for claim in claims]
    own = ", ".join(f"claim {k}: {cause}" for k, cause in CAUSE_OF_CLAIM.items())
    notes = [
        f"each test's own cause (where it must say supported, and nowhere else): {own}",
        *_bench_lines(rows),
    ]
    title = "the planted-cause bench: every claim test on every planted cause"
    return table(("test of", *causes), body, title, notes)


def tile_shuffle_table(results: Mapping[str, TileShuffle]) -> pd.DataFrame:
    """Accuracy on tile-shuffled images per model (``{model: analysis.claims.shuffled_accuracy(...)}``)."""
    first = next(iter(results.values()))
    columns = ("model", "clean", *(f"{tile}-px tiles" for tile in first.tiles))
    rows = [(name, r.clean, *r.tiles.values()) for name, r in results.items()]
    title = f"accuracy on tile-shuffled stress images (chance {first.chance:.0%})"
    return table(columns, rows, title, formats=dict.fromkeys(columns[1:], "pct"))


def train_step_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """The training step a stage used and why (``history.json``'s ``environment.train_step``, from
    :meth:`core.step_choice.StepChoice.record`): a row per candidate measured, with its rate."""
    title = f"training step: {record['step']} ({record['how']})"
    if not record["candidates"]:
        return note(f"{title}; no candidate rates measured on this machine")
    rows = [
        (
            c["step"] + (" (chosen)" if c["step"] == record["step"] else ""),
            None if c["images_per_second"] is None else round(c["images_per_second"]),
            c["setup_seconds"] if c["seconds_per_step"] is not None else None,
            c["error"] or "",
        )
        for c in record["candidates"]
    ]
    notes = [f"probe: {record['probe_seconds']:.0f} s; the run planned {record['planned_steps']} steps"]
    columns = ("candidate", "images/s", "one-off seconds (compiling)", "not measured because")
    return table(columns, rows, title, notes)


def surround_pull_table(row: ClaimResult, classes: Sequence[str]) -> pd.DataFrame:
    """Claim 3's *pull* by surround class (``details.follows_donor_by_class`` of a background row): how
    often a failure given another class's surround was then called that class."""
    pull = row.details["follows_donor_by_class"]
    rows = sorted(zip(classes, pull, strict=True), key=lambda r: 1 if math.isnan(r[1]) else -r[1])
    title = f"the pull of a surround, by its class ({row.population})"
    notes = [f"all classes: {fmt(row.details['other_follows_donor'], 'pct')}"]
    columns = ("surround of", "prediction became that class")
    return table(columns, rows, title, notes, formats={columns[1]: "pct"})
