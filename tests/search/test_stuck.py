"""Trials that stop learning are stopped after a couple of epochs, with their reason, even in a young study whose
median pruner prunes nothing yet."""

from __future__ import annotations

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tuner.search.stuck import Chance, stuck
from tuner.train import Epoch


def curve(*accuracies: float) -> list[Epoch]:
    return [Epoch(i + 1, 1.0, a, 1.0, 0.1) for i, a in enumerate(accuracies)]


def test_chance_is_the_majority_share_plus_a_standard_error():
    balanced = torch.arange(10).repeat(26)  # 260 images of 10 classes
    assert Chance.of(balanced, 10).accuracy == pytest.approx(0.1 + (0.1 * 0.9 / 260) ** 0.5)
    assert Chance.of(balanced, 10).noise(0.5) == pytest.approx((0.25 / 260) ** 0.5)
    skewed = torch.tensor([0] * 90 + [1] * 10)
    assert Chance.of(skewed, 2).accuracy == pytest.approx(0.9 + (0.9 * 0.1 / 100) ** 0.5)
    assert Chance.of(torch.tensor([0, 1] * 5), 2).accuracy == 0  # 10 images tell chance from learning apart badly


def test_on_too_few_validation_images_no_rule_stops_a_trial():
    tiny = Chance.of(torch.tensor([0, 1] * 5), 2)
    assert stuck(curve(0.0, 0.0, 0.0), tiny, 8) is None
    assert stuck(curve(1.0, 0.5, 0.5), tiny, 8) is None


def test_a_perfect_first_epoch_still_allows_for_noise():
    chance = Chance.of(torch.arange(2).repeat(50), 2)  # 100 images
    assert stuck(curve(1.0, 0.99, 0.99), chance, 8) is None
    assert stuck(curve(1.0, 0.6, 0.6), chance, 8) is not None


def test_a_trial_at_chance_stops_from_its_second_epoch_but_a_finished_one_keeps_its_value():
    chance = Chance(0.137)
    assert stuck(curve(0.116), chance, 8) is None  # one epoch says little
    assert stuck(curve(0.116, 0.116), chance, 8) == (
        "stuck at chance: validation accuracy 0.116 after epoch 2, no better than guessing (0.137) in any epoch")
    assert stuck(curve(0.116, 0.116), chance, 2) is None  # the last epoch: the trial completes
    assert stuck(curve(0.116, 0.45), chance, 8) is None
    assert stuck(curve(0.116, 0.116, 0.116, 0.116), chance, 8) is not None


def test_one_noisy_epoch_of_a_learning_trial_does_not_stop_it():
    """Real curves of a good photo config (cats vs dogs, 264 validation images): its second epoch fell to chance
    and below its first, and it ended at 0.78-0.80 validation accuracy."""
    chance = Chance.of(torch.tensor([0, 1] * 132), 2)
    assert stuck(curve(0.557, 0.508), chance, 24) is None
    assert stuck(curve(0.625, 0.496, 0.568), chance, 24) is None
    assert stuck(curve(0.52, 0.50), chance, 24) is not None  # never above chance: stuck
    assert stuck(curve(0.80, 0.60, 0.62), chance, 24) is not None  # far below its first epoch: not learning


def test_a_trial_below_its_first_epoch_at_the_third_stops():
    chance = Chance(0.137)
    assert stuck(curve(0.60, 0.50, 0.55), chance, 8) == (
        "not learning: validation accuracy 0.550 after epoch 3, below its first epoch's 0.600")
    assert stuck(curve(0.60, 0.50, 0.60), chance, 8) is None  # back to where it was: still learning
    assert stuck(curve(0.60, 0.50, 0.55, 0.52), chance, 8) is None  # judged once, at the third epoch


def test_a_first_trial_stuck_at_chance_is_pruned_with_its_reason(cli, tmp_path, data_dir, storage_url):
    spec = tmp_path / "stuck.yaml"  # a learning rate too small to move the weights: the trial stays at its init
    spec.write_text("name: stuck\nmodel: mlp\nepochs: 6\nsampler: random\n"
                    "search: {optimizer: adam, lr: 1.0e-9, batch_size: 64, gamma: 0.9}\n")
    result = cli("start", "--trials", 1, "--spec", spec, "--data-dir", data_dir, "--storage", storage_url,
                 "--device", "cpu", "--seed", 1)
    assert result.exit_code == 0, result.output
    [trial] = optuna.load_study(study_name="stuck", storage=storage_url).get_trials()
    assert trial.state == TrialState.PRUNED and sorted(trial.intermediate_values) == [1, 2]
    assert trial.user_attrs["reason"].startswith("stuck at chance: validation accuracy")
