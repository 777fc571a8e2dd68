import json

import pytest
import torch

from cifar_helpers.rundir.config import (
    PROFILE_NAMES,
    PROFILES,
    ConfigError,
    RunConfig,
    make_config,
    resolve_profile,
)


def test_profiles_resolve_and_validate():
    smoke = make_config("smoke")
    assert smoke.profile == "smoke" and smoke.epochs == PROFILES["smoke"]["epochs"]
    assert make_config("full").width == 64 and make_config("full").epochs == 40
    assert make_config("cpu").width == 16 and make_config("cpu").train_per_class is None
    expected_auto = "full" if torch.cuda.is_available() else "cpu"
    assert resolve_profile("auto") == expected_auto
    assert make_config("auto").profile == expected_auto


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": -1}, "lr must be > 0"),
        ({"nonsense": 1}, "unknown configuration key(s) 'nonsense'"),
        ({"precision": "fp8"}, "precision must be one of 'auto', 'bf16', 'fp16', 'fp32'"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"nesterov": "yes"}, "nesterov must be true or false"),
        ({"confidence_threshold": 1.0}, "confidence_threshold must be in (0, 1)"),
        ({"warmup_epochs": 7}, "warmup_epochs must be in [0, epochs=6]"),
        ({"train_per_class": 0}, "train_per_class must be >= 1"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_invalid_values_are_refused_with_the_key(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        make_config("smoke", **overrides)
    assert fragment in str(info.value)


def test_unknown_profile_lists_the_choices():
    with pytest.raises(ConfigError, match="smoke, quick, cpu, full, auto"):
        make_config("bogus")


def test_unknown_key_message_lists_known_keys():
    with pytest.raises(ConfigError) as info:
        make_config("smoke", nonsense=1)
    assert "epochs" in str(info.value) and "confidence_threshold" in str(info.value)


def test_ints_are_accepted_for_floats_and_kept_as_floats():
    config = make_config("smoke", lr=1)
    assert isinstance(config.lr, float) and config.lr == 1.0


def test_save_and_load_roundtrip(tmp_path):
    config = make_config("smoke", seed=7, epochs=3, data_dir="/somewhere")
    path = config.save(tmp_path / "config.json")
    assert json.loads(path.read_text())["seed"] == 7
    assert RunConfig.load(path) == config


def test_load_validates_again(tmp_path):
    path = tmp_path / "config.json"
    values = make_config("smoke").to_dict()
    values["epochs"] = -1
    path.write_text(json.dumps(values))
    with pytest.raises(ConfigError, match="epochs"):
        RunConfig.load(path)


def test_replace_validates():
    config = make_config("smoke")
    assert config.replace(confidence_threshold=0.8).confidence_threshold == 0.8
    with pytest.raises(ConfigError):
        config.replace(confidence_threshold=0.0)


def test_execution_settings_follow_precision():
    fp32 = make_config("smoke", precision="fp32", memory_format="auto", device="cpu")
    assert fp32.resolved_precision() == "fp32" and not fp32.use_channels_last()
    bf16 = make_config("smoke", precision="bf16", memory_format="auto", device="cpu")
    assert bf16.resolved_precision() == "bf16" and bf16.use_channels_last()
    assert make_config("smoke", device="cpu").resolved_device() == torch.device("cpu")


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((9, 0), "bf16"),
        ((8, 0), "bf16"),
        ((8, 6), "bf16"),
        ((7, 5), "fp16"),
        ((7, 0), "fp16"),
        ((6, 0), "fp16"),
        ((6, 1), "fp32"),
        ((5, 2), "fp32"),
    ],
)
def test_auto_precision_follows_the_gpu_compute_capability(monkeypatch, capability, expected):
    # No GPU needed: the device and capability queries are patched. A T4 (7.5) reports emulated bf16
    # as supported; auto must not choose it there.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    config = make_config("full", device="cuda")
    assert config.resolved_precision() == expected
    assert config.autocast_dtype() == {"bf16": torch.bfloat16, "fp16": torch.float16}.get(expected)
    assert config.use_channels_last() is (expected != "fp32")


def test_auto_precision_on_the_cpu_follows_native_bf16(monkeypatch):
    import cifar_helpers.rundir.config as config_module

    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(config_module, "cpu_supports_bf16", lambda native=native: native)
        assert make_config("cpu", device="cpu").resolved_precision() == expected


def test_explicit_precision_is_kept_and_fp16_is_a_choice():
    for name in ("bf16", "fp16", "fp32"):
        assert make_config("smoke", precision=name, device="cpu").resolved_precision() == name
    with pytest.raises(ConfigError, match="precision must be one of 'auto', 'bf16', 'fp16', 'fp32'"):
        make_config("smoke", precision="fp8")


def test_road_settings_are_validated_and_survive_json():
    config = make_config("smoke", road_fractions=[0.1, 0.5])
    assert config.road_fractions == (0.1, 0.5) and config.road_images == PROFILES["smoke"]["road_images"]
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    for bad, fragment in (
        ([0.5, 0.1], "strictly increasing"),
        ([0.0, 0.5], "in (0, 1)"),
        ([], "in (0, 1)"),
        ("0.5", "must be a list"),
    ):
        with pytest.raises(ConfigError, match="road_fractions") as info:
            make_config("smoke", road_fractions=bad)
        assert fragment in str(info.value)
    with pytest.raises(ConfigError, match="road_images must be >= 1"):
        make_config("smoke", road_images=0)


def test_the_quick_profile_uses_real_data_sized_for_minutes():
    """Issue 11, item 3: the whole test set (so the human labels apply) and a tenth of the training
    set, long enough to overfit it (the failure browser then has something to show)."""
    quick = make_config("quick")
    assert quick.test_per_class is None and quick.train_per_class == 500 and quick.holdout_per_class > 0
    assert quick.width == 8 and quick.epochs == 20 and quick.precision == "fp32"
    assert "quick" in PROFILE_NAMES and PROFILE_NAMES.index("quick") == 1
