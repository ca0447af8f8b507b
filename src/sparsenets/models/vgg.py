"""VGG-19 for CIFAR: 16 3x3 convs, max-pools, one final linear (512 -> classes).

`vgg19` has BatchNorm and bias-free convs; `vgg19-nobn` has convs with biases and no BN, as PHEW's
code trains it by default. Both draw the linear layer's weights from N(0, 0.01), as PHEW's code does
(`linear_init_std`, honoured by `init_weights`); the convs are Kaiming-normal (fan_in).
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

CFG_19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


class VGG(nn.Module):
    linear_init_std = 0.01  # PHEW's VGG: classifier weights ~ N(0, 0.01), not Kaiming

    def __init__(self, num_classes: int, in_channels: int, batch_norm: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for v in CFG_19:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            layers.append(nn.Conv2d(c_in, v, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c_in = v
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.features(x)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def vgg19(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(num_classes, in_channels, batch_norm=True)


def vgg19_nobn(num_classes: int = 10, in_channels: int = 3) -> VGG:
    return VGG(num_classes, in_channels, batch_norm=False)
