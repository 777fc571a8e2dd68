"""The run report: built from a fake run directory, then rendered in headless Chromium.

The Chromium tests need the Debian package ``chromium`` (CI installs it); they are skipped where it
is absent. They check what a reader would see: the page renders to a non-blank screenshot, every
embedded figure decodes (no broken images), and the key numbers are in the rendered text.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from conftest import positive_control_result

from cifar_helpers.analysis.calibration import _calibration_report
from cifar_helpers.analysis.failures import ConfusedPair, FailureSummary
from cifar_helpers.analysis.faithfulness import RoadCurves, RoadTable
from cifar_helpers.analysis.sanity import RandomisationSummary
from cifar_helpers.analysis.seed_analysis import (
    COUNT_KEYS,
    AccuracySummary,
    PairedSpread,
    ReplicateSummary,
    Spread,
)
from cifar_helpers.rundir.artifacts import RunDir, save_figure, save_json
from cifar_helpers.rundir.config import make_config
from cifar_helpers.rundir.registry import STAGES
from cifar_helpers.views import tables
from cifar_helpers.views.report import (
    REPORT_NAME,
    RunSummary,
    png_problem,
    read_run_summary,
    render_replicates_report,
    render_report,
    write_report,
)

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")
HOSTILE_NOTE = "<script>alert('x')</script> & <b>bold</b>"


def _chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _figure(path: Path, title: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(np.cumsum(rng.normal(size=50)), color="tab:blue", linewidth=3)
    ax.set_title(title)
    save_figure(fig, path)
    plt.close(fig)


def _touch_outputs(directory: Path, stage: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in STAGES[stage].outputs:
        path = directory / name
        if not path.exists() and name.endswith(".json"):
            save_json(path, [] if name == "claims.json" else {})  # a ledger is a list of claims
        elif not path.exists():
            path.write_bytes(b"")


@pytest.fixture()
def fake_run(tmp_path: Path) -> Path:
    """A run with every stage but gradcam finished, small JSON files and a few real PNG figures."""
    run = tmp_path / "run"
    config = make_config("smoke", seed=3, extra={"note": HOSTILE_NOTE})
    config.save(run / "config.json")
    save_json(run / "environment.json", {"python": "3.11.0", "torch": "2.x", "seed": 3})
    save_json(
        run / "data_summary.json",
        {
            "source": "synthetic",
            "root": None,
            "fingerprint": "f00d",
            "classes": ["disc", "square"],
            "num_images": {"train": 20, "holdout": 4, "test": 10},
            "counts": {"train": {"disc": 10, "square": 10}},
        },
    )
    _figure(run / "sample_grid.png", "samples", 0)

    timing = {"epochs": 2, "train_seconds": 3.5, "images_per_second": 800.0}
    per_class = {"per_class_accuracy": {"disc": 0.9, "square": 0.7246}}
    save_json(
        run / "baseline" / "metrics.json",
        {"test_accuracy": 0.8123, "train_accuracy": 0.9734, "train_test_gap": 0.1611, **timing, **per_class},
    )
    epoch = {"train_loss": 0.5, "train_acc": 0.8, "test_loss": 0.6}
    history = {"complete": True, "epochs": [{**epoch, "test_acc": 0.7001}, {**epoch, "test_acc": 0.8123}]}
    history["environment"] = {"train_step": {"step": "eager", "how": "the only one", "candidates": []}}
    save_json(run / "baseline" / "history.json", history)
    _touch_outputs(run / "baseline", "baseline")
    _figure(run / "baseline" / "training_curves.png", "baseline curves", 1)
    save_json(
        run / "augmented" / "metrics.json",
        {"test_accuracy": 0.8456, "train_accuracy": 0.9011, "train_test_gap": 0.0555, **timing, **per_class},
    )
    save_json(run / "augmented" / "history.json", history)
    _touch_outputs(run / "augmented", "augmented")

    save_json(
        run / "failures" / "summary.json",
        {
            "threshold": 0.9,
            "num_images": 500,
            "accuracy": 0.8123,
            "num_errors": 94,
            "num_high_confidence": 37,
            "share_of_errors_high_confidence": 37 / 94,
            "per_class_failure_rate": {"airplane": 0.04, "automobile": 0.1},
            "most_confused_pairs": [{"true": "automobile", "predicted": "airplane", "count": 3}],
        },
    )
    save_json(
        run / "failures" / "failures.json",
        {"threshold": 0.9, "num_images": 500, "num_errors": 94, "indices": list(range(37))},
    )
    _touch_outputs(run / "failures", "failures")
    (run / "failures" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage that is not a PNG image")
    (run / "failures" / "not_a_png.png").write_text("hello", encoding="utf-8")

    save_json(
        run / "reevaluation" / "comparison.json",
        {
            "threshold": 0.9,
            "counts": {
                "fixed": 21,
                "kept_same": 9,
                "kept_different": 7,
                "new": 13,
                "baseline_failures": 37,
                "augmented_failures": 29,
            },
            "baseline_accuracy": 0.8123,
            "augmented_accuracy": 0.8456,
            "baseline_gap": 0.1611,
            "augmented_gap": 0.0555,
        },
    )
    save_json(run / "reevaluation" / "road.json", {"num_images": 0, "fractions": [], "models": {}})
    _touch_outputs(run / "reevaluation", "reevaluation")

    stress = run / "stress"
    setup = {
        "corruption_names": ["contrast"],
        "severities": [1, 2, 3, 4, 5],
        "parameters": {"contrast": [0.75, 0.5, 0.4, 0.3, 0.15]},
        "num_images": 200,
        "seed": 42,
    }
    contrast = {
        "accuracy": [0.8, 0.7, 0.6, 0.5, 0.4],
        "mean_confidence": [0.9, 0.85, 0.8, 0.75, 0.7],
        "mean_accuracy": 0.6,
        "absolute_drop": 0.2123,
        "relative_drop": 0.2614,
    }
    model_result = {
        "clean_accuracy": 0.8123,
        "clean_mean_confidence": 0.91,
        "corruptions": {"contrast": contrast},
        "mean_corruption_accuracy": 0.6042,
        "absolute_drop": 0.2081,
        "relative_drop": 0.2562,
        **setup,
    }
    save_json(
        stress / "corruptions.json",
        {**setup, "models": {"baseline": model_result, "augmented": model_result}},
    )
    generator = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(400, 10, generator=generator)
    labels = torch.multinomial((logits / 3).softmax(dim=1), 1, generator=generator).squeeze(1)
    report = _calibration_report(logits[:200], labels[:200], logits[200:], labels[200:], 0.9)
    save_json(stress / "calibration.json", {"baseline": report.to_dict()})
    sanity = RandomisationSummary(
        steps=("trained", "linear", "layer4"),
        spearman_mean=(1.0, 0.91, 0.12),
        spearman_std=(0, 0.05, 0.2),
        num_defined=(16, 16, 15),
        num_images=16,
        layer="layer4",
        seed=0,
    )
    save_json(stress / "sanity.json", sanity.to_dict())
    rows = {
        m: RoadCurves(8, [], [], [], [], [], c, None, [])
        for m, c in (("gradcam", 0.1), ("random", 0), ("object", 0.3))
    }
    road = RoadTable(8, [], rows, 0.0)
    save_json(stress / "positive_control.json", positive_control_result(road).to_dict())
    _figure(stress / "corruption_curves.png", "corruptions", 2)
    _figure(stress / "reliability.png", "reliability", 3)
    return run


def test_report_is_self_contained_and_escaped(fake_run: Path) -> None:
    path = write_report(fake_run)
    assert path == fake_run.resolve() / REPORT_NAME
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert" in page  # the hostile config note is shown as text
    # No network: every resource is inline.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 4  # four real figures; the two files that are not PNGs are reported instead
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "truncated.png" in page and "not_a_png.png is not a PNG file" in page
    # No temporary file left behind by the atomic write.
    assert sorted(p.name for p in fake_run.glob(".report*")) == []


def test_report_shows_key_numbers_and_unrun_stages(fake_run: Path) -> None:
    page = render_report(fake_run)
    for number in ("81.23%", "97.34%", "16.11%", "84.56%", "5.55%", "60.42%"):
        assert number in page
    assert ">37<" in page  # high-confidence failures
    overview = page.split("<h2>Overview</h2>")[1].split("<h2>")[0]
    for label, count in (("fixed", 21), ("kept, same", 9), ("kept, another", 7), ("new high", 13)):
        assert re.search(rf"<td[^>]*>{label}[^<]*</td>\s*<td[^>]*>{count}</td>", overview), label
    gradcam = page.split('id="stage-gradcam"')[1].split("</section>")[0]
    assert "stage not run" in gradcam
    assert "Training curves" in page and "Corruption curves" in page  # captions from file names
    assert "0.1361" in page and "0.3171" in page
    assert "could not" not in page  # every file of this run is readable


def test_the_run_summary_keeps_its_saved_layout_and_reads_back(fake_run: Path) -> None:
    summary = read_run_summary(RunDir(fake_run))
    saved = json.loads(json.dumps(summary.to_dict()))
    assert list(saved) == [
        "run_dir",
        "baseline",
        "augmented",
        "high_confidence_failures",
        "confidence_threshold",
        "comparison",
        "human_labels",
        "damaged",
    ]
    assert saved["comparison"]["fixed"] == 21 and saved["baseline"]["train_seconds"] is not None
    assert RunSummary.from_dict(saved | {"claims": []}) == summary  # the runner's keys are left
    with pytest.raises(KeyError, match="damaged"):
        RunSummary.from_dict({key: value for key, value in saved.items() if key != "damaged"})


def test_report_of_an_empty_run_says_every_stage_is_missing(tmp_path: Path) -> None:
    page = write_report(tmp_path).read_text(encoding="utf-8")
    assert page.count("stage not run") == 7


def test_report_survives_a_malformed_json(fake_run: Path) -> None:
    (fake_run / "stress" / "sanity.json").write_text("{not json", encoding="utf-8")
    save_json(fake_run / "baseline" / "metrics.json", ["unexpected", "list"])
    page = render_report(fake_run)
    assert "could not read sanity.json" in page
    assert "could not summarise metrics.json" in page


def test_missing_run_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_report(tmp_path / "nowhere")


def test_png_check_finds_damaged_files(tmp_path: Path) -> None:
    _figure(tmp_path / "good.png", "good", 4)
    good = (tmp_path / "good.png").read_bytes()
    assert png_problem(good) is None
    assert "truncated" in png_problem(good[: len(good) // 2])
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF
    assert "damaged" in png_problem(bytes(damaged))
    assert png_problem(b"GIF89a") == "is not a PNG file"


def test_percent_format() -> None:
    assert tables.fmt(0.81234, "pct") == "81.2%" and tables.fmt(0.81234, "pct", precise=True) == "81.23%"
    assert tables.fmt(None, "pct") == "-" and tables.fmt(float("nan"), "pct") == "-"
    assert tables.fmt(3) == "3" and tables.fmt(0.5) == "0.50" and tables.fmt(-0.1234, "signed") == "-0.12"


def test_a_missing_key_is_named_with_its_file_in_its_section(fake_run: Path) -> None:
    comparison = fake_run / "reevaluation" / "comparison.json"
    data = json.loads(comparison.read_text(encoding="utf-8"))
    del data["counts"]["kept_same"]
    save_json(comparison, data)
    page = html.unescape(render_report(fake_run))
    error = "reevaluation/comparison.json has no key 'kept_same'"
    section = page.split('id="stage-reevaluation"')[1].split("</section>")[0]
    assert f"could not summarise comparison.json: {error}" in section
    assert error in page.split("<h2>Overview</h2>")[1].split("<h2>")[0]
    assert "could not" not in page.split('id="stage-stress"')[1]  # the other sections are whole


def test_builders_read_strictly_and_give_numbers() -> None:
    with pytest.raises(KeyError, match="train_test_gap"):
        tables.accuracy_table({"test_accuracy": 0.5, "train_accuracy": 0.6})
    frame = tables.accuracy_table(
        {"test_accuracy": 0.5, "train_accuracy": 0.75, "train_test_gap": 0.25}, 10, 4
    )
    assert frame["accuracy"].tolist() == [0.5, 0.75, 0.25] and frame["correct"].tolist()[:2] == [5, 3]
    assert "test,5,10,0.5" in frame.to_csv(index=False)


def test_text_keeps_long_class_names_apart() -> None:
    summary = FailureSummary(
        threshold=0.9,
        num_images=10,
        accuracy=0.5,
        num_errors=5,
        num_high_confidence=2,
        share_of_errors_high_confidence=0.4,
        per_class_failure_rate={},
        most_confused_pairs=(ConfusedPair("automobile", "airplane", 2), ConfusedPair("cat", "dog", 13)),
    )
    facts, confusions = (tables.text(frame) for frame in tables.failure_tables(summary))
    # words aligned left, numbers right
    assert confusions.splitlines()[1:] == [
        "true        predicted  count",
        "automobile  airplane       2",
        "cat         dog           13",
    ], confusions
    assert re.search(r"^share of errors made with high confidence {2,}40\.0%$", facts, flags=re.M), facts
    per_class = tables.text(tables.per_class_table({"airplane": {"automobile": 1.0, "ship": 0.25}}))
    assert per_class.splitlines() == ["class       airplane", "automobile    100.0%", "ship           25.0%"]


def test_tables_on_one_page_keep_their_styles_apart() -> None:
    pairs = tables.table(("true", "predicted", "count"), [("cat", "dog", 3)], "confusions")
    counts = tables.table(("model", "failures", "fixed"), [("baseline", 3, 1)], "counts")
    first, second = tables.to_html(pairs), tables.to_html(counts)
    ids = [re.search(r'<table id="(\w+)"', page).group(1) for page in (first, second)]
    assert ids[0] != ids[1] and ids[0] == re.search(r'<table id="(\w+)"', tables.to_html(pairs)).group(1)
    # the first column is always left-aligned (cells and header); "predicted" too, as words, but no
    # number column
    assert first.count("text-align: left") == 4 and second.count("text-align: left") == 2
    assert f"#{ids[0]} td.col1" in first and f"#{ids[0]} th.col1" in first  # by column class: no cell ids
    # The report's page has its own stylesheet: its tables keep only which columns hold words.
    precise = tables.to_html(pairs, precise=True)
    assert f"#{ids[0]} td.col1" in precise and "padding" not in precise


# --- rendered in a real browser -------------------------------------------------------------------
def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


# Injected into a copy of the report only: the report itself has no script.
IMAGE_CHECK = """
<img alt="control-broken" src="data:image/png;base64,AAAA">
<script>
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !i.complete || i.naturalWidth === 0; });
  var out = document.createElement('pre');
  out.id = 'image-check';
  out.textContent = 'images=' + images.length + ' broken=[' +
      broken.map(function (i) { return i.alt; }).join('|') + ']';
  document.body.appendChild(out);
});
</script>
"""


@pytest.fixture()
def chromium() -> str:
    binary = _chromium()
    if binary is None:
        pytest.skip("headless Chromium is not installed (apt-get install -y chromium); CI installs it")
    return binary


def test_every_embedded_image_decodes_in_chromium(fake_run: Path, chromium: str, tmp_path: Path) -> None:
    page = write_report(fake_run).read_text(encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", IMAGE_CHECK + "</body>"), encoding="utf-8")
    result = _run_chromium(
        chromium, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()
    )
    match = re.search(r"images=(\d+) broken=\[([^\]]*)\]", result.stdout)
    assert match, f"the image check did not run; chromium said: {result.stderr[-2000:]}"
    # The report's four figures plus the deliberately broken control, which alone must fail to decode
    # (so the check can tell a broken image from a good one).
    assert int(match.group(1)) == 5
    assert match.group(2) == "control-broken"
    for number in ("81.23%", "84.56%", "16.11%", "5.55%", "fixed by the augmented model"):
        assert number in result.stdout


def test_report_renders_to_a_non_blank_screenshot(fake_run: Path, chromium: str, tmp_path: Path) -> None:
    report = write_report(fake_run)
    shot = tmp_path / "shot.png"
    result = _run_chromium(
        chromium,
        tmp_path / "profile",
        f"--screenshot={shot}",
        "--window-size=1200,3000",
        "--hide-scrollbars",
        report.as_uri(),
    )
    assert shot.exists(), f"no screenshot; chromium said: {result.stderr[-2000:]}"
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    pixels = plt.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3000, 1200)
    non_white = (pixels < 0.95).any(axis=2).mean()
    assert non_white > 0.02  # text, tables and figures, not an empty page
    assert pixels.std() > 0.05


def test_the_replicate_summary_gets_its_own_tables_not_the_failure_summarys(tmp_path: Path) -> None:
    # replicates/summary.json and failures/summary.json share a name and nothing else.
    spread = Spread(0.8, 0.01, 0.7, 0.9)
    accuracy = AccuracySummary([42, 43], spread, spread, PairedSpread(0.02, 0.01, -0.1, 0.14, 2.0, 0.3))
    means = {kind: dict.fromkeys(COUNT_KEYS, 1.5) for kind in ("reseed", "augmentation")}
    summary = ReplicateSummary(accuracy, means, dict.fromkeys(COUNT_KEYS, 0.0), 0.5, 3, 10)
    save_json(tmp_path / "replicates" / "summary.json", summary.to_dict())
    page = html.unescape(render_replicates_report(tmp_path))
    assert "Replicates at a glance" in page and "test accuracy over seeds 42, 43" in page
    assert "a reseed of the baseline against augmentation" in page
    assert "Failure summary" not in page and "could not summarise" not in page
