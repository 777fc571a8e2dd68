"""What the notebooks call in workflow.stages: a stage saving and reading its files by the registry's
names, and the steps that read several files or slice several results at once."""

from __future__ import annotations

import dataclasses
import inspect
import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch

from cifar_helpers.analysis.failures import compare_failures, find_high_confidence_failures
from cifar_helpers.analysis.faithfulness import road_by_model
from cifar_helpers.analysis.gradcam import (
    FailureMaps,
    explain_images,
    failure_attention_report,
    gradcam_for_failures,
)
from cifar_helpers.analysis.human_labels import (
    FailureRecord,
    HumanFailureReport,
    NotApplicable,
    model_error_maps,
)
from cifar_helpers.core.evaluation import Predictions
from cifar_helpers.core.models import resnet18
from cifar_helpers.rundir.artifacts import load_torch, save_json
from cifar_helpers.views.plotting import plot_before_after_gradcam
from cifar_helpers.views.tables import accuracy_table, train_step_table
from cifar_helpers.workflow.stages import (
    BeforeAfterMaps,
    Replicates,
    Stage,
    model_error_attention,
    setup_run,
    training_tables,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Stage:
    """Stage 00 of a smoke run on generated data (500 test images), its data loaded."""
    stage = setup_run(tmp_path_factory.mktemp("run"), profile="smoke", data_source="synthetic")
    assert len(stage.data.test_labels) == 500
    return stage


def opened(setup: Stage, name: str, **config: object) -> Stage:
    """Stage ``name`` of the same run (its data shared), its configuration changed by ``config``."""
    return Stage(name, setup.run, setup.config.replace(**config), setup.data)


@dataclasses.dataclass
class Row:
    n: int

    def to_dict(self) -> dict[str, int]:
        return {"n": self.n}


def test_a_stage_saves_and_reads_its_files_by_the_registry_names(setup):
    root = setup.run.root
    assert setup.save("data_summary", {"a": 1}) == root / "data_summary.json"  # 00 writes in the root
    gradcam = opened(setup, "gradcam")
    classes = torch.ones(3, dtype=torch.int64)
    maps = FailureMaps(torch.arange(3), classes, classes, torch.rand(3, 4, 4), torch.rand(3, 4, 4))
    assert gradcam.save("heatmaps", maps) == root / "gradcam" / "heatmaps.pt"  # torch, through to_dict
    read = opened(setup, "reevaluation").load("heatmaps", of="gradcam")
    assert list(read) == list(maps.to_dict()) and torch.equal(read["true_maps"], maps.true_maps)
    # JSON: a dict as it is (tensors as lists), a list of results each through its to_dict
    gradcam.save("measures", {"x": torch.tensor([1, 2])})
    assert gradcam.load("measures") == {"x": [1, 2]}
    gradcam.save("claims", [Row(1), Row(2)])
    assert json.loads((root / "gradcam" / "claims.json").read_text()) == [{"n": 1}, {"n": 2}]
    # What the registry does not name: JSON, or the whole file name given; a figure: a PNG
    assert gradcam.save("measures_model_errors", NotApplicable("none")).name == "measures_model_errors.json"
    assert torch.equal(load_torch(gradcam.save("road_maps.pt", {"m": torch.ones(2)}))["m"], torch.ones(2))
    fig = plt.figure()
    assert gradcam.save("measures", fig) == root / "gradcam" / "measures.png"  # beside measures.json
    plt.close(fig)
    assert gradcam.file("checkpoint", of="baseline") == root / "baseline" / "checkpoint.pt"
    with pytest.raises(ValueError, match=r"no output 'metric'; its outputs: checkpoint, history"):
        gradcam.load("metric", of="baseline")


def test_replicates_save_by_the_name_of_stage_07(tmp_path):
    replicates = Replicates(tmp_path, "smoke", [], 42)
    assert replicates.save("accuracy", Row(3)) == tmp_path / "replicates" / "accuracy.json"
    assert json.loads((tmp_path / "replicates" / "accuracy.json").read_text()) == {"n": 3}
    assert replicates.save("claims", [Row(1)]).name == "claims.json"


def test_training_tables_are_the_accuracy_and_training_step_tables(setup):
    baseline = opened(setup, "baseline")
    metrics = {"test_accuracy": 0.5, "train_accuracy": 0.75, "train_test_gap": 0.25}
    step = {"step": "eager", "how": "the only one", "candidates": []}
    save_json(baseline.path("metrics.json"), metrics)
    save_json(baseline.path("history.json"), {"environment": {"train_step": step}})
    tables = training_tables(baseline)
    expected = [accuracy_table(metrics, num_test=500, num_train=1000), train_step_table(step)]
    assert len(tables) == 2
    for table, wanted in zip(tables, expected, strict=True):
        pd.testing.assert_frame_equal(table, wanted)
        assert table.attrs == wanted.attrs


def _two_models_and_failures(setup: Stage):
    """A baseline and an augmented width-4 ResNet-18 with made-up predictions on the test images: the
    baseline fails with high confidence on images 0-3, the augmented model on images 2-5."""
    labels = setup.data.test_labels
    models, predictions = {}, {}
    for seed, (name, wrong) in enumerate((("baseline", range(4)), ("augmented", range(2, 6)))):
        torch.manual_seed(seed)
        models[name] = resnet18(width=4).eval()
        predicted = labels.clone()
        predicted[list(wrong)] = (labels[list(wrong)] + 1) % 10
        predictions[name] = Predictions(10.0 * torch.nn.functional.one_hot(predicted, 10).float(), labels)
    failures = find_high_confidence_failures(predictions["baseline"].probs, labels, 0.9)
    return models, predictions, failures


def _human_report(model_errors: list[int], others: list[int]) -> HumanFailureReport:
    records = [FailureRecord(i, "model error", 1.0, 0.0, 0) for i in model_errors]
    records += [FailureRecord(i, "ambiguous", 0.5, 0.5, 0) for i in others]
    return HumanFailureReport(
        "constructed", 0.8, len(records), {}, {}, {}, 1.0, 1.0, None, None, tuple(records)
    )


def test_model_error_attention_measures_the_model_errors_alone(setup):
    gradcam = opened(setup, "gradcam")
    models, predictions, failures = _two_models_and_failures(setup)
    model, baseline = models["baseline"], predictions["baseline"]
    maps = gradcam_for_failures(model, setup.data.test_images, failures)
    report = _human_report([2], [0, 1, 3])
    measures = model_error_attention(gradcam, model, baseline, maps, report, deletion_steps=2)
    assert measures.num_failures == 1 and measures.failure_indices == [2]
    expected = failure_attention_report(
        model,
        setup.data.test_images,
        baseline.probs,
        baseline.labels,
        model_error_maps(maps, report),
        layer=gradcam.config.gradcam_layer,
        deletion_steps=2,
        seed=gradcam.config.seed,
    )
    assert measures.control_indices == expected.control_indices
    assert measures.failure_periphery_shares == expected.failure_periphery_shares
    no_labels = NotApplicable("a test subset")
    assert model_error_attention(gradcam, model, baseline, maps, no_labels, deletion_steps=2) is no_labels


def _untimed(result: object) -> object:
    """A JSON-ready result without its durations (``*seconds`` keys), which differ run to run."""
    if isinstance(result, dict):
        return {k: _untimed(v) for k, v in result.items() if not k.endswith("seconds")}
    return [_untimed(v) for v in result] if isinstance(result, list) else result


def test_before_after_maps_are_03s_failures_explained_by_both_models(setup):
    models, predictions, failures = _two_models_and_failures(setup)
    images = setup.data.test_images
    explained = gradcam_for_failures(models["baseline"], images, failures)
    opened(setup, "gradcam").save("heatmaps", explained)
    stage = opened(setup, "reevaluation", road_images=2)
    maps = BeforeAfterMaps.explain(stage, models["augmented"], predictions["augmented"])
    assert maps.indices.tolist() == explained.indices.tolist() and sorted(maps.indices.tolist()) == [
        0,
        1,
        2,
        3,
    ]
    assert torch.equal(maps.baseline_maps, explained.predicted_maps)
    assert torch.equal(maps.augmented_predicted, predictions["augmented"].preds[maps.indices])
    layer = stage.config.gradcam_layer
    again = explain_images(models["augmented"], images[maps.indices], maps.augmented_predicted, layer=layer)
    assert torch.equal(maps.augmented_maps, again)
    # heatmaps.pt: the four fields by name, in this order
    saved = load_torch(stage.save("heatmaps", maps))
    assert list(saved) == ["indices", "baseline_maps", "augmented_maps", "augmented_predicted"]
    assert torch.equal(saved["augmented_maps"], maps.augmented_maps)
    # ROAD of each model's own maps on the first road_images failures
    road = maps.road(stage, models, predictions["baseline"])
    first = maps.indices[:2]
    expected = road_by_model(
        models,
        images[first],
        {"baseline": predictions["baseline"].preds[first], "augmented": maps.augmented_predicted[:2]},
        {"baseline": maps.baseline_maps[:2], "augmented": maps.augmented_maps[:2]},
        fractions=stage.config.road_fractions,
        seed=stage.config.seed,
    )
    assert road.num_images == 2 and _untimed(road.to_dict()) == _untimed(expected.to_dict())
    # The figure's inputs, each row titled with its status
    probs = {name: p.probs for name, p in predictions.items()}
    comparison = compare_failures(probs["baseline"], probs["augmented"], setup.data.test_labels, 0.9)
    inputs = maps.figure_inputs(stage, predictions, comparison)
    assert set(inputs) == set(inspect.signature(plot_before_after_gradcam).parameters) - {"max_rows"}
    assert inputs["row_titles"] == ["fixed" if i < 2 else "kept (same)" for i in maps.indices.tolist()]
    assert torch.equal(inputs["true_labels"], setup.data.test_labels[maps.indices])
    plt.close(plot_before_after_gradcam(**inputs, max_rows=2))
