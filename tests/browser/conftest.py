"""JupyterLab from this environment on a free localhost port, and headless Chromium driving it.

The notebooks are copied to ``runs/browser/notebooks/`` (git-ignored) and the server is rooted there,
as ``make lab`` roots it at ``notebooks/``: running and saving in the browser never touches the
committed notebooks. Screenshots, the server log and ``summary.json`` (timings) go to ``runs/browser/``.

Chromium is Debian's ``chromium`` package (``SEARLE_CHROMIUM`` overrides the path), driven by
Playwright's Python package; no browser is downloaded. ``make browser-test`` installs both and sets
``SEARLE_BROWSER_TEST=1``, under which a missing piece fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from searle_core.infra.paths import REPO_ROOT

RUN_DIR = REPO_ROOT / "runs" / "browser"
# Settings a person would not need but a test does: every cell attached (no windowing), no news toast,
# no autosave.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    # Only the test saves (Ctrl+S), so the file on disk is what the run produced and nothing races it.
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def _missing(reason: str):
    if os.environ.get("SEARLE_BROWSER_TEST") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(f"{reason} (make browser-test installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A running JupyterLab: its URL, token, served folder and a summary of timings written at the end."""

    def __init__(self, root: Path, port: int, token: str):
        self.root, self.port, self.token = root, port, token
        self.base = f"http://127.0.0.1:{port}"
        self.summary: dict = {}

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}?token={self.token}"


@pytest.fixture(scope="session")
def run_dir() -> Path:
    shutil.rmtree(RUN_DIR, ignore_errors=True)
    RUN_DIR.mkdir(parents=True)
    return RUN_DIR


@pytest.fixture(scope="session")
def lab(run_dir):
    root = run_dir / "notebooks"
    shutil.copytree(REPO_ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    settings = run_dir / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    log = open(run_dir / "lab.log", "w")
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        "--ServerApp.allow_root=True",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={run_dir / 'lab-workspaces'}",
    ]
    start = time.perf_counter()
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    served = Lab(root, port, token)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {server.returncode}; see {run_dir / 'lab.log'}")
            try:
                with urllib.request.urlopen(served.url("api/status"), timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not answer on port {port} within 120 s; see {run_dir / 'lab.log'}")
            time.sleep(0.5)
        served.summary["lab_start_s"] = round(time.perf_counter() - start, 1)
        yield served
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        (run_dir / "summary.json").write_text(json.dumps(served.summary, indent=1))


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright's Python package is not installed (pip install -e '.[browser]')")
    executable = os.environ.get("SEARLE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(executable).is_file():
        _missing(f"no Chromium at {executable} (Debian: apt-get install chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page_factory(browser):
    """New pages, each in its own browser context (no shared state), closed with the module."""
    contexts = []

    def new_page():
        contexts.append(browser.new_context(viewport={"width": 1400, "height": 1000}))
        page = contexts[-1].new_page()
        page.set_default_timeout(60_000)
        return page

    yield new_page
    for context in contexts:
        context.close()  # a no-op for those a test closed already


@pytest.fixture
def page(page_factory):
    """A page closed after its test: an open page keeps its notebook open, and JupyterLab there would
    save it under the next page's feet."""
    page = page_factory()
    yield page
    page.context.close()
