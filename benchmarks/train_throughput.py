"""Training throughput: the project's trainer against the original assignment's input pipeline.

Trains the same ResNet-18 with the same optimizer and batch size two ways:

* ``project``   - :func:`cifar_helpers.core.training.train_model` itself: uint8 tensors in memory, a seeded
  permutation per epoch, ``random_crop_flip`` on the whole batch on the device, normalisation there,
  bf16 autocast and channels-last where the device runs bf16 natively (CUDA, or a CPU with
  AVX512-BF16/AMX), fp32 otherwise. It trains two epochs of ``--steps`` batches and the second one is
  timed (from the trainer's own per-epoch ``seconds``), so one-off start-up costs are left out.
* ``eager``     - the same, with ``compile=False``: the step the project took before steps were chosen.
  ``project`` uses the step ``compile="auto"`` / ``memory_format="auto"`` choose for a whole ``cpu``
  profile run (:func:`cifar_helpers.core.step_choice.choose_step`: measured once per machine, then read
  from the user cache); every candidate's measured rate is printed with its share of the peak.
* ``reference`` - the way the assignment did it: a ``Dataset`` of PIL images with torchvision's
  ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, ``Normalize(...)``, a
  shuffling ``DataLoader`` with ``--workers`` worker processes (2 by default: one per core on a 2-core
  machine, the usual choice), fp32, NCHW. ``--warmup`` batches (worker start-up, first kernels) are
  run before the timed ``--steps`` batches.

To tell how much room is left, it also measures the machine's matrix-multiply peak in bf16 and fp32
(a large square matmul, the best case for the same math libraries the convolutions use) and reports
each method's arithmetic rate against it. A training step costs about three forward passes (the
forward, the gradient with respect to the inputs, the gradient with respect to the weights), so
``GFLOP/s = images/s x 3 x 2 x forward multiply-adds``. When both methods already run near their
precision's peak, the speed-up cannot exceed the ratio of the two peaks.

Each (method, width) runs in its own subprocess, so its peak memory is its own: the resident set
size high-water mark from ``resource.getrusage`` (the main process, and for the reference also the
largest DataLoader worker), or ``torch.cuda.max_memory_allocated`` on CUDA. The data are random uint8
images; throughput does not depend on what the pixels show.

    python benchmarks/train_throughput.py                   # widths 64 and 16, 20 timed steps each
    python benchmarks/train_throughput.py --width 16 --steps 40 --repeats 3
    python benchmarks/train_throughput.py --device cuda --batch-size 512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cifar_helpers.core.models import resnet18
from cifar_helpers.core.normalization import CIFAR10_MEAN, CIFAR10_STD, normalize
from cifar_helpers.core.step_choice import choose_step
from cifar_helpers.core.training import build_model, make_optimizer, steps_per_epoch, train_model
from cifar_helpers.rundir.config import RunConfig, make_config

NUM_CLASSES = 10
METHODS = ("project", "eager", "reference")
PEAK_DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def random_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random uint8 images (n, 3, 32, 32) and int64 labels (n,)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return images, labels


def bench_config(args: argparse.Namespace, width: int) -> RunConfig:
    """The ``cpu`` profile with the benchmark's width, batch size, device and thread count."""
    return make_config(
        "cpu",
        width=width,
        batch_size=args.batch_size,
        epochs=2,
        warmup_epochs=1.0,
        device=args.device,
        num_threads=args.threads,
        eval_batch_size=args.batch_size,
        seed=args.seed,
    )


def peak_memory_mb(device: torch.device, workers: bool = False) -> dict[str, float]:
    """Peak memory of this process (and of its largest finished DataLoader worker), in MiB.

    A worker is forked from the main process, so its resident set includes pages it still shares
    with it: main + worker over-counts the total.
    """
    # ru_maxrss is in KiB on Linux.
    memory = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if workers:
        memory["largest_worker_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if device.type == "cuda":
        memory["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return memory


def forward_macs_per_image(width: int) -> int:
    """Multiply-adds of one forward pass of ResNet-18 at ``width`` on a 32x32 image (convs + linear)."""
    model = resnet18(num_classes=NUM_CLASSES, width=width)
    total = 0

    def count(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features * module.out_features

    for module in model.modules():
        module.register_forward_hook(count)
    with torch.no_grad():
        model(torch.zeros(1, 3, 32, 32))
    return total


def matmul_peak_gflops(
    dtype: torch.dtype, device: torch.device, size: int = 2048, repeats: int = 10
) -> float:
    """Best-case arithmetic rate of this device: GFLOP/s of a ``size`` x ``size`` matmul in ``dtype``."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    best = float("inf")
    for _ in range(3):
        a @ b  # first calls pick kernels and touch memory
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def run_project(args: argparse.Namespace, width: int, eager: bool = False) -> dict[str, Any]:
    """Two epochs of ``args.steps`` batches through ``train_model``; the second epoch is timed. The
    step is eager, or the one chosen for a whole ``cpu`` run (its candidates' rates are returned)."""
    config = bench_config(args, width)
    images, labels = random_data(args.steps * args.batch_size, args.seed)
    chosen: dict[str, Any] = {"step": None, "candidates": []}
    if eager:
        config = config.replace(compile=False)
    else:
        device, batch = config.resolved_device(), slice(0, args.batch_size)
        planned = make_config("cpu").epochs * steps_per_epoch(49_000, args.batch_size)
        inputs, targets = normalize(images[batch].to(device)), labels[batch].to(device)
        choice = choose_step(config, build_model(config), inputs, targets, planned, make_optimizer)
        chosen = choice.record(args.batch_size)
        memory_format = "channels_last" if choice.step.channels_last else "contiguous"
        config = config.replace(compile=choice.step.compiled, memory_format=memory_format)
    test_images, test_labels = random_data(args.batch_size, args.seed + 1)
    with tempfile.TemporaryDirectory() as out_dir:
        result = train_model(
            config,
            images,
            labels,
            test_images,
            test_labels,
            out_dir,
            augment=True,
            progress=False,
            resume=False,
        )
    seconds = result.history[-1]["seconds"]
    device = config.resolved_device()
    return {
        "images_per_second": args.steps * args.batch_size / seconds,
        "seconds": seconds,
        "bf16": config.resolved_precision() == "bf16",
        "channels_last": config.memory_format == "channels_last" or config.use_channels_last(),
        "compiled": config.compile is True,
        "threads": torch.get_num_threads(),
        "chosen": chosen,
        **peak_memory_mb(device),
    }


class PILImages(torch.utils.data.Dataset):
    """The assignment's dataset, as ``torchvision.datasets.CIFAR10`` does it: an HWC uint8 array,
    each image turned into a PIL image and transformed one at a time in the DataLoader's workers."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, 32, 32, 3)
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def run_reference(args: argparse.Namespace, width: int) -> dict[str, Any]:
    """``args.warmup`` untimed then ``args.steps`` timed batches of the assignment's pipeline."""
    import torchvision.transforms as T

    config = bench_config(args, width)
    device = config.resolved_device()
    if args.threads:
        torch.set_num_threads(args.threads)
    total = args.warmup + args.steps
    images, labels = random_data(total * args.batch_size, args.seed)
    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    loader = torch.utils.data.DataLoader(
        PILImages(images, labels, transform),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(args.seed),
    )
    torch.manual_seed(args.seed)
    model = resnet18(num_classes=NUM_CLASSES, width=width).to(device)
    optimizer = make_optimizer(model, config)
    model.train()
    start = 0.0
    for step, (x, y) in enumerate(loader):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    del loader  # shut the workers down so their peak RSS is reported under RUSAGE_CHILDREN
    return {
        "images_per_second": args.steps * args.batch_size / seconds,
        "seconds": seconds,
        "bf16": False,
        "channels_last": False,
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        **peak_memory_mb(device, workers=args.workers > 0),
    }


def run_in_subprocess(method: str, width: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter, so that its peak memory is its own."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--width",
        str(width),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--batch-size",
        str(args.batch_size),
        "--device",
        args.device,
        "--workers",
        str(args.workers),
        "--seed",
        str(args.seed),
    ]
    if args.threads:
        command += ["--threads", str(args.threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--width", type=int, action="append", help="ResNet-18 width; repeatable (default: 64 and 16)"
    )
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per method")
    parser.add_argument("--warmup", type=int, default=3, help="untimed reference steps before timing")
    parser.add_argument(
        "--batch-size", type=int, default=make_config("cpu").batch_size, help="default: the cpu profile's"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the methods this often; best kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write all measurements here")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    widths = args.width or [64, 16]
    if args.steps < 1 or args.batch_size < 2 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1 and --batch-size >= 2")

    if args.worker:
        if args.worker == "reference":
            print(json.dumps(run_reference(args, widths[0])))
        else:
            print(json.dumps(run_project(args, widths[0], eager=args.worker == "eager")))
        return

    print(
        f"device={args.device} batch_size={args.batch_size} steps={args.steps} "
        f"reference workers={args.workers} threads={args.threads or torch.get_num_threads()}"
    )
    device = bench_config(args, widths[0]).resolved_device()
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {name: matmul_peak_gflops(dtype, device) for name, dtype in PEAK_DTYPES.items()}
    print(
        f"matmul peak  bf16 {peaks['bf16']:.0f} GFLOP/s  fp32 {peaks['fp32']:.0f} GFLOP/s  "
        f"(ratio {peaks['bf16'] / peaks['fp32']:.2f}x: what bf16 alone can buy where convolutions dominate)"
    )
    results: list[dict[str, Any]] = []
    for width in widths:
        train_gflop = 3 * 2 * forward_macs_per_image(width) / 1e9
        best: dict[str, dict[str, Any]] = {}
        for _ in range(args.repeats):
            # Alternating the two methods spreads any background load over both of them.
            for method in METHODS:
                measured = run_in_subprocess(method, width, args)
                results.append({"width": width, "method": method, **measured})
                if method not in best or measured["images_per_second"] > best[method]["images_per_second"]:
                    best[method] = measured
        for method in METHODS:
            m = best[method]
            layout = ("compiled " if m.get("compiled") else "eager ") + (
                "channels_last" if m["channels_last"] else "NCHW"
            )
            precision = f"{'bf16' if m['bf16'] else 'fp32'} {layout}"
            memory = f"peak RSS {m['rss_mb']:.0f} MiB"
            if "largest_worker_rss_mb" in m:
                memory += f" (+ largest worker {m['largest_worker_rss_mb']:.0f} MiB)"
            if "cuda_max_allocated_mb" in m:
                memory += f", CUDA max allocated {m['cuda_max_allocated_mb']:.0f} MiB"
            gflops = m["images_per_second"] * train_gflop
            peak = peaks["bf16" if m["bf16"] else "fp32"]
            m["gflops"] = gflops
            print(
                f"width {width:3d}  {method:9s}  {m['images_per_second']:8.1f} img/s  "
                f"({precision}, {m['threads']} threads)  ~{gflops:.0f} GFLOP/s = "
                f"{100 * gflops / peak:.0f}% of the matmul peak  {memory}"
            )
        ratio = best["project"]["images_per_second"] / best["reference"]["images_per_second"]
        print(f"width {width:3d}  speed-up  {ratio:.2f}x")
        chosen = best["project"]["chosen"]
        peak = peaks["bf16" if best["project"]["bf16"] else "fp32"]
        how = f"{chosen['how']}, probe {chosen['probe_seconds']:.0f} s"
        print(f"width {width:3d}  auto chose {chosen['step']} ({how})")
        for c in chosen["candidates"]:
            rate = c["images_per_second"]
            share = (
                f"{rate:8.1f} img/s = {100 * rate * train_gflop / peak:3.0f}% of the peak"
                if rate
                else c["error"]
            )
            setup = f", first calls +{c['setup_seconds']:.0f} s" if c["compiled"] and rate else ""
            print(f"width {width:3d}    candidate {c['step']:24s} {share}{setup}")
    if args.json:
        from cifar_helpers.rundir.artifacts import save_json

        save_json(args.json, {"matmul_peak_gflops": peaks, "runs": results})


if __name__ == "__main__":
    main()
