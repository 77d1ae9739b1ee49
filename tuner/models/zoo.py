"""The built-in model families, shaped from the dataset (channels, image size, classes).

Each takes `(shape, num_classes, dropout)` and the keyword arguments `width` and `depth` (`model.width`,
`model.depth` in a spec; their defaults are the families as they always were) and returns a network of normalized
float images; `build_model` puts the normalization in front.
"""

from __future__ import annotations

import torch
from torch import nn


def _classifier(features: nn.Module, shape: tuple[int, int, int], hidden: tuple[int, ...], num_classes: int,
                dropout: float) -> nn.Sequential:
    """features, then fully connected hidden layers (each ReLU, then dropout) and the output layer."""
    with torch.no_grad():
        width = features(torch.zeros(1, *shape)).flatten(1).shape[1]
    layers: list[nn.Module] = [features, nn.Flatten()]
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def mlp(shape: tuple[int, int, int], num_classes: int, dropout: float, width: int = 512,
        depth: int = 2) -> nn.Sequential:
    """The tutorials' MLP: 784-512-512-10 on 28x28 images; `depth` hidden layers of `width` units."""
    return _classifier(nn.Identity(), shape, (width,) * depth, num_classes, dropout)


def cnn(shape: tuple[int, int, int], num_classes: int, dropout: float, width: int = 32,
        depth: int = 2) -> nn.Sequential:
    """PyTorch's MNIST example: conv 32, conv 64, max-pool, dropout, fc 128; `depth` 3x3 convolutions, the i-th
    of `width` * 2**i channels."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(shape[0] if i == 0 else width * 2 ** (i - 1), width * 2 ** i, 3), nn.ReLU()]
    features = nn.Sequential(*layers, nn.MaxPool2d(2))
    return _classifier(features, shape, (128,), num_classes, dropout)


def convnet(shape: tuple[int, int, int], num_classes: int, dropout: float, width: int = 10,
            depth: int = 2) -> nn.Sequential:
    """A small LeNet-style ConvNet: conv 10, avg-pool, conv 20, avg-pool, fc 250-100; `depth` blocks of a 5x5
    convolution and an average pool, the i-th of `width` * 2**i channels."""
    layers: list[nn.Module] = []
    for i in range(depth):
        c_in = shape[0] if i == 0 else width * 2 ** (i - 1)
        layers += [nn.Conv2d(c_in, width * 2 ** i, 5), nn.ReLU(), nn.AvgPool2d(2)]
    return _classifier(nn.Sequential(*layers), shape, (250, 100), num_classes, dropout)


def bncnn(shape: tuple[int, int, int], num_classes: int, dropout: float, width: int = 16,
          depth: int = 2) -> nn.Sequential:
    """A small batch-normalized CNN: conv 16, max-pool, conv 32, max-pool (3x3, padded), fc 128; `depth` blocks
    of a convolution, batch norm and a max-pool, the i-th of `width` * 2**i channels.

    About a third of the CNN's compute, and batch norm makes it learn in few epochs: the default on CPUs.
    """
    layers: list[nn.Module] = []
    for i in range(depth):
        c_in, c_out = (shape[0] if i == 0 else width * 2 ** (i - 1)), width * 2 ** i
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                   nn.MaxPool2d(2)]
    return _classifier(nn.Sequential(*layers), shape, (128,), num_classes, dropout)


class _Residual(nn.Module):
    """A basic residual block: two 3x3 convolutions with batch norm, the first strided, and a 1x1 strided
    projection as the shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                                  nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut: nn.Module = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(self.body(x) + self.shortcut(x))


def rescnn(shape: tuple[int, int, int], num_classes: int, dropout: float, width: int = 32,
           depth: int = 3) -> nn.Sequential:
    """The photo family: a strided 3x3 stem of `width` channels, then `depth` residual blocks, the i-th of
    `width` * 2**i channels (each after the first halving the resolution), global average pooling, dropout and
    the output layer. Its parameters do not depend on the image size and its cost grows linearly with the pixels,
    so one architecture serves 32-px and 224-px photos (the benchmark families flatten the last feature map)."""
    layers: list[nn.Module] = [nn.Conv2d(shape[0], width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    for i in range(depth):
        layers.append(_Residual(width * 2 ** max(0, i - 1), width * 2 ** i, 1 if i == 0 else 2))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                         nn.Linear(width * 2 ** (depth - 1), num_classes))


FAMILIES = {"mlp": mlp, "cnn": cnn, "convnet": convnet, "bncnn": bncnn, "rescnn": rescnn}
