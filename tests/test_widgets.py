"""Tests of the failure browser: driven through its widgets, checked through what it renders."""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.text import Text

from cifar_helpers.analysis.human_labels import HumanVotes
from cifar_helpers.views import widgets
from cifar_helpers.views.plotting import common
from cifar_helpers.views.widgets import FailureBrowser, _static_failure_figure, show_failure_browser

CLASSES = ["cat", "dog", "ship", "truck"]
N = 24


@dataclass
class StandInFailureSet:
    """The fields of cifar_helpers.analysis.failures.FailureSet that the browser reads."""

    indices: torch.Tensor
    true_labels: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor
    threshold: float = 0.9


def failures_of(probs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.9) -> StandInFailureSet:
    """Confident failures, most confident first (what cifar_helpers.analysis.failures computes)."""
    confidence, predicted = probs.max(dim=1)
    wrong = ((predicted != labels) & (confidence > threshold)).nonzero().squeeze(1)
    order = wrong[torch.argsort(confidence[wrong], descending=True, stable=True)]
    return StandInFailureSet(order, labels[order], predicted[order], confidence[order], threshold)


def probs_with(labels: torch.Tensor, wrong: dict[int, tuple[int, float]]) -> torch.Tensor:
    """Probabilities that are right for every image except ``wrong`` = {index: (predicted, confidence)}."""
    probs = torch.full((N, len(CLASSES)), 0.02)
    probs[torch.arange(N), labels] = 0.94
    for index, (predicted, confidence) in wrong.items():
        probs[index] = (1 - confidence) / (len(CLASSES) - 1)
        probs[index, predicted] = confidence
    return probs


@pytest.fixture
def data(monkeypatch: pytest.MonkeyPatch) -> dict:
    labels = torch.arange(N) % len(CLASSES)  # cat, dog, ship, truck, cat, ...
    images = torch.randint(
        0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    # baseline: cats taken for dogs, a dog for a cat, a truck for a ship
    baseline = probs_with(labels, {0: (1, 0.99), 4: (1, 0.97), 8: (1, 0.95), 5: (0, 0.96), 3: (2, 0.98)})
    # augmented: fixes the cats, keeps the truck, newly gets a ship wrong
    augmented = probs_with(labels, {3: (2, 0.93), 6: (3, 0.97), 5: (0, 0.91)})
    failures = {"baseline": failures_of(baseline, labels), "augmented": failures_of(augmented, labels)}
    maps = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    # A stand-in for the baseline model: its Grad-CAM is a lookup, with maps for images 0, 3 and 8 only.
    stand_in = {i: (maps[k].numpy(), maps[k].flip(1).numpy()) for k, i in enumerate((0, 3, 8))}
    monkeypatch.setattr(
        widgets, "_explain", lambda model, images, probs, labels, layer, index: model.get(index)
    )
    return {
        "images": images,
        "labels": labels,
        "classes": CLASSES,
        "failures": failures,
        "probs": {"baseline": baseline, "augmented": augmented},
        "models": {"baseline": stand_in},
    }


def only(data: dict, model: str) -> dict:
    """The same inputs restricted to one model."""
    return {
        **data,
        "failures": {model: data["failures"][model]},
        "probs": {model: data["probs"][model]},
        "models": {k: v for k, v in data["models"].items() if k == model},
    }


def texts(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(Text))


def test_slider_chooses_the_failure_shown(data):
    browser = FailureBrowser(**only(data, "baseline"))
    # ranked by confidence: 0 (0.99), 3 (0.98), 4 (0.97), 5 (0.96), 8 (0.95)
    assert browser.filtered_indices.tolist() == [0, 3, 4, 5, 8]
    assert browser.current_index == 0
    # the number box counts from 1, like the "k of n" label beside it
    assert (browser.slider.min, browser.slider.value, browser.slider.max) == (1, 1, 5)
    assert browser.position_label.value.startswith("1 of 5")

    browser.slider.value = 2
    assert browser.current_index == 3
    fig = browser.render_current()
    assert "'truck' taken for 'ship' (98%)" in fig.get_suptitle()
    assert "failure 2 of 5" in fig.get_suptitle()
    assert "where the evidence\nfor 'truck' would be" in texts(fig)
    assert browser.position_label.value.startswith("2 of 5")

    browser.slider.value = 3
    assert browser.current_index == 4
    fig = browser.render_current()
    assert "'cat' taken for 'dog' (97%)" in fig.get_suptitle()
    # index 4 has no heatmaps: the browser says so instead of failing
    assert "no heatmap for this failure" in texts(fig)


def test_figure_shows_image_heatmaps_and_top5(data):
    browser = FailureBrowser(**only(data, "baseline"))
    fig = browser.render_current()
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == 3  # the image, the predicted-class and the true-class overlay
    assert image_axes[1].get_title() == "baseline: where it looked\nto say 'dog'"
    bars = next(ax for ax in fig.axes if ax.get_title() == "baseline: top-4 classes")
    by_height = sorted(zip(bars.get_yticks(), (t.get_text() for t in bars.get_yticklabels()), strict=True))
    assert by_height[-1][1] == "dog"  # the prediction at the top
    colors = {
        label: to_hex(bar.get_facecolor())
        for (_, label), bar in zip(by_height[::-1], bars.patches, strict=True)
    }
    assert colors["dog"] == common.WRONG_COLOR and colors["cat"] == common.CORRECT_COLOR
    assert bars.patches[0].get_width() == pytest.approx(0.99)


def test_filter_by_true_class_shows_only_that_class(data):
    browser = FailureBrowser(**only(data, "baseline"))
    browser.slider.value = 4
    browser.true_dropdown.value = "cat"
    assert browser.filtered_indices.tolist() == [0, 4, 8]
    assert all(CLASSES[int(data["labels"][i])] == "cat" for i in browser.filtered_indices)
    # the slider is reset to the first match and spans exactly the matches
    assert (browser.slider.value, browser.slider.max) == (1, 3)
    assert browser.current_index == 0

    browser.true_dropdown.value = "any"
    browser.pred_dropdown.value = "cat"
    assert browser.filtered_indices.tolist() == [5]  # the dog taken for a cat
    assert browser.current_index == 5
    assert "'dog' taken for 'cat'" in browser.render_current().get_suptitle()


def test_empty_filter_shows_a_message_not_an_error(data):
    browser = FailureBrowser(**only(data, "baseline"))
    browser.true_dropdown.value = "ship"
    browser.pred_dropdown.value = "ship"
    assert browser.current_index is None
    assert browser.filtered_indices.tolist() == []
    assert browser.render_current() is None
    assert browser.message.startswith("No failures match")
    assert "'ship'" in browser.message
    assert browser.slider.disabled
    assert browser.position_label.value == "0 of 0"
    # moving the (disabled) slider or changing back a filter recovers
    browser.slider.value = 1
    browser.pred_dropdown.value = "any"
    assert browser.current_index is None  # there are no ship failures at all for the baseline
    browser.true_dropdown.value = "truck"
    assert browser.current_index == 3 and browser.message == "" and not browser.slider.disabled


def test_no_failures_above_the_threshold_says_so_and_how_to_lower_it(data):
    probs = data["probs"]["baseline"]
    none = failures_of(probs, data["labels"], threshold=0.999)
    assert len(none.indices) == 0
    browser = FailureBrowser(data["images"], data["labels"], CLASSES, {"baseline": none}, {"baseline": probs})
    assert browser.current_index is None and browser.position_label.value == "0 of 0"
    assert "no mistakes with confidence above 0.999" in browser.message
    assert "confidence_threshold" in browser.message
    assert "Set a filter back" not in browser.message  # the filters already are 'any'


def test_model_toggle_switches_the_failure_list(data):
    browser = FailureBrowser(**data)
    assert browser.model_row.layout.display != "none"
    # "Model:" is a label beside the buttons, in one row, not a description wrapped above them
    label, toggle = browser.model_row.children
    assert label.value == "Model:" and toggle is browser.model_toggle and not toggle.description
    assert browser.model_row in browser.widget.children
    assert browser.model_toggle.options == ("baseline", "augmented")
    assert browser.filtered_indices.tolist() == [0, 3, 4, 5, 8]
    browser.slider.value = 5

    browser.model_toggle.value = "augmented"
    assert browser.filtered_indices.tolist() == [6, 3, 5]
    assert (browser.slider.value, browser.slider.max) == (1, 3)
    assert browser.current_index == 6
    fig = browser.render_current()
    assert fig.get_suptitle().startswith("augmented: 'ship' taken for 'truck'")
    # the other model's opinion on the same image: the baseline got image 6 right
    assert "baseline says\n'ship' (94%)\n✓ right" in texts(fig)


def test_other_models_opinion_and_heatmaps_are_shown(data):
    browser = FailureBrowser(**data)
    browser.slider.value = 2  # image 3, a truck taken for a ship by both models
    fig = browser.render_current()
    all_text = texts(fig)
    assert "augmented says\n'ship' (93%)\n✗ wrong" in all_text
    assert "no augmented heatmap\nfor this image" in all_text
    assert len([ax for ax in fig.axes if ax.images]) == 3  # only the baseline has maps

    browser.slider.value = 1  # image 0: the augmented model fixed it
    assert "augmented says\n'cat' (94%)\n✓ right" in texts(browser.render_current())


def test_single_model_hides_the_toggle(data):
    browser = FailureBrowser(**only(data, "augmented"))
    assert browser.model_row.layout.display == "none"
    assert "says" not in texts(browser.render_current())


def test_browser_displays_as_a_widget(data):
    browser = FailureBrowser(**data)
    bundle = browser._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert browser.widget.children[0] is browser.model_row


def test_static_fallback_when_headless(data, monkeypatch):
    shown = []
    monkeypatch.setattr(widgets, "display", shown.append)
    monkeypatch.setenv("CIFAR_STRESS_HEADLESS", "1")
    result = show_failure_browser(**data)
    assert isinstance(result, Figure)
    assert shown == [result]
    # the baseline failures that have heatmaps (0, 3 and 8), image | two maps each
    assert len([ax for ax in result.axes if ax.images]) == 9
    assert result.axes[0].get_title() == "cat → dog (99%)"
    assert result.axes[3].get_title() == "truck → ship (98%)"


def test_interactive_when_not_headless(data, monkeypatch):
    shown = []
    monkeypatch.setattr(widgets, "display", shown.append)
    monkeypatch.delenv("CIFAR_STRESS_HEADLESS", raising=False)
    result = show_failure_browser(**data)
    # the last thing displayed is the browser itself (the first failure's figure went into its Output)
    assert isinstance(result, FailureBrowser) and shown[-1] is result
    monkeypatch.setenv("CIFAR_STRESS_HEADLESS", "0")
    assert isinstance(show_failure_browser(**data), FailureBrowser)
    monkeypatch.setenv("CIFAR_STRESS_HEADLESS", "yes")
    assert isinstance(show_failure_browser(**data), Figure)


def test_static_figure_takes_the_notebooks_arguments_without_heatmaps(data, monkeypatch):
    # as 02_failure_detection calls it: positional images, labels, classes; the rest by name
    inputs = only(data, "baseline")
    monkeypatch.setenv("CIFAR_STRESS_HEADLESS", "1")
    fig = show_failure_browser(
        inputs["images"],
        inputs["labels"],
        CLASSES,
        failures=inputs["failures"],
        probs=inputs["probs"],
    )
    assert [ax.get_title() for ax in fig.axes] == [
        "cat → dog (99%)",
        "truck → ship (98%)",
        "cat → dog (97%)",
        "dog → cat (96%)",
        "cat → dog (95%)",
    ]


def test_static_figure_without_heatmaps_is_a_failure_grid(data):
    fig = _static_failure_figure(**{**only(data, "augmented"), "models": None})
    assert [ax.get_title() for ax in fig.axes] == [
        "ship → truck (97%)",
        "truck → ship (93%)",
        "dog → cat (91%)",
    ]


def test_inputs_are_checked_against_each_other(data):
    with pytest.raises(ValueError, match=r"probs has no entry for model.*'augmented'"):
        FailureBrowser(**{**data, "probs": {"baseline": data["probs"]["baseline"]}})
    with pytest.raises(ValueError, match=r"probs\['augmented'\] must have shape \(24, 4\)"):
        FailureBrowser(**{**data, "probs": {**data["probs"], "augmented": data["probs"]["augmented"][:5]}})
    with pytest.raises(ValueError, match=r"models has model.*'other'"):
        FailureBrowser(**{**data, "models": {"other": data["models"]["baseline"]}})
    shuffled = data["labels"].roll(1)
    with pytest.raises(ValueError, match="true_labels disagree with labels"):
        FailureBrowser(**{**data, "labels": shuffled})
    with pytest.raises(TypeError, match="non-empty dict"):
        FailureBrowser(**{**data, "failures": {}})


def test_works_with_the_real_failure_set(data):
    failures_module = pytest.importorskip("cifar_helpers.analysis.failures")
    real = failures_module.find_high_confidence_failures(data["probs"]["baseline"], data["labels"], 0.9)
    browser = FailureBrowser(**{**only(data, "baseline"), "failures": {"baseline": real}})
    assert browser.filtered_indices.tolist() == [0, 3, 4, 5, 8]
    assert isinstance(browser.render_current(), Figure)


def test_models_give_heatmaps_on_demand(data, monkeypatch):
    from cifar_helpers.analysis.gradcam import explain_images
    from cifar_helpers.core.models import resnet18

    monkeypatch.undo()  # the real Grad-CAM, not the fixture's stand-in
    torch.manual_seed(0)
    model = resnet18(num_classes=len(CLASSES), width=4).eval()
    browser = FailureBrowser(**{**only(data, "baseline"), "models": {"baseline": model}})
    view = browser._models["baseline"]
    computed = view.maps_for(4)  # Grad-CAM of the model, for the predicted and the true class
    predicted = int(data["probs"]["baseline"][4].argmax())
    expected = explain_images(model, data["images"][4:5], torch.tensor([predicted]))[0]
    torch.testing.assert_close(torch.from_numpy(computed[0]), expected)
    assert view.maps_for(4) is computed  # cached
    without = FailureBrowser(**{**only(data, "baseline"), "models": None})
    assert without._models["baseline"].maps_for(4) is None


def test_human_votes_category_on_screen_and_category_filter(data):
    shares = torch.zeros(N, len(CLASSES))
    shares[torch.arange(N), data["labels"]] = 1.0
    shares[0] = torch.tensor([0.3, 0.7, 0.0, 0.0])  # humans mostly say 'dog' for image 0, labelled 'cat'
    categories = ["model error"] * N
    categories[0], categories[5] = "verified label error", "ambiguous"
    browser = FailureBrowser(**only(data, "baseline"), human=HumanVotes(shares, tuple(categories)))
    assert browser.category_dropdown.layout.display != "none"
    assert browser.category_dropdown.options == ("any", "ambiguous", "model error", "verified label error")
    fig = browser.render_current()  # image 0
    assert fig.get_suptitle().endswith("category: verified label error")
    votes = next(ax for ax in fig.axes if ax.get_title() == "humans (CIFAR-10H)")
    labels = [t.get_text() for t in votes.get_yticklabels()]
    assert labels[0] == "dog"  # the most voted class first, drawn at the top
    assert votes.patches[0].get_width() == pytest.approx(0.7)

    browser.category_dropdown.value = "model error"
    assert browser.filtered_indices.tolist() == [3, 4, 8]
    browser.category_dropdown.value = "ambiguous"
    assert browser.filtered_indices.tolist() == [5]
    browser.true_dropdown.value = "cat"
    assert browser.current_index is None and "category 'ambiguous'" in browser.message


def test_without_human_labels_the_browser_is_unchanged(data):
    browser = FailureBrowser(**only(data, "baseline"))
    assert browser.category_dropdown.layout.display == "none"
    fig = browser.render_current()
    assert "category" not in fig.get_suptitle()
    assert not any(ax.get_title() == "humans (CIFAR-10H)" for ax in fig.axes)
    with pytest.raises(ValueError, match=r"human\.shares must have shape"):
        FailureBrowser(**only(data, "baseline"), human=HumanVotes(torch.zeros(3, 4), ("model error",) * 3))
