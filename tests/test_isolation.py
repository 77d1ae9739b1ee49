"""The tests never touch the user's own files: every place tune (and the libraries it drives) writes to resolves
inside pytest's temporary folder, for a test and for a fixture shared by a whole module alike."""

from __future__ import annotations

from pathlib import Path

import pytest


def where_tune_writes() -> dict[str, Path]:
    import torch

    from tuner.datasets import default_data_dir
    from tuner.datasets.cache import cache_dir
    from tuner.storage import default_storage_url, sqlite_path

    return {"home": Path.home(), "storage": sqlite_path(default_storage_url()), "datasets": default_data_dir(),
            "decode cache": cache_dir(), "torch hub": Path(torch.hub.get_dir())}


@pytest.fixture(scope="module")
def seen_by_a_module_fixture() -> dict[str, Path]:
    return where_tune_writes()


def test_tests_write_into_temporary_folders_only(seen_by_a_module_fixture, tmp_path_factory):
    temporary = tmp_path_factory.getbasetemp()
    for paths in (seen_by_a_module_fixture, where_tune_writes()):
        outside = {what: str(path) for what, path in paths.items() if not path.is_relative_to(temporary)}
        assert outside == {}
