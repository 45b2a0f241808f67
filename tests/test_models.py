"""Model factory: shapes, parameter counts (by hand), initialisation, errors, L2 term."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lsr1bench.registry.models import build_model, l2_penalty
from lsr1bench.registry.names import MODELS

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# LeNet-5 on 1x28x28, by hand:
#   conv1 5x5, 1 -> 20 maps:   20*1*5*5 + 20      =     520   (28 -> 24, pool -> 12)
#   conv2 5x5, 20 -> 50 maps:  50*20*5*5 + 50     =  25,050   (12 -> 8, pool -> 4)
#   fc 50*4*4 = 800 -> 500:    800*500 + 500      = 400,500
#   output 500 -> 10:          500*10 + 10        =   5,010
#   total                                         = 431,080
#   batch norm (scale + shift): 2*20 + 2*50 + 2*500 = 1,140  -> 432,220
LENET5_PARAMS = 520 + 25_050 + 400_500 + 5_010
LENET5_BN_PARAMS = LENET5_PARAMS + 2 * (20 + 50 + 500)

# CIFAR LeNet on 3x32x32 (pad 2 keeps the size; three 2x2 pools: 32 -> 16 -> 8 -> 4):
#   conv1 3 -> 32:   32*3*25 + 32  =  2,432
#   conv2 32 -> 32:  32*32*25 + 32 = 25,632
#   conv3 32 -> 64:  64*32*25 + 64 = 51,264
#   fc 64*4*4 -> 64: 1024*64 + 64  = 65,600
#   output 64 -> 10: 64*10 + 10    =    650
#   total 145,578; batch norm 2*(32 + 32 + 64 + 64) = 384 -> 145,962
CIFAR_LENET_PARAMS = 2_432 + 25_632 + 51_264 + 65_600 + 650
CIFAR_LENET_BN_PARAMS = CIFAR_LENET_PARAMS + 2 * (32 + 32 + 64 + 64)

# ResNet-20 (option A shortcuts have no parameters; convs have no bias):
#   first conv 3 -> 16: 432; stage 1: 6 convs 16->16: 6*2,304 = 13,824
#   stage 2: 16->32 (4,608) + 5 convs 32->32 (5*9,216) = 50,688
#   stage 3: 32->64 (18,432) + 5 convs 64->64 (5*36,864) = 202,752
#   batch norm: 2*(16 + 6*16 + 6*32 + 6*64) = 1,376; fc 64*10 + 10 = 650
#   total 269,722 (He et al. 2016, table 6: 0.27M)
RESNET20_PARAMS = 432 + 13_824 + 50_688 + 202_752 + 1_376 + 650

# MLP on 1x28x28: 784*64 + 64 = 50,240; 64*10 + 10 = 650; batch norm 128
MLP_PARAMS = 50_240 + 650


@pytest.mark.parametrize(
    ("name", "batch_norm", "shape", "params"),
    [
        ("lenet5", False, MNIST, LENET5_PARAMS),
        ("lenet5", True, MNIST, LENET5_BN_PARAMS),
        ("cifar_lenet", False, CIFAR, CIFAR_LENET_PARAMS),
        ("cifar_lenet", True, CIFAR, CIFAR_LENET_BN_PARAMS),
        ("resnet20", True, CIFAR, RESNET20_PARAMS),
        ("mlp", False, MNIST, MLP_PARAMS),
        ("mlp", True, MNIST, MLP_PARAMS + 128),
    ],
)
def test_output_shape_and_parameter_count(name, batch_norm, shape, params):
    torch.manual_seed(0)
    model = build_model(name, batch_norm=batch_norm, input_shape=shape)
    assert count(model) == params
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 10)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert has_bn == batch_norm


def test_every_registered_model_builds():
    for name in MODELS:
        shape = MNIST if name in ("lenet5", "mlp") else CIFAR
        model = build_model(name, batch_norm=True, input_shape=shape, num_classes=7)
        assert model(torch.zeros(2, *shape)).shape == (2, 7)


def test_resnet20_is_027m_parameters():
    model = build_model("resnet20", batch_norm=True, input_shape=CIFAR)
    assert abs(count(model) / 1e6 - 0.27) < 0.005
    # 19 convs + 1 fc = 20 weighted layers
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 20


def test_resnet20_without_batch_norm_is_an_error():
    with pytest.raises(ValueError, match="batch normalization"):
        build_model("resnet20", batch_norm=False, input_shape=CIFAR)


def test_resnet20_he_initialisation():
    torch.manual_seed(0)
    model = build_model("resnet20", batch_norm=True, input_shape=CIFAR)
    conv = model.stages[-1].conv2  # 64 -> 64, 3x3: fan_in 576
    expected = (2.0 / 576) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.05


def test_resnet20_option_a_shortcut_pads_with_zeros():
    model = build_model("resnet20", batch_norm=True, input_shape=CIFAR)
    block = model.stages[3]  # first block of stage 2: 16 -> 32 channels, stride 2
    x = torch.randn(2, 16, 32, 32)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (2, 32, 16, 16)
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    # the original channels come through subsampled; the 16 added ones are zero
    front = 8
    torch.testing.assert_close(shortcut[:, front : front + 16], x[:, :, ::2, ::2], rtol=0, atol=0)
    assert shortcut[:, :front].abs().sum() == 0 and shortcut[:, front + 16 :].abs().sum() == 0


def test_lenet5_initialisation_follows_the_appendix():
    torch.manual_seed(0)
    model = build_model("lenet5", batch_norm=True, input_shape=MNIST)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [20, 50]
    assert [lin.out_features for lin in linears] == [500, 10]
    for layer in convs + linears:
        std = layer.weight.std().item()
        # conv1 has only 500 weights: allow the sampling error of a 500-sample std (~3%)
        assert abs(std - 0.1) < 0.012, (layer, std)
        assert abs(layer.weight.mean().item()) < 0.015
        assert torch.count_nonzero(layer.bias) == 0


def test_lenet5_layer_order_is_conv_relu_bn_pool():
    model = build_model("lenet5", batch_norm=True, input_shape=MNIST)
    kinds = [type(m).__name__ for m in model]
    assert kinds == [
        "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d",
        "Conv2d", "ReLU", "BatchNorm2d", "MaxPool2d",
        "Flatten", "Linear", "Tanh", "BatchNorm1d", "Linear",
    ]  # fmt: skip
    plain = [type(m).__name__ for m in build_model("lenet5", batch_norm=False, input_shape=MNIST)]
    assert plain == [k for k in kinds if not k.startswith("BatchNorm")]


def test_cifar_lenet_initialisation_follows_the_appendix():
    torch.manual_seed(0)
    model = build_model("cifar_lenet", batch_norm=False, input_shape=CIFAR)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for conv in convs:
        assert abs(conv.weight.std().item() - 0.01) < 0.001
    for linear in linears:
        assert abs(linear.weight.std().item() - 0.1) < 0.01
    for layer in convs + linears:
        assert torch.count_nonzero(layer.bias) == 0


def test_same_seed_same_initialisation():
    torch.manual_seed(3)
    a = build_model("lenet5", batch_norm=False, input_shape=MNIST)
    torch.manual_seed(3)
    b = build_model("lenet5", batch_norm=False, input_shape=MNIST)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError) as info:
        build_model("vgg16", batch_norm=True, input_shape=CIFAR)
    for name in MODELS:
        assert name in str(info.value)


def test_input_too_small_is_an_error():
    with pytest.raises(ValueError, match="too small"):
        build_model("lenet5", batch_norm=False, input_shape=(1, 8, 8))


def test_l2_penalty_is_half_decay_times_squared_norm():
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]))
        model.bias.copy_(torch.tensor([2.0, -2.0]))
    # squares: 1 + 4 + 9 + 0 + 1 + 0.25 = 15.25 (weights) + 8 (biases) = 23.25
    penalty = l2_penalty(model, 1e-2)
    torch.testing.assert_close(penalty, torch.tensor(1e-2 / 2 * 23.25), rtol=1e-6, atol=0)
    penalty.backward()
    # its gradient is weight_decay * p: what Caffe/Torch7 weight decay adds
    torch.testing.assert_close(model.weight.grad, 1e-2 * model.weight.detach(), rtol=1e-6, atol=0)
    assert l2_penalty(model, 0.0).item() == 0.0


# --------------------------------------------------------------------------- LeNet-5 init variants


def _lenet5_layers(model: nn.Module) -> dict[str, nn.Module]:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return {"conv1": convs[0], "conv2": convs[1], "fc500": linears[0], "output": linears[1]}


def _lenet5(seed: int, init: str | None = None, batch_norm: bool = True) -> dict[str, nn.Module]:
    torch.manual_seed(seed)
    kwargs = {} if init is None else {"init": init}
    return _lenet5_layers(build_model("lenet5", batch_norm=batch_norm, input_shape=MNIST, **kwargs))


def _torch_default_layers(seed: int) -> dict[str, nn.Module]:
    """LeNet-5's four weighted layers as torch constructs them, in the builder's order."""
    torch.manual_seed(seed)
    return {
        "conv1": nn.Conv2d(1, 20, 5),
        "conv2": nn.Conv2d(20, 50, 5),
        "fc500": nn.Linear(800, 500),
        "output": nn.Linear(500, 10),
    }


def _same(a: nn.Module, b: nn.Module) -> bool:
    return torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


@pytest.mark.parametrize("seed", [0, 7])
def test_lenet5_default_init_is_the_appendix_draws_bit_for_bit(seed: int) -> None:
    """The default is the explicit N(0, 0.1^2) draws, in layer order, after torch's construction
    (which consumes the generator first), biases zero: unchanged by the init option."""
    reference = _torch_default_layers(seed)  # consumes the RNG exactly as the builder's construction
    for layer in reference.values():
        with torch.no_grad():
            layer.weight.copy_(torch.empty(layer.weight.shape).normal_(0.0, 0.1))
            layer.bias.zero_()
    for init in (None, "appendix"):
        got = _lenet5(seed, init)
        for name, layer in reference.items():
            torch.testing.assert_close(got[name].weight, layer.weight, rtol=0, atol=0, msg=name)
            assert torch.count_nonzero(got[name].bias) == 0, name


@pytest.mark.parametrize("batch_norm", [True, False])
def test_lenet5_torch_init_is_a_freshly_constructed_torch_module(batch_norm: bool) -> None:
    got = _lenet5(3, "torch", batch_norm)
    reference = _torch_default_layers(3)
    for name, layer in reference.items():
        assert _same(got[name], layer), name


def test_lenet5_fc_torch_changes_only_the_fc500_layer() -> None:
    appendix, fc_torch, reference = _lenet5(5, "appendix"), _lenet5(5, "fc-torch"), _torch_default_layers(5)
    for name in ("conv1", "conv2", "output"):
        assert _same(fc_torch[name], appendix[name]), name
    assert not torch.equal(fc_torch["fc500"].weight, appendix["fc500"].weight)
    assert _same(fc_torch["fc500"], reference["fc500"])


def test_lenet5_init_weight_spreads() -> None:
    """appendix: std 0.1 everywhere; torch: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), std 1/sqrt(3 fan_in)."""
    fan_in = {"conv1": 25, "conv2": 500, "fc500": 800, "output": 500}
    appendix, torch_init = _lenet5(0, "appendix"), _lenet5(0, "torch")
    for name, fan in fan_in.items():
        # conv1 has the fewest weights (500): the sample std is within ~10% of the truth
        assert abs(appendix[name].weight.std().item() - 0.1) < 0.01, name
        bound = 1 / fan**0.5
        weight = torch_init[name].weight
        assert weight.abs().max().item() <= bound, name
        assert abs(weight.std().item() - bound / 3**0.5) < 0.1 * bound / 3**0.5, name
        assert 0 < torch_init[name].bias.abs().max().item() <= bound, name


def test_init_other_than_appendix_is_for_lenet5_only() -> None:
    with pytest.raises(ValueError, match="unknown init 'kaiming'"):
        build_model("lenet5", batch_norm=False, input_shape=MNIST, init="kaiming")
    with pytest.raises(ValueError, match="resnet20 takes only init 'appendix'"):
        build_model("resnet20", batch_norm=True, input_shape=CIFAR, init="torch")
    build_model("mlp", batch_norm=False, input_shape=MNIST, init="appendix")
