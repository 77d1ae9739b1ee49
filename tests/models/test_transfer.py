"""Fine-tuning a pretrained backbone: the new head trains at the learning rate, the backbone at a searched share."""

from __future__ import annotations

import pytest
import torch

from tuner.models import build_model
from tuner.models.hubs import head_parameters, parameter_groups
from tuner.spec import RunConfig
from tuner.train import make_optimizer


@pytest.mark.parametrize("ref", ["torchvision:resnet18", "torchvision:mobilenet_v3_small", "timm:resnet10t"])
def test_the_head_is_the_layer_that_makes_the_classes(ref):
    model = build_model(RunConfig(model=ref), (3, 32, 32), 7, (0.5,) * 3, (0.25,) * 3)
    head = head_parameters(model)
    assert [tuple(p.shape) for p in head][-1] == (7,)  # the output layer's bias: one per class
    assert any(p.shape[0] == 7 and p.dim() == 2 for p in head)


def test_the_backbone_trains_at_its_share_of_the_learning_rate():
    model = build_model(RunConfig(model="torchvision:resnet18"), (3, 32, 32), 4, (0.5,) * 3, (0.25,) * 3)
    config = RunConfig(model="torchvision:resnet18", lr=0.01, optimizer="sgd")
    optimizer = make_optimizer(config, parameter_groups(model, 0.01, 0.1), torch.device("cpu"))
    backbone, head = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.001) and head["lr"] == pytest.approx(0.01)
    assert len(head["params"]) == 2 and len(backbone["params"]) + 2 == len(list(model.parameters()))
    assert len(parameter_groups(model, 0.01, 1.0)) == 1  # a share of 1: one group, as before


def test_backbone_lr_applies_only_to_pretrained_models():
    from tuner.spec.params import applies

    assert applies("backbone_lr", {"model": "torchvision:resnet18", "pretrained": True})
    assert not applies("backbone_lr", {"model": "torchvision:resnet18", "pretrained": False})
    assert not applies("backbone_lr", {"model": "rescnn"})
