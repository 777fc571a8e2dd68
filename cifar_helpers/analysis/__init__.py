"""Measures on trained models: failures, human labels, Grad-CAM, faithfulness, stress, calibration, seeds."""
