"""Validation metrics for imbalanced folders: balanced accuracy and macro F1 count every class the same."""

from __future__ import annotations

import pytest
import torch

from tuner.datasets import Images
from tuner.spec import METRICS, StudySpec
from tuner.train import Epoch, class_scores, evaluate


def test_a_model_that_always_says_the_big_class_scores_high_accuracy_but_chance_balanced_accuracy():
    # 90 images of class 0, 10 of class 1; the model answers 0 for all of them
    x = torch.zeros(100, 1, 4, 4, dtype=torch.uint8)
    y = torch.tensor([0] * 90 + [1] * 10)

    class Always(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.tensor([[1.0, 0.0]]).repeat(len(images), 1)

    accuracy, _, scores = evaluate(Always(), Images(x, y), 2)
    assert accuracy == pytest.approx(0.9)
    assert scores["balanced_accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((2 * 90 / (90 + 100) + 0) / 2)


def test_class_scores_of_a_confusion_matrix():
    confusion = torch.tensor([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # the third class has no images: left out
    scores = class_scores(confusion)
    assert scores["balanced_accuracy"] == pytest.approx((0.8 + 0.75) / 2)
    assert scores["macro_f1"] == pytest.approx((16 / 19 + 6 / 9) / 2)


@pytest.mark.parametrize("metric", ["balanced_accuracy", "macro_f1"])
def test_a_study_can_select_on_a_class_balanced_metric(metric):
    spec = StudySpec.from_dict({"metric": metric})
    assert spec.direction == METRICS[metric] == "maximize"
    epoch = Epoch(1, 0.5, 0.9, 0.3, 1.0, {"balanced_accuracy": 0.5, "macro_f1": 0.47})
    assert epoch.metric(metric) in (0.5, 0.47) and epoch.metric("accuracy") == 0.9 and epoch.metric("loss") == 0.3


def test_class_weights_make_each_class_count_the_same():
    from tuner.spec import RunConfig
    from tuner.train import balancing_weights

    weights = balancing_weights(torch.tensor([0] * 90 + [1] * 10), 2, torch.device("cpu"))
    assert weights.tolist() == pytest.approx([100 / 180, 100 / 20])
    assert weights[0] * 90 == pytest.approx(weights[1] * 10)
    assert RunConfig(class_weights=True).class_weights and not RunConfig().class_weights
