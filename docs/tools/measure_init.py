"""Measure what the FC-500 layer's initialisation does to LeNet-5's tanh at the start.

The tool's LeNet-5 is ``... -> fc(800 -> 500) -> tanh -> BatchNorm1d -> fc(500 -> 10)``
(``lsr1bench/registry/models.py``), so the scale of the FC-500 weights decides how
saturated the tanh is before batch normalisation sees it. For each initialisation
reading (``appendix``: N(0, 0.1) for that layer too; ``fc-torch``: PyTorch's default for
that layer only; ``torch``: PyTorch's default everywhere) and seeds 0-2, this builds the
network as a run does (``torch.manual_seed(seed)`` then ``build_model``), feeds it the
first IMAGES training images of full MNIST as one batch in training mode (batch norm on
batch statistics, as in the first step), and records the FC-500 pre-activations z:

* ``fc_weight_std``: the standard deviation of the layer's weights;
* ``z_std``: the standard deviation of z over images and units;
* ``saturated_share``: the share of z with |z| > 2 (tanh' < 0.071 there);
* ``mean_tanh_derivative``: the mean of tanh'(z) = 1 - tanh(z)^2, the factor by which the
  tanh scales the gradient flowing back into the layer (1 when unsaturated).

Usage, from the repository's root (full MNIST under DATA_ROOT, e.g. ../shared/data)::

    python docs/tools/measure_init.py ../shared/data docs/reproduction/init_saturation.csv
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import torch
from torch import nn

from lsr1bench.records import atomic_write_text
from lsr1bench.registry.datasets import load_dataset
from lsr1bench.registry.models import build_model

INITS = ("appendix", "fc-torch", "torch")
SEEDS = (0, 1, 2)
IMAGES = 1000
SATURATED = 2.0
COLUMNS = ["init", "seed", "images", "fc_weight_std", "z_std", "saturated_share", "mean_tanh_derivative"]


def measure(train_x: torch.Tensor, init: str, seed: int) -> dict[str, object]:
    torch.manual_seed(seed)
    model = build_model("lenet5", batch_norm=True, input_shape=tuple(train_x.shape[1:]), num_classes=10, init=init)
    model.train()
    tanh = next(m for m in model if isinstance(m, nn.Tanh))
    fc = model[list(model).index(tanh) - 1]
    captured: list[torch.Tensor] = []
    handle = tanh.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    with torch.no_grad():
        model(train_x)
    handle.remove()
    z = captured[0].double()
    return {
        "init": init,
        "seed": seed,
        "images": int(train_x.shape[0]),
        "fc_weight_std": f"{fc.weight.double().std().item():.4f}",
        "z_std": f"{z.std().item():.3f}",
        "saturated_share": f"{(z.abs() > SATURATED).double().mean().item():.4f}",
        "mean_tanh_derivative": f"{(1 - torch.tanh(z) ** 2).mean().item():.4f}",
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python docs/tools/measure_init.py DATA_ROOT OUT.csv", file=sys.stderr)
        return 2
    data = load_dataset("mnist", root=args[0], train_subset=IMAGES, test_subset=1, download=False)
    rows = [measure(data.train_x, init, seed) for init in INITS for seed in SEEDS]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(args[1]), out.getvalue())
    print(out.getvalue(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
