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
            f"train - test gap: {100 * gap:.1f} percentage points",
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
