"""VGG-19 for CIFAR: 16 3x3 convs, max-pools, one final linear (512 -> classes); and PHEW's
Tiny-ImageNet VGG-19, with a fifth max-pool and an MLP head.

`vgg19` has BatchNorm and bias-free convs; `vgg19-nobn` has convs with biases and no BN, as PHEW's
code trains it by default. Both draw the linear layer's weights from N(0, 0.01), as PHEW's code does
(`linear_init_std`, honoured by `init_weights`); the convs are Kaiming-normal (fan_in).

`vgg19-tin` / `vgg19-nobn-tin` (Tiny-ImageNet): the same 16 convs, then a max-pool after the last
block too (64x64 -> 2x2 map), flattened into 512*2*2 -> 1024 -> 1024 -> classes with ReLU and dropout
(p = 0.5) between; convs Kaiming-normal fan_out, linears N(0, 0.01), as PHEW's Tiny-ImageNet code.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

CFG_19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


def _features(cfg: list, in_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers.append(nn.Conv2d(c_in, v, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        c_in = v
    return nn.Sequential(*layers)


class VGG(nn.Module):
    linear_init_std = 0.01  # PHEW's VGG: classifier weights ~ N(0, 0.01), not Kaiming

    def __init__(self, num_classes: int, in_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.features = _features(CFG_19, in_channels, batch_norm)
        self.fc = nn.Linear(CFG_19[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(x)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class VGGMLP(nn.Module):
    """PHEW's Tiny-ImageNet VGG: the classifier reads all 2x2 positions of the last feature map.

    The fifth pool is a 2x2 adaptive max-pool: on 64x64 images (a 4x4 map) it is exactly PHEW's
    MaxPool2d(2), and it lets the net take other sizes (tests run it on small images)."""

    linear_init_std = 0.01
    kaiming_mode = "fan_out"

    def __init__(self, num_classes: int, in_channels: int, batch_norm: bool, hidden: int = 1024) -> None:
        super().__init__()
        self.features = _features(CFG_19, in_channels, batch_norm)
        self.pool = nn.AdaptiveMaxPool2d(2)
        self.classifier = nn.Sequential(
            nn.Linear(CFG_19[-1] * 2 * 2, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def vgg19(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(num_classes, in_channels, batch_norm=True)


def vgg19_nobn(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(num_classes, in_channels, batch_norm=False)


def vgg19_tin(num_classes: int = 200, in_channels: int = 3) -> VGGMLP:
    return VGGMLP(num_classes, in_channels, batch_norm=True)


def vgg19_nobn_tin(num_classes: int = 200, in_channels: int = 3) -> VGGMLP:
    return VGGMLP(num_classes, in_channels, batch_norm=False)
