"""An ensemble: several trained networks as one model that averages their class probabilities.

Its output is the log of the members' mean probabilities, so that a softmax of it (what `tune predict` does with
any model's logits) gives that mean exactly, and an ONNX export is one graph like any other model's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """Networks that each map the same uint8 images to logits; `forward` gives log(mean of their softmaxes)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        log_probabilities = torch.stack([member(images).float().log_softmax(1) for member in self.members])
        return torch.logsumexp(log_probabilities, 0) - math.log(len(self.members))
