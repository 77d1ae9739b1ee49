"""Shared fixtures: synthetic IDX data, the real mini Fashion-MNIST where present, storages, the CLI."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tuner.cli import main
from tuner.testing import write_idx_dataset

MINI_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fashion-mnist-mini"
POSTGRES_ADMIN_URL = os.environ.get("TUNE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

TINY_SPEC = """\
name: tiny
dataset: fashion-mnist
model: mlp
epochs: 2
validation: 0.2
sampler: random
pruner: median
search:
  optimizer: [adam, sgd]
  lr: {low: 1.0e-4, high: 1.0e-2, log: true}
  batch_size: [32, 64]
  scheduler: exponential
  gamma: {low: 0.8, high: 0.99}
  momentum: 0.9
"""


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real storage or data cache."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for name in ("TUNE_STORAGE", "TUNE_DATA_DIR", "TUNE_ARTIFACTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A small learnable synthetic Fashion-MNIST (600 train / 200 test) in torchvision's raw layout."""
    return write_idx_dataset(tmp_path_factory.mktemp("idx"), n_train=600, n_test=200)


@pytest.fixture
def mini_data_dir() -> Path:
    """The real 1,722 / 500 image Fashion-MNIST subset beside the repository, or skip."""
    if not (MINI_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"real mini Fashion-MNIST not found at {MINI_DATA}")
    return MINI_DATA


@pytest.fixture
def storage_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def tiny_spec(tmp_path) -> Path:
    """A fast spec: the MLP, 2 epochs, a small search space."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


@pytest.fixture
def postgres_url() -> str:
    """A fresh, empty PostgreSQL database on the local server (dropped afterwards), or skip with the reason."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT",
                                     connect_args={"connect_timeout": 3})
    name = f"tune_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as e:
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_ADMIN_URL}: {str(e).splitlines()[0]}")
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run_cli(*args: object, input: str | None = None) -> Result:
    """`tune ARGS...` in this process, as a user would type it; exceptions become exit codes as in a shell."""
    return CliRunner().invoke(main, [str(a) for a in args], input=input, prog_name="tune")


@pytest.fixture
def cli():
    return run_cli
