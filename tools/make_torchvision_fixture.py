r"""Writes the torchvision parity fixture for tests/models/test_convert.py.

Needs torch and torchvision (NOT project requirements; use a separate environment), e.g.

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch torchvision numpy
    /tmp/torchenv/bin/python tools/make_torchvision_fixture.py \
        --output tests/fixtures/torchvision_resnet_parity.npz

Two narrow torchvision ResNets with random weights (default torchvision init for convolutions,
random BatchNorm affine parameters and running statistics), so the file stays small (< 2 MB):
  - ResNet-18 topology (BasicBlock, [2, 2, 2, 2]) with every width divided by 8, stored as the
    bytes of a genuine `torch.save(state_dict)` file ('r18_pth'), which also exercises the
    numpy-only .pth reader;
  - ResNet-50 topology (Bottleneck, [3, 4, 6, 3]) with every width divided by 16, stored as arrays
    'r50_state:<torchvision key>'.
Both are torchvision's own `ResNet` class; only the channel counts are changed (subclass below).
For one random input 'input' (2, 64, 64, 3) NHWC the expected features at the five sites (conv1
after ReLU, layer1..layer4) are computed in float64, in eval mode ('<net>:eval:<site>') and in
train mode with batch statistics ('<net>:train:<site>'), stored NHWC as float32.
"""

from __future__ import annotations

import argparse
import io

import numpy as np

from hpe_jax.runtime import cli


def _parser() -> argparse.ArgumentParser:
    parser = cli.argument_parser("make_torchvision_fixture", __doc__)
    parser.add_argument("--output", default="tests/fixtures/torchvision_resnet_parity.npz")
    parser.add_argument("--seed", type=int, default=0)
    return parser


try:
    import torch
    from torch import nn
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
except ImportError as missing:
    if __name__ != "__main__":
        raise
    _parser().parse_args()  # --help and usage errors work without torch
    cli.fail("make_torchvision_fixture", f"needs torch and torchvision ({missing}); install "
             "them in a separate environment as this tool's docstring shows", 1)


class NarrowResNet(ResNet):
    """torchvision's ResNet with every channel count divided by `divisor`."""

    def __init__(self, block: type, layers: list[int], divisor: int) -> None:
        self.divisor = divisor
        super().__init__(block, layers, num_classes=10)
        stem = 64 // divisor
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.fc = nn.Linear(512 // divisor * block.expansion, 10)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # noqa: ANN001
        if planes == 64:  # the first stage starts from the (narrow) stem
            self.inplanes = 64 // self.divisor
        return super()._make_layer(block, planes // self.divisor, blocks, stride, dilate)


def _randomise_batchnorm(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def _sites(model: ResNet, x: torch.Tensor) -> list[torch.Tensor]:
    x = model.relu(model.bn1(model.conv1(x)))
    out = [x]
    x = model.maxpool(x)
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = layer(x)
        out.append(x)
    return out


def _expected(model: ResNet, x_nhwc: np.ndarray, prefix: str) -> dict[str, np.ndarray]:
    model = model.double()
    x = torch.from_numpy(x_nhwc.astype(np.float64)).permute(0, 3, 1, 2)
    out = {}
    with torch.no_grad():
        for mode in ("eval", "train"):
            model.train(mode == "train")
            for i, f in enumerate(_sites(model, x)):
                out[f"{prefix}:{mode}:{i}"] = f.permute(0, 2, 3, 1).numpy().astype(np.float32)
    return out


def main() -> None:
    args = _parser().parse_args()

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x = np.random.default_rng(args.seed).normal(size=(2, 64, 64, 3)).astype(np.float32)
    arrays: dict[str, np.ndarray] = {"input": x}

    r18 = NarrowResNet(BasicBlock, [2, 2, 2, 2], divisor=8)
    _randomise_batchnorm(r18, gen)
    buffer = io.BytesIO()
    torch.save(r18.state_dict(), buffer)  # float32, before the train-mode pass below
    arrays["r18_pth"] = np.frombuffer(buffer.getvalue(), np.uint8)

    r50 = NarrowResNet(Bottleneck, [3, 4, 6, 3], divisor=16)
    _randomise_batchnorm(r50, gen)
    for k, v in r50.state_dict().items():
        arrays[f"r50_state:{k}"] = v.numpy().copy()

    arrays.update(_expected(r18, x, "r18"))
    arrays.update(_expected(r50, x, "r50"))
    np.savez_compressed(args.output, **arrays)
    print(f"wrote {args.output}: {len(arrays)} arrays, torch {torch.__version__}")


if __name__ == "__main__":
    main()
