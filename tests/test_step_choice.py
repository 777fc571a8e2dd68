"""Choosing the training step by measuring it: candidates, the cost rule, the cache, the records.

The decision logic runs on fake timings (so the GPU path is covered on a CPU); the compiled step's
bit-exact determinism and resume need ``torch.compile`` to work here and are marked slow.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import cifar_helpers.core.step_choice as step_choice
import cifar_helpers.core.training as training
from cifar_helpers.core.step_choice import Measurement, Step, _decide, candidate_steps, choose_step
from cifar_helpers.core.training import CheckpointMismatchError, build_model, make_optimizer, train_model
from cifar_helpers.rundir.artifacts import load_json, load_torch, save_torch
from cifar_helpers.rundir.config import make_config

EAGER_CL, EAGER_NCHW = Step(False, True), Step(False, False)
COMPILED_CL, COMPILED_NCHW = Step(True, True), Step(True, False)


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own user cache (``XDG_CACHE_HOME``), never the real one."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(step_choice, "_cache_path", lambda: tmp_path / "cache" / "train_steps.json")
    return tmp_path / "cache" / "train_steps.json"


def fake_timings(monkeypatch: pytest.MonkeyPatch, rates: dict[Step, float], compile_seconds: float) -> list:
    """Replace the probe by fixed seconds per step; returns the list of steps it was asked to time."""
    calls: list[Step] = []

    def fake(config: Any, model: Any, step: Step, *args: Any) -> Measurement:
        calls.append(step)
        return Measurement(step, rates[step], setup_seconds=compile_seconds if step.compiled else 0.0)

    monkeypatch.setattr(step_choice, "_time_step", fake)
    return calls


def choose(config: Any, planned_steps: int) -> step_choice.StepChoice:
    model = build_model(config)
    inputs, labels = (
        torch.zeros(config.batch_size, 3, 32, 32),
        torch.zeros(config.batch_size, dtype=torch.long),
    )
    return choose_step(config, model, inputs, labels, planned_steps, make_optimizer)


BF16 = dict(device="cpu", precision="bf16", width=4, batch_size=8)
# Compiling gains 30 % per step on channels-last but costs 60 s up front: worth it from 2,000 steps.
RATES = {EAGER_CL: 0.10, EAGER_NCHW: 0.12, COMPILED_CL: 0.07, COMPILED_NCHW: 0.09}


def test_candidates_start_with_the_step_used_before_steps_were_chosen() -> None:
    assert candidate_steps(make_config("smoke")) == [EAGER_NCHW]
    auto = candidate_steps(make_config("cpu", **BF16))
    assert auto[0] == EAGER_CL and set(auto) == set(RATES)
    assert candidate_steps(make_config("cpu", **{**BF16, "precision": "fp32"}))[0] == EAGER_NCHW
    assert candidate_steps(make_config("cpu", **BF16, compile=True)) == [COMPILED_CL, COMPILED_NCHW]
    assert candidate_steps(make_config("cpu", **BF16, memory_format="contiguous", compile=False)) == [
        EAGER_NCHW
    ]


def test_compile_time_is_counted_against_the_gain() -> None:
    measured = [Measurement(s, r, 60.0 if s.compiled else 0.0) for s, r in RATES.items()]
    assert _decide(measured, planned_steps=10_000) == COMPILED_CL
    assert _decide(measured, planned_steps=1_000) == EAGER_CL  # 100 s eager < 60 s + 70 s compiled
    assert _decide([Measurement(EAGER_CL, 0.1), Measurement(EAGER_NCHW, 0.1)], 10) == EAGER_CL  # tie: default
    failed = Measurement(COMPILED_CL, None, error="no compiler")
    assert _decide([failed, Measurement(EAGER_NCHW, 0.2)], 10_000) == EAGER_NCHW
    with pytest.raises(ValueError, match="no candidate"):
        _decide([failed], 10)


def test_a_long_run_measures_every_candidate_once_and_then_reads_the_cache(
    monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    calls = fake_timings(monkeypatch, RATES, compile_seconds=60.0)
    config = make_config("cpu", **BF16)
    first = choose(config, planned_steps=10_000)
    assert first.how == "measured" and first.step == COMPILED_CL
    assert calls == [EAGER_CL, EAGER_NCHW, COMPILED_CL, COMPILED_NCHW] and private_cache.exists()
    record = first.record(config.batch_size)
    assert record["step"] == "compiled channels_last" and record["seconds_per_step"] == 0.07
    assert [c["images_per_second"] for c in record["candidates"]] == [8 / r for r in RATES.values()]

    # Each candidate is announced before it is timed (the progress line says which, of how many).
    calls.clear()
    announced: list = []
    model, inputs = build_model(config), torch.zeros(config.batch_size, 3, 32, 32)
    labels = torch.zeros(config.batch_size, dtype=torch.long)
    config8 = config.replace(width=8)
    on_probe = lambda k, n, step: announced.append((k, n, step))  # noqa: E731
    choose_step(config8, model, inputs, labels, 10_000, make_optimizer, on_probe=on_probe)
    assert announced == [(k + 1, 4, step) for k, step in enumerate(calls)] and len(calls) == 4

    calls.clear()
    again = choose(config, planned_steps=10_000)
    assert again.how == "cached" and again.step == COMPILED_CL and calls == []
    # The cached rates decide again for the run at hand: a short run does not pay the compile time.
    assert choose(config, planned_steps=500).step == EAGER_CL and calls == []
    # Another width (or batch size, precision, machine, version) is another key: measured again.
    assert choose(config.replace(width=16), planned_steps=10_000).how == "measured" and len(calls) == 4


def test_a_short_run_does_not_even_try_compiling(
    monkeypatch: pytest.MonkeyPatch, private_cache: Path
) -> None:
    calls = fake_timings(monkeypatch, RATES, compile_seconds=60.0)
    # 200 steps of 0.1 s: even doubling the speed saves 10 s, less than compiling costs.
    choice = choose(make_config("cpu", **BF16), planned_steps=200)
    assert choice.step == EAGER_CL and calls == [EAGER_CL, EAGER_NCHW]
    assert all("not tried" in m.error for m in choice.measurements if m.step.compiled)
    assert not private_cache.exists()  # incomplete: a longer run will measure the compiled steps


def test_a_forced_step_is_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_timings(monkeypatch, RATES, compile_seconds=60.0)
    choice = choose(make_config("cpu", **BF16, compile=True, memory_format="contiguous"), 10_000)
    assert (choice.step, choice.how, calls) == (COMPILED_NCHW, "forced", [])


def test_a_damaged_cache_is_measured_again(monkeypatch: pytest.MonkeyPatch, private_cache: Path) -> None:
    calls = fake_timings(monkeypatch, RATES, compile_seconds=60.0)
    private_cache.parent.mkdir(parents=True)
    private_cache.write_text("{half a file")
    assert choose(make_config("cpu", **BF16), 10_000).how == "measured" and len(calls) == 4
    assert step_choice._cached_measurements(step_choice._cache_key(make_config("cpu", **BF16)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_CACHE_HOME is a Linux convention")
def test_the_cache_lives_in_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert step_choice._cache_path() == tmp_path / "xdg" / "cifar-stress" / "train_steps.json"


def test_the_key_names_the_machine_and_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    config = make_config("cpu", **BF16)
    key = step_choice._cache_key(config)
    for part in ("machine", "torch", "cifar_helpers", "precision", "width", "batch_size", "threads"):
        assert f'"{part}"' in key
    monkeypatch.setattr(step_choice, "_machine_name", lambda device: "another CPU")
    assert step_choice._cache_key(config) != key


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_real_probe_leaves_the_model_and_the_generators_alone(precision: str) -> None:
    # fp16 is the GPU path of older cards (a gradient scaler); it also runs on the CPU.
    config = make_config(
        "smoke", device="cpu", precision=precision, memory_format="auto", width=4, batch_size=8
    )
    model = build_model(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    inputs, labels = torch.randn(8, 3, 32, 32), torch.arange(8)
    rng = torch.get_rng_state()
    choice = choose_step(config, model, inputs, labels, 100, make_optimizer)
    assert choice.how == "measured" and {m.step for m in choice.measurements} == {EAGER_CL, EAGER_NCHW}
    assert all(m.seconds_per_step > 0 and m.error is None for m in choice.measurements)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


# --- the trainer uses, records and keeps the choice ------------------------------------------------


def tiny(**overrides: Any) -> tuple[Any, tuple[torch.Tensor, ...]]:
    config = make_config(
        "smoke",
        **{
            **dict(width=4, epochs=2, batch_size=50, warmup_epochs=0.5, device="cpu", eval_batch_size=64),
            **overrides,
        },
    )
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (201, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (201,), generator=g)
    return config, (images, labels, images[:60], labels[:60])


def fit(config: Any, data: tuple[torch.Tensor, ...], out: Path, **kwargs: Any) -> Any:
    return train_model(config, *data, out, augment=True, progress=False, **kwargs)


def test_the_choice_is_recorded_and_a_resume_keeps_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_timings(monkeypatch, {EAGER_CL: 0.1, EAGER_NCHW: 0.2}, compile_seconds=0.0)
    config, data = tiny(compile=False, memory_format="auto")
    fit(config, data, tmp_path / "run", stop_after_epoch=1)
    recorded = load_json(tmp_path / "run" / "history.json")["environment"]["train_step"]
    assert (recorded["step"], recorded["how"], recorded["steps_per_epoch"]) == (
        "eager channels_last",
        "measured",
        4,
    )
    assert load_torch(tmp_path / "run" / "checkpoint.pt")["train_step"]["step"] == "eager channels_last"

    fake_timings(monkeypatch, {EAGER_CL: 0.2, EAGER_NCHW: 0.1}, compile_seconds=0.0)  # now NCHW would win
    resumed = fit(config, data, tmp_path / "run")
    assert resumed.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert load_json(tmp_path / "run" / "history.json")["environment"]["train_step"]["how"] == "checkpoint"
    with pytest.raises(CheckpointMismatchError, match="eager channels_last step"):
        fit(config.replace(compile=True), data, tmp_path / "run")


def test_a_checkpoint_from_before_steps_were_chosen_resumes_eagerly(tmp_path: Path) -> None:
    config, data = tiny()
    fit(config, data, tmp_path, stop_after_epoch=1)
    checkpoint = load_torch(tmp_path / "checkpoint.pt")
    del checkpoint["train_step"]
    save_torch(tmp_path / "checkpoint.pt", checkpoint)
    fit(config, data, tmp_path)
    assert load_json(tmp_path / "history.json")["environment"]["train_step"]["step"] == "eager NCHW"


def compile_works() -> str | None:
    """None when torch.compile runs here, else why not (e.g. no C++ compiler for inductor)."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(4))
    except Exception as error:
        return f"torch.compile does not run here: {type(error).__name__}: {error}".splitlines()[0]
    finally:
        torch._dynamo.reset()
    return None


@pytest.mark.slow
def test_a_compiled_step_is_bit_exact_across_runs_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reason = compile_works()
    if reason:
        pytest.skip(reason)
    forwards: list[int] = []

    def counting(model: torch.nn.Module) -> Any:
        forward = step_choice.compiled(model)  # the real compiled module goes into training, counted
        forward.register_forward_pre_hook(lambda module, inputs: forwards.append(1))
        return forward

    monkeypatch.setattr(training, "compiled", counting)
    config, data = tiny(compile=True, num_threads=1)
    full = fit(config, data, tmp_path / "full")
    again = fit(config, data, tmp_path / "again")
    fit(config, data, tmp_path / "resumed", stop_after_epoch=1)
    torch.manual_seed(12345)  # another session's global RNG state must not matter
    resumed = fit(config, data, tmp_path / "resumed")
    assert load_json(tmp_path / "full" / "history.json")["environment"]["train_step"]["compiled"] is True
    for other in (again, resumed):
        assert [h["train_loss"] for h in other.history] == [h["train_loss"] for h in full.history]
        for key, value in full.model.state_dict().items():
            assert torch.equal(value, other.model.state_dict()[key]), key
    # full, again, and the resumed run in two calls of one epoch each: every step went through compile
    assert len(forwards) == 8 + 8 + 4 + 4


def test_the_training_notebooks_table_of_the_choice() -> None:
    from cifar_helpers.core.step_choice import StepChoice
    from cifar_helpers.views.tables import text, train_step_table

    measured = [
        Measurement(EAGER_CL, 0.128, 0.01),
        Measurement(COMPILED_CL, None, error="not tried: too few steps to repay compiling"),
    ]
    record = StepChoice(EAGER_CL, "measured", measured, probe_seconds=4.2, planned_steps=700).record(128)
    shown = text(train_step_table(record))
    assert shown.splitlines()[0] == "training step: eager channels_last (measured)"
    assert re.search(r"^eager channels_last \(chosen\) +1000 +0\.01$", shown, flags=re.M), shown
    assert re.search(r"^compiled channels_last +- +- +not tried: too few steps", shown, flags=re.M), shown
    assert "probe: 4 s; the run planned 700 steps" in shown
    forced = StepChoice(EAGER_NCHW, "forced").record(128)
    assert "no candidate rates measured" in text(train_step_table(forced))
