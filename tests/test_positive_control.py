"""The background positive control: a planted cause Grad-CAM must show, and its typed results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import positive_control_result

from cifar_helpers.analysis.faithfulness import RoadCurves, RoadTable
from cifar_helpers.analysis.positive_control import (
    CONTROL_THRESHOLDS,
    ControlExamples,
    FailureExamples,
    PositiveControl,
    background_positive_control,
    load_positive_control_examples,
)
from cifar_helpers.core.data import make_synthetic_cifar
from cifar_helpers.rundir.config import make_config

# positive_control.json's keys as the stress stage has always written them, in their order.
SAVED_KEYS = [
    "correlation",
    "threshold",
    "thresholds_tried",
    "min_failures",
    "train_per_class",
    "test_per_class",
    "epochs",
    "width",
    "seed",
    "layer",
    "object_area_fraction",
    "tied",
    "untied",
    "mask_share_gap",
    "pointing_game_gap",
    "examples_file",
    "seconds",
]
SAVED_MODEL_KEYS = [
    "test_accuracy",
    "train_accuracy",
    "num_failures",
    "mask_share",
    "mask_share_std",
    "pointing_game",
    "failure_object_area",
    "mask_share_all",
    "pointing_game_all",
    "road",
]
SAVED_EXAMPLE_KEYS = ["indices", "images", "masks", "maps", "true_labels", "predicted", "confidence"]
ROAD = RoadTable(
    8,
    [0.5],
    {
        m: RoadCurves(8, [0.5], [-c], [0.1], [c], [0.1], c, 0.1, [c] * 8)
        for m, c in (("gradcam", 0.1), ("random", 0.0))
    },
    1.0,
)


def test_the_saved_keys_are_the_files_keys() -> None:
    saved = positive_control_result(ROAD).to_dict()
    assert list(saved) == SAVED_KEYS
    assert list(saved["tied"]) == list(saved["untied"]) == SAVED_MODEL_KEYS
    assert saved["thresholds_tried"] == [0.9, 0.8, 0.7, 0.6]  # a list, as JSON reads it back
    assert saved["mask_share_gap"] == 0.3171 - 0.1361
    assert saved["pointing_game_gap"] == 0.9 - 0.2


def test_the_result_round_trips_through_json() -> None:
    result = positive_control_result(ROAD)
    assert PositiveControl.from_dict(result.to_dict()) == result
    assert PositiveControl.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_a_missing_key_is_named() -> None:
    saved = positive_control_result(ROAD).to_dict()
    del saved["object_area_fraction"]
    with pytest.raises(KeyError, match="object_area_fraction"):
        PositiveControl.from_dict(saved)
    saved = positive_control_result(ROAD).to_dict()
    del saved["untied"]["pointing_game_all"]
    with pytest.raises(KeyError, match="pointing_game_all"):
        PositiveControl.from_dict(saved)


def _examples(data: Any, k: int = 3) -> ControlExamples:
    """Made-up failures of both models on the first ``k`` images of generated ``data``."""
    per_model = {
        model: FailureExamples(
            indices=torch.arange(k),
            images=data.test_images[:k],
            masks=data.test_masks[:k],
            maps=torch.rand(k, 32, 32, generator=torch.Generator().manual_seed(0)),
            true_labels=data.test_labels[:k],
            predicted=(data.test_labels[:k] + 1) % 10,
            confidence=torch.tensor([0.9, 0.8, 0.7])[:k],
        )
        for model in ("tied", "untied")
    }
    return ControlExamples(tuple(data.classes), 0.6, per_model["tied"], per_model["untied"])


def test_the_examples_round_trip_with_their_saved_keys() -> None:
    examples = _examples(make_synthetic_cifar(1, 1, seed=0))
    saved = examples.to_dict()
    assert list(saved) == ["classes", "threshold", "tied", "untied"]
    assert isinstance(saved["classes"], list) and list(saved["tied"]) == SAVED_EXAMPLE_KEYS
    again = ControlExamples.from_dict(saved)
    assert again.classes == examples.classes and again.threshold == examples.threshold
    for model in ("tied", "untied"):
        for key in SAVED_EXAMPLE_KEYS:
            assert torch.equal(getattr(again.models[model], key), getattr(examples.models[model], key))
    with pytest.raises(KeyError, match="maps"):
        FailureExamples.from_dict({k: v for k, v in saved["tied"].items() if k != "maps"})


@pytest.mark.slow
def test_background_positive_control_shows_the_gap(tmp_path: Path) -> None:
    # The smoke recipe on generated data: one model whose training backgrounds give the class away,
    # one whose do not; both tested on random backgrounds. About 30-50 s on one core.
    config = make_config("smoke", device="cpu", num_threads=1)
    result = background_positive_control(config, out_dir=tmp_path)
    text = json.dumps(result.to_dict())
    saved = json.loads(text)
    assert list(saved) == SAVED_KEYS and list(saved["tied"]) == SAVED_MODEL_KEYS
    assert json.dumps(PositiveControl.from_dict(saved).to_dict()) == text  # NaN-safe: compared as text
    tied, untied = result.tied, result.untied
    assert result.threshold in CONTROL_THRESHOLDS
    assert tied.num_failures >= 50 and untied.num_failures >= 50
    # The model that learned backgrounds generalises worse to random backgrounds...
    assert tied.train_accuracy > 0.8 > tied.test_accuracy + 0.2
    assert untied.test_accuracy > tied.test_accuracy + 0.15
    # ...and when it is confidently wrong, Grad-CAM puts clearly less of its mass on the object and
    # points at the object far less often than for the untied model's confident mistakes.
    assert tied.mask_share < untied.mask_share - 0.04
    assert tied.pointing_game < untied.pointing_game - 0.15
    assert result.mask_share_gap == pytest.approx(untied.mask_share - tied.mask_share)
    # Most of the tied model's evidence for its confident mistakes lies off the object.
    assert tied.mask_share < 0.5
    assert 0.05 < result.object_area_fraction < 0.3

    examples = load_positive_control_examples(tmp_path)
    assert examples.tied.maps.shape == (8, 32, 32)
    assert examples.tied.images.dtype == torch.uint8
    assert (examples.tied.predicted != examples.tied.true_labels).all()
    saved_examples = torch.load(tmp_path / result.examples_file, weights_only=True)
    assert list(saved_examples) == ["classes", "threshold", "tied", "untied"]


def test_positive_control_figure() -> None:
    from cifar_helpers.views.plotting.stress import plot_positive_control

    data = make_synthetic_cifar(1, 1, seed=0)
    result = positive_control_result(ROAD, mask_share=0.17, mask_share_all=0.18)
    fig = plot_positive_control(result, _examples(data), num_examples=3)
    bars = fig.axes[0]
    heights = sorted(round(p.get_height(), 2) for p in bars.patches)
    assert 0.17 in heights and 0.32 in heights
    assert "->" in fig.axes[1].get_title() or "→" in fig.axes[1].get_title()
    assert fig._repr_png_().startswith(b"\x89PNG")
    assert plot_positive_control(result)._repr_png_().startswith(b"\x89PNG")
    with pytest.raises(TypeError, match="PositiveControl"):
        plot_positive_control(result.to_dict())
