"""Seeding every generator and recording the environment a result came from."""

from __future__ import annotations

import os
import platform
import random
import sys
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> dict[str, Any]:
    """Seed Python, NumPy and torch (CPU and CUDA) and make cuDNN, cuBLAS and torch pick deterministic
    kernels, so a seed gives the same numbers bit for bit on one machine's CPU.
    Returns :func:`environment_report` with the seed added, to be saved beside a run's results."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    # warn_only: a few CUDA ops have no deterministic kernel; warn instead of aborting a long run.
    torch.use_deterministic_algorithms(True, warn_only=True)
    return {**environment_report(), "seed": seed, "deterministic": True}


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 autocast is a speed-up."""
    # torch's cpuinfo query works on every OS (/proc/cpuinfo exists only on Linux); the names are private.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def environment_report() -> dict[str, Any]:
    """Versions, device and thread counts: what is needed to tell whether two results should match."""
    import torchvision  # imported here only: nothing else in the package needs it

    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": cpu_supports_bf16(),
        "cuda_available": torch.cuda.is_available(),
        "torchvision": torchvision.__version__,
    }
    if torch.cuda.is_available():
        report["cuda"] = torch.version.cuda
        report["cudnn"] = torch.backends.cudnn.version()
        report["gpu"] = torch.cuda.get_device_name(0)
    return report
