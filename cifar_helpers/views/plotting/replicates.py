"""Figures of the replicate stage (07) from the results of :mod:`cifar_helpers.analysis.seed_analysis`:
accuracy over seeds, the reseed noise floor, failure stability."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cifar_helpers.analysis.claims.rules import MeanInterval
from cifar_helpers.analysis.seed_analysis import AccuracyOverSeeds, FailureStability, NoiseFloor

from .common import CORRECT_COLOR, MODEL_COLORS, NEUTRAL_COLOR, WRONG_COLOR, new_figure, styled

_GROUPS = (
    ("fixed", "fixed", CORRECT_COLOR),
    ("kept_same", "kept\n(same)", "#fdae61"),
    ("kept_different", "kept\n(other)", "#f46d43"),
    ("new", "new", WRONG_COLOR),
)


def _mean_ci(ax: Axes, x: float, entry: MeanInterval) -> None:
    """A black diamond at ``entry``'s mean with its 95 % interval, in percent (nothing for one seed)."""
    if entry.sd is not None:
        low, high = 100 * (entry.mean - entry.low), 100 * (entry.high - entry.mean)
        ax.errorbar(x, 100 * entry.mean, yerr=[[low], [high]], fmt="D", color="black", capsize=5)


@styled
def plot_seed_accuracies(accuracy: AccuracyOverSeeds) -> Figure:
    """Each seed's test accuracy of both models (dots joined per seed) and their paired differences, each
    with mean and 95 % interval, from :func:`cifar_helpers.analysis.seed_analysis.accuracy_over_seeds`."""
    seeds = list(accuracy.seeds)
    fig = new_figure(10, 3.8)
    ax_acc, ax_diff = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
    base, aug = (100 * np.asarray(accuracy.per_seed[m], dtype=float) for m in ("baseline", "augmented"))
    for i, (interval, values) in enumerate(((accuracy.baseline, base), (accuracy.augmented, aug))):
        ax_acc.scatter(np.full(len(values), i), values, color=MODEL_COLORS[i], zorder=3)
        _mean_ci(ax_acc, i + 0.15, interval)
    for b, a in zip(base, aug, strict=True):
        ax_acc.plot([0, 1], [b, a], color=NEUTRAL_COLOR, linewidth=0.8, zorder=1)
    ax_acc.set_xticks([0, 1], ["baseline", "augmented"])
    ax_acc.set_xlim(-0.5, 1.5)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title(f"{len(seeds)} seeds: each dot a seed, ◆ mean with 95 % CI")

    diff = accuracy.difference
    values = 100 * np.asarray(diff.differences, dtype=float)
    ax_diff.axhline(0, color=NEUTRAL_COLOR, linewidth=1)
    ax_diff.scatter(np.zeros(len(values)), values, color=MODEL_COLORS[1], zorder=3)
    for seed, value in zip(seeds, values, strict=True):
        ax_diff.annotate(f"seed {seed}", (0, value), xytext=(6, 0), textcoords="offset points", fontsize=8)
    _mean_ci(ax_diff, 0.4, diff.interval)
    ax_diff.set_xlim(-0.5, 1.0)
    ax_diff.set_xticks([])
    ax_diff.set_ylabel("augmented − baseline (points)")
    p = diff.p_value
    ax_diff.set_title("Paired difference" + (f" (paired t-test p = {p:.2g})" if p is not None else ""))
    return fig


@styled
def plot_noise_floor(floor: NoiseFloor) -> Figure:
    """Fixed / kept / new of a reseed (baseline seed a -> seed b) beside augmentation (baseline ->
    augmented, one seed) from :func:`cifar_helpers.analysis.seed_analysis.noise_floor`: mean counts as
    bars, each comparison as a dot."""
    fig = new_figure(9, 3.8)
    ax = fig.subplots()
    x = np.arange(len(_GROUPS))
    kinds = [
        ("reseed", floor.reseed, "reseed (baseline → baseline)", 0),
        ("augmentation", floor.augmentation, "augmentation (same seed)", 1),
    ]
    width = 0.38
    for kind, rows, label, k in kinds:
        if not rows:
            continue
        offset = (k - 0.5) * width
        means = [floor.mean[kind][key] for key, _, _ in _GROUPS]
        ax.bar(x + offset, means, width, color=MODEL_COLORS[k], alpha=0.75, label=label)
        for j, (key, _, _) in enumerate(_GROUPS):
            values = [row.counts[key] for row in rows]
            ax.scatter(np.full(len(values), x[j] + offset), values, color="black", s=12, zorder=3)
    ax.set_xticks(x, [label for _, label, _ in _GROUPS])
    ax.set_ylabel("images (mean over comparisons; dots: each)")
    ax.set_title("How much of fixed / kept / new does a reseed alone give?")
    ax.legend(loc="upper right", fontsize=8)
    ax.margins(y=0.15)
    return fig


@styled
def plot_failure_stability(stability: FailureStability) -> Figure:
    """How many seeds each confident failure holds in, and the Jaccard overlap of the seeds' failure sets,
    from :func:`cifar_helpers.analysis.seed_analysis.failure_stability`."""
    seeds = list(stability.seeds)
    histogram = stability.images_failing_in_k_seeds
    fig = new_figure(10, 4.0)
    ax_hist, ax_jac = fig.subplots(1, 2)
    ks = np.arange(1, len(seeds) + 1)
    needed = stability.consistent_min_seeds
    colors = [WRONG_COLOR if k >= needed else NEUTRAL_COLOR for k in ks]
    counts = [histogram[int(k)] for k in ks]
    ax_hist.bar(ks, counts, color=colors)
    for k, n in zip(ks, counts, strict=True):
        ax_hist.text(k, n, str(n), ha="center", va="bottom", fontsize=9)
    ax_hist.set_xticks(ks)
    ax_hist.set_xlabel("seeds in which the image is a confident failure")
    ax_hist.set_ylabel("test images")
    ax_hist.set_title(f"{stability.model}: red = consistent (≥ {needed} of {len(seeds)} seeds)")
    ax_hist.margins(y=0.15)

    matrix = np.asarray(stability.jaccard, dtype=float)
    image = ax_jac.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    labels = [str(s) for s in seeds]
    ax_jac.set_xticks(range(len(seeds)), labels)
    ax_jac.set_yticks(range(len(seeds)), labels)
    for i in range(len(seeds)):
        for j in range(len(seeds)):
            color = "black" if matrix[i, j] > 0.6 else "white"
            ax_jac.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color=color, fontsize=8)
    ax_jac.set(xlabel="seed", ylabel="seed")
    ax_jac.set_title("Jaccard overlap of the failure sets")
    fig.colorbar(image, ax=ax_jac, fraction=0.046)
    return fig
