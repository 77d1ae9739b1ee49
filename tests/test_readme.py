"""What the README tells a new user to type: an install of what running needs (the test extras with the test
command), PyTorch's CPU build for machines without a GPU, and the line that turns on tab completion, which works."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import optuna
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TEST_TOOLS = ("pytest", "ruff", "mypy", "playwright", "onnx", "timm")


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_the_first_command_installs_what_running_needs_and_the_test_command_the_test_extras():
    first_block = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert first_block[0].startswith("pip install -e . && tune start")
    assert first_block[1].startswith('pip install -e ".[test]" && python -m pytest')
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not requirement_names(project["dependencies"]) & set(TEST_TOOLS)
    test_extra = requirement_names(project["optional-dependencies"]["test"])
    assert {"pytest", "ruff", "mypy", "playwright"} <= test_extra and "tune" in test_extra  # tune[onnx,timm]
    assert any("tune[onnx,timm]" in r.replace(" ", "") for r in project["optional-dependencies"]["test"])
    cpu = "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu && pip install -e ."
    # where people copy the first command: before it, since after it pip has pulled the CUDA build already
    assert cpu in README.split("```bash\n", 1)[0]


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("tune") is None,
                    reason="needs bash and the installed `tune` script")
def test_the_readmes_completion_line_completes_study_names(storage_url):
    (line,) = [text for text in README.splitlines() if "_TUNE_COMPLETE=bash_source" in text and "eval" in text]
    registered = subprocess.run(["bash", "-c", f"{line} && complete -p tune"], capture_output=True, text=True,
                                timeout=60, check=False)
    assert registered.stdout.strip() == "complete -o nosort -F _tune_completion tune", registered.stderr
    for name in ("fmnist", "photos"):
        optuna.create_study(study_name=name, storage=storage_url)
    env = {**os.environ, "COMP_WORDS": "tune show f", "COMP_CWORD": "2", "_TUNE_COMPLETE": "bash_complete",
           "TUNE_STORAGE": storage_url}
    completed = subprocess.run(["tune"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (completed.stdout, completed.stderr) == ("plain,fmnist\n", "")
