"""Batched Grad-CAM on any convolutional layer, and measures of where the maps put their mass.

``cam``: the computation (:func:`grad_cam` on normalised images, :func:`gradcam_for_failures` and
:func:`explain_images` on uint8 ones); ``attention``: measures on the maps (periphery and mask
shares, the pointing game, failures against controls, the deletion test); ``stage_reports``: what
notebooks 03 and 05 record, each in one call.
"""

from .attention import attention_measures, deletion_curve, mask_share, periphery_share, pointing_game
from .cam import DEFAULT_LAYER, FailureMaps, explain_images, grad_cam, gradcam_for_failures, resolve_layer
from .stage_reports import (
    compare_attention,
    describe_attention,
    describe_attention_change,
    failure_attention_report,
    matched_confidence_controls,
)
