"""Opening a pipeline stage: the run configuration, its checks, and the data, in one call per notebook
(:func:`setup_run`, :func:`open_stage`, :func:`open_replicates`), and the notebooks' steps that read
several files or slice several results at once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cifar_helpers.analysis.claims.ledger import read_ledger, reseed_stage_claims
from cifar_helpers.analysis.claims.rules import ClaimResult
from cifar_helpers.analysis.failures import FailureComparison, compare_failures
from cifar_helpers.analysis.faithfulness import RoadByModel, road_by_model
from cifar_helpers.analysis.gradcam import (
    AttentionReport,
    FailureMaps,
    explain_images,
    failure_attention_report,
)
from cifar_helpers.analysis.human_labels import (
    HumanFailureReport,
    NotApplicable,
    failure_categories,
    human_labels_for_run,
    load_failure_report,
    model_error_maps,
)
from cifar_helpers.analysis.seed_analysis import (
    MODELS,
    CategoryMix,
    FailureStability,
    SeedResults,
    category_mix,
    check_same_test_set,
    load_seed_results,
)
from cifar_helpers.core.data import load_data
from cifar_helpers.core.evaluation import Predictions
from cifar_helpers.core.training import load_trained_model
from cifar_helpers.rundir import lineage
from cifar_helpers.rundir.artifacts import (
    MissingStageError,
    RunDir,
    StaleStageError,
    load_json,
    load_torch,
    save_figure,
    save_json,
    save_torch,
)
from cifar_helpers.rundir.config import ConfigError, RunConfig, make_config, resolve_profile
from cifar_helpers.rundir.records import Record
from cifar_helpers.rundir.registry import REPLICATES_SPEC, STAGES, StageSpec, stage_number
from cifar_helpers.rundir.replicate_layout import find_seeds, replicates_dir, seed_run_dir
from cifar_helpers.rundir.reproducibility import seed_everything
from cifar_helpers.rundir.runlock import check_not_locked
from cifar_helpers.views.tables import accuracy_table, train_step_table
from cifar_helpers.workflow.run_discovery import describe_runs, most_recent_run_with


def _project_root(cwd: str | os.PathLike[str] | None = None) -> Path:
    """Where ``runs/`` and ``data/`` live: the working directory, or its parent inside ``notebooks/``."""
    here = Path(cwd) if cwd is not None else Path.cwd()
    return (here.parent if here.name == "notebooks" else here).resolve()


def default_run_dir(profile: str, cwd: str | os.PathLike[str] | None = None) -> Path:
    """``runs/<profile>`` at the project root (``auto`` is resolved first)."""
    return _project_root(cwd) / "runs" / resolve_profile(profile)


def _output_file(spec: StageSpec, name: str, default: str | None = None) -> str:
    """The file of ``spec``'s output ``name``, its file name less the suffix (``"metrics"``: metrics.json);
    ``default`` where it has none, else ValueError."""
    files = {Path(file).stem: file for file in spec.outputs}
    if name not in files and default is None:
        raise ValueError(f"stage {spec.name!r} has no output {name!r}; its outputs: {', '.join(files)}")
    return files.get(name, default)


def _save(directory: Path, spec: StageSpec, name: str, result: Any) -> Path:
    """Write ``result`` as artifact ``name`` of stage ``spec`` in ``directory`` (:meth:`Stage.save`)."""
    if hasattr(result, "savefig"):  # a matplotlib figure
        return save_figure(result, directory / f"{name}.png")
    # A stage may write more than the outputs the registry names: those are JSON unless named whole.
    path = directory / (name if Path(name).suffix else _output_file(spec, name, f"{name}.json"))
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    elif isinstance(result, list):
        result = [row.to_dict() if hasattr(row, "to_dict") else row for row in result]
    elif isinstance(result, dict):
        result = {key: v.to_dict() if hasattr(v, "to_dict") else v for key, v in result.items()}
    return save_torch(path, result) if path.suffix == ".pt" else save_json(path, result)


@dataclass
class Stage:
    """An opened stage: where it writes, the configuration it runs under, and (lazily) the data."""

    name: str
    run: RunDir
    config: RunConfig
    _data: Any = None

    def path(self, name: str) -> Path:
        """Path of an artifact of this stage (a file the registry does not name)."""
        return self.run.path(self.name, name)

    def file(self, name: str, of: str | None = None) -> Path:
        """Path of output ``name`` of this stage, or of stage ``of``: the file the registry names so,
        less its suffix (``"predictions"``: ``predictions.pt``); an unknown name raises ValueError."""
        stage = of or self.name
        return self.run.path(stage, _output_file(STAGES[stage], name))

    def load(self, name: str, of: str | None = None) -> Any:
        """Read output ``name`` (as for :meth:`file`) of this stage, or of stage ``of``."""
        path = self.file(name, of)
        return load_torch(path) if path.suffix == ".pt" else load_json(path)

    def save(self, name: str, result: Any) -> Path:
        """Write ``result`` as this stage's artifact ``name``: a figure as ``<name>.png``; anything else
        as the output the registry names so (``"heatmaps"``: ``heatmaps.pt``, with :func:`save_torch`),
        else as ``<name>.json`` (a ``name`` with a suffix is the whole file name); a result with
        ``to_dict``, or a list or dict of them, is written as what it returns."""
        return _save(self.run.stage_dir(self.name), STAGES[self.name], name, result)

    @property
    def data(self) -> Any:
        """The run's dataset (:class:`core.data.CifarData`), loaded once, checked against setup."""
        if self._data is None:
            data = load_data(self.config)
            summary_path = self.run.root / "data_summary.json"
            if summary_path.exists():
                expected = load_json(summary_path).get("fingerprint")
                if expected and data.fingerprint and expected != data.fingerprint:
                    raise MissingStageError(
                        f"the data at {data.root} differs from the data this run was set up with "
                        f"(fingerprint {data.fingerprint} != {expected}): rerun 00_setup.ipynb with "
                        f"run_dir={str(self.run.root)!r}, or use a new run_dir"
                    )
            self._data = data
        return self._data


def check_run_identity(run: RunDir, config: RunConfig, profile: str, seed: int) -> None:
    """Raise :class:`ConfigError` when ``profile`` or ``seed`` differ from the run's configuration:
    they decide what a run computes, so a stage asking for other values belongs to another run."""
    for key, asked in (("profile", resolve_profile(profile)), ("seed", seed)):
        if getattr(config, key) != asked:
            raise ConfigError(
                f"run directory {run.root} was set up with {key}={getattr(config, key)!r}, but this notebook "
                f"asks for {key}={asked!r}: use the same {key}, or another run_dir"
            )


def _seed(config: RunConfig) -> dict[str, Any]:
    """Seed every generator and apply ``num_threads``; returns :func:`seed_everything`'s report."""
    environment = seed_everything(config.seed)
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    return environment


def setup_run(
    run_dir: str | os.PathLike[str] | None, *, profile: str = "auto", seed: int = 42, **overrides: Any
) -> Stage:
    """Stage 00: create (or reopen, with the same configuration) a run directory; writes ``config.json``
    and ``environment.json``. ``overrides`` are :class:`RunConfig` fields (None: the profile's default)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    generated = values.get("data_source") == "synthetic"
    if values.get("data_dir") is None and not os.environ.get("CIFAR10_ROOT") and not generated:
        # "./data" means the project's data folder, whether run from run_all.py or from notebooks/.
        values["data_dir"] = str(_project_root() / "data")
    config = make_config(profile, seed=seed, **values)
    run = RunDir(run_dir if run_dir is not None else default_run_dir(profile))
    if run.config_path.exists():
        existing = RunConfig.load(run.config_path)
        if existing != config:
            old, new = existing.to_dict(), config.to_dict()
            changes = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in sorted(old) if old[k] != new[k])
            raise ConfigError(
                f"run directory {run.root} already holds a run with a different configuration "
                f"({changes}); use another run_dir, or delete that directory to start over"
            )
    check_not_locked(run.root)
    run.root.mkdir(parents=True, exist_ok=True)
    environment = _seed(config)
    # What precision="auto" and device="auto" resolved to on this machine.
    environment.update(device=str(config.resolved_device()), precision=config.resolved_precision())
    config.save(run.config_path)
    save_json(run.root / "environment.json", environment)
    return Stage(name="setup", run=run, config=config)


def open_stage(
    stage: str,
    run_dir: str | os.PathLike[str] | None,
    *,
    profile: str = "auto",
    seed: int = 42,
    force: bool = False,
    **knobs: Any,
) -> Stage:
    """Open stage ``stage`` (01-06) of the run in ``run_dir`` (None with ``profile="auto"``: the most
    recent run under ``runs/`` with the stages it reads, announced in one line).

    ``knobs`` are the stage's :class:`RunConfig` fields (None keeps the run's value). Missing or
    out-of-date inputs raise :class:`MissingStageError` / :class:`StaleStageError`; results computed
    with another configuration raise :class:`ConfigError` unless ``force`` moves them aside.
    """
    if stage not in STAGES or stage == "setup":
        known = ", ".join(s for s in STAGES if s != "setup")
        raise ValueError(f"unknown stage {stage!r}; stages opened with open_stage: {known}")

    runs_root = _project_root() / "runs"
    found = None
    if run_dir is None and profile == "auto":
        # Opened by hand with the defaults: use the most recent run that has what this stage reads.
        found = most_recent_run_with(runs_root, STAGES[stage].inputs)
        if found is not None:
            print(
                f"Using the run in {found.root} (the most recent with the stages this notebook reads); "
                "set run_dir or profile in the parameters cell to choose another"
            )
    run = found or RunDir(run_dir if run_dir is not None else default_run_dir(profile))
    check_not_locked(run.root)
    try:
        for needed in STAGES[stage].inputs:
            run.require(needed, *STAGES[needed].outputs)
    except MissingStageError as e:
        if run_dir is not None:
            raise
        raise MissingStageError(f"{e}. {describe_runs(runs_root)}") from None
    for needed in STAGES[stage].inputs:
        _check_up_to_date(run, needed, reader=stage)
    config = RunConfig.load(run.config_path)
    check_run_identity(run, config, config.profile if found is not None else profile, seed)
    values = {k: v for k, v in knobs.items() if v is not None}
    own = config.replace(**values)  # what this stage's config.json holds: the run's and its knobs
    if force:
        _replace_results(run, stage)
    else:
        _check_same_configuration(run, stage, own)
    own.save(run.path(stage, "config.json"))
    lineage.record_inputs(run, stage)
    # A setting has one home, the stage whose knob set it: the confidence threshold 02 found the
    # failures with is the one 05 and 06 read. (Not saved here: a change there makes this stage
    # out of date, and its rerun reads the new value.)
    config = own.replace(**{**_upstream_settings(run, stage, config), **values})
    _seed(config)
    return Stage(name=stage, run=run, config=config)


def _upstream_settings(run: RunDir, stage: str, root: RunConfig) -> dict[str, Any]:
    """The settings the stages ``stage`` reads ran with where they differ from the run's ``root``
    configuration (their knobs), later stages' over earlier ones'."""
    base, changed = root.to_dict(), {}
    for needed in STAGES[stage].inputs:
        path = run.path(needed, "config.json")
        if needed != "setup" and path.exists():
            upstream = RunConfig.load(path).to_dict()
            changed.update({key: value for key, value in upstream.items() if value != base[key]})
    return changed


def _check_up_to_date(run: RunDir, stage: str, *, reader: str) -> None:
    """Raise :class:`StaleStageError` when ``stage`` (read by ``reader``) holds results computed from
    outputs of earlier stages that have changed since, naming what to rerun."""
    at_fault = lineage.out_of_date(run, stage)
    if not at_fault:
        return
    first, last = stage_number(stage), stage_number(reader)
    raise StaleStageError(
        f"stage '{reader}' reads stage '{stage}', whose results in {run.root} were computed from earlier "
        f"results of {', '.join(repr(s) for s in at_fault)}, which have been recomputed since: rerun "
        f"{STAGES[stage].notebook} first (or run_all.py --stages {first}-{last} to refresh every stage in "
        "between)"
    )


def _check_same_configuration(run: RunDir, stage: str, config: RunConfig) -> None:
    """Raise :class:`ConfigError` when ``stage`` already has results computed with a configuration
    other than ``config``, naming the differing keys and the two ways on."""
    previous_path = run.stage_dir(stage) / "config.json"
    if not previous_path.exists() or not lineage.has_outputs(run, stage):
        return
    previous = RunConfig.load(previous_path)
    if previous == config:
        return
    old, new = previous.to_dict(), config.to_dict()
    keys = [k for k in old if old[k] != new.get(k)]
    changes = ", ".join(f"{k}={old[k]!r} (this notebook asks for {new.get(k)!r})" for k in keys)
    keep = ", ".join(f"{k} = {old[k]!r}" for k in keys)
    readers = lineage.readers_of(stage)
    read_by = f"; stages {', '.join(readers)} read them" if readers else ""
    raise ConfigError(
        f"stage '{stage}' in {run.root} already holds results computed with {changes}{read_by}. "
        f"To keep them, set {keep} in the parameters cell (or use another run_dir); to replace them, "
        f"set force = True (run_all.py: --force): the old results move to "
        f"{STAGES[stage].directory}.previous/ and the later stages must be rerun"
    )


def _replace_results(run: RunDir, stage: str) -> None:
    """``force``: set ``stage``'s results aside (``<stage>.previous/``), the later stages out of date."""
    moved, affected = lineage.set_aside(run, stage)
    if moved is None:
        return
    message = f"force: the previous results of stage '{stage}' moved to {moved}"
    if affected:
        first, last = stage_number(affected[0]), stage_number(affected[-1])
        message += (
            f"; {', '.join(affected)} now hold results of the old ones: rerun them after this notebook "
            f"(run_all.py --stages {first}-{last})"
        )
    print(message)


def training_tables(stage: Stage) -> list[Any]:
    """Notebooks 01 and 04: the trained model's accuracies and its training step, as tables."""
    data, metrics = stage.data, stage.load("metrics")
    return [
        accuracy_table(metrics, num_test=len(data.test_labels), num_train=len(data.train_labels)),
        train_step_table(stage.load("history")["environment"]["train_step"]),
    ]


def model_error_attention(
    stage: Stage,
    model: nn.Module,
    predictions: Predictions,
    maps: FailureMaps,
    human_report: HumanFailureReport | NotApplicable,
    *,
    deletion_steps: int,
) -> AttentionReport | NotApplicable:
    """Notebook 03: :func:`failure_attention_report` of the explained failures ``maps`` that
    ``human_report`` calls model errors, on the stage's test images, Grad-CAM layer and seed;
    ``human_report`` itself where no human labels apply."""
    model_maps = model_error_maps(maps, human_report)
    if model_maps is None:
        return human_report
    return failure_attention_report(
        model,
        stage.data.test_images,
        predictions.probs,
        predictions.labels,
        model_maps,
        layer=stage.config.gradcam_layer,
        deletion_steps=deletion_steps,
        seed=stage.config.seed,
    )


@dataclass(frozen=True)
class BeforeAfterMaps(Record):
    """Notebook 05's ``reevaluation/heatmaps.pt``: the failures 03 explained, Grad-CAM of each model's
    own prediction, row i for test image ``indices[i]`` (03's order, the most confident first)."""

    indices: Tensor  # int64 (K,)
    baseline_maps: Tensor  # float32 (K, H, W) in [0, 1]: 03's maps of the baseline's prediction
    augmented_maps: Tensor  # float32 (K, H, W) in [0, 1]: of the augmented model's prediction
    augmented_predicted: Tensor  # int64 (K,)

    @classmethod
    def explain(cls, stage: Stage, augmented_model: nn.Module, augmented: Predictions) -> BeforeAfterMaps:
        """03's maps (``gradcam/heatmaps.pt``) and the augmented model's of the same images, on 03's
        layer; ``augmented`` is its test-set predictions."""
        baseline = FailureMaps.from_dict(stage.load("heatmaps", of="gradcam"))
        indices = baseline.indices
        predicted = augmented.preds[indices]
        maps = explain_images(
            augmented_model, stage.data.test_images[indices], predicted, layer=stage.config.gradcam_layer
        )
        return cls(indices, baseline.predicted_maps, maps, predicted)

    def road(self, stage: Stage, models: dict[str, nn.Module], baseline: Predictions) -> RoadByModel:
        """:func:`road_by_model` of ``models`` (baseline and augmented) on the first ``road_images``
        rows, each model's maps of its own prediction; ``baseline`` is its test-set predictions."""
        k = min(stage.config.road_images, len(self.indices))
        chosen = self.indices[:k]
        return road_by_model(
            models,
            stage.data.test_images[chosen],
            {"baseline": baseline.preds[chosen], "augmented": self.augmented_predicted[:k]},
            {"baseline": self.baseline_maps[:k], "augmented": self.augmented_maps[:k]},
            fractions=stage.config.road_fractions,
            seed=stage.config.seed,
        )

    def figure_inputs(
        self, stage: Stage, predictions: dict[str, Predictions], comparison: FailureComparison
    ) -> dict[str, Any]:
        """The arguments of :func:`cifar_helpers.views.plotting.plot_before_after_gradcam` for these
        rows, each titled with its status in ``comparison`` (fixed, kept)."""
        data, chosen = stage.data, self.indices
        return {
            "images": data.test_images[chosen],
            "baseline_maps": self.baseline_maps,
            "augmented_maps": self.augmented_maps,
            "true_labels": data.test_labels[chosen],
            "baseline_predicted": predictions["baseline"].preds[chosen],
            "baseline_confidence": predictions["baseline"].confidences[chosen],
            "augmented_predicted": self.augmented_predicted,
            "augmented_confidence": predictions["augmented"].confidences[chosen],
            "classes": data.classes,
            "row_titles": comparison.status()[: len(chosen)],
        }


@dataclass
class Replicates:
    """An opened replicate run: its root, the seeds compared, their results, and where 07 writes."""

    root: Path
    profile: str
    results: list[SeedResults]
    explain_seed: int
    _data: Any = None

    def save(self, name: str, result: Any) -> Path:
        """Write ``result`` as artifact ``name`` of the replicate stage, in ``<root>/replicates``, as
        :meth:`Stage.save` does (``"accuracy"``: ``accuracy.json``, a figure: ``<name>.png``)."""
        return _save(replicates_dir(self.root), REPLICATES_SPEC, name, result)

    def describe(self) -> str:
        """One line per seed: its run directory and test accuracies."""
        # The directory's name, not its path: the path differs between machines (and nbval runs).
        lines = [f"replicate run {self.root.name}/ ({self.profile} profile), {len(self.results)} seeds:"]
        for r in self.results:
            accuracies = ", ".join(f"{m} {100 * r.test_accuracy[m]:.2f} %" for m in MODELS)
            lines.append(f"  seed {r.seed}: {r.run_dir.name}/  test accuracy {accuracies}")
        return "\n".join(lines)

    def _explain_run(self) -> tuple[SeedResults, RunConfig, Any]:
        """``explain_seed``'s results, configuration and data (loaded once), generators seeded."""
        result = next(r for r in self.results if r.seed == self.explain_seed)
        config = RunConfig.load(RunDir(result.run_dir).config_path)
        _seed(config)
        if self._data is None:
            self._data = load_data(config)
        return result, config, self._data

    def explain(self, indices: Sequence[int], max_images: int = 16) -> dict[str, Any]:
        """Grad-CAM of ``explain_seed``'s baseline on test images ``indices`` (at most ``max_images``):
        the inputs of :func:`cifar_helpers.views.plotting.plot_gradcam_pairs` (uint8 images (K, 3, H, W),
        predicted- and true-class maps (K, H, W), labels, predictions, confidences, class names)."""
        result, _, data = self._explain_run()
        run = RunDir(result.run_dir)
        chosen = torch.tensor(list(indices)[:max_images], dtype=torch.int64)
        model = load_trained_model(run.path("baseline", "checkpoint.pt"))
        layer = RunConfig.load(run.require("gradcam", "config.json")[0]).gradcam_layer  # 03's knob
        probs = result.probs["baseline"][chosen]
        predicted, true = probs.argmax(dim=1), result.labels[chosen]
        images = data.test_images[chosen]
        return {
            "images": images,
            "predicted_maps": explain_images(model, images, predicted, layer=layer),
            "true_maps": explain_images(model, images, true, layer=layer),
            "true_labels": true,
            "predicted": predicted,
            "confidences": probs.max(dim=1).values,
            "classes": data.classes,
        }

    def reseed_claims(self) -> list[ClaimResult]:
        """Claim 6 against a reseed (:func:`analysis.claims.ledger.reseed_stage_claims`): ``explain_seed``'s
        baseline failures, fixed by its augmented model and by the next seed's baseline, gated by the
        bench of ``explain_seed``'s run."""
        result, config, data = self._explain_run()
        other = next(r for r in self.results if r.seed != result.seed)
        labels, threshold = result.labels, result.threshold
        augmentation = compare_failures(
            result.probs["baseline"], result.probs["augmented"], labels, threshold
        )
        reseed = compare_failures(result.probs["baseline"], other.probs["baseline"], labels, threshold)
        return reseed_stage_claims(
            data.test_images,
            augmentation.baseline_failures,
            augmentation.fixed,
            reseed.fixed,
            load_failure_report(result.run_dir),
            read_ledger(result.run_dir),
            seed=config.seed,
        )

    def human_label_mix(self, stability: FailureStability) -> CategoryMix | NotApplicable:
        """The human-label categories of the consistent and the one-seed failures, or why no human
        labels apply (a test subset, another dataset)."""
        _, config, data = self._explain_run()
        human = human_labels_for_run(config, data)
        if isinstance(human, NotApplicable):
            return human
        threshold = config.ambiguity_threshold
        categories = failure_categories(range(len(data.test_labels)), human, threshold)
        return category_mix(categories, stability.consistent, stability.one_seed, threshold)


def open_replicates(
    run_dir: str | Path | None,
    *,
    profile: str = "auto",
    seeds: Sequence[int] | None = None,
    seed: int | None = None,
) -> Replicates:
    """Open the replicate run at ``run_dir`` (None: ``runs/<profile>``) for stage 07: ``seeds`` (None:
    every ``seed-<k>`` found; at least two, sharing their test images) compared, ``seed``'s baseline
    (None: the first) explaining the failures; :class:`MissingStageError` says how to get missing seeds."""
    root = Path(run_dir if run_dir is not None else default_run_dir(profile)).expanduser().resolve()
    found = find_seeds(root)
    chosen = list(seeds) if seeds is not None else found
    asked = resolve_profile(profile)
    how = (
        f"python run_all.py --profile {asked} --run-dir {root} --seeds 42,43,44 "
        "(seeds already done are skipped)"
    )
    missing = [s for s in chosen if s not in found]
    if missing:
        raise MissingStageError(f"no run directory for seed(s) {missing} under {root}: run {how}")
    if len(chosen) < 2:
        raise MissingStageError(
            f"{root} holds {len(chosen)} seed run(s); comparing seeds needs at least two: run {how}"
        )
    results = [load_seed_results(seed_run_dir(root, s), s) for s in chosen]
    for r in results:
        ran = RunConfig.load(RunDir(r.run_dir).config_path).profile
        if ran != asked:
            raise ValueError(f"seed {r.seed} ran the {ran!r} profile, not {asked!r}: use profile={ran!r}")
    check_same_test_set(results)
    explain_seed = chosen[0] if seed is None else seed
    if explain_seed not in chosen:
        raise ValueError(f"seed={explain_seed} is not one of the seeds compared ({chosen})")
    return Replicates(root, asked, results, explain_seed)
