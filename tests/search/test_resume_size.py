"""Resuming a study of a folder at another image size: the error names the concrete way on, a new study named for
the size (the study's name comes from the folder), and never suggests the --image-size that caused it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tuner.errors import TuneError
from tuner.search.session import check_same_input

COLORS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def colour_folder(root: Path, size: tuple[int, int] = (24, 24)) -> Path:
    for name, colour in COLORS.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", size, tuple(min(255, c + 3 * i) for c in colour)).save(root / name / f"{i}.png")
    return root


@pytest.mark.usefixtures("one_thread")
def test_another_image_size_on_resume_suggests_a_study_named_for_the_size(cli, tmp_path, storage_url):
    root = colour_folder(tmp_path / "colors")
    common = ("--storage", storage_url, "--device", "cpu", "--keep-top", 0)
    first = cli("start", "--dataset", root, "--trials", 1, "--epochs", 1, "--model", "mlp", *common)
    assert first.exit_code == 0, first.output
    again = cli("start", "--dataset", root, "--image-size", 16, "--trials", 1, *common)
    assert again.exit_code == 2
    (line,) = again.output.strip().splitlines()
    assert line == ("Error: --image-size 16: study 'colors' was created with image_size 24: its trials would not be "
                    "comparable; resume without --image-size, or use a new --study colors-16")


class Now:
    """The splits' input as loaded now."""

    def __init__(self, shape: list[int]) -> None:
        self.shape = shape

    def input_info(self) -> dict[str, Any]:
        return {"shape": self.shape, "classes": ["a", "b"], "preprocess": None}


def test_a_study_recorded_before_sizes_were_pinned_gets_a_concrete_way_on():
    recorded = {"shape": [3, 32, 32], "classes": ["a", "b"], "preprocess": None}
    with pytest.raises(TuneError) as given:  # --image-size 64 caused it: never suggest --image-size
        check_same_input("photos", recorded, Now([3, 64, 64]), image_size=64)
    assert str(given.value).endswith("; resume without --image-size 64 (the study's images are 32 px), or start a "
                                     "new study for this size: --study photos-64")
    with pytest.raises(TuneError) as moved:  # the folder's default size moved
        check_same_input("photos", recorded, Now([3, 48, 48]))
    assert str(moved.value).endswith("; resume with --image-size 32 (the study's images), or start a new study for "
                                     "this size: --study photos-48")
    with pytest.raises(TuneError) as grey:  # not a size: no size to suggest
        check_same_input("photos", recorded, Now([1, 32, 32]))
    assert str(grey.value).endswith("; use a new --study NAME")
