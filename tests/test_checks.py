"""The shared input checks (core.checks): what they accept, what they refuse and how they say so."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cifar_helpers.core import checks
from cifar_helpers.core.checks import (
    check_class_indices,
    check_classes,
    check_count,
    check_fraction,
    check_fractions,
    check_images,
    check_images_and_labels,
    check_labels,
    check_maps,
    check_probabilities,
    check_score_matrix,
    model_device,
)


def test_the_module_is_a_leaf() -> None:
    # Every module may use the checks only as long as they import nothing from the package.
    tree = ast.parse(Path(checks.__file__).read_text(encoding="utf-8"))
    imported = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [node.module for node in imported if node.level or (node.module or "").startswith("cifar")]


def test_model_device_looks_at_parameters_then_buffers() -> None:
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    with_buffer = nn.Module()
    with_buffer.register_buffer("b", torch.zeros(1, device="meta"))
    assert model_device(with_buffer) == torch.device("meta")
    assert model_device(nn.Identity()) == torch.device("cpu")
    assert model_device(nn.Identity(), torch.device("meta")) == torch.device("meta")


def test_images_are_uint8_rgb_batches() -> None:
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    assert check_images("images", images) is images
    with pytest.raises(TypeError, match=r"^x must be a torch\.Tensor"):
        check_images("x", np.zeros((2, 3, 4, 4), dtype=np.uint8))
    for bad in (images.float(), images[:, :1], images[0]):
        with pytest.raises(ValueError, match=r"^x must be a uint8 tensor .*uint8 with shape \(N, 3, H, W\)"):
            check_images("x", bad)


def test_labels_are_int64_one_per_image() -> None:
    images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2])
    assert check_images_and_labels(images, labels, 3) == (images, labels)
    with pytest.raises(ValueError, match=r"^train_labels must be int64 \(3,\) to match train_images"):
        check_images_and_labels(images, labels[:2], prefix="train")
    with pytest.raises(ValueError, match="int64"):
        check_labels("labels", labels.int(), 3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\), got \[0, 2\]"):
        check_labels("labels", labels, 3, num_classes=2)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        check_labels("labels", [0, 1, 2], 3)


def test_score_matrices_and_probabilities() -> None:
    probs = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    assert check_probabilities("probs", probs) is probs
    assert check_score_matrix("logits", torch.tensor([[3.0, -1.0]])) is not None
    with pytest.raises(ValueError, match=r"^p must be 2-D, shape \(N, C\) with C >= 2"):
        check_score_matrix("p", torch.ones(3, 1))
    with pytest.raises(TypeError, match="floating point"):
        check_score_matrix("p", torch.ones(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="no rows"):
        check_score_matrix("p", torch.ones(0, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_probabilities("p", torch.tensor([[2.0, -1.0]]))
    with pytest.raises(ValueError, match="sum to 1"):
        check_probabilities("p", torch.tensor([[0.5, 0.4]]))


def test_class_indices_accept_any_integer_dtype() -> None:
    labels = check_class_indices("labels", torch.tensor([0, 1], dtype=torch.int32), 2, 2, rows_name="probs")
    assert labels.dtype == torch.int64
    with pytest.raises(TypeError, match="integer class indices"):
        check_class_indices("labels", torch.tensor([0.0, 1.0]), 2, 2, rows_name="probs")
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\) to match probs .*labels has 3"):
        check_class_indices("labels", torch.tensor([0, 1, 1]), 2, 2, rows_name="probs")
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\)"):
        check_class_indices("labels", torch.tensor([0, 2]), 2, 2, rows_name="probs")


def test_fractions_are_numbers_in_0_1_and_removal_fractions_strictly_increase() -> None:
    assert check_fractions("shares", torch.tensor([0.0, 1.0, 0.5])).tolist() == [0.0, 1.0, 0.5]
    assert check_fractions("fractions", [0.2, 0.5], increasing=True).tolist() == [0.2, 0.5]
    with pytest.raises(ValueError, match=r"confidence must have shape \(3,\)"):
        check_fractions("confidence", [0.5, 0.5], 3)
    with pytest.raises(ValueError, match="test_acc must be fractions in"):
        check_fractions("test_acc", [90.0])
    for bad in ([], [0.0, 0.5], [0.5, 0.2], [0.5, 1.0], "0.5", [True]):
        with pytest.raises(ValueError, match="fractions must"):
            check_fractions("fractions", bad, increasing=True)


def test_class_names_are_strings_one_per_class_in_use() -> None:
    assert check_classes("classes", ("cat", "dog")) == ["cat", "dog"]
    for bad in ("cat", [], None):
        with pytest.raises(TypeError, match="classes must be a non-empty list of class names"):
            check_classes("classes", bad)
    with pytest.raises(TypeError, match="strings only"):
        check_classes("classes", ["cat", 1])
    with pytest.raises(ValueError, match="classes has 2 names but class indices go up to 2"):
        check_classes("classes", ["cat", "dog"], 3)


def test_a_fraction_is_a_number_in_its_range() -> None:
    assert check_fraction("accuracy", np.float32(0.5)) == 0.5
    assert check_fraction("gap", -0.25, low=-1.0) == -0.25
    with pytest.raises(TypeError, match="accuracy must be a number"):
        check_fraction("accuracy", True)
    with pytest.raises(ValueError, match=r"accuracy must be a fraction in \[0, 1\] \(not a percent\)"):
        check_fraction("accuracy", 95.0)
    with pytest.raises(ValueError, match=r"ambiguity must be a fraction in \(0, 1\]"):
        check_fraction("ambiguity", 0.0, closed=(False, True))
    assert check_fraction("ambiguity", 1, closed=(False, True)) == 1.0
    assert check_fraction("threshold", 0.5, closed=(False, False)) == 0.5
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=r"threshold must be a fraction in \(0, 1\)"):
            check_fraction("threshold", bad, closed=(False, False))


def test_a_count_is_an_integer_within_its_bounds() -> None:
    assert check_count("n_bins", np.int64(3)) == 3
    assert check_count("padding", 0, low=0) == 0
    assert check_count("severity", 5, low=0, high=5) == 5
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match=r"n_bins must be an integer >= 1"):
            check_count("n_bins", bad)
    with pytest.raises(ValueError, match=r"severity must be an integer in \[0, 5\], got 6"):
        check_count("severity", 6, low=0, high=5)


def test_maps_are_finite_float_tensors_of_their_shape_and_range() -> None:
    maps = torch.rand(2, 4, 4)
    assert check_maps("maps", maps) is not maps  # detached
    assert check_maps("maps", maps, (2, 4, 4), low=0.0, high=1.0).equal(maps)
    assert check_maps("maps", maps + 1e-4, low=0.0, high=1.0, tolerance=1e-3).shape == (2, 4, 4)
    with pytest.raises(TypeError, match=r"maps must be a float tensor \(N, H, W\)"):
        check_maps("maps", maps.numpy())
    with pytest.raises(TypeError, match="maps must be a float tensor"):
        check_maps("maps", maps.long())
    with pytest.raises(ValueError, match=r"maps must have shape \(N, H, W\)"):
        check_maps("maps", maps[0])
    with pytest.raises(ValueError, match=r"maps must have shape \(2, 3, 4\)"):
        check_maps("maps", maps, (2, 3, 4))
    with pytest.raises(ValueError, match="maps must be finite"):
        check_maps("maps", torch.full((1, 2, 2), torch.nan))
    with pytest.raises(ValueError, match=r"maps must lie in \[0, 1\]"):
        check_maps("maps", torch.full((1, 2, 2), 1.002), low=0.0, high=1.0, tolerance=1e-3)
