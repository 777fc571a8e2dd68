"""What the claims ledger costs on a profile: every claim's test, timed, at the profile's sizes.

The ledger's tests are forward passes of intervened images (and one bootstrap per row), so their cost
depends on the network's width, the number of failures tested and the sizes of the tests, not on what
the weights learned. This builds the profile's ResNet-18 (random weights, or a checkpoint), takes
``--failures`` test images as "failures" (the most a claim tests is ``max_failures``), and times each
claim with the library's defaults, twice when ``--model-errors`` says the model-errors-only rows run
too (at most as many failures again). ``--bench`` also times the planted-cause bench, which trains its
own nine small models (about a minute or two on 2 cores) into a temporary folder.

    python benchmarks/claims_budget.py                        # the cpu profile, generated images
    python benchmarks/claims_budget.py --profile quick --failures 300
    python benchmarks/claims_budget.py --checkpoint runs/cpu/baseline/checkpoint.pt
    python benchmarks/claims_budget.py --bench
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cifar_helpers.analysis.claims.bench import run_bench
from cifar_helpers.analysis.claims.probes import (
    GRADCAM_CLAIM_LAYER,
    accuracy_claims,
    background_claim,
    background_shares,
    gradcam_claim,
    off_center_claim,
    shuffled_accuracy,
    texture_claim,
)
from cifar_helpers.analysis.failures import FailureSet
from cifar_helpers.analysis.faithfulness import RoadCurves, RoadTable
from cifar_helpers.analysis.stress import stratified_subset
from cifar_helpers.core.data import make_synthetic_cifar
from cifar_helpers.core.evaluation import predict
from cifar_helpers.core.training import build_model, load_trained_model
from cifar_helpers.rundir.config import make_config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", default="cpu", help="profile whose width, test set and sizes to use")
    parser.add_argument("--checkpoint", type=Path, default=None, help="weights to load (default: random)")
    parser.add_argument("--failures", type=int, default=500, help="confident failures tested")
    parser.add_argument("--model-errors", action="store_true", help="also time the model-errors-only rows")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--bench", action="store_true", help="also time the planted-cause bench (trains)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = make_config(args.profile, data_source="synthetic")
    model = (load_trained_model(args.checkpoint) if args.checkpoint else build_model(config)).eval()
    data = make_synthetic_cifar(100, config.test_per_class or 1000, holdout_per_class=100, seed=config.seed)
    images, labels, options = data.test_images, data.test_labels, config.eval_options()
    predictions = predict(model, images, labels, **options)
    k = args.failures
    chosen = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:k]
    wrong = (labels[chosen] + 1) % 10  # stand-ins: which class was predicted does not change the cost
    failures = FailureSet(chosen, labels[chosen], wrong, torch.ones(k), 0.9, len(labels), k)
    subset = stratified_subset(labels, config.stress_images, config.seed)
    n, scores = config.road_images, torch.rand(config.road_images).tolist()
    curves = RoadCurves(n, [], [], [], [], [], None, None, scores)  # claim 5 reads the per-image scores
    road = RoadTable(n, [], {f"gradcam@{GRADCAM_CLAIM_LAYER}": curves, "random": curves}, 0.0)
    donors = (data.holdout_images, data.holdout_labels)
    tests = {
        "accuracy and gaps (claims 1-2)": lambda: accuracy_claims(predictions, predictions, 0.9, 0.9, 49_000),
        "background (3)": lambda: background_claim(
            model, images, predictions, failures, *donors, eval_options=options
        ),
        "texture (4)": lambda: texture_claim(
            model, images, predictions, failures, *donors, data.classes, eval_options=options
        ),
        "tile accuracy, 2 models (4)": lambda: [
            shuffled_accuracy(model, images[subset], labels[subset], eval_options=options) for _ in range(2)
        ],
        "Grad-CAM on the background (5)": lambda: gradcam_claim(
            background_shares(model, images, predictions, failures), road
        ),
        "off-center (6)": lambda: off_center_claim(
            model, images, failures, chosen[::2], eval_options=options
        ),
    }
    if args.bench:
        tests["planted-cause bench (3-6)"] = lambda: run_bench(config, tempfile.mkdtemp(prefix="bench-"))
    failure_based = {"background (3)", "texture (4)", "off-center (6)"}
    print(
        f"profile {config.profile}: width {config.width}, {len(labels)} test images, {k} failures, {options}"
    )
    total = 0.0
    for name, test in tests.items():
        start = time.perf_counter()
        test()
        seconds = time.perf_counter() - start
        # The failure-based rows run again on the model errors, a subset of the failures.
        total += seconds * (2 if args.model_errors and name in failure_based else 1)
        print(f"{name:32s} {seconds:7.1f} s")
    print(f"{'ledger' + (' with model-errors rows' if args.model_errors else ''):32s} {total:7.1f} s")


if __name__ == "__main__":
    main()
