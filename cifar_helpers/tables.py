"""Short, readable text for notebooks and ``run_all.py``: what a stage found, in a few lines.

Counts are printed as counts ("412/500 correct") and rates to one decimal: these are fixed by the
seed on any CPU, so the nbval reference outputs stay valid across machines, where 8-digit losses
would not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .config import PROFILES, RunConfig


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


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


def describe_data(summary: dict[str, Any]) -> str:
    """One paragraph about a dataset, from :meth:`cifar_helpers.data.CifarData.summary`."""
    n = summary["num_images"]
    classes = summary["classes"]
    lines = [
        f"source: {summary['source']}  ({len(classes)} classes: {', '.join(classes)})",
        f"images: {n['train']:,} training, {n['holdout']:,} held out for calibration, {n['test']:,} test",
    ]
    per_class = summary["counts"]["train"]
    low, high = min(per_class.values()), max(per_class.values())
    lines.append(f"training images per class: {low:,}" + (f" to {high:,}" if high != low else ""))
    return "\n".join(lines)


def describe_metrics(metrics: dict[str, Any], num_test: int, num_train: int) -> str:
    """Accuracy as counts and percentages, and the train-test gap, from a stage's ``metrics.json``."""
    test_correct = round(metrics["test_accuracy"] * num_test)
    train_correct = round(metrics["train_accuracy"] * num_train)
    gap = metrics["train_test_gap"]
    return "\n".join(
        [
            f"test accuracy:  {test_correct}/{num_test} correct ({_pct(metrics['test_accuracy'])})",
            f"train accuracy: {train_correct}/{num_train} correct ({_pct(metrics['train_accuracy'])})",
            f"train - test gap: {100 * gap:.1f} percentage points (both evaluated in eval mode, "
            "without augmentation)",
        ]
    )


def per_class_table(per_class: dict[str, dict[str, float | None]]) -> str:
    """Per-class accuracy of one or more models: ``{model: {class: accuracy}}`` -> aligned table."""
    models = list(per_class)
    classes = list(next(iter(per_class.values())))
    lines = [f"{'class':<12}" + "".join(f"{m:>12}" for m in models)]
    for name in classes:
        lines.append(f"{name:<12}" + "".join(f"{_pct(per_class[m][name]):>12}" for m in models))
    return "\n".join(lines)


def describe_failures(summary: dict[str, Any]) -> str:
    """The failure counts of :func:`cifar_helpers.failures.failure_summary`, in words."""
    n, errors, high = summary["num_images"], summary["num_errors"], summary["num_high_confidence"]
    share = summary["share_of_errors_high_confidence"]
    lines = [
        f"{errors}/{n} test images misclassified; {high} of them with confidence > {summary['threshold']}",
        f"share of errors made with high confidence: {_pct(share)}",
    ]
    pairs = summary["most_confused_pairs"][:5]
    if pairs:
        lines.append("most frequent high-confidence confusions (true -> predicted):")
        lines += [f"  {p['true']} -> {p['predicted']}: {p['count']}" for p in pairs]
    return "\n".join(lines)


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
    """Notebook 03's measures (:func:`cifar_helpers.gradcam.failure_attention_report`) in words."""
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


def describe_comparison(comparison: dict[str, Any]) -> str:
    """The baseline -> augmented comparison (``FailureComparison.to_dict()``) in words."""
    counts = comparison["counts"]
    lines = [
        f"{'':<11}{'test acc':>10}{'train-test gap':>16}",
        f"{'baseline':<11}{_pct(comparison['baseline_accuracy']):>10}{_pct(comparison['baseline_gap']):>16}",
        f"{'augmented':<11}{_pct(comparison['augmented_accuracy']):>10}{_pct(comparison['augmented_gap']):>16}",
        "",
        f"of the baseline's {counts['baseline_failures']} high-confidence failures "
        f"(confidence > {comparison['threshold']}), the augmented model",
        f"  fixed            {counts['fixed']:>5}",
        f"  kept (same)      {counts['kept_same']:>5}   still wrong, with the same wrong class",
        f"  kept (different) {counts['kept_different']:>5}   still wrong, with another wrong class",
        f"and created {counts['new']} new high-confidence failures ({counts['augmented_failures']} in all)",
    ]
    return "\n".join(lines)


def describe_attention_change(
    measures: dict[str, Any], names: tuple[str, str] = ("baseline", "augmented")
) -> str:
    """Notebook 05's periphery comparison (:func:`cifar_helpers.gradcam.compare_attention`) in words."""
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


def describe_corruptions(result: dict[str, Any]) -> str:
    """Accuracy under each corruption (mean over severities 1-5) per model, from ``corruptions.json``."""
    models = list(result["models"])
    lines = [
        f"{result['num_images']} test images, {len(result['corruption_names'])} corruptions x "
        f"{len(result['severities'])} severities",
        f"{'':<16}" + "".join(f"{m:>12}" for m in models),
        f"{'clean':<16}" + "".join(f"{_pct(result['models'][m]['clean_accuracy']):>12}" for m in models),
    ]
    for name in result["corruption_names"]:
        cells = "".join(
            f"{_pct(result['models'][m]['corruptions'][name]['mean_accuracy']):>12}" for m in models
        )
        lines.append(f"{name:<16}{cells}")
    lines.append(
        f"{'mean corrupted':<16}"
        + "".join(f"{_pct(result['models'][m]['mean_corruption_accuracy']):>12}" for m in models)
    )
    return "\n".join(lines)


def describe_calibration(reports: dict[str, Any]) -> str:
    """ECE and NLL before and after temperature scaling per model, from ``calibration.json``."""
    lines = []
    for model, report in reports.items():
        if not isinstance(report, dict) or "temperature" not in report:
            lines.append(f"{model}: skipped ({report})")
            continue
        before, after, failures = report["before"], report["after"], report["high_confidence_failures"]
        lines += [
            f"{model}: temperature {report['temperature']:.2f} (fitted on {report['num_holdout']} held-out "
            "training images)",
            f"  ECE {100 * before['ece']:.1f} % -> {100 * after['ece']:.1f} %, "
            f"NLL {before['nll']:.2f} -> {after['nll']:.2f}",
            f"  failures with confidence > {report['threshold']}: {failures['before']} before, "
            f"{failures['still_above_after']} of them still above it after scaling",
        ]
    return "\n".join(lines)


def describe_randomisation(result: dict[str, Any]) -> str:
    """Spearman correlation of Grad-CAM maps as layers are re-initialised, from ``sanity.json``."""
    lines = [f"Spearman correlation with the trained model's maps ({result['num_images']} images):"]
    for step, mean in zip(result["steps"], result["spearman_mean"], strict=True):
        lines.append(f"  {step:<12}{'-' if mean is None else f'{mean:+.2f}':>6}")
    return "\n".join(lines)


def describe_positive_control(result: dict[str, Any]) -> str:
    """Mask share and pointing game of the tied and untied models, from ``positive_control.json``."""
    lines = [
        f"generated data, backgrounds tied to the class in {100 * result['correlation']:.0f} % of training "
        f"images (none at test); failures above confidence {result['threshold']}",
        f"{'':<9}{'test acc':>10}{'failures':>10}{'mask share':>12}{'pointing game':>15}",
    ]
    for name in ("tied", "untied"):
        r = result[name]
        lines.append(
            f"{name:<9}{_pct(r['test_accuracy']):>10}{r['num_failures']:>10}{r['mask_share']:>12.2f}"
            f"{_pct(r['pointing_game']):>15}"
        )
    lines.append(f"uniform map: mask share {result['object_area_fraction']:.2f}")
    return "\n".join(lines)


def _road_rows(table: dict[str, Any], names: Sequence[str], labels: Sequence[str] | None = None) -> list[str]:
    """Aligned ROAD rows: the change at each fraction, most then least relevant first, and combined."""
    fractions = table["fractions"]
    cells = "".join(f"{100 * f:>6.0f}%" for f in fractions)
    lines = [
        f"{'':<18}{'most relevant removed first':<{7 * len(fractions) + 3}}"
        f"{'least relevant removed first':<{7 * len(fractions) + 3}}combined",
        f"{'map':<18}{cells}   {cells}",
    ]
    for name, label in zip(names, labels or names, strict=True):
        row = table["rows"][name]
        morf = "".join(f"{v:>+7.2f}" for v in row["most_relevant_first"])
        lerf = "".join(f"{v:>+7.2f}" for v in row["least_relevant_first"])
        lines.append(f"{label:<18}{morf}   {lerf}   {row['combined']:>+6.2f}")
    return lines


def describe_road(report: dict[str, Any]) -> str:
    """Notebook 03's ROAD table (:func:`cifar_helpers.faithfulness.failure_faithfulness`) in words.

    Rows: Grad-CAM at each layer, each explainer at the compared layer, and a random map (the floor).
    Values: mean change in the predicted class's probability after removing (and imputing) that share
    of pixels; a faithful map falls fast when the most relevant go and little when the least relevant go.
    """
    if report["num_images"] == 0:
        return "no failures to score"
    layer = report["explainer_layer"]
    names = [f"gradcam@{name}" for name in report["layers"]]
    names += [f"{e}@{layer}" for e in report["explainers"] if f"{e}@{layer}" not in names]
    names.append("random")
    lines = [
        f"ROAD on the {report['num_images']} most confident of {report['num_failures']} failures: change in "
        "the predicted class's probability",
        *_road_rows(report, names),
    ]
    rows = report["rows"]
    floor = rows["random"]["combined"]
    if report["best_layer"] is not None:
        scores = ", ".join(f"{name} {rows[f'gradcam@{name}']['combined']:+.2f}" for name in report["layers"])
        lines.append(
            f"most faithful Grad-CAM layer: {report['best_layer']} (combined {scores}; random {floor:+.2f})"
        )
    if report["best_explainer"] is not None:
        best = rows[f"{report['best_explainer']}@{layer}"]["combined"]
        lines.append(f"most faithful explainer at {layer}: {report['best_explainer']} (combined {best:+.2f})")
    return "\n".join(lines)


def describe_road_by_model(result: dict[str, Any]) -> str:
    """Each model's Grad-CAM against the random floor by ROAD (``faithfulness.road_by_model``)."""
    if result["num_images"] == 0:
        return "no images to score"
    models = result["models"]
    first = next(iter(models.values()))
    lines = [
        f"ROAD on {result['num_images']} images, each model's maps of its own prediction: change in "
        "that class's probability",
        *_road_rows(first, [])[:2],
    ]
    for name, table in models.items():
        lines += _road_rows(table, ["gradcam", "random"], [f"{name} Grad-CAM", f"{name} random"])[2:]
    return "\n".join(lines)


def describe_positive_control_road(result: dict[str, Any]) -> str:
    """ROAD of the positive control's two models (``positive_control.json``), one line per model."""
    lines = [
        "ROAD combined score on each model's failures (higher: removing what the map ranks first hurts "
        "more than removing what it ranks last)",
        f"{'':<9}{'images':>8}{'Grad-CAM':>10}{'random':>9}{'object mask':>13}",
    ]
    for name in ("tied", "untied"):
        road = result[name].get("road")
        if road is None:
            return "no ROAD numbers in this result (computed by an older version)"
        rows = road["rows"]
        cells = "".join(
            f"{'-' if rows[r]['combined'] is None else format(rows[r]['combined'], '+.2f'):>{w}}"
            for r, w in (("gradcam", 10), ("random", 9), ("object", 13))
        )
        lines.append(f"{name:<9}{road['num_images']:>8}{cells}")
    lines.append(
        "object mask as the map: how much more the prediction rests on the object than on the background"
    )
    return "\n".join(lines)
