"""The first `tune start` works anywhere: when the default study's dataset (Fashion-MNIST) is neither in the
default data directory nor downloadable, it searches the sample bundled with tune instead, in a study named for the
sample, and says so. Anything the user chose (a study, a spec, a dataset, a data directory given now or recorded by
the study) keeps the one-line error, which names the sample as a way out."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from tuner.datasets import default_data_dir
from tuner.errors import DataUnavailable
from tuner.spec.refs import BENCHMARKS, sample_for

P = ParamSpec("P")
R = TypeVar("R")

# What makes a `tune start` the default study's rather than one the user chose.
CHOSEN = ("study_name", "spec_file", "dataset", "data_dir")


def fallback_line(error: DataUnavailable, sample: str) -> str:
    full, bundled = BENCHMARKS[error.dataset], BENCHMARKS[sample]
    return (f"{full.title} could not be downloaded ({error.reason}); searching the {bundled.images:,}-image sample "
            f"bundled with tune instead. Pass --data-dir DIR or connect to search the full {full.images:,}.")


def falls_back_to_sample(prepare: Callable[P, R]) -> Callable[P, R]:
    """`prepare` (keyword arguments only) that, for the default study, reruns on the bundled sample of a dataset
    that could not be had: nothing was created by the failed attempt (the data is loaded before any study)."""

    @functools.wraps(prepare)
    def prepare_or_sample(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return prepare(*args, **kwargs)
        except DataUnavailable as e:
            sample = sample_for(e.dataset)
            chosen = args or any(kwargs.get(name) is not None for name in CHOSEN)
            if sample is None:
                raise
            if chosen or Path(e.root) != default_data_dir().expanduser():
                raise DataUnavailable(f"{e}; or search the sample bundled with tune: --dataset {sample}",
                                      e.dataset, e.root, e.reason) from None
            print(fallback_line(e, sample), file=sys.stderr)
            kwargs["dataset"] = sample
            return prepare(*args, **kwargs)

    return prepare_or_sample
