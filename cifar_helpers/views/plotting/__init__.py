"""Every figure of the project: each ``plot_*`` function returns a matplotlib Figure (end a cell with it
to show it, or :func:`cifar_helpers.rundir.artifacts.save_figure` it)."""

from .common import plot_class_samples
from .explanations import (
    plot_before_after_gradcam,
    plot_deletion_curves,
    plot_failure_grid,
    plot_gradcam_pairs,
    plot_map_columns,
    plot_periphery_shares,
    plot_road_curves,
)
from .metrics import (
    plot_confidence_histogram,
    plot_confused_pairs,
    plot_confusion_matrix,
    plot_failure_comparison,
    plot_per_class_accuracy,
    plot_training_curves,
)
from .stress import (
    plot_corruption_curves,
    plot_positive_control,
    plot_randomisation_test,
    plot_reliability_diagram,
    plot_severity_grid,
)
