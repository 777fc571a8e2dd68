"""The claims ledger: verdict rules on hand-made effects, the interventions' invariants, intervals that
cover known values, each claim's test on hand-made models whose answer is known (a planted cause it must
find, a cause it must not), the planted-cause bench's gate and the ledger it gates."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from cifar_helpers.analysis import interventions as iv
from cifar_helpers.analysis.claims import bench, ledger, probes, rules
from cifar_helpers.analysis.claims.bench import NO_BENCH
from cifar_helpers.analysis.claims.ledger import ONE_RUN, _populations
from cifar_helpers.analysis.claims.probes import BackgroundShares
from cifar_helpers.analysis.claims.rules import (
    ALL_FAILURES,
    CLAIMS,
    INCONCLUSIVE,
    MODEL_ERRORS,
    NOT_SUPPORTED,
    RULE_CAUSE,
    SUPPORTED,
    ClaimResult,
)
from cifar_helpers.analysis.failures import FailureSet, find_high_confidence_failures
from cifar_helpers.analysis.faithfulness import RoadCurves, RoadTable
from cifar_helpers.analysis.gradcam import explain_images, mask_share, matched_controls
from cifar_helpers.analysis.human_labels import FailureRecord, HumanFailureReport, NotApplicable
from cifar_helpers.core.evaluation import Predictions, predict
from cifar_helpers.core.models import resnet18
from cifar_helpers.core.normalization import CIFAR10_MEAN, CIFAR10_STD
from cifar_helpers.rundir.artifacts import save_json
from cifar_helpers.views import tables
from cifar_helpers.views.tables import text


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)


# --- Verdict rules --------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", [RULE_CAUSE, rules.RULE_ACCURACY_DIFFERENCE])
def test_a_difference_rule_on_hand_made_effects(rule: rules.Rule) -> None:
    m = rule.min_effect
    assert m is not None and m > 0
    assert rule.verdict(3 * m, 2 * m, 4 * m) == SUPPORTED  # clearly an effect that matters
    assert rule.verdict(1.5 * m, m, 2 * m) == SUPPORTED  # the lower end at the minimum is enough
    assert rule.verdict(0.7 * m, 0.5 * m, 0.9 * m) == NOT_SUPPORTED  # above zero, but too small to matter
    assert rule.verdict(0.0, -m / 2, m / 2) == NOT_SUPPORTED  # clearly nothing
    assert rule.verdict(-3 * m, -4 * m, -2 * m) == NOT_SUPPORTED  # clearly the opposite
    assert rule.verdict(m, m / 2, 2 * m) == INCONCLUSIVE  # straddling the minimum
    assert rule.verdict(m, -m, 3 * m) == INCONCLUSIVE  # straddling zero and the minimum
    assert rule.verdict(m / 2, 0.0, m) == INCONCLUSIVE  # the upper end at the minimum: not wholly below
    assert rule.verdict(math.nan, math.nan, math.nan) == INCONCLUSIVE
    assert rule.verdict(3 * m, math.nan, 4 * m) == INCONCLUSIVE


@pytest.mark.parametrize("rule", [rules.RULE_BASELINE_LEVEL, rules.RULE_AUGMENTED_LEVEL])
def test_a_band_rule_on_hand_made_levels(rule: rules.Rule) -> None:
    assert rule.band is not None
    low, high = rule.band
    middle, width = (low + high) / 2, high - low
    assert rule.verdict(middle, middle - width / 4, middle + width / 4) == SUPPORTED
    assert rule.verdict(low - 0.1, low - 0.12, low - 0.08) == NOT_SUPPORTED
    assert rule.verdict(high + 0.1, high + 0.08, high + 0.12) == NOT_SUPPORTED
    assert rule.verdict(low, low - 0.02, low + 0.01) == INCONCLUSIVE  # straddling an edge


def test_the_claimed_levels_and_the_rules_text() -> None:
    assert rules.RULE_BASELINE_LEVEL.band == pytest.approx((0.84, 0.86))
    assert rules.RULE_AUGMENTED_LEVEL.band == pytest.approx((0.87, 0.91))
    rule = "supported if the 95 % interval lies at or above +5 pts, not supported if wholly below it"
    assert RULE_CAUSE.describe() == rule
    assert "at or above +1 pts" in rules.RULE_ACCURACY_DIFFERENCE.describe()
    assert "84 %" in rules.RULE_BASELINE_LEVEL.describe()
    with pytest.raises(ValueError, match="exactly one"):
        rules.Rule(min_effect=0.1, band=(0.1, 0.2))
    # A row's verdict is the rule's, whatever the caller wanted.
    row = ClaimResult(CLAIMS[3], "t", "c", 0.2, 0.1, 0.3, "m", 10, RULE_CAUSE)
    assert row.verdict == SUPPORTED and row.primary
    with pytest.raises(TypeError):
        ClaimResult(CLAIMS[3], "t", "c", 0.0, -0.1, 0.1, "m", 10, RULE_CAUSE, verdict=SUPPORTED)  # type: ignore[call-arg]


def row_with(effect: float) -> ClaimResult:
    row = (CLAIMS[3], "t", "c", effect, effect - 0.1, effect + 0.1, "m", 50, RULE_CAUSE)
    return ClaimResult(*row, details={"x": 1})


def test_rows_survive_json_and_seeds_combine_by_t() -> None:
    ledgers = [  # the primary population first, the secondary one (all failures) after it
        [replace(row_with(e), population=MODEL_ERRORS), replace(row_with(e), primary=False)]
        for e in (0.20, 0.24, 0.22)
    ]
    restored = [[ClaimResult.from_dict(json.loads(json.dumps(r.to_dict()))) for r in x] for x in ledgers]
    assert restored == ledgers and not restored[0][1].primary
    combined, secondary = ledger.combine_seeds(restored)
    interval = rules.t_interval([0.20, 0.24, 0.22])
    assert (combined.effect, combined.ci_low, combined.ci_high) == (
        interval.mean,
        interval.low,
        interval.high,
    )
    assert combined.method == rules.T_OVER_SEEDS and combined.n == 3 and combined.verdict == SUPPORTED
    assert combined.details["per_seed_effect"] == [0.20, 0.24, 0.22]
    assert combined.primary and not secondary.primary  # the population's role survives the seeds
    # Seeds that disagree in sign give a mean whose interval straddles the minimum effect.
    (split,) = ledger.combine_seeds([[row_with(e)] for e in (0.3, -0.3, 0.05)])
    assert split.verdict == INCONCLUSIVE
    agreeing, single = rules.t_interval([0.2, 0.2]), rules.t_interval([0.2])
    assert (agreeing.mean, agreeing.low, agreeing.high) == (0.2, 0.2, 0.2) and single.low is None
    # A seed whose row has no interval (too few failures) measured nothing: it is left out.
    unmeasured = replace(row_with(0.0), ci_low=math.nan, ci_high=math.nan)
    (few,) = ledger.combine_seeds([[unmeasured], [unmeasured], [row_with(0.2)]])
    assert few.n == 1 and math.isnan(few.ci_low) and few.verdict == INCONCLUSIVE
    assert few.details["per_seed_effect"] == [0.0, 0.0, 0.2]


# --- Interventions --------------------------------------------------------------------------------
def ring_of(width: int) -> torch.Tensor:
    ring = torch.ones(32, 32, dtype=torch.bool)
    ring[width : 32 - width, width : 32 - width] = False
    return ring


def test_the_ring_interventions_change_the_ring_or_the_inside_and_nothing_else() -> None:
    images, donors = random_images(5, 0) | 1, random_images(5, 1)  # images: no zero pixel
    out = iv.swap_surround(images, donors, width=8)  # the donor's ring, the image's centre
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out[:, :, 8:24, 8:24], images[:, :, 8:24, 8:24])
    assert torch.equal(out[:, :, ring_of(8)], donors[:, :, ring_of(8)])
    out, ring = iv.surround_only(images, 4), ring_of(4)  # the ring kept, the inside its mean colour
    assert out.dtype == torch.uint8 and torch.equal(out[:, :, ring], images[:, :, ring])
    total, inside = images.double().sum((2, 3)), images[:, :, 4:28, 4:28].double().sum((2, 3))
    mean = ((total - inside) / int(ring.sum())).round()  # per image and channel
    assert torch.equal(out[:, :, 4:28, 4:28].double(), mean[:, :, None, None].expand(-1, -1, 24, 24))
    out = iv.black_border(images, 3)  # zero exactly on the ring, the rest where it was
    assert torch.equal(out == 0, ring_of(3).expand_as(images))
    assert torch.equal(out[:, :, 3:29, 3:29], images[:, :, 3:29, 3:29])
    for intervention in (
        lambda w: iv.swap_surround(images, donors, w),
        lambda w: iv.surround_only(images, w),
    ):
        with pytest.raises(ValueError, match="central square"):
            intervention(16)


def test_a_frequency_hybrid_puts_one_images_detail_on_anothers_blur() -> None:
    images, donors, sigma = random_images(4, 6), random_images(4, 7), 1.5
    same = iv.frequency_hybrid(images, images, sigma)  # detail + blur of the same image: the image
    assert same.dtype == torch.uint8 and (same.int() - images.int()).abs().max() <= 1
    flat = torch.full_like(images, 90)  # no detail: the donor's blur alone
    blur = gaussian_blur(donors.float(), kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
    assert (iv.frequency_hybrid(flat, donors, sigma).float() - blur).abs().max() <= 1
    # A 1-px checkerboard is all detail: on a flat donor it keeps its contrast, and as a donor it
    # gives only its mean.
    checker = ((torch.arange(32)[:, None] + torch.arange(32)) % 2 * 100).to(torch.uint8)
    checker = checker.expand(4, 3, 32, 32).contiguous()  # 0 and 100, mean 50
    hybrid = iv.frequency_hybrid(checker, flat, sigma)
    assert (hybrid.int() - (checker.int() - 50 + 90)).abs().max() <= 1
    assert (iv.frequency_hybrid(flat, checker, sigma).int() - 50).abs().max() <= 1
    with pytest.raises(ValueError, match="one shape"):
        iv.frequency_hybrid(images, donors[:2], sigma)


def test_object_centres_find_a_bright_square_from_the_pixels() -> None:
    corners = [(3, 4), (20, 7), (13, 13), (22, 22), (5, 21)]  # (x, y) of a 6-px square's top left
    images = 50 + random_images(len(corners), 8) % 21  # a background of mild noise, 50 to 70
    for i, (x, y) in enumerate(corners):
        images[i, :, y : y + 6, x : x + 6] = torch.tensor([250, 200, 40], dtype=torch.uint8)[:, None, None]
    expected = torch.tensor([[x + 2.5, y + 2.5] for x, y in corners])
    assert (iv.object_centres(images) - expected).abs().max() <= 1.0
    flat = torch.full((1, 3, 32, 32), 60, dtype=torch.uint8)
    assert torch.allclose(iv.object_centres(flat), torch.tensor([[15.5, 15.5]]))  # no object: the centre


def test_a_tile_shuffle_keeps_each_images_pixels_and_tiles() -> None:
    images = random_images(4, 2)
    out = iv.shuffle_tiles(images, 8, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and not torch.equal(out, images)

    def tiles(x: torch.Tensor) -> list[list[bytes]]:
        t = x.reshape(x.shape[0], 3, 4, 8, 4, 8).permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], 16, -1)
        return [sorted(bytes(tile.tolist()) for tile in image) for image in t]

    assert tiles(out) == tiles(images)  # the same tiles, so the same pixel multiset, image by image
    again = iv.shuffle_tiles(images, 8, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded
    assert torch.equal(iv.shuffle_tiles(images, 32, torch.Generator()), images)  # one tile: unchanged
    with pytest.raises(ValueError, match="divide"):
        iv.shuffle_tiles(images, 5, torch.Generator())


def test_a_shift_moves_the_content_and_fills_with_the_augmentations_zero() -> None:
    images = random_images(3, 3)
    out = iv.shift_images(images, 3, -2)  # 3 px right, 2 px up
    assert torch.equal(out[:, :, :30, 3:], images[:, :, 2:, :29])
    assert (out[:, :, :, :3] == 0).all() and (out[:, :, 30:, :] == 0).all()
    assert torch.equal(iv.shift_images(images, 0, 0), images)
    assert len(iv.shift_grid(4, 2)) == 24 and len(iv.shift_grid(4, 1)) == 80
    assert (0, 0) not in iv.shift_grid(4, 1)


def test_donors_have_the_requested_classes() -> None:
    donor_labels = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    wanted = torch.tensor([2, 0, 1, 2, 2, 0])
    picked = iv.draw_donors(donor_labels, wanted, torch.Generator().manual_seed(0))
    assert torch.equal(donor_labels[picked], wanted)
    with pytest.raises(ValueError, match="no image"):
        iv.draw_donors(donor_labels, torch.tensor([3]), torch.Generator())


def test_controls_share_the_failures_predicted_class_where_one_is_left() -> None:
    # Correct images 0-3 (predicted 0, 1, 1, 0); failures 4-7 in descending confidence (predicted 1, 1,
    # 2, 1).
    confidences = torch.tensor([0.90, 0.50, 0.60, 0.92, 0.95, 0.91, 0.90, 0.52])
    predicted, labels = torch.tensor([0, 1, 1, 0, 1, 1, 2, 1]), torch.tensor([0, 1, 1, 0, 0, 0, 0, 0])
    by_class = matched_controls(confidences, predicted, labels, torch.arange(4, 8), seed=0)
    # The two class-1 images go to the first two class-1 failures, however far their confidence;
    # class 2 has no correct image: the nearest of another class. The last failure finds class 1
    # used up, and uses it again rather than another class.
    assert by_class.tolist() == [2, 1, 0, 1]
    assert bool((predicted == labels)[by_class].all())


# --- Intervals cover known values -----------------------------------------------------------------
def test_the_intervals_cover_known_values_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    runs = 200
    hits = {"bootstrap": 0, "two groups": 0, "t": 0, "exact": 0}
    for run in range(runs):
        x = rng.normal(0.3, 1.0, 60)
        hits["bootstrap"] += (lambda ci: ci[0] <= 0.3 <= ci[1])(rules.bootstrap_interval([x], seed=run))
        a, b = rng.binomial(1, 0.6, 80), rng.binomial(1, 0.4, 50)
        hits["two groups"] += (lambda ci: ci[0] <= 0.2 <= ci[1])(rules.bootstrap_interval([a, b], seed=run))
        interval = rules.t_interval(list(rng.normal(0.1, 0.05, 5)))
        hits["t"] += interval.low <= 0.1 <= interval.high
        low, high = rules.exact_proportion(int(rng.binomial(100, 0.85)), 100)
        hits["exact"] += low <= 0.85 <= high
    for name, count in hits.items():
        assert 0.88 <= count / runs <= 1.0, name
    assert math.isnan(rules.bootstrap_interval([[1.0]])[0])
    # A handful of equal values would give a zero-width interval, a verdict on a few images: none.
    assert math.isnan(rules.bootstrap_interval([np.zeros(rules.MIN_BOOTSTRAP_SAMPLE - 1)])[1])
    assert rules.bootstrap_interval([np.zeros(rules.MIN_BOOTSTRAP_SAMPLE)]) == (0.0, 0.0)


def test_mcnemar_exact_on_paired_accuracies() -> None:
    before = torch.tensor([True] * 80 + [False] * 20)
    after = before.clone()
    after[80:95] = True  # 15 images fixed
    after[:3] = False  # 3 broken
    diff, low, high, p = rules.mcnemar_exact(before, after)
    assert diff == pytest.approx(0.12) and 0 < low < diff < high and p < 0.01
    assert rules.mcnemar_exact(before, before) == (0.0, 0.0, 0.0, 1.0)
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):  # true difference +0.05: 15 % of images flip up, 10 % flip down
        u = rng.random(400)
        before = torch.from_numpy(u < 0.6)
        after = torch.from_numpy((u < 0.6) & ~((u > 0.5) & (u < 0.6)) | ((u > 0.6) & (u < 0.75)))
        _, low, high, _ = rules.mcnemar_exact(before, after)
        covered += low <= 0.05 <= high
    assert covered / 200 >= 0.9


def test_accuracy_claims_on_known_accuracies() -> None:
    n = 10_000
    labels = torch.arange(n) % 10
    base_preds, aug_preds = labels.clone(), labels.clone()
    base_preds[: int(0.15 * n)] += 1  # 85 % right
    aug_preds[: int(0.11 * n)] += 1  # 89 % right, the same images wrong and 400 more right
    base, aug = (
        Predictions(nn.functional.one_hot(p % 10, 10).float(), labels) for p in (base_preds, aug_preds)
    )
    rows = probes.accuracy_claims(base, aug, 0.99, 0.90, 40_000)
    assert [r.claim[0] for r in rows] == ["1", "1", "2", "2", "2"]
    base_level, base_gap, gain, aug_level, narrowing = rows
    assert base_level.effect == pytest.approx(0.85) and base_level.verdict == SUPPORTED
    assert base_gap.effect == pytest.approx(0.14) and base_gap.verdict == SUPPORTED
    assert gain.method == rules.MCNEMAR_EXACT
    assert gain.effect == pytest.approx(0.04) and gain.verdict == SUPPORTED
    assert aug_level.effect == pytest.approx(0.89) and aug_level.verdict == SUPPORTED
    assert narrowing.effect == pytest.approx(0.14 - 0.01) and narrowing.verdict == SUPPORTED
    assert all(r.ci_low <= r.effect <= r.ci_high and r.population == rules.ALL_IMAGES for r in rows)
    # A baseline at 70 % is not "about 85 %", and one whose training accuracy is lower does not overfit
    # (with no gap at all, 10,000 test images cannot tell it from a gap of one point: inconclusive).
    wrong = (labels + (torch.arange(n) < 3000)) % 10
    low_base = Predictions(nn.functional.one_hot(wrong, 10).float(), labels)
    rows = probes.accuracy_claims(low_base, low_base, 0.65, 0.65, 40_000)
    assert rows[0].verdict == NOT_SUPPORTED and rows[1].verdict == NOT_SUPPORTED
    assert probes.accuracy_claims(low_base, low_base, 0.70, 0.70, 40_000)[1].verdict == INCONCLUSIVE


# --- The claims' tests on models whose answer is known --------------------------------------------
RING = iv._surround_mask(32, 8)  # the outer 8 px; the centre is the 16×16 square inside


def level(red: torch.Tensor) -> torch.Tensor:  # class c: normalised red (-2 to 2) in the c-th tenth
    return ((red + 2) / 4 * 10).clamp(0, 9.99).floor().long()


def vote(classes: torch.Tensor) -> torch.Tensor:
    return nn.functional.one_hot(classes, 10).float() * 10  # every answer equally (and very) sure


def red(levels: torch.Tensor) -> torch.Tensor:  # the uint8 red :func:`level` reads as mid-level
    z = (levels.double() + 0.5) / 10 * 4 - 2
    return ((z * CIFAR10_STD[0] + CIFAR10_MEAN[0]) * 255).round().clamp(0, 255).to(torch.uint8)


class ColourOf(nn.Module):
    """The class of the mean red of one region ("ring", "centre" or "all"): a model that reads only it."""

    def __init__(self, region: str) -> None:
        super().__init__()
        self.region = {"ring": RING, "centre": ~RING, "all": torch.ones(32, 32, dtype=torch.bool)}[region]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vote(level(x[:, 0][:, self.region].mean(1)))


class SurroundFirst(nn.Module):
    """The ring's class when the ring looks like a class's background (bright blue, "sky"), else the
    centre's: a model that reads the object unless the background seems to say the class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marked = x[:, 2][:, RING].mean(1) > 0
        ring, centre = (level(x[:, 0][:, region].mean(1)) for region in (RING, ~RING))
        return vote(torch.where(marked, ring, centre))


def images_of_levels(
    levels: torch.Tensor, centre_levels: torch.Tensor, marked: torch.Tensor | None = None
) -> torch.Tensor:
    """Ring red at ``levels``, centre red at ``centre_levels``; the ring's blue bright where ``marked``."""
    images = torch.zeros(len(levels), 3, 32, 32, dtype=torch.uint8)
    images[:, 0] = red(levels)[:, None, None]
    images[:, 0, 8:24, 8:24] = red(centre_levels)[:, None, None]
    if marked is not None:
        images[:, 2] = (marked[:, None, None] & RING).to(torch.uint8) * 255
    return images


def test_the_background_test_finds_a_surround_driven_model_and_clears_the_others() -> None:
    # 350 images, labels 0-9 in turn, in three groups:
    #   A (0-99): a misleading background: marked ring at class t+3, centre (object) at the true class;
    #   B (100-299): a plain background: unmarked ring at class t+5, centre at the true class;
    #   C (300-349): a misleading object: unmarked ring at the true class, centre at class t+3.
    # The test (ring 8 px) keeps each failure's and control's ring and fills the centre with its colour.
    labels = torch.arange(350) % 10
    ring, centre = labels.clone(), labels.clone()
    ring[:100], ring[100:300] = (labels[:100] + 3) % 10, (labels[100:300] + 5) % 10  # A, B
    centre[300:] = (labels[300:] + 3) % 10  # C
    images = images_of_levels(ring, centre, torch.arange(350) < 100)
    donor_labels = torch.arange(100) % 10
    donors = images_of_levels(donor_labels, donor_labels, torch.ones(100, dtype=torch.bool)), donor_labels
    # SurroundFirst fails on A (the marked ring's class) and C (the object's); correct on B. A's
    # surround alone still says its wrong class, C's says the true one, B's (the controls) says t+5:
    # 100 of 150 failures against none of the controls. ColourOf("centre") fails on C alone, whose
    # surround says the true class, and its controls' (A, B) surrounds say another class: 0 against 0.
    # ColourOf("ring") reads every class off the background: it fails on A and B, is right on C, and
    # a surround alone gives every image its prediction, failures and controls alike: 1 against 1.
    expected = {
        "surround first": (SurroundFirst(), 150, 2 / 3, 0.0, SUPPORTED),
        "centre": (ColourOf("centre"), 50, 0.0, 0.0, NOT_SUPPORTED),
        "ring": (ColourOf("ring"), 300, 1.0, 1.0, NOT_SUPPORTED),
    }
    for name, (model, n, says_failure, says_control, verdict) in expected.items():
        predictions = predict(model, images, labels)
        failures = find_high_confidence_failures(predictions.probs, labels, 0.5)
        row = probes.background_claim(model, images, predictions, failures, *donors, width=8, seed=1)
        predicted, confidences = predictions.preds, predictions.confidences
        controls = matched_controls(confidences, predicted, labels, failures.indices, seed=1)
        assert bool((predictions.preds == labels)[controls].all()), name
        assert torch.equal(predictions.preds[controls], failures.predicted), name  # the same class
        assert (row.n, row.population, row.verdict) == (n, ALL_FAILURES, verdict), name
        assert row.details["surround_says_failure"] == pytest.approx(says_failure), name
        assert row.details["surround_says_control"] == says_control, name
        assert row.effect == pytest.approx(says_failure - says_control), name
        # The pull: a marked ring of another class makes SurroundFirst say that class, every time, for
        # every class (and any ring, the ring reader); the centre reader says it only when the ring's
        # class happens to be its answer (1 in 9).
        pull, follows = row.details["follows_donor_by_class"], row.details["other_follows_donor"]
        if name == "centre":
            assert follows < 0.2 and max(pull) < 0.3 and row.details["rescue_true_surround"] == 0.0
        else:
            assert follows == 1.0 and pull == [1.0] * 10 and row.details["rescue_true_surround"] == 1.0


# The texture images: red flat at a colour's level; green 128 with a 1-px checkerboard whose contrast
# says a class (6 (c + 1) grey levels: all of it fine detail, which a 1.5-px blur removes) or flat.
CHECKER = (torch.arange(32)[:, None] + torch.arange(32)) % 2 * 2 - 1


def texture_images(colours: torch.Tensor, textures: torch.Tensor) -> torch.Tensor:
    """Red at the ``colours`` levels; the checkerboard of class ``textures`` (-1: none) on green 128."""
    images = torch.zeros(len(colours), 3, 32, 32, dtype=torch.uint8)
    images[:, 0] = red(colours)[:, None, None]
    contrast = torch.where(textures >= 0, 6 * (textures + 1), 0)
    images[:, 1] = (128 + CHECKER * contrast[:, None, None]).to(torch.uint8)
    return images


class TextureFirst(nn.Module):
    """The class of the green checkerboard's contrast when there is one, of the mean red otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        green = x[:, 1] * CIFAR10_STD[1] * 255  # grey levels, up to an offset
        contrast = (green[:, :, 1:] - green[:, :, :-1]).abs().mean((1, 2)) / 2
        texture = ((contrast / 6).round() - 1).clamp(0, 9).long()
        return vote(torch.where(contrast > 3, texture, level(x[:, 0].mean((1, 2)))))


def test_the_texture_test_finds_a_texture_driven_model_and_clears_a_colour_reader() -> None:
    # 350 images, labels 0-9 in turn: A (0-99) the true colour with class t+1's texture; B (100-299)
    # the true colour, no texture; C (300-349) class t+1's colour, no texture. The cue conflict keeps
    # each image's fine detail on the blur (the colour) of a donor of another class than the prediction.
    labels = torch.arange(350) % 10
    wrong = (labels + 1) % 10
    colours = torch.where(torch.arange(350) >= 300, wrong, labels)
    textures = torch.where(torch.arange(350) < 100, wrong, -1)
    images = texture_images(colours, textures)
    donor_labels = torch.arange(100) % 10
    donors = texture_images(donor_labels, torch.full((100,), -1)), donor_labels
    classes = ["cat", "dog", *"abcdefgh"]
    # TextureFirst fails on A (texture) and C (colour), is right on B: A's texture survives the
    # conflict, C's and the controls' colour is the donor's: 100 of 150 against none. The mean-colour
    # reader fails on C alone and always answers the donor's colour: none against none.
    expected = {
        "texture first": (TextureFirst(), 150, 2 / 3, SUPPORTED),
        "colour": (ColourOf("all"), 50, 0.0, NOT_SUPPORTED),
    }
    for name, (model, n, kept, verdict) in expected.items():
        predictions = predict(model, images, labels)
        failures = find_high_confidence_failures(predictions.probs, labels, 0.5)
        row = probes.texture_claim(model, images, predictions, failures, *donors, classes, seed=0)
        assert (row.n, row.verdict, row.details["sigma"]) == (n, verdict, 1.5), name
        assert row.details["kept_failures"] == pytest.approx(kept) and row.details["kept_controls"] == 0.0
        assert row.effect == pytest.approx(kept), name
        # cat (0) -> dog (1): the failures of label 0, a tenth of them, and all errors are confident.
        assert row.details["cat_dog_failures"] == row.details["cat_dog_errors"] == [n // 10, n], name
    # The colour reader is blind to shape: tile shuffling leaves its accuracy where it was.
    accuracies = probes.shuffled_accuracy(ColourOf("all"), images, labels, tiles=(16, 8))
    assert accuracies.clean == pytest.approx(300 / 350)
    assert accuracies.tiles == {16: accuracies.clean, 8: accuracies.clean}
    assert accuracies.retained[8] == pytest.approx(1.0)
    saved = json.loads(json.dumps(accuracies.to_dict()))  # an entry of tile_shuffle.json
    assert list(saved) == ["clean", "chance", "tiles", "retained"] and list(saved["tiles"]) == ["16", "8"]
    assert probes.TileShuffle.from_dict(saved) == accuracies


def test_the_off_center_test_on_objects_found_from_the_pixels() -> None:
    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return vote(torch.zeros(len(x), dtype=torch.int64))

    # 100 images of a bright 6-px square on grey: the first 50 centred (its centre at 15.5, 15.5), the
    # others 8 px off it to the right, left, below or above. Every label is 1, every answer 0.
    images = torch.full((100, 3, 32, 32), 50, dtype=torch.uint8)
    offsets = [(0, 0)] * 50 + [(8, 0), (-8, 0), (0, 8), (0, -8)] * 12 + [(8, 0), (-8, 0)]
    for i, (dx, dy) in enumerate(offsets):
        images[i, :, 13 + dy : 19 + dy, 13 + dx : 19 + dx] = 230
    model = Zero()
    labels = torch.ones(100, dtype=torch.int64)
    failures = find_high_confidence_failures(predict(model, images, labels).probs, labels, 0.5)
    assert len(failures) == 100
    centred, off = torch.arange(50), torch.arange(50, 100)
    row = probes.off_center_claim(model, images, failures, fixed=off, seed=0)  # the off-center ones fixed
    assert (row.effect, row.ci_low, row.ci_high, row.verdict) == (1.0, 1.0, 1.0, SUPPORTED)
    assert row.details["off_center_failures"] == 50 and row.n == 100
    assert (row.details["fixed_if_off_center"], row.details["fixed_if_centred"]) == (1.0, 0.0)
    assert row.details["rescued_toward_centre"] == row.details["rescued_by_border_alone"] == 0.0
    row = probes.off_center_claim(model, images, failures, fixed=centred, seed=0)  # the centred ones fixed
    assert row.effect == -1.0 and row.verdict == NOT_SUPPORTED
    row = probes.off_center_claim(model, images, failures, fixed=torch.arange(100), seed=0)  # all, wherever
    assert (row.effect, row.verdict) == (0.0, NOT_SUPPORTED)
    # Against a reseed: augmentation fixed the off-center ones; a reseed fixed them too (it only flips
    # fragile failures), or fixed none: only the second leaves augmentation a gain of its own.
    reseed, did = probes.reseed_claims(images, failures, off, reseed_fixed=off, seed=0)
    assert (reseed.effect, reseed.verdict, did.effect, did.verdict) == (1.0, SUPPORTED, 0.0, NOT_SUPPORTED)
    assert did.details["gain_if_off_center"] == [0.0, 0.0, 0.0] and did.details["gain_if_centred"] == 0.0
    none = torch.tensor([], dtype=torch.int64)
    reseed, did = probes.reseed_claims(images, failures, off, reseed_fixed=none)
    assert (reseed.effect, did.effect, did.verdict, did.n) == (0.0, 1.0, SUPPORTED, 100)
    # A worse augmented model: it fixes nothing, the reseed the centred ones. The difference in
    # differences alone would say +100 points; augmentation gained nothing on the off-center failures.
    reseed, did = probes.reseed_claims(images, failures, none, reseed_fixed=centred)
    assert did.details["difference_in_differences"] == [1.0, 1.0, 1.0]
    assert (did.effect, did.ci_low, did.ci_high, did.verdict) == (0.0, 0.0, 0.0, NOT_SUPPORTED)


def test_no_failures_give_an_inconclusive_row() -> None:
    model, images = ColourOf("ring"), random_images(20)
    labels = torch.arange(20) % 10
    predictions = predict(model, images, labels)
    empty = torch.tensor([], dtype=torch.int64)
    none = find_high_confidence_failures(predictions.probs, labels, 0.5).restricted_to(empty)
    rows = [
        probes.background_claim(model, images, predictions, none, images, labels),
        probes.texture_claim(model, images, predictions, none, images, labels, list("abcdefghij")),
        probes.off_center_claim(model, images, none, empty),
    ]
    assert all(r.n == 0 and math.isnan(r.effect) and r.verdict == INCONCLUSIVE for r in rows)


def road(gradcam: list[float], random: list[float]) -> RoadTable:
    """A road.json with per-image combined ROAD scores of Grad-CAM at claim 5's layer and of a random map
    (claim 5 reads nothing else)."""
    rows = {f"gradcam@{probes.GRADCAM_CLAIM_LAYER}": gradcam, "random": random}
    curves = {key: RoadCurves(len(s), [], [], [], [], [], None, None, s) for key, s in rows.items()}
    return RoadTable(len(gradcam), [], curves, 0.0)


FAITHFUL = road([0.2] * 40, [0.0] * 40)


def measures(
    failure_shares: list, control_shares: list, *, area: float = 0.8, failure_offsets: list | None = None
) -> BackgroundShares:
    """Claim 5's measures: K failures and K controls whose estimated background covers ``area`` of the
    image (None: an all-zero map), their objects centred unless ``failure_offsets`` says otherwise."""
    k = len(failure_shares)
    shares = [[math.nan if v is None else v for v in arm] for arm in (failure_shares, control_shares)]
    offsets = [failure_offsets or [0.0] * k, [0.0] * k]
    return BackgroundShares(
        torch.tensor(shares, dtype=torch.float64).reshape(2, k),
        torch.full((2, k), area, dtype=torch.float64),
        torch.tensor(offsets, dtype=torch.float64).reshape(2, k),
        torch.arange(2 * k).reshape(2, k),
    )


def test_the_gradcam_test_counts_maps_heavier_on_the_background_than_a_uniform_map() -> None:
    # Backgrounds cover 80 % of each image: a map with more than 80 % of its mass there looks at the
    # background more per pixel than at the object. Half the controls do; 90 of 100 failures do.
    controls = [0.7] * 50 + [0.9] * 50
    heavy = measures([0.9] * 90 + [0.7] * 10, controls)
    row = probes.gradcam_claim(heavy, FAITHFUL)
    assert row.details["background_heavy_failures"] == 0.9 and row.details["background_heavy_controls"] == 0.5
    assert row.effect == pytest.approx(0.4) and row.verdict == SUPPORTED
    assert row.details["road"]["faithful"] and not row.precondition
    # A prevalence claim: ten points more failures than controls is the least that counts.
    assert row.rule.min_effect == 0.10
    small = measures([0.9] * 58 + [0.7] * 42, controls)  # +8 points, however narrow the interval
    assert probes.gradcam_claim(small, FAITHFUL).verdict != SUPPORTED
    same = measures([*controls[:99], None], controls)
    row = probes.gradcam_claim(same, FAITHFUL)
    assert row.n == 99 and row.effect == 0.0 and row.verdict == NOT_SUPPORTED
    # Diffuse failure maps just under the line: a higher mean share than the controls', and yet no map
    # that looks at the background more than at the object.
    diffuse = measures([0.79] * 100, [0.5] * 100)
    row = probes.gradcam_claim(diffuse, FAITHFUL)
    assert row.details["failure_background_share"] > row.details["control_background_share"]
    assert row.effect == 0.0 and row.verdict == NOT_SUPPORTED
    # The line is each image's own background area: the same shares over larger backgrounds are not heavy.
    assert probes.gradcam_claim(measures([0.9] * 100, [0.7] * 100, area=0.95), FAITHFUL).effect == 0.0
    assert math.isnan(probes.gradcam_claim(measures([], []), FAITHFUL).effect)
    # Objects off the centre are claim 6's cause: pairs with either object 4 px or more off are set
    # aside. The first 60 failures' objects sit 9 px off, so only the last 40 pairs count.
    off = measures([0.9] * 90 + [0.7] * 10, controls, failure_offsets=[9.0] * 60 + [0.0] * 40)
    row = probes.gradcam_claim(off, FAITHFUL)
    assert row.details["pairs_off_center_set_aside"] == 60 and row.n == 40
    assert row.details["background_heavy_failures"] == 0.75  # failures 60-99: 30 of them above the line
    # On the bench (road None) the verdict is the test's own, and nothing is withheld.
    assert not probes.gradcam_claim(heavy, None).precondition


def test_object_masks_find_the_object_from_the_pixels() -> None:
    images = torch.full((2, 3, 32, 32), 128, dtype=torch.uint8)
    images[0, :, 4:12, 20:28] = 250  # an off-center square
    masks = iv.object_masks(images)
    assert masks.shape == (2, 32, 32) and masks.dtype == torch.bool
    inside = masks[0, 4:12, 20:28]
    assert bool(inside.all()) and not bool(masks[0, 16:, :16].any())  # found where it is, nowhere far
    assert not bool(masks[1].any())  # a flat image has no object
    assert iv.object_masks(images[:0]).shape == (0, 32, 32)


def test_background_shares_explain_the_failures_and_their_matched_controls_at_claim_5s_layer() -> None:
    model, images = resnet18(width=4).eval(), random_images(40)
    labels = torch.arange(40) % 10
    predictions = predict(model, images, labels)
    failures = find_high_confidence_failures(predictions.probs, labels, 0.05)
    result = probes.background_shares(model, images, predictions, failures, max_failures=5, seed=3)
    assert result.indices[0].tolist() == failures.indices[:5].tolist() and result.indices.shape == (2, 5)
    controls = result.indices[1]
    assert bool((predictions.preds[controls] == labels[controls]).all())  # correct images
    maps = explain_images(
        model, images[controls], predictions.preds[controls], layer=probes.GRADCAM_CLAIM_LAYER
    )
    objects = iv.object_masks(images[controls])
    expected = [math.nan if math.isnan(v) else 1 - v for v in mask_share(maps, objects).tolist()]
    assert result.shares[1].tolist() == pytest.approx(expected, nan_ok=True)
    assert result.areas[1].tolist() == pytest.approx((~objects).double().mean(dim=(1, 2)).tolist())
    assert result.offsets[1].tolist() == pytest.approx(probes._offsets(images[controls]).norm(dim=1).tolist())
    empty = failures.restricted_to(torch.tensor([], dtype=torch.int64))
    nothing = probes.background_shares(model, images, predictions, empty)
    assert all(x.shape == (2, 0) for x in (nothing.shares, nothing.areas, nothing.offsets, nothing.indices))


def test_maps_that_do_not_beat_random_ones_on_road_withhold_claim_5s_verdict() -> None:
    rng = np.random.default_rng(1)
    noise = list(rng.normal(0, 0.1, 40))
    shifted = measures([0.9] * 100, [0.5] * 100)
    row = probes.gradcam_claim(shifted, road(noise, [0.0] * 40))  # no better than random
    assert row.effect == 1.0 and row.rule.verdict(row.effect, row.ci_low, row.ci_high) == SUPPORTED
    assert row.verdict == INCONCLUSIVE and "do not beat random maps on ROAD" in row.precondition
    check = row.details["road"]
    assert list(check) == ["layer", "road_minus_random", "ci_low", "ci_high", "faithful"]
    assert not check["faithful"] and check["ci_low"] < 0 < check["ci_high"]
    few = probes.gradcam_claim(shifted, road(noise[:5], [0.0] * 5))  # too few to check: say so
    assert few.verdict == INCONCLUSIVE and few.precondition.startswith("too few failures scored by ROAD")
    assert ClaimResult.from_dict(row.to_dict()) == row  # the withheld verdict survives the JSON
    seeds = ledger.combine_seeds([[row], [probes.gradcam_claim(shifted, FAITHFUL)]])
    assert seeds[0].verdict == INCONCLUSIVE and seeds[0].precondition.endswith("(in 1 of 2 seeds)")


def _human_report(categories: list[tuple[int, str]]) -> HumanFailureReport:
    """A human-label report of these ``(index, category)`` failures; the claims read nothing else."""
    records = tuple(FailureRecord(i, c, 1.0, 0.0, 0) for i, c in categories)
    return HumanFailureReport(
        source="constructed",
        ambiguity_threshold=0.8,
        num_failures=len(records),
        counts={},
        base_counts={},
        enrichment={},
        accuracy=1.0,
        accuracy_vs_human_plurality=1.0,
        spearman_confidence_vs_human_share=None,
        spearman_given_prob_vs_human_share=None,
        failures=records,
    )


def test_model_errors_only_sets_label_problems_aside() -> None:
    columns = torch.tensor([5, 2, 9]), torch.tensor([1, 1, 1]), torch.tensor([0, 0, 0]), torch.ones(3)
    failures, no_labels = FailureSet(*columns, 0.9, 10, 4), NotApplicable("no labels")
    report = _human_report([(5, "model error"), (2, "verified label error"), (9, "ambiguous")])
    populations = _populations(failures, report)  # the primary population last
    assert list(populations) == [ALL_FAILURES, MODEL_ERRORS]
    assert populations[MODEL_ERRORS].indices.tolist() == [5]
    assert list(_populations(failures, no_labels)) == [ALL_FAILURES]


# --- The planted-cause bench and the ledger it gates ----------------------------------------------
def cause_row(claim: int, effect: float, population: str = ALL_FAILURES, **fields: object) -> ClaimResult:
    """A row of claims 3-6 with the interval effect ± 3 pts: 0.3 is supported, 0.0 not supported."""
    row = (CLAIMS[claim], "t", "c", effect, effect - 0.03, effect + 0.03, "m", 50, RULE_CAUSE, population)
    return ClaimResult(*row, **fields)  # type: ignore[arg-type]


def bench_rows(changed: dict[tuple[int, str], float] | None = None) -> list[ClaimResult]:
    """Every test on every cause: +30 pts on its own cause, 0 elsewhere, except the ``changed`` cells."""
    causes = [(c, cause) for c in range(3, 7) for cause in bench.CAUSES]
    effects = {(c, cause): 0.3 * (cause == bench.CAUSE_OF_CLAIM[c]) for c, cause in causes}
    effects.update(changed or {})
    return [cause_row(c, e, rules.BENCH + cause) for (c, cause), e in effects.items()]


def test_the_bench_gate_passes_a_sensitive_and_specific_test_only() -> None:
    good = bench_rows()
    matrix = bench.bench_verdicts([cause_row(3, 0.3), *good])  # a real-data row is no bench row
    assert list(matrix) == [3, 4, 5, 6] and list(matrix[3]) == list(bench.CAUSES)
    assert matrix[4] == {cause: SUPPORTED if cause == "texture" else NOT_SUPPORTED for cause in bench.CAUSES}
    assert bench.bench_gate(good).reasons == {3: "", 4: "", 5: "", 6: ""}
    nothing = bench.bench_gate([cause_row(3, 0.3)])  # no bench rows, no gate
    assert nothing.reasons == {} and nothing.withheld(3) == NO_BENCH
    # Blind: the texture test misses the planted texture cause (or cannot tell: inconclusive).
    for effect in (0.0, 0.05):
        gate = bench.bench_gate(bench_rows({(4, "texture"): effect})).reasons
        assert gate[4] == "the test is not sensitive: on the bench it did not find a planted texture cause"
        assert gate[3] == gate[5] == gate[6] == ""
    # Loose: the background test also says supported where the labels, not the backgrounds, are wrong.
    gate = bench.bench_gate(
        bench_rows({(3, "label noise"): 0.3, (3, "none"): 0.3, (6, "texture"): 0.05})
    ).reasons
    assert gate[3] == "the test is not specific: on the bench it also said supported for none, label noise"
    assert gate[4] == gate[5] == gate[6] == ""  # an inconclusive off-diagonal cell is no false alarm


def test_a_runs_ledger_is_read_from_its_stages_gated_by_the_bench_and_shown(tmp_path: Path) -> None:
    gain = probes.accuracy_claims(*[Predictions(torch.eye(10), torch.arange(10))] * 2, 0.9, 0.9, 100)[2]
    road_failed = "the layer3 maps do not beat random maps on ROAD"
    stages = {
        "gradcam": [
            cause_row(3, 0.3, MODEL_ERRORS),
            cause_row(3, 0.0, primary=False),
            cause_row(4, 0.3, MODEL_ERRORS),
            cause_row(5, 0.3, MODEL_ERRORS, precondition=road_failed),
        ],
        "reevaluation": [gain, cause_row(6, 0.0, MODEL_ERRORS)],
    }
    for stage, rows in {**stages, "stress": []}.items():
        (tmp_path / stage).mkdir()
        save_json(tmp_path / stage / ledger.CLAIMS_FILE, [r.to_dict() for r in rows])
    real = [gain, *stages["gradcam"], stages["reevaluation"][1]]  # by claim
    verdicts = [NOT_SUPPORTED, SUPPORTED, NOT_SUPPORTED, SUPPORTED, INCONCLUSIVE, NOT_SUPPORTED]
    assert [r.verdict for r in real] == verdicts
    # No bench yet: claims 1-2 keep their verdicts, 3-6 are withheld (claim 5 keeps its own reason).
    gated = ledger.read_ledger(tmp_path)
    assert [replace(r, precondition=x.precondition) for r, x in zip(gated, real, strict=True)] == real
    assert [r.precondition for r in gated] == ["", NO_BENCH, NO_BENCH, NO_BENCH, road_failed, NO_BENCH]
    assert [r.verdict for r in gated] == [NOT_SUPPORTED, *[INCONCLUSIVE] * 5]
    # A passing bench: every row keeps its rule's verdict; the bench's rows come last.
    save_json(tmp_path / "stress" / ledger.CLAIMS_FILE, [r.to_dict() for r in bench_rows()])
    gated = ledger.read_ledger(tmp_path)
    assert gated[:6] == real and gated[6:] == bench_rows()
    assert ledger.read_ledger(tmp_path, stages=("stress",)) == bench_rows()
    # A bench the texture test fails: its real row is withheld with the bench's reason.
    texture_fails = bench_rows({(4, "texture"): 0.0})
    save_json(tmp_path / "stress" / ledger.CLAIMS_FILE, [r.to_dict() for r in texture_fails])
    failed = ledger.read_ledger(tmp_path)
    assert failed[3].verdict == INCONCLUSIVE and "not sensitive" in failed[3].precondition
    assert [r.verdict for i, r in enumerate(failed[:6]) if i != 3] == [verdicts[i] for i in (0, 1, 2, 4, 5)]
    # The ledger's table leaves the bench out and marks each row's population and role.
    frame = tables.claims_table(gated)
    assert list(frame.columns) == ["claim", "test", "control", "effect [95 % CI]", "verdict"]
    assert len(frame) == 6 and list(frame["verdict"])[:4] == verdicts[:4]
    assert frame["verdict"][4] == f"{INCONCLUSIVE} ({road_failed})"
    assert frame["effect [95 % CI]"][1] == "+30.0 pts [+27.0, +33.0]"  # a difference, in points
    assert frame["test"][1] == f"t [{MODEL_ERRORS}]" and frame["test"][2] == f"t [{ALL_FAILURES}, secondary]"
    shown = text(frame)
    assert "McNemar exact (claim 2)" in shown and "m (claim 3, 4, 5, 6)" in shown and "inconclusive:" in shown
    # The bench's own table: a row per test, a column per cause, each cell its verdict and effect.
    matrix = tables.bench_table(gated)
    assert list(matrix.columns) == ["test of", *bench.CAUSES]
    assert list(matrix["test of"]) == [CLAIMS[c] for c in range(3, 7)]
    assert matrix["background"][0] == "supported, +30.0 pts [+27.0, +33.0]"
    assert matrix["none"][0] == "not supported, +0.0 pts [-3.0, +3.0]"
    assert "planted-cause bench: passed by the tests of claims 3, 4, 5, 6" in text(matrix)
    assert "has not run yet" in text(tables.bench_table(real))
    assert "no claims tested yet" in text(tables.claims_table(ledger.read_ledger(tmp_path / "empty")))
    lines = tables.claims_text(failed).splitlines()
    assert "planted-cause bench: passed by the tests of claims 3, 5, 6" in lines
    assert max(map(len, lines)) <= 100
    assert any(line.startswith("claim 4: the test is not sensitive") for line in lines)
    assert "planted-cause bench: not run yet (06_stress_tests)" in tables.claims_text(real)


def test_claim_6_against_a_reseed_on_each_population_gated_by_the_bench() -> None:
    # The images of the off-center test: 50 centred squares, then 50 squares 8 px off; the last 80
    # failures are model errors. Augmentation fixed the off-center ones, a reseed none of them.
    images = torch.full((100, 3, 32, 32), 50, dtype=torch.uint8)
    for i in range(50, 100):
        images[i, :, 13:19, 21:27] = 230
    images[:50, :, 13:19, 13:19] = 230
    labels = torch.ones(100, dtype=torch.int64)
    failures = find_high_confidence_failures(torch.eye(10)[torch.zeros(100, dtype=torch.int64)], labels, 0.5)
    report = _human_report([(i, "model error") for i in range(20, 100)])
    args = (images, failures, torch.arange(50, 100), torch.tensor([], dtype=torch.int64), report)
    rows = ledger.reseed_stage_claims(*args, bench_rows(), seed=0)
    assert [(r.population, r.primary) for r in rows] == [
        (ALL_FAILURES, False),
        (ALL_FAILURES, False),
        (MODEL_ERRORS, False),
        (MODEL_ERRORS, True),  # the difference in differences on the model errors: the claim's test
    ]
    assert [r.effect for r in rows] == [0.0, 1.0, 0.0, 1.0] and rows[3].verdict == SUPPORTED
    assert rows[3].n == 80 and rows[3].details["off_center_failures"] == 50
    # A bench the off-center test failed withholds every row, with the bench's reason.
    failed = ledger.reseed_stage_claims(*args, bench_rows({(6, "off-center"): 0.0}), seed=0)
    assert all(r.verdict == INCONCLUSIVE and "not sensitive" in r.precondition for r in failed)
    assert all(r.precondition == NO_BENCH for r in ledger.reseed_stage_claims(*args, [], seed=0))


def test_a_single_runs_claim_6_is_withheld_for_the_replicates() -> None:
    class Zero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return vote(torch.zeros(len(x), dtype=torch.int64))

    labels = torch.ones(100, dtype=torch.int64)
    baseline = Predictions(torch.eye(10)[torch.zeros(100, dtype=torch.int64)], labels)  # all wrong
    augmented = Predictions(torch.eye(10)[labels], labels)  # all fixed
    failures = find_high_confidence_failures(baseline.probs, labels, 0.5)
    images, report = torch.full((100, 3, 32, 32), 50, dtype=torch.uint8), NotApplicable("-")
    args = (baseline, augmented, (1.0, 1.0), 100, Zero(), images, failures, failures.indices, report)
    rows = ledger.reevaluation_claims(*args)
    assert [r.claim[0] for r in rows] == ["1", "1", "2", "2", "2", "6"]
    assert rows[-1].verdict == INCONCLUSIVE and rows[-1].precondition == ONE_RUN
    assert not any(r.precondition for r in rows[:-1])


def test_the_ledger_fits_a_100_column_terminal_and_says_each_claim_once() -> None:
    long_test = "a test whose description runs on and on, " * 4
    withheld = replace(row_with(0.3), test=long_test, precondition="the instrument failed its check")
    missing = replace(row_with(math.nan), ci_low=math.nan, ci_high=math.nan)
    perfect = probes.accuracy_claims(*[Predictions(torch.eye(10), torch.arange(10))] * 2, 0.9, 0.9, 100)[0]
    shown = tables.claims_text([perfect, row_with(0.2), withheld, missing, *bench_rows({(3, "none"): 0.3})])
    lines = shown.splitlines()
    assert max(map(len, lines)) <= 100
    assert [line for line in lines if line.startswith("3.")] == [CLAIMS[3]]  # the claim's words once
    assert lines[1] == CLAIMS[1] and "100.0% [" in lines[2]  # a level, in percent
    assert lines[4].startswith("  t, vs c  ")
    assert "+20.0 pts [+10.0, +30.0]  supported" in shown and "- [-, -]  inconclusive" in shown
    assert "    verdict withheld: the instrument failed its check" in lines
    assert "95 % intervals:" in shown and "inconclusive:" in shown
    assert "claim 3: the test is not specific: on the bench it also said supported for none" in shown
    assert "bench: none" not in shown  # the bench's rows are in its notes, not among the claims
    assert tables.claims_text([]).startswith("no claims tested yet")


def test_the_pull_and_the_tile_shuffle_tables() -> None:
    details = {"other_follows_donor": 0.2, "follows_donor_by_class": [0.5, math.nan, 0.1]}
    row = replace(row_with(0.1), details=details)
    frame = tables.surround_pull_table(row, ["airplane", "automobile", "bird"])
    assert list(frame["surround of"]) == ["airplane", "bird", "automobile"]  # strongest first, none last
    assert "50.0%" in text(frame) and "all classes: 20.0%" in text(frame)
    shuffled = probes.TileShuffle(0.8, 0.1, {16: 0.6, 8: 0.3}, {16: 5 / 7, 8: 2 / 7})
    frame = tables.tile_shuffle_table({"baseline": shuffled, "augmented": shuffled})
    assert list(frame.columns) == ["model", "clean", "16-px tiles", "8-px tiles"]
    assert "(chance 10%)" in text(frame)


def test_the_background_test_sets_aside_pairs_whose_object_is_off_center() -> None:
    # A model that always says class 0: images of class 0 are its correct controls, the others its
    # failures. Each image is a bright square on a dark ground; 30 failures have it 8 px right of the
    # centre, where the 4-px ring would hold part of the object, so their pairs are set aside.
    class AlwaysZero(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return vote(torch.zeros(len(x), dtype=torch.int64))

    labels = torch.cat([torch.zeros(60, dtype=torch.int64), torch.arange(60) % 9 + 1])
    images = torch.full((120, 3, 32, 32), 20, dtype=torch.uint8)
    images[:, :, 10:22, 10:22] = 230
    images[60:90] = images[60:90].roll(8, dims=3)
    model = AlwaysZero()
    predictions = predict(model, images, labels)
    failures = find_high_confidence_failures(predictions.probs, labels, 0.5)
    row = probes.background_claim(model, images, predictions, failures, images, labels % 10, seed=0)
    assert len(failures) == 60 and row.details["pairs_off_center_set_aside"] == 30 and row.n == 30
    assert row.effect == 0.0  # the surround alone says 0 for every failure and every control
