"""Grad-CAM throughput on the CPU: one batched pass versus one image at a time.

Computes the layer4 maps of a batch of images (256 by default) with ``grad_cam`` in one forward and
one backward pass, and the same maps image by image for a subset (32 by default, extrapolated to the
batch), then checks that both give the same maps.

    python benchmarks/gradcam_throughput.py                  # ResNet-18, width 64, random weights
    python benchmarks/gradcam_throughput.py --width 16
    python benchmarks/gradcam_throughput.py --checkpoint runs/x/baseline/checkpoint.pt --width 16
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cifar_helpers.analysis.gradcam import grad_cam
from cifar_helpers.core.models import resnet18
from cifar_helpers.rundir.artifacts import load_torch


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load a state dict saved directly or under a common key of a training checkpoint."""
    checkpoint = load_torch(path)
    for key in ("model", "model_state", "model_state_dict", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    model.load_state_dict(checkpoint)


def timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 width (64 is the standard network)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="weights to load (default: random)")
    parser.add_argument("--images", type=int, default=256, help="batch size of the batched pass")
    parser.add_argument("--single", type=int, default=32, help="images computed one at a time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not 1 <= args.single <= args.images:
        parser.error("--single must be between 1 and --images")

    torch.manual_seed(args.seed)
    model = resnet18(num_classes=10, width=args.width).eval()
    if args.checkpoint is not None:
        load_weights(model, args.checkpoint)
    images = torch.randn(args.images, 3, 32, 32)
    targets = torch.randint(0, 10, (args.images,))

    grad_cam(model, images[:8], targets[:8])  # warm-up: first-call allocations and kernel selection
    batched, batched_s = timed(lambda: grad_cam(model, images, targets))
    single, single_s = timed(
        lambda: torch.cat(
            [grad_cam(model, images[i : i + 1], targets[i : i + 1]) for i in range(args.single)]
        )
    )
    batched_rate = args.images / batched_s
    single_rate = args.single / single_s
    max_diff = (batched[: args.single] - single).abs().max().item()

    weights = f"checkpoint {args.checkpoint}" if args.checkpoint else "random weights"
    print(
        f"ResNet-18 width {args.width} ({weights}), layer4, 32x32 inputs, "
        f"torch threads: {torch.get_num_threads()}"
    )
    print(f"batched        : {args.images} maps in {batched_s:.2f} s = {batched_rate:8.1f} maps/s")
    print(
        f"one at a time  : {args.single} maps in {single_s:.2f} s = {single_rate:8.1f} maps/s "
        f"(measured on {args.single} images; {args.images} would take ~{args.images / single_rate:.1f} s)"
    )
    print(f"speed-up       : {batched_rate / single_rate:.1f}x")
    print(f"max |batched - one at a time| over {args.single} maps: {max_diff:.2e}")


if __name__ == "__main__":
    main()
