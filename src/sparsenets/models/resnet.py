"""CIFAR ResNets: ResNet-18 (3x3 stride-1 stem, no max-pool) and ResNet-20 (16/32/64 channels).

Both use 1x1-conv projection shortcuts where the shape changes and identity shortcuts elsewhere.
The global average pool makes them take any image size: `resnet18-tin` is ResNet-18 on 64x64
Tiny-ImageNet (an 8x8 map before the pool) with PHEW's Tiny-ImageNet init, Kaiming-normal fan_out
for every conv and the linear layer.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    kaiming_mode = "fan_in"  # init_weights' Kaiming mode; resnet18-tin sets fan_out

    def __init__(self, widths: list[int], blocks: list[int], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, c_in = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(c_in, width, 2 if (i > 0 and j == 0) else 1))
                c_in = width
            stages.append(nn.Sequential(*layers))
        self.layers = nn.ModuleList(stages)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for stage in self.layers:
            out = stage(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet([64, 128, 256, 512], [2, 2, 2, 2], num_classes, in_channels)


def resnet20(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet([16, 32, 64], [3, 3, 3], num_classes, in_channels)


def resnet18_tin(num_classes: int = 200, in_channels: int = 3) -> ResNet:
    model = resnet18(num_classes, in_channels)
    model.kaiming_mode = "fan_out"
    return model
