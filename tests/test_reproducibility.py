import random

import numpy as np
import torch

from cifar_helpers.rundir.reproducibility import environment_report, seed_everything


def test_same_seed_same_draws_from_every_generator():
    def draws():
        return random.random(), np.random.rand(), torch.rand(3)

    seed_everything(123)
    a = draws()
    seed_everything(123)
    b = draws()
    seed_everything(124)
    c = draws()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0] and not torch.equal(a[2], c[2])


def test_report_records_versions_and_seed():
    report = seed_everything(5)
    assert report["seed"] == 5 and report["torch"] == torch.__version__
    assert torch.are_deterministic_algorithms_enabled()
    assert set(environment_report()) >= {"python", "torch", "numpy", "torch_threads", "cuda_available"}


def test_negative_seed_is_refused():
    import pytest

    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)
