"""A small conv net (two conv blocks, one hidden linear) for quick runs and tests.

Every hidden layer has BatchNorm, as in the papers' ResNets: without it on the hidden linear layer
the dense net diverged at the recipes' learning rate 0.1 (CIFAR-10, loss 8 in epoch 1, then chance),
leaving IMP nothing to prune."""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class ConvNet(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], width: int = 32) -> None:
        super().__init__()
        c, h, w = input_shape
        self.conv1 = nn.Conv2d(c, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc1 = nn.Linear(2 * width * (h // 4) * (w // 4), 128, bias=False)
        self.bn3 = nn.BatchNorm1d(128)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        out = F.max_pool2d(F.relu(self.bn2(self.conv2(out))), 2)
        return self.fc(F.relu(self.bn3(self.fc1(out.flatten(1)))))
