import torch

from cifar_helpers.core.models import resnet18


def test_full_width_parameter_count_matches_the_reference_network():
    model = resnet18(num_classes=10, width=64)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 11_173_962


def test_cifar_stem_keeps_resolution_until_layer4():
    model = resnet18(width=8).eval()
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    seen = {}

    def record(module, inputs, output):
        seen["layer4"] = output.shape

    model.layer4.register_forward_hook(record)
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10)
    assert seen["layer4"] == (2, 64, 4, 4)  # 8 * width channels at 32 / 8 resolution


def test_width_scales_every_stage():
    model = resnet18(width=16, num_classes=7)
    assert [model.layer1[0].conv1.out_channels, model.layer4[0].conv1.out_channels] == [16, 128]
    assert model.linear.out_features == 7
    assert [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)] == [2, 2, 2, 2]


def test_bad_width_is_refused():
    import pytest

    with pytest.raises(ValueError, match="width"):
        resnet18(width=0)


def test_zero_init_residual_starts_every_block_as_its_shortcut():
    from cifar_helpers.core.models import _BasicBlock

    torch.manual_seed(0)
    model = resnet18(width=8, zero_init_residual=True)
    torch.manual_seed(0)
    plain = resnet18(width=8)
    # Only the blocks' last BatchNorm scales change; the rest of the initialisation is the same.
    differing = [
        name
        for (name, a), (_, b) in zip(plain.state_dict().items(), model.state_dict().items(), strict=True)
        if not torch.equal(a, b)
    ]
    assert len(differing) == 8 and all(name.endswith("bn2.weight") for name in differing)
    blocks = [m for m in model.modules() if isinstance(m, _BasicBlock)]
    x = torch.randn(4, 8, 32, 32)
    torch.testing.assert_close(blocks[0].train()(x), torch.relu(x))  # identity shortcut: relu(x) passes
