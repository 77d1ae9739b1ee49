"""`tune dashboard`: a threaded optuna-dashboard that can watch a running search without hurting it, serves the
kept weights, shows the spec and exports in the study's note, and fails on bad input with one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from safetensors import safe_open

from tests.conftest import TINY_SPEC
from tuner.look.dashboard import exposure_warning, make_app, make_server
from tuner.record import record_export
from tuner.ship.checkpoint import WEIGHTS_FILE
from tuner.storage import open_storage

TUNE = [sys.executable, "-c", "from tuner.cli import main; main()"]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def isolated_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TUNE_STORAGE", "TUNE_DATA_DIR", "TUNE_ARTIFACTS")}
    return env | {"XDG_DATA_HOME": str(home / "data"), "XDG_CACHE_HOME": str(home / "cache"), "PYTHONUNBUFFERED": "1"}


def wait_for_study(db: Path, name: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Until `tune start` has created the study, reading the file the way any reader would."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
                if connection.execute("SELECT 1 FROM studies WHERE study_name = ?", (name,)).fetchone():
                    return
        except sqlite3.Error:
            pass
        time.sleep(0.1)
    raise AssertionError(f"study {name!r} did not appear; tune start said: {process.communicate()[1][-2000:]}")


class Hammer:
    """Threads that fetch the dashboard's study list and study detail every `pause` seconds, recording each answer
    (a browser tab polls every few seconds; this is a hundred tabs, leaving the search some CPU)."""

    def __init__(self, base: str, study_id: int, threads: int = 2, pause: float = 0.02) -> None:
        self.pause = pause
        self.urls = [f"{base}/api/studies", f"{base}/api/studies/{study_id}"]
        self.statuses: Counter = Counter()
        self.errors: list[str] = []
        self.saw_running = False  # whether a trial was training while the dashboard read the study
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        while not self.stop.is_set():
            for url in self.urls:
                try:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        answer = json.load(response)
                        self.statuses[response.status] += 1
                    self.saw_running |= any(t["state"] == "Running" for t in answer.get("trials", []))
                except Exception as e:  # an HTTP 500 from a locked database, a dropped connection
                    self.errors.append(f"{url}: {e!r}")
                self.stop.wait(self.pause)

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


@pytest.fixture(scope="module")
def watched_search(tmp_path_factory, data_dir) -> Iterator[dict]:
    """`tune start` (4 trials, --keep-top 2) in its own process while an in-process dashboard is hammered."""
    root = tmp_path_factory.mktemp("watched")
    (root / "tiny.yaml").write_text(TINY_SPEC)
    db = root / "studies.db"
    url = f"sqlite:///{db}"
    search = subprocess.Popen(
        [*TUNE, "start", "--spec", root / "tiny.yaml", "--storage", url, "--data-dir", data_dir,
         "--trials", "4", "--keep-top", "2", "--seed", "0"],
        env=isolated_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    server, env = None, pytest.MonkeyPatch()
    env.delenv("TUNE_ARTIFACTS", raising=False)
    try:
        wait_for_study(db, "tiny", search)
        server = make_server(make_app(url), "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_port}"
        study_id = get_json(f"{base}/api/studies")["study_summaries"][0]["study_id"]
        with Hammer(base, study_id) as hammer:
            out, err = search.communicate(timeout=300)
        yield {"url": url, "base": base, "study_id": study_id, "returncode": search.returncode, "stderr": err,
               "hammer": hammer, "root": root}
    finally:
        if search.poll() is None:
            search.kill()
        if server is not None:
            server.shutdown()
            server.server_close()
        env.undo()


def test_a_polling_dashboard_never_fails_a_running_search(watched_search):
    assert watched_search["returncode"] == 0, watched_search["stderr"][-2000:]
    hammer = watched_search["hammer"]
    assert hammer.errors == [] and hammer.saw_running
    assert set(hammer.statuses) == {200} and hammer.statuses[200] >= 50
    print(f"{hammer.statuses[200]} dashboard requests answered during the search")
    study = optuna.load_study(study_name="tiny", storage=open_storage(watched_search["url"]))
    states = Counter(t.state.name for t in study.trials)
    assert states["FAIL"] == 0 and states["COMPLETE"] >= 1 and sum(states.values()) == 4


def test_dashboard_lists_and_serves_the_best_trials_weights(watched_search):
    base, study_id = watched_search["base"], watched_search["study_id"]
    detail = get_json(f"{base}/api/studies/{study_id}")
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    best_two = sorted(complete, key=lambda t: -t["values"][0])[:2]
    with_weights = [t for t in detail["trials"] if t["artifacts"]]
    assert sorted(t["number"] for t in with_weights) == sorted(t["number"] for t in best_two)
    for trial in with_weights:
        (artifact,) = trial["artifacts"]
        assert artifact["filename"] == WEIGHTS_FILE
        path = watched_search["root"] / f"download-{trial['number']}.safetensors"
        with urllib.request.urlopen(f"{base}/artifacts/{study_id}/{trial['trial_id']}/{artifact['artifact_id']}") as r:
            path.write_bytes(r.read())
        with safe_open(str(path), "pt") as f:
            config = json.loads(f.metadata()["config"])
        user_attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert config == json.loads(user_attrs["config"])


def test_study_note_shows_the_spec_then_each_export(watched_search, tmp_path):
    base, study_id = watched_search["base"], watched_search["study_id"]
    note = get_json(f"{base}/api/studies/{study_id}")["note"]["body"]
    assert "## Search spec" in note and "name: tiny" in note and "optimizer: [adam, sgd]" in note

    study = optuna.load_study(study_name="tiny", storage=open_storage(watched_search["url"]))
    record_export(study, tmp_path / "best.yaml", 3)
    record_export(study, tmp_path / "second.yaml", 1)
    note = get_json(f"{base}/api/studies/{study_id}")["note"]["body"]
    assert note.startswith("## Search spec") and note.count("## Exports") == 1
    assert f"trial 3 exported to `{tmp_path / 'best.yaml'}`" in note
    assert f"`tune train {tmp_path / 'second.yaml'}`" in note


@pytest.fixture
def study_db(storage_url) -> str:
    """An SQLite storage holding one empty study."""
    optuna.create_study(study_name="empty", storage=open_storage(storage_url))
    return storage_url


def test_missing_database_is_one_line_naming_the_fix(cli, tmp_path):
    result = cli("dashboard", "--storage", f"sqlite:///{tmp_path}/nowhere.db")
    assert result.exit_code == 2
    assert result.output == (f"Error: no study database at {tmp_path}/nowhere.db: run `tune start` first, or point "
                             "--storage (or TUNE_STORAGE) at the database your studies are in\n")
    assert not (tmp_path / "nowhere.db").exists()


def test_a_home_relative_storage_url_is_the_file_in_the_home_directory(cli, tmp_path, monkeypatch):
    """sqlite:///~/PATH means the same file to the dashboard as to `tune start`; a missing one is named expanded."""
    from wsgiref.util import setup_testing_defaults

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    optuna.create_study(study_name="home", storage=open_storage("sqlite:///~/studies/tune.db"))
    environ = {"PATH_INFO": "/api/studies"}
    setup_testing_defaults(environ)
    body = b"".join(make_app("sqlite:///~/studies/tune.db")(environ, lambda *response: None))
    assert [s["study_name"] for s in json.loads(body)["study_summaries"]] == ["home"]

    result = cli("dashboard", "--storage", "sqlite:///~/nowhere.db")
    assert result.exit_code == 2 and result.output.startswith(f"Error: no study database at {tmp_path}/nowhere.db: ")
    assert not (tmp_path / "~").exists() and not (tmp_path / "nowhere.db").exists()


def test_unknown_storage_scheme_is_one_line(cli):
    result = cli("dashboard", "--storage", "redis://localhost:6379")
    assert result.exit_code == 2
    assert result.output.startswith("Error: unknown storage scheme 'redis'") and result.output.count("\n") == 1


def test_port_in_use_is_one_line_naming_the_fix(cli, study_db):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("dashboard", "--storage", study_db, "--port", port)
    assert result.exit_code == 2
    assert result.output == (f"Error: port {port} on 127.0.0.1 is in use (another dashboard?): "
                             "pick another with --port\n")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_hosts_need_no_warning(host):
    assert exposure_warning(host) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "my-workstation"])
def test_other_hosts_are_warned_about(host):
    assert "delete studies" in exposure_warning(host)


def test_serves_until_ctrl_c_then_exits_cleanly(study_db, tmp_path):
    """Bound to all interfaces: one warning line on stderr; the URL on stdout; Ctrl-C ends it with exit code 0."""
    dashboard = subprocess.Popen([*TUNE, "dashboard", "--storage", study_db, "--host", "0.0.0.0", "--port", "0"],
                                 env=isolated_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = dashboard.stdout.readline()
        assert line.startswith("Dashboard on http://0.0.0.0:") and line.endswith("(Ctrl-C to stop)\n")
        port = int(line.split(":")[2].split("/")[0])
        studies = get_json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["empty"]
        dashboard.send_signal(signal.SIGINT)
        out, err = dashboard.communicate(timeout=30)
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
    assert dashboard.returncode == 0
    assert err.splitlines()[0].startswith("Warning: serving on 0.0.0.0, reachable from other machines")
    assert "Traceback" not in err and err.splitlines()[-1] == "Dashboard stopped."


def test_the_dashboard_serves_weights_without_torch_so_it_exits_when_it_says_stopped(study_db, tmp_path):
    """Tearing torch down took the process seconds after "Dashboard stopped."; the dashboard only serves files."""
    code = ("import sys; from tuner.look.dashboard import make_app; make_app(sys.argv[1]); "
            "print('torch' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code, study_db], env=isolated_env(tmp_path), capture_output=True,
                            text=True, timeout=120, check=True)
    assert loaded.stdout == "False\n"


def test_open_shows_the_printed_url_in_a_browser(cli, study_db, monkeypatch):
    import webbrowser

    import tuner.look.dashboard

    opened = []
    monkeypatch.setattr(webbrowser, "open", opened.append)
    monkeypatch.setattr(tuner.look.dashboard, "serve", lambda server: server.server_close())
    result = cli("dashboard", "--storage", study_db, "--port", 0, "--open")
    assert result.exit_code == 0, result.output
    assert len(opened) == 1 and opened[0].startswith("http://127.0.0.1:")
    assert f"Dashboard on {opened[0]} (Ctrl-C to stop)" in result.output
