"""A run folder from `tune train` is one set of files with the same permissions: the weights are as readable as
the config, the metrics and the model card."""

from __future__ import annotations

import os
import stat

from tests.ship.test_export_train import write_config
from tests.ship.test_predict import invoke, ok


def test_every_file_of_a_run_folder_has_the_permissions_of_a_new_file(data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    umask = os.umask(0o022)
    try:
        write_config(tmp_path / "hand.yaml", epochs=1)
        ok(invoke("train", "hand.yaml", "--data-dir", data_dir, "--device", "cpu"))
    finally:
        os.umask(umask)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "runs" / "hand").iterdir()}
    assert set(modes) == {"model.safetensors", "config.yaml", "metrics.json", "README.md"}
    assert set(modes.values()) == {0o644}, {name: oct(mode) for name, mode in modes.items()}
