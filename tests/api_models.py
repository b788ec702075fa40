"""Importable model factories for the Python API tests (gRPC site processes import them)."""

from __future__ import annotations

import torch
from torch import nn


class TinyCnn(nn.Module):
    """Conv(1->2) - pool - Linear on (1, 4, 4) inputs, 3 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(2 * 2 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.pool(torch.relu(self.conv(x))).flatten(1))
        return out


def tiny_cnn() -> nn.Module:
    return TinyCnn()


def batchnorm_net() -> nn.Module:
    """Not DP-SGD compatible as it is (BatchNorm mixes the records of a batch)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
