"""Shared fixtures: synthetic IDX data, the real Fashion-MNIST sample bundled with tune, storages, the CLI."""

from __future__ import annotations

import gzip
import os
import signal
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from tuner.cli import main
from tuner.datasets.sample import folder as sample_folder
from tuner.testing import write_idx_dataset

# Tests send Ctrl-C (SIGINT) to tune processes they start. A suite launched in the background (`cmd &`, nohup)
# inherits SIGINT ignored, and so would those processes; with a handler here they start with the default again.
signal.signal(signal.SIGINT, signal.default_int_handler)

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


REAL_HOME = Path.home()  # what no test may write into (tests/test_isolation.py)
TUNE_ENV = ("TUNE_STORAGE", "TUNE_DATA_DIR", "TUNE_ARTIFACTS", "TUNE_CACHE_DIR")


def _isolate(patch: pytest.MonkeyPatch, home: Path) -> None:
    """A home of its own: HOME (Path.home(), ~ in URLs, onnxruntime's ~/.cache/Microsoft), XDG data and cache
    (tune's storage, datasets, decode cache; torch's hub), and none of tune's own variables."""
    patch.setenv("HOME", str(home))
    patch.setenv("XDG_DATA_HOME", str(home / "data"))
    patch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    for name in TUNE_ENV:
        patch.delenv(name, raising=False)


@pytest.fixture(scope="session", autouse=True)
def _isolated_session(tmp_path_factory) -> Iterator[None]:
    """Session and module fixtures (a study searched once for a whole module) run before each test's own home
    exists: they get a home of their own too."""
    with pytest.MonkeyPatch.context() as patch:
        _isolate(patch, tmp_path_factory.mktemp("session-home"))
        yield


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the user's real storage, data or caches (weights another test loaded included)."""
    from tuner.models.hubs import torchvision_state

    _isolate(monkeypatch, tmp_path_factory.mktemp("home"))
    torchvision_state.cache_clear()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test: quicker for tiny models on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A small learnable synthetic Fashion-MNIST (600 train / 200 test) in torchvision's raw layout."""
    return write_idx_dataset(tmp_path_factory.mktemp("idx"), n_train=600, n_test=200)


@pytest.fixture(scope="session")
def mini_data_dir(tmp_path_factory) -> Path:
    """Real images on every machine: the 1,722 / 500 image Fashion-MNIST sample bundled with tune, uncompressed in
    torchvision's raw layout (ROOT/FashionMNIST/raw/), so that `--dataset fashion-mnist --data-dir ROOT` reads it."""
    root = tmp_path_factory.mktemp("mini")
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for packed in sample_folder("fashion-mnist-sample").glob("*-ubyte.gz"):
        (raw / packed.stem).write_bytes(gzip.decompress(packed.read_bytes()))
    return root


@pytest.fixture
def fresh_machine(tmp_path, monkeypatch) -> Path:
    """A first run on a machine without network: an empty home and data directory, and downloads that fail."""
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TUNE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    return tmp_path


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
def postgres_url() -> Iterator[str]:
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
