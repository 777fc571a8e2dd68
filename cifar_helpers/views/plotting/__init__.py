"""Every figure of the project. Each ``plot_*`` function returns a matplotlib Figure and never calls
``plt.show``: end a notebook cell with the figure to show it, or save it with
:func:`cifar_helpers.rundir.artifacts.save_figure`. The overlay functions return uint8 RGB arrays.

Submodules: ``core`` (style, input checks, overlays, image grids), ``metrics`` (curves, confusion
matrix, accuracies, failure counts), ``explanations`` (failure grids and Grad-CAM figures),
``stress`` (corruptions, calibration, sanity check, positive control), ``faithfulness`` (ROAD
curves, maps side by side).
"""

from .core import (
    CORRECT_COLOR,
    MODEL_COLORS,
    WRONG_COLOR,
    NotebookFigure,
    figure_to_png_bytes,
    overlay_heatmap,
    plot_class_samples,
    upscale_image,
)
from .explanations import (
    plot_before_after_gradcam,
    plot_deletion_curves,
    plot_failure_grid,
    plot_gradcam_pairs,
    plot_periphery_shares,
)
from .faithfulness import plot_map_columns, plot_road_curves
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

__all__ = [
    "CORRECT_COLOR",
    "MODEL_COLORS",
    "WRONG_COLOR",
    "NotebookFigure",
    "figure_to_png_bytes",
    "overlay_heatmap",
    "plot_before_after_gradcam",
    "plot_class_samples",
    "plot_confidence_histogram",
    "plot_confused_pairs",
    "plot_confusion_matrix",
    "plot_corruption_curves",
    "plot_deletion_curves",
    "plot_failure_comparison",
    "plot_failure_grid",
    "plot_gradcam_pairs",
    "plot_map_columns",
    "plot_per_class_accuracy",
    "plot_periphery_shares",
    "plot_positive_control",
    "plot_randomisation_test",
    "plot_reliability_diagram",
    "plot_road_curves",
    "plot_severity_grid",
    "plot_training_curves",
    "upscale_image",
]
