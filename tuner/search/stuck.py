"""Trials that have stopped learning: no better than a constant guess, or worse than their own first epoch, after a
couple of epochs. Optuna's median pruner cannot see them in a young study (it compares a trial with the others and
prunes nothing during its first 5 trials), and on the bundled sample such trials took a fifth of a short search's
time; these rules look at the trial alone, so they stop it whatever else the study holds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tuner.train import Epoch

CHANCE_FROM_EPOCH = 2  # a trial is held to "better than chance" from this epoch on
FIRST_EPOCH_CHECK = 3  # ... and to "better than its first epoch" at this epoch
MIN_IMAGES = 20  # on fewer validation images than this, chance and learning cannot be told apart: no chance rule


@dataclass(frozen=True)
class Chance:
    """What guessing gets on the validation images: `accuracy` is the majority class's share (what a model that
    predicts one class gets at most) plus one standard error of an accuracy measured on that many images. On fewer
    than MIN_IMAGES images it is 0 and `images` 0: neither rule stops a trial."""

    accuracy: float
    images: int = 0

    def noise(self, accuracy: float) -> float:
        """One standard error of an accuracy measured on the validation images (one image's worth at 0 and 1)."""
        if not self.images:
            return 0.0
        share = min(max(accuracy, 1 / self.images), 1 - 1 / self.images)
        return math.sqrt(share * (1 - share) / self.images)

    @classmethod
    def of(cls, labels: torch.Tensor, num_classes: int) -> Chance:
        counts = torch.bincount(labels.cpu(), minlength=max(1, num_classes))
        total = max(1, int(counts.sum()))
        if total < MIN_IMAGES:
            return cls(0.0)
        share = int(counts.max()) / total
        return cls(share + math.sqrt(share * (1 - share) / total), total)


def stuck(history: Sequence[Epoch], chance: Chance, epochs: int) -> str | None:
    """Why the trial whose epochs so far are `history` (of `epochs` in all) should stop now, or None. Never after
    the last epoch: a finished trial keeps its value. Both rules ask for more than one noisy epoch: on photos a
    learning trial's second epoch often falls to chance or below its first (batch-norm statistics of a young
    network, a one-cycle learning rate near its peak) and climbs after (docs/benchmarks.md, "Photos")."""
    done = len(history)
    if done >= epochs or done < CHANCE_FROM_EPOCH or chance.accuracy <= 0:  # too few images to tell
        return None
    accuracy = history[-1].val_accuracy
    if all(e.val_accuracy <= chance.accuracy for e in history):
        return (f"stuck at chance: validation accuracy {accuracy:.3f} after epoch {done}, no better than guessing "
                f"({chance.accuracy:.3f}) in any epoch")
    first = history[0].val_accuracy
    if done == FIRST_EPOCH_CHECK and max(e.val_accuracy for e in history[1:]) < first - 2 * chance.noise(first):
        return (f"not learning: validation accuracy {accuracy:.3f} after epoch {done}, below its first epoch's "
                f"{first:.3f}")
    return None
