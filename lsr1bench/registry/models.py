"""Model name -> ``torch.nn.Module`` factory, and the L2 term of the training objective.

The networks follow the paper's appendix ("Network Architectures and Hyperparameter
Settings") and, for ResNet-20, section 4.2 of He et al. (2016). Each builder takes
``batch_norm`` so the paper's "with / without batch normalization" pairs come from one
definition; every batch-norm layer is removed in the "without" case, nothing else changes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lsr1bench.registry.names import DEFAULT_MODEL_INIT, MODEL_INITS, MODELS, MODELS_WITH_INIT

__all__ = ["build_model", "l2_penalty", "known_models"]

# Appendix, MNIST: "Gaussian noise with mean 0 and standard deviation 0.1" for both conv
# layers; the output layer has "output standard deviation of 0.1"; the FC-500 layer names no
# value, so it gets the same 0.1 as every other MNIST layer.
LENET5_WEIGHT_STD = 0.1
# Appendix, CIFAR-10: conv layers 0.01, the FC-64 layer 0.1, the output layer 0.1.
CIFAR_CONV_WEIGHT_STD = 0.01
CIFAR_FC_WEIGHT_STD = 0.1
OUTPUT_WEIGHT_STD = 0.1


def known_models() -> list[str]:
    """The registered model names, sorted."""
    return sorted(MODELS)


def build_model(
    name: str,
    *,
    batch_norm: bool,
    input_shape: tuple[int, int, int],
    num_classes: int = 10,
    init: str = DEFAULT_MODEL_INIT,
) -> nn.Module:
    """Build the registered network ``name`` for inputs of shape ``(C, H, W)``.

    ``init`` (``names.MODEL_INITS``): ``appendix``, the model's documented initialisation;
    ``lenet5`` also takes ``torch`` and ``fc-torch`` (see :func:`_lenet5`).

    Raises ``ValueError`` for an unknown name (listing the known ones), for an input too
    small for the network, for ``resnet20`` with ``batch_norm=False``, and for an ``init``
    the model does not take.
    """
    builder = _BUILDERS.get(name)
    if builder is None or name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(known_models())}")
    if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if init not in MODEL_INITS:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(MODEL_INITS)}")
    shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
    if name in MODELS_WITH_INIT:
        return builder(batch_norm, shape, int(num_classes), init=init)
    if init != DEFAULT_MODEL_INIT:
        takers = ", ".join(sorted(MODELS_WITH_INIT))
        raise ValueError(f"{name} takes only init {DEFAULT_MODEL_INIT!r}; other inits are for {takers}")
    return builder(batch_norm, shape, int(num_classes))


def build_plugin_model(
    path: str,
    params: dict,
    *,
    batch_norm: bool,
    input_shape: tuple[int, ...],
    num_classes: int,
) -> nn.Module:
    """Call the model factory at ``path`` with ``params``, plus ``input_shape``, ``num_classes``
    and ``batch_norm`` where its signature takes them; it must return an ``nn.Module``."""
    from lsr1bench.registry import plugins

    kwargs = dict(params)
    given = {"input_shape": tuple(input_shape), "num_classes": int(num_classes), "batch_norm": batch_norm}
    for key, value in given.items():
        if plugins.takes_keyword(path, key):
            kwargs[key] = value
    model = plugins.factory(path, "model")(**kwargs)
    if not isinstance(model, nn.Module):
        raise plugins.PluginError(f"model factory '{path}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def l2_penalty(model: nn.Module, weight_decay: float) -> Tensor:
    """``weight_decay / 2 * sum(p ** 2)`` over every trainable parameter of ``model``.

    This is the objective-side form of Caffe's (and Torch7's) weight decay: its gradient
    ``weight_decay * p`` is exactly what those frameworks add to each parameter's gradient.
    Like Caffe's default (``decay_mult: 1``) it covers all parameters, biases and
    batch-norm scales/shifts included. The runner adds it to the cross-entropy so every
    optimizer, first or second order, minimises the same function; no optimizer is given
    a ``weight_decay`` of its own.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return torch.zeros(())
    if weight_decay == 0:
        return torch.zeros((), device=params[0].device, dtype=params[0].dtype)
    squares = torch.stack([p.pow(2).sum() for p in params]).sum()
    return squares * (weight_decay / 2.0)


# --------------------------------------------------------------------------- helpers


def _gaussian_(layer: nn.Conv2d | nn.Linear, std: float) -> None:
    nn.init.normal_(layer.weight, mean=0.0, std=std)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _check_spatial(name: str, size: int, input_shape: tuple[int, int, int]) -> None:
    if size < 1:
        raise ValueError(f"input_shape {input_shape} is too small for {name}")


# --------------------------------------------------------------------------- LeNet-5


def _lenet5(
    batch_norm: bool, input_shape: tuple[int, int, int], num_classes: int, init: str = DEFAULT_MODEL_INIT
) -> nn.Module:
    """The paper's MNIST LeNet-5 (appendix, "MNIST").

    Layers, in the appendix's order::

        conv 5x5, 20 maps, stride 1, pad 0 -> ReLU -> [BatchNorm2d(20)] -> maxpool 2
        conv 5x5, 50 maps, stride 1, pad 0 -> ReLU -> [BatchNorm2d(50)] -> maxpool 2
        fully connected 500 -> tanh -> [BatchNorm1d(500)]
        fully connected 10 (the output layer; logits, softmax is in the loss)

    Reading of the appendix: each bullet describes one layer, and the ReLU (tanh for the
    FC layer) is stated as part of the convolutional (FC) layer's bullet, while "Spatial
    Batch Normalization Layer" is a separate bullet after it. So the activation is applied
    by the conv layer, the batch norm normalises the activated maps, and pooling comes last:
    conv -> ReLU -> BN -> pool. (Ioffe & Szegedy place BN before the nonlinearity; we follow
    the paper's list instead.) Without batch norm the order question disappears:
    conv -> ReLU -> pool, which equals conv -> pool -> ReLU because max pooling commutes with
    the monotone ReLU. The appendix's "Spatial" batch norm after the FC layer is a
    per-feature ``BatchNorm1d``.

    Initialisation (appendix): conv weights N(0, 0.1^2), biases 0; output layer weights
    N(0, 0.1^2), bias 0. The FC-500 layer's initialisation is not stated; it gets the same
    N(0, 0.1^2) / bias 0 as the other layers. Batch-norm layers start at scale 1, shift 0.
    Max pooling is 2x2 with stride 2.

    ``init`` tests the readings the appendix leaves open: ``torch`` keeps PyTorch's default
    for every conv and FC layer (weights kaiming_uniform with a = sqrt(5), i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases likewise), ``fc-torch`` for the FC-500 layer
    only. The appendix draws are made whatever ``init`` says and the kept layers then get
    their constructed values back, so for one seed every variant consumes the global RNG
    alike: ``fc-torch`` differs from ``appendix`` in the FC-500 layer only, and ``torch``
    equals a freshly constructed torch module's initialisation.
    """
    channels, height, width = input_shape
    out_h = ((height - 4) // 2 - 4) // 2
    out_w = ((width - 4) // 2 - 4) // 2
    _check_spatial("lenet5", min(out_h, out_w), input_shape)

    conv1 = nn.Conv2d(channels, 20, kernel_size=5, stride=1, padding=0)
    conv2 = nn.Conv2d(20, 50, kernel_size=5, stride=1, padding=0)
    fc = nn.Linear(50 * out_h * out_w, 500)
    output = nn.Linear(500, num_classes)
    torch_default = {"appendix": (), "torch": (conv1, conv2, fc, output), "fc-torch": (fc,)}[init]
    constructed = [(layer, copy.deepcopy(layer.state_dict())) for layer in torch_default]
    for layer in (conv1, conv2, fc):
        _gaussian_(layer, LENET5_WEIGHT_STD)
    _gaussian_(output, OUTPUT_WEIGHT_STD)
    for layer, state in constructed:
        layer.load_state_dict(state)

    layers: list[nn.Module] = [conv1, nn.ReLU()]
    if batch_norm:
        layers.append(nn.BatchNorm2d(20))
    layers += [nn.MaxPool2d(2), conv2, nn.ReLU()]
    if batch_norm:
        layers.append(nn.BatchNorm2d(50))
    layers += [nn.MaxPool2d(2), nn.Flatten(), fc, nn.Tanh()]
    if batch_norm:
        layers.append(nn.BatchNorm1d(500))
    layers.append(output)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- CIFAR LeNet


def _cifar_lenet(
    batch_norm: bool, input_shape: tuple[int, int, int], num_classes: int
) -> nn.Module:
    """The paper's CIFAR-10 network (appendix, "CIFAR10").

    Layers::

        conv 5x5, 32 maps, pad 2 -> [BatchNorm2d(32)] -> maxpool 2 -> ReLU
        conv 5x5, 32 maps, pad 2 -> ReLU -> [BatchNorm2d(32)] -> maxpool 2
        conv 5x5, 64 maps, pad 2 -> ReLU -> [BatchNorm2d(64)] -> maxpool 2
        fully connected 64 -> ReLU -> [BatchNorm1d(64)]
        fully connected 10 (output)

    Reading of the appendix: the first conv bullet repeats the template "a ReLU activation
    function", but the list then has a separate "Activation Layer - ReLU" after the first
    pooling (the layout of Caffe's ``cifar10_quick``: conv1 -> pool1 -> relu1). We apply that
    ReLU once, where the separate bullet puts it. The other layers follow the same reading
    as ``lenet5`` (activation belongs to the conv/FC layer, then BN, then pooling). Without
    batch norm, conv1 -> pool -> ReLU equals conv1 -> ReLU -> pool.

    Initialisation (appendix): conv weights N(0, 0.01^2), FC-64 weights N(0, 0.1^2), output
    weights N(0, 0.1^2), all biases 0; batch norm scale 1, shift 0. Pooling is 2x2, stride 2.
    """
    channels, height, width = input_shape
    out_h, out_w = height // 8, width // 8
    _check_spatial("cifar_lenet", min(out_h, out_w), input_shape)

    conv1 = nn.Conv2d(channels, 32, kernel_size=5, stride=1, padding=2)
    conv2 = nn.Conv2d(32, 32, kernel_size=5, stride=1, padding=2)
    conv3 = nn.Conv2d(32, 64, kernel_size=5, stride=1, padding=2)
    fc = nn.Linear(64 * out_h * out_w, 64)
    output = nn.Linear(64, num_classes)
    for layer in (conv1, conv2, conv3):
        _gaussian_(layer, CIFAR_CONV_WEIGHT_STD)
    _gaussian_(fc, CIFAR_FC_WEIGHT_STD)
    _gaussian_(output, OUTPUT_WEIGHT_STD)

    def bn2d(n: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(n)] if batch_norm else []

    layers: list[nn.Module] = [conv1, *bn2d(32), nn.MaxPool2d(2), nn.ReLU()]
    layers += [conv2, nn.ReLU(), *bn2d(32), nn.MaxPool2d(2)]
    layers += [conv3, nn.ReLU(), *bn2d(64), nn.MaxPool2d(2)]
    layers += [nn.Flatten(), fc, nn.ReLU()]
    if batch_norm:
        layers.append(nn.BatchNorm1d(64))
    layers.append(output)
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- ResNet-20


class _ShortcutA(nn.Module):
    """He et al. (2016) option A: identity, with stride-2 subsampling and zero channels
    appended when the block changes the shape. Parameter-free."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.extra_channels > 0:
            # Pad the channel dimension: (w_left, w_right, h_top, h_bottom, c_front, c_back).
            front = self.extra_channels // 2
            x = nn.functional.pad(x, (0, 0, 0, 0, front, self.extra_channels - front))
        return x


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with ReLU, plus the option-A shortcut (He et al. 2016, fig. 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = _ShortcutA(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """ResNet-20 for CIFAR-10: He et al. (2016), section 4.2, with n = 3.

    A 3x3 conv with 16 filters, then three stages of n = 3 basic blocks with 16, 32 and 64
    filters on 32x32, 16x16 and 8x8 maps (stride-2 first conv at each stage change), global
    average pooling and a fully connected layer: 6n + 2 = 20 weighted layers, 0.27M
    parameters. Shortcuts are identities everywhere (option A): when the map size halves and
    the filters double, the input is subsampled and padded with zero channels, so the
    network has no projection parameters. Every conv is followed by batch norm (the network
    is defined with it; convs have no bias since BN's shift replaces it).

    Initialisation: He et al. (2015a), N(0, 2 / fan_in) for every conv and the FC weight
    (the forward-pass form of their eq. 10), biases 0, batch norm scale 1 and shift 0.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10, blocks_per_stage: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        stages: list[nn.Module] = []
        channels = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for block in range(blocks_per_stage):
                stages.append(_BasicBlock(channels, width, stride if block == 0 else 1))
                channels = width
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn(self.conv(x)))
        out = self.stages(out)
        out = out.mean(dim=(2, 3))
        return self.fc(out)


def _resnet20(batch_norm: bool, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    if not batch_norm:
        raise ValueError(
            "resnet20 is defined with batch normalization (He et al. 2016, section 4.2); "
            "batch_norm=False is not supported for it"
        )
    channels, height, width = input_shape
    _check_spatial("resnet20", min(math.ceil(height / 4), math.ceil(width / 4)), input_shape)
    return ResNet20(in_channels=channels, num_classes=num_classes)


# --------------------------------------------------------------------------- MLP


def _mlp(batch_norm: bool, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A small test network: flatten -> FC 64 -> ReLU -> [BatchNorm1d(64)] -> FC out.

    PyTorch's default initialisation; the activation-then-BN order matches ``lenet5``.
    """
    features = input_shape[0] * input_shape[1] * input_shape[2]
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(features, 64), nn.ReLU()]
    if batch_norm:
        layers.append(nn.BatchNorm1d(64))
    layers.append(nn.Linear(64, num_classes))
    return nn.Sequential(*layers)


_BUILDERS: dict[str, Callable[[bool, tuple[int, int, int], int], nn.Module]] = {
    "lenet5": _lenet5,
    "cifar_lenet": _cifar_lenet,
    "resnet20": _resnet20,
    "mlp": _mlp,
}
