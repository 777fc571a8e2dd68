"""Human labels for the CIFAR-10 test set: is a confident failure the model's fault, or the label's?

CIFAR-10H's human votes and Northcutt et al.'s verified label errors (:data:`PUBLIC_FILES`; sources and
licences: README.md) apply only to the whole test set in its original order: elsewhere
:func:`human_labels_for_run` returns :class:`NotApplicable`, which every report function passes through.
A confident failure is a ``verified label error``; else ``ambiguous`` when the human share of the given
label is below ``RunConfig.ambiguity_threshold``; else a ``model error``.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor

from cifar_helpers.analysis.failures import COUNT_KEYS
from cifar_helpers.core.checks import check_fraction
from cifar_helpers.core.data import resolve_data_root
from cifar_helpers.rundir.artifacts import RunDir, atomic_path, load_json
from cifar_helpers.rundir.records import Record

if TYPE_CHECKING:
    from cifar_helpers.analysis.failures import FailureComparison, FailureSet
    from cifar_helpers.analysis.gradcam.cam import FailureMaps
    from cifar_helpers.core.data import CifarData
    from cifar_helpers.rundir.config import RunConfig

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_TEST_IMAGES = 10_000
HUMAN_LABELS_ENV = "CIFAR10H_ROOT"
HUMAN_LABELS_SUBDIR = "human-labels"  # under the data folder, where downloads go

LABEL_ERROR = "verified label error"
AMBIGUOUS = "ambiguous"
MODEL_ERROR = "model error"
CATEGORIES = (LABEL_ERROR, AMBIGUOUS, MODEL_ERROR)
# A test image's label status, whatever the model says: a failure on an AGREED image is a model error.
AGREED = "humans agree"
LABEL_STATUSES = (LABEL_ERROR, AMBIGUOUS, AGREED)  # in the order of CATEGORIES: a category's base rate
_BASE_STATUS = dict(zip(CATEGORIES, LABEL_STATUSES, strict=True))

# Northcutt et al.: a candidate is a label error when fewer than 3 of its 5 workers chose the given label.
VERIFIED_ERROR_MAX_GIVEN_VOTES = 2
MTURK_WORKERS = 5

# Order check: each test image's mean intensity against the original test set's (README.md). JPEG
# re-encoding moves an image's mean by well under one grey level.
ORDER_TOLERANCE_LEVELS = 4.0
ORDER_MIN_MATCHING = 0.99
_INTENSITY_RESOURCE = "cifar10_test_mean_intensity.npy"

_DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class PublicFile:
    """One published file: its name, where it is published, its SHA-256 and whose it is."""

    name: str
    url: str
    sha256: str
    source: str


PUBLIC_FILES = (
    PublicFile(
        "cifar10h-counts.npy",
        "https://raw.githubusercontent.com/jcpeterson/cifar-10h/master/data/cifar10h-counts.npy",
        "9b36b4550349af56c79083356312eb4af856cc5fd3caf1f669d40b9d0bbb69ff",
        "CIFAR-10H, Peterson et al. (ICCV 2019), CC BY-NC-SA 4.0",
    ),
    PublicFile(
        "cifar10_mturk.json",
        "https://raw.githubusercontent.com/cleanlab/label-errors/main/mturk/cifar10_mturk.json",
        "81b2c16c9eee060d6cc2390f6bbce1e0e7be0a050574be5177c9428f3596b5b5",
        "cleanlab/label-errors, Northcutt et al. (NeurIPS 2021), Apache-2.0",
    ),
    PublicFile(
        "cifar10_test_set_original_labels.npy",
        "https://raw.githubusercontent.com/cleanlab/label-errors/main/original_test_labels/"
        "cifar10_test_set_original_labels.npy",
        "8fba587d5b11011df52b2a20eb4a272eeaf20c2d162554059f714d4b78d23aed",
        "cleanlab/label-errors, Northcutt et al. (NeurIPS 2021), Apache-2.0",
    ),
)
COUNTS_FILE, MTURK_FILE, ORIGINAL_LABELS_FILE = (f.name for f in PUBLIC_FILES)

# Tests replace this to serve local bytes; nothing else in the project opens a URL here.
urlopen: Callable[..., Any] = urllib.request.urlopen


class HumanLabelError(ValueError):
    """Human-label files are missing, corrupt or refused; the message names the file and the remedy."""


@dataclass(frozen=True)
class NotApplicable(Record):
    """Why no human labels apply to this run (one line); every report function passes it through."""

    reason: str

    def to_dict(self) -> dict[str, Any]:
        """``{"applies": False, "reason": ...}``, what the stages save in place of a result."""
        return {"applies": False, **super().to_dict()}

    def __str__(self) -> str:
        return f"no human labels apply: {self.reason}"


@dataclass(frozen=True)
class HumanLabels:
    """The human labels of the 10,000 CIFAR-10 test images, in the original order.

    ``counts`` int64 (10000, 10) CIFAR-10H votes per class; ``original_labels`` int64 (10000,);
    ``mturk_given`` int64 (10000,) how many of the 5 verification workers chose the given label, for
    the 275 candidates of Northcutt et al. (-1 elsewhere); ``root`` the folder the files came from.
    """

    counts: Tensor
    original_labels: Tensor
    mturk_given: Tensor
    root: str

    @property
    def shares(self) -> Tensor:
        """float64 (10000, 10): each class's share of the image's human votes."""
        return self.counts.double() / self.counts.sum(dim=1, keepdim=True).double()

    @property
    def verified_errors(self) -> Tensor:
        """bool (10000,): the verified label errors (``given`` < 3 of 5)."""
        return (self.mturk_given >= 0) & (self.mturk_given <= VERIFIED_ERROR_MAX_GIVEN_VOTES)

    def given_share(self) -> Tensor:
        """float64 (10000,): the human share of each image's given (original) label."""
        return self.shares.gather(1, self.original_labels[:, None])[:, 0]

    def label_status(self, ambiguity_threshold: float) -> Tensor:
        """int64 (10000,): index into :data:`LABEL_STATUSES` (label error, ambiguous, humans agree)."""
        threshold = check_fraction("ambiguity_threshold", ambiguity_threshold, closed=(False, True))
        status = torch.full((NUM_TEST_IMAGES,), LABEL_STATUSES.index(AGREED), dtype=torch.int64)
        status[self.given_share() < threshold] = LABEL_STATUSES.index(AMBIGUOUS)
        status[self.verified_errors] = LABEL_STATUSES.index(LABEL_ERROR)
        return status


def _has_all_files(folder: Path) -> bool:
    return all((folder / f.name).is_file() for f in PUBLIC_FILES)


def _find_human_labels_dir(configured: str | None) -> Path | None:
    """The local folder of the human-label files: ``configured``, else ``$CIFAR10H_ROOT`` (either
    returned even when files are missing), else the shared folder beside the checkout when it holds all
    three files; None when there is none."""
    for candidate, origin in (
        (configured, "human_labels_dir"),
        (os.environ.get(HUMAN_LABELS_ENV), f"${HUMAN_LABELS_ENV}"),
    ):
        if candidate:
            path = Path(candidate).expanduser().absolute()
            if path.exists() and not path.is_dir():
                raise HumanLabelError(
                    f"{origin}={str(path)!r} is not a directory; give the folder of {COUNTS_FILE}"
                )
            return path
    # ../shared/data/human-labels beside the project checkout (development machines and CI)
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / HUMAN_LABELS_SUBDIR
    return shared if _has_all_files(shared) else None


def download_human_labels(folder: str | os.PathLike[str], *, timeout: float = _DOWNLOAD_TIMEOUT_S) -> Path:
    """Download the missing public files into ``folder``, each written only after its SHA-256 matched:
    HumanLabelError refuses a changed or truncated download; OSError (URLError included) is no network
    or a refusing server."""
    folder = Path(folder)
    for item in PUBLIC_FILES:
        target = folder / item.name
        if target.exists():
            continue
        with urlopen(item.url, timeout=timeout) as response:
            payload = response.read()
        digest = hashlib.sha256(payload).hexdigest()
        if digest != item.sha256:
            raise HumanLabelError(
                f"refused {item.url}: its SHA-256 is {digest}, the published file's is {item.sha256} "
                "(a changed or truncated download); nothing was written"
            )
        with atomic_path(target) as tmp:
            tmp.write_bytes(payload)
    return folder


def load_human_labels(folder: str | os.PathLike[str]) -> HumanLabels:
    """Read the three public files in ``folder``, arrays without pickle; HumanLabelError names a file
    that is missing or not byte-identical to the published one (SHA-256), with the remedy."""
    folder = Path(folder)
    for item in PUBLIC_FILES:
        path = folder / item.name
        if not path.is_file():
            raise HumanLabelError(
                f"{path} is missing: put the published {item.name} there ({item.url}) "
                "or let the run download it"
            )
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != item.sha256:
            raise HumanLabelError(
                f"{path} differs from the published file (SHA-256 {digest}, expected {item.sha256}): "
                f"replace it with {item.url}"
            )
    # Byte-identical to the published files, so they parse.
    counts = np.load(folder / COUNTS_FILE, allow_pickle=False)
    labels = np.load(folder / ORIGINAL_LABELS_FILE, allow_pickle=False)
    mturk = json.loads((folder / MTURK_FILE).read_text(encoding="utf-8"))
    given = np.full(NUM_TEST_IMAGES, -1, dtype=np.int64)
    for entry in mturk:
        given[int(entry["id"])] = int(entry["mturk"]["given"])
    return HumanLabels(
        counts=torch.from_numpy(counts.astype(np.int64)),
        original_labels=torch.from_numpy(labels.astype(np.int64)),
        mturk_given=torch.from_numpy(given),
        root=str(folder),
    )


def original_test_intensity() -> np.ndarray:
    """uint8 (10000,): each original CIFAR-10 test image's mean pixel value (all channels), rounded."""
    with resources.as_file(resources.files("cifar_helpers") / "resources" / _INTENSITY_RESOURCE) as path:
        return np.load(path, allow_pickle=False)


def check_test_order(
    test_labels: Tensor, test_images: Tensor, original_labels: Tensor, reference_intensity: np.ndarray
) -> str | None:
    """None if the test set is the original one in the original order, else the reason.

    The labels must equal the original sequence and, for :data:`ORDER_MIN_MATCHING` of the images, the
    mean pixel value that of the original image there (images shuffled within a class keep the label
    order). ``test_labels`` and ``original_labels`` int64 (N,), ``test_images`` uint8 (N, 3, H, W),
    ``reference_intensity`` (N,) each original image's mean pixel value.
    """
    test_labels = test_labels.long().cpu()
    if not torch.equal(test_labels, original_labels):
        mismatched = int((test_labels != original_labels).sum())
        return (
            f"the test labels are not CIFAR-10's original sequence ({mismatched} of {len(test_labels)} "
            "positions differ): another order (an image-folder set is sorted by class) or other labels"
        )
    means = test_images.reshape(len(test_images), -1).double().mean(dim=1)
    reference = torch.as_tensor(reference_intensity, dtype=torch.float64)
    matching = float(((means - reference).abs() <= ORDER_TOLERANCE_LEVELS).double().mean())
    if matching < ORDER_MIN_MATCHING:
        return (
            f"the test images are not in CIFAR-10's original order (only {matching:.0%} match the original "
            "image at their position, e.g. shuffled within each class)"
        )
    return None


def applicability_without_files(data: CifarData) -> str | None:
    """Reasons that need no human-label file: generated data, other classes, a test subset."""
    if data.source == "synthetic":
        return "the run uses the generated data set, not CIFAR-10"
    if tuple(data.classes) != CIFAR10_CLASSES:
        return f"the classes {list(data.classes)} are not CIFAR-10's"
    if len(data.test_labels) != NUM_TEST_IMAGES:
        return (
            f"the run tests on a subset ({len(data.test_labels)} of {NUM_TEST_IMAGES} images, "
            "test_per_class); the human labels need the whole test set in its original order"
        )
    if not torch.equal(data.test_index.cpu(), torch.arange(NUM_TEST_IMAGES)):
        return "the test images are not in their split's order"
    return None


def human_labels_for_run(config: RunConfig, data: CifarData) -> HumanLabels | NotApplicable:
    """The human labels for this run's test set, or :class:`NotApplicable` with the one-line reason.

    Files come from ``config.human_labels_dir``, ``$CIFAR10H_ROOT``, the shared folder beside the
    checkout or ``<data folder>/human-labels``, missing ones downloaded when ``config.download`` allows;
    no network or a refused file is a reason, not an error."""
    reason = applicability_without_files(data)
    if reason is not None:
        return NotApplicable(reason)
    folder = _find_human_labels_dir(config.human_labels_dir)
    if folder is None:
        folder = resolve_data_root(config.data_dir) / HUMAN_LABELS_SUBDIR
    try:
        if not _has_all_files(folder):
            if not config.download:
                return NotApplicable(f"the human-label files are not in {folder} and download=False")
            try:
                download_human_labels(folder)
            except OSError as error:  # urllib.error.URLError included
                return NotApplicable(
                    f"the human-label files are not in {folder} and could not be downloaded ({error}); "
                    f"set ${HUMAN_LABELS_ENV} to a folder holding them"
                )
        human = load_human_labels(folder)
    except HumanLabelError as error:  # a refused download or file
        return NotApplicable(str(error))
    reason = check_test_order(
        data.test_labels, data.test_images, human.original_labels, original_test_intensity()
    )
    return NotApplicable(reason) if reason is not None else human


def failure_categories(
    indices: Tensor | Sequence[int], human: HumanLabels, ambiguity_threshold: float
) -> list[str]:
    """The category (one of :data:`CATEGORIES`) of each failure, given by its int (K,) test ``indices``;
    an image is ambiguous when its given label's human share is below ``ambiguity_threshold``."""
    status = human.label_status(ambiguity_threshold)[torch.as_tensor(indices, dtype=torch.int64)]
    return [CATEGORIES[s] for s in status.tolist()]


def _spearman(x: Tensor, y: Tensor) -> float | None:
    if len(x) < 3 or bool((x == x[0]).all()) or bool((y == y[0]).all()):
        return None  # undefined for constant input, and defined otherwise
    return float(spearmanr(x.double().numpy(), y.double().numpy()).statistic)


def _category_counts(categories: Sequence[str]) -> dict[str, int]:
    return {c: sum(1 for x in categories if x == c) for c in CATEGORIES}


# --- the results: one frozen dataclass per concept, saved with to_dict and read back with from_dict ----


class HumanLabelResult(Record):
    """A result computed where human labels apply, saved as ``{"applies": True, **fields}``."""

    def to_dict(self) -> dict[str, Any]:
        """``{"applies": True}``, then the fields in their order."""
        return {"applies": True, **super().to_dict()}


@dataclass(frozen=True)
class FailureRecord(Record):
    """One confident failure as humans see it: its test ``index``, its ``category`` (one of
    :data:`CATEGORIES`), the human share of its given and of its predicted label, and the most voted
    class (``human_plurality``, an index)."""

    index: int
    category: str
    given_share: float
    predicted_share: float
    human_plurality: int


@dataclass(frozen=True)
class HumanFailureReport(HumanLabelResult):
    """One model's confident failures against the human labels (:func:`human_failure_report`).

    ``source`` the folder of the human-label files; ``counts`` per category among the failures;
    ``base_counts`` per :data:`LABEL_STATUSES`, all test images; ``enrichment`` per category, its share
    among failures over its share of the test set (None where either is empty);
    ``accuracy_vs_human_plurality`` counts any most-voted class where votes tie; a Spearman correlation
    is None where undefined; ``failures`` in rank order.
    """

    source: str
    ambiguity_threshold: float
    num_failures: int
    counts: dict[str, int]
    base_counts: dict[str, int]
    enrichment: dict[str, float | None]
    accuracy: float
    accuracy_vs_human_plurality: float
    spearman_confidence_vs_human_share: float | None
    spearman_given_prob_vs_human_share: float | None
    failures: tuple[FailureRecord, ...]

    def base_shares(self) -> dict[str, float]:
        """Each category's share of the test set (of its label status: model errors, humans agree)."""
        return {c: self.base_counts[_BASE_STATUS[c]] / NUM_TEST_IMAGES for c in CATEGORIES}

    def model_errors(self) -> list[int]:
        """The test indices of the failures humans call model errors, in rank order."""
        return [r.index for r in self.failures if r.category == MODEL_ERROR]


@dataclass(frozen=True)
class FixedLabelError(Record):
    """A verified label error among the "fixed" failures: the augmented model now agrees with a wrong
    label. ``given`` and ``human_plurality`` are class names; ``mturk_given_votes`` e.g. ``"1 of 5"``."""

    index: int
    given: str
    human_plurality: str
    given_share: float
    mturk_given_votes: str


@dataclass(frozen=True)
class CategoryComparison(HumanLabelResult):
    """Notebook 05's fixed / kept / new by category (:func:`comparison_by_category`):
    ``by_category`` ``{group: {category: count}}`` for the groups of :data:`COUNT_KEYS`;
    ``baseline_counts`` the baseline's confident failures per category."""

    ambiguity_threshold: float
    by_category: dict[str, dict[str, int]]
    baseline_counts: dict[str, int]
    augmented: HumanFailureReport
    fixed_label_errors: tuple[FixedLabelError, ...]

    def to_dict(self) -> dict[str, Any]:
        """The fields, with ``augmented_counts`` (the augmented report's counts, which ``from_dict`` does
        not read twice) before ``augmented``: the saved layout."""
        saved = super().to_dict()
        later = {key: saved.pop(key) for key in ("augmented", "fixed_label_errors")}
        return {**saved, "augmented_counts": self.augmented.counts, **later}


@dataclass(frozen=True)
class HumanCrossEntropy(Record):
    """One model's CIFAR-10H cross-entropy (nats): as trained (``before``) and after temperature scaling
    (``after``); ``temperature`` and ``after`` are None for a model the calibration skipped."""

    temperature: float | None
    before: float
    after: float | None


@dataclass(frozen=True)
class HumanCalibration(HumanLabelResult):
    """Notebook 06's cross-entropy against the human votes (:func:`calibration_against_humans`), lower is
    more human-like; ``human_entropy`` the floor."""

    models: dict[str, HumanCrossEntropy]
    human_entropy: float


@dataclass(frozen=True)
class CategoryEnrichment(Record):
    """The run summary's part of a :class:`HumanFailureReport`."""

    counts: dict[str, int]
    enrichment: dict[str, float | None]


@dataclass(frozen=True)
class HumanLabelsSummary(HumanLabelResult):
    """The run summary's human-label numbers (:func:`human_labels_summary`): ``augmented``, ``by_category``
    and ``fixed_label_errors`` (how many "fixed" failures are verified label errors) are None until stage
    05 has run; ``accuracy_vs_human_plurality`` ``{model: accuracy}`` holds the models that ran."""

    ambiguity_threshold: float
    baseline: CategoryEnrichment
    accuracy_vs_human_plurality: dict[str, float]
    augmented: CategoryEnrichment | None = None
    by_category: dict[str, dict[str, int]] | None = None
    fixed_label_errors: int | None = None

    def models(self) -> dict[str, CategoryEnrichment]:
        """``{"baseline": ..., "augmented": ...}``, the augmented model once stage 05 has run."""
        both = {"baseline": self.baseline, "augmented": self.augmented}
        return {name: m for name, m in both.items() if m is not None}

    def to_dict(self) -> dict[str, Any]:
        """As saved in ``summary.json``: stage 05's keys only once it has run."""
        saved = super().to_dict()
        if self.augmented is None:
            saved = {key: value for key, value in saved.items() if key not in _STAGE_05}
        return saved

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> HumanLabelsSummary:
        """Rebuild from :meth:`to_dict`'s output; a missing key raises a KeyError naming it."""
        if "augmented" not in values:  # optional by design: stage 05 has not run
            values = {**values, **dict.fromkeys(_STAGE_05)}
        return super().from_dict(values)


_STAGE_05 = ("augmented", "by_category", "fixed_label_errors")  # HumanLabelsSummary's, once 05 has run
_Saved = TypeVar("_Saved", bound=HumanLabelResult)


def result_from_dict(values: Mapping[str, Any], kind: type[_Saved]) -> _Saved | NotApplicable:
    """A saved human-label result: ``kind.from_dict(values)`` where human labels applied, else the
    :class:`NotApplicable` saved in its place; a missing key raises a KeyError naming it."""
    return kind.from_dict(values) if values["applies"] else NotApplicable.from_dict(values)


def human_failure_report(
    probs: Tensor,
    labels: Tensor,
    failures: FailureSet,
    human: HumanLabels | NotApplicable,
    ambiguity_threshold: float,
) -> HumanFailureReport | NotApplicable:
    """Notebook 02's human-label analysis of one model's confident failures.

    ``probs`` float (10000, 10) the model's test probabilities, ``labels`` int64 (10000,); ``human``
    from :func:`human_labels_for_run` (a :class:`NotApplicable` is passed through).
    """
    if isinstance(human, NotApplicable):
        return human
    probs, labels = probs.float().cpu(), labels.long().cpu()
    shares = human.shares
    predicted = probs.argmax(dim=1)
    confidence = probs.max(dim=1).values
    status = human.label_status(ambiguity_threshold)
    categories = failure_categories(failures.indices, human, ambiguity_threshold)
    counts = _category_counts(categories)
    n_fail = len(failures)
    base = {s: int((status == i).sum()) for i, s in enumerate(LABEL_STATUSES)}
    enrichment = {
        c: (counts[c] / n_fail) / (base[_BASE_STATUS[c]] / NUM_TEST_IMAGES)
        if n_fail and base[_BASE_STATUS[c]]
        else None
        for c in CATEGORIES
    }
    plurality = human.counts == human.counts.max(dim=1, keepdim=True).values  # several where votes tie
    given_share = shares.gather(1, labels[:, None])[:, 0]
    predicted_share = shares.gather(1, predicted[:, None])[:, 0]
    records = tuple(
        FailureRecord(
            index=index,
            category=category,
            given_share=float(given_share[index]),
            predicted_share=float(predicted_share[index]),
            human_plurality=int(shares[index].argmax()),
        )
        for index, category in zip(failures.indices.tolist(), categories, strict=True)
    )
    return HumanFailureReport(
        source=human.root,
        ambiguity_threshold=ambiguity_threshold,
        num_failures=n_fail,
        counts=counts,
        base_counts=base,
        enrichment=enrichment,
        accuracy=float((predicted == labels).double().mean()),
        accuracy_vs_human_plurality=float(plurality.gather(1, predicted[:, None]).double().mean()),
        spearman_confidence_vs_human_share=_spearman(confidence, predicted_share),
        spearman_given_prob_vs_human_share=_spearman(probs.gather(1, labels[:, None])[:, 0], given_share),
        failures=records,
    )


def model_error_maps(
    maps: FailureMaps, human_report: HumanFailureReport | NotApplicable
) -> FailureMaps | None:
    """Notebook 03's Grad-CAM ``maps`` with only the rows of the failures ``human_report``
    (:func:`human_failure_report`) calls model errors; None when no human labels apply."""
    if isinstance(human_report, NotApplicable):
        return None
    model_errors = set(human_report.model_errors())
    return maps.restricted(
        torch.tensor([int(i) in model_errors for i in maps.indices.tolist()], dtype=torch.bool)
    )


def comparison_by_category(
    comparison: FailureComparison,
    augmented_probs: Tensor,
    human: HumanLabels | NotApplicable,
    ambiguity_threshold: float,
    classes: Sequence[str],
) -> CategoryComparison | NotApplicable:
    """Notebook 05: fixed / kept / new by category, and every "fixed" verified label error flagged.

    ``augmented_probs`` float (10000, 10) the augmented model's test probabilities.
    """
    if isinstance(human, NotApplicable):
        return human
    by_category = {
        group: _category_counts(failure_categories(getattr(comparison, group), human, ambiguity_threshold))
        for group in COUNT_KEYS
    }
    # Human labels apply only where the test labels are the original ones, so these are the labels.
    augmented_report = human_failure_report(
        augmented_probs, human.original_labels, comparison.augmented_failures, human, ambiguity_threshold
    )
    shares = human.shares
    fixed_errors = [i for i in comparison.fixed.tolist() if bool(human.verified_errors[i])]
    flagged = tuple(
        FixedLabelError(
            index=i,
            given=classes[int(human.original_labels[i])],
            human_plurality=classes[int(shares[i].argmax())],
            given_share=float(shares[i, human.original_labels[i]]),
            mturk_given_votes=f"{int(human.mturk_given[i])} of {MTURK_WORKERS}",
        )
        for i in fixed_errors
    )
    return CategoryComparison(
        ambiguity_threshold=ambiguity_threshold,
        by_category=by_category,
        baseline_counts=_category_counts(
            failure_categories(comparison.baseline_failures.indices, human, ambiguity_threshold)
        ),
        augmented=augmented_report,
        fixed_label_errors=flagged,
    )


def human_cross_entropy(logits: Tensor, human: HumanLabels, temperature: float = 1.0) -> float:
    """Peterson et al.'s measure of human-like uncertainty: the mean cross-entropy (nats) between the
    CIFAR-10H votes and softmax(``logits`` / ``temperature``), logits float (10000, 10) in the original
    order, temperature > 0 (1: the model as trained)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    log_probs = torch.log_softmax(logits.double().cpu() / temperature, dim=1)
    return float(-(human.shares * log_probs).sum(dim=1).mean())


def calibration_against_humans(
    logits: dict[str, Tensor], temperatures: dict[str, float | None], human: HumanLabels | NotApplicable
) -> HumanCalibration | NotApplicable:
    """Notebook 06: each model's CIFAR-10H cross-entropy before and after temperature scaling.

    ``logits`` ``{model: float (10000, 10) test logits}``; ``temperatures`` ``{model: temperature
    fitted on the hold-out split}``, a model missing (or None) where the calibration was skipped.
    """
    if isinstance(human, NotApplicable):
        return human
    shares = human.shares
    entropy = float(-(shares * torch.log(shares.clamp_min(1e-300))).sum(dim=1).mean())
    models = {}
    for name, model_logits in logits.items():
        temperature = temperatures.get(name)  # optional by design: a skipped calibration has none
        models[name] = HumanCrossEntropy(
            temperature=temperature,
            before=human_cross_entropy(model_logits, human),
            after=None if temperature is None else human_cross_entropy(model_logits, human, temperature),
        )
    return HumanCalibration(models=models, human_entropy=entropy)


@dataclass(frozen=True, eq=False)
class HumanVotes:
    """What the failure browser draws from the human labels (:func:`browser_inputs`): ``shares`` float
    (10000, 10) the CIFAR-10H vote shares, ``categories`` the category of a failure on each test image.
    Never saved (no dict form); eq=False: tensors do not compare to one bool."""

    shares: Tensor
    categories: tuple[str, ...]


def browser_inputs(human: HumanLabels | NotApplicable, ambiguity_threshold: float) -> HumanVotes | None:
    """The ``human`` argument of :func:`cifar_helpers.views.widgets.show_failure_browser`; None when no
    human labels apply, so the browser is unchanged."""
    if isinstance(human, NotApplicable):
        return None
    categories = failure_categories(torch.arange(NUM_TEST_IMAGES), human, ambiguity_threshold)
    return HumanVotes(shares=human.shares.float(), categories=tuple(categories))


FAILURES_REPORT = "human_labels.json"  # in failures/ (notebook 02) and reevaluation/ (notebook 05)


def load_failure_report(run_dir: str | os.PathLike[str]) -> HumanFailureReport | NotApplicable:
    """Notebook 02's saved :func:`human_failure_report` (``failures/human_labels.json``); when the
    stage ran without writing one, a :class:`NotApplicable` saying to rerun it."""
    path = RunDir(run_dir).path("failures", FAILURES_REPORT)
    if not path.exists():
        return NotApplicable(f"{path} is missing: rerun 02_failure_detection.ipynb")
    return result_from_dict(load_json(path), HumanFailureReport)


def human_labels_summary(run_dir: str | os.PathLike[str]) -> HumanLabelsSummary | NotApplicable:
    """The run summary's human-label numbers: each model's failures by category with enrichment,
    fixed / kept / new by category and how many "fixed" failures are verified label errors.

    A :class:`NotApplicable` when no human labels apply (or stage 02 has not run).
    """
    baseline = load_failure_report(run_dir)
    if isinstance(baseline, NotApplicable):
        return baseline
    summary = HumanLabelsSummary(
        ambiguity_threshold=baseline.ambiguity_threshold,
        baseline=CategoryEnrichment(baseline.counts, baseline.enrichment),
        accuracy_vs_human_plurality={"baseline": baseline.accuracy_vs_human_plurality},
    )
    path = RunDir(run_dir).path("reevaluation", FAILURES_REPORT)
    if not path.exists():
        return summary
    reevaluation = result_from_dict(load_json(path), CategoryComparison)
    if isinstance(reevaluation, NotApplicable):
        return summary
    augmented = reevaluation.augmented
    return replace(
        summary,
        augmented=CategoryEnrichment(augmented.counts, augmented.enrichment),
        accuracy_vs_human_plurality={
            **summary.accuracy_vs_human_plurality,
            "augmented": augmented.accuracy_vs_human_plurality,
        },
        by_category=reevaluation.by_category,
        fixed_label_errors=len(reevaluation.fixed_label_errors),
    )
