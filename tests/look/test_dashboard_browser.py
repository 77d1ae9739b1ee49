"""The dashboard in a real browser: headless Chromium (Debian's, driven by Playwright) renders a study from
`tune start` with one point per trial, no console errors, and the best trials' weights on their trial pages."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from safetensors import safe_open

from tuner.ship.artifacts import kept_weights
from tuner.ship.checkpoint import WEIGHTS_FILE
from tuner.storage import open_storage

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
SCREENSHOT = Path("/tmp/tune-dashboard-study.png")
TRIALS, KEEP_TOP = 4, 2

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium", allow_module_level=True)


@pytest.fixture(autouse=True)
def _no_artifacts_override(monkeypatch):
    monkeypatch.delenv("TUNE_ARTIFACTS", raising=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_listed_study(base: str, name: str, process: subprocess.Popen, timeout: float = 15) -> int:
    """The study's id once `/api/studies` lists it; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"tune dashboard exited: {process.communicate()[1]}")
        try:
            with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as response:
                studies = json.load(response)["study_summaries"]
            return next(s["study_id"] for s in studies if s["study_name"] == name)
        except (OSError, StopIteration):
            time.sleep(0.1)
    raise AssertionError(f"/api/studies did not list {name!r} within {timeout} s")


@pytest.fixture
def study(cli, tiny_spec, data_dir, storage_url) -> optuna.Study:
    result = cli("start", "--spec", tiny_spec, "--storage", storage_url, "--data-dir", data_dir,
                 "--trials", TRIALS, "--keep-top", KEEP_TOP, "--seed", 0)
    assert result.exit_code == 0, result.output
    return optuna.load_study(study_name="tiny", storage=open_storage(storage_url))


@pytest.fixture
def dashboard(study, storage_url):
    """`tune dashboard --storage URL --port P` in its own process: (base URL, the study's id)."""
    port = free_port()
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-c", "from tuner.cli import main; main()", "dashboard",
                                "--storage", storage_url, "--port", str(port)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, wait_for_listed_study(base, "tiny", process)
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture
def browser_page():
    """A Chromium page, and the list its console errors and uncaught exceptions go to."""
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(15_000)
        page.on("console", lambda m: m.type == "error" and errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        yield page, errors
        browser.close()


def test_study_page_plots_every_trial_and_trial_pages_offer_the_best_weights(study, dashboard, browser_page, tmp_path):
    (base, study_id), (page, errors) = dashboard, browser_page
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == TRIALS

    page.goto(f"{base}/dashboard/studies/{study_id}")
    page.wait_for_selector("#plot-history .scatterlayer .point")
    sync_api.expect(page.locator("#plot-history .scatterlayer .point")).to_have_count(len(complete))
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    kept = {k.trial_id for k in kept_weights(study)}
    assert kept == {t._trial_id for t in sorted(complete, key=lambda t: -t.value)[:KEEP_TOP]}
    for trial in study.trials:
        page.goto(f"{base}/dashboard/studies/{study_id}/trials?numbers={trial.number}")
        sync_api.expect(page.get_by_role("heading", name=f"Trial {trial.number} (trial_id=")).to_be_visible()
        sync_api.expect(page.get_by_role("heading", name="Artifacts")).to_be_visible()
        sync_api.expect(page.get_by_text(WEIGHTS_FILE)).to_have_count(1 if trial._trial_id in kept else 0)

    page.goto(f"{base}/dashboard/studies/{study_id}/trials?numbers={study.best_trial.number}")
    with page.expect_download() as download:
        page.get_by_label("download artifact").click()
    weights = tmp_path / download.value.suggested_filename
    download.value.save_as(weights)
    with safe_open(str(weights), "pt") as f:
        assert json.loads(f.metadata()["config"]) == study.best_trial.user_attrs["config"]
    assert errors == []
