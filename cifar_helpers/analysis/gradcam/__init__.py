"""Batched Grad-CAM on any convolutional layer (``cam``), measures of where the maps put their mass
(``attention``), and what notebooks 03 and 05 record, each in one call (``stage_reports``)."""

from .attention import (
    DeletionCurve,
    attention_measures,
    deletion_curve,
    mask_share,
    periphery_share,
    pointing_game,
)
from .cam import DEFAULT_LAYER, FailureMaps, explain_images, grad_cam, gradcam_for_failures, resolve_layer
from .stage_reports import (
    AttentionReport,
    compare_attention,
    describe_attention,
    describe_attention_change,
    failure_attention_report,
    matched_controls,
)
