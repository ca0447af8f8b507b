"""LeNet-300-100: a fully connected net for quick runs and tests."""
from __future__ import annotations

import math

from torch import Tensor, nn


class MLP(nn.Module):
    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], hidden: tuple[int, ...] = (300, 100)) -> None:
        super().__init__()
        sizes = [math.prod(input_shape), *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.fc = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = x.flatten(1)
        for layer in self.hidden:
            out = layer(out).relu()
        return self.fc(out)
