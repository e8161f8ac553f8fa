"""The MLflow UI in a real browser: headless Chromium renders a sweep's runs, grouped by the ``pareto`` tag.

The sweep is a hand-written Tune folder backfilled with latune.sync into a real ``mlflow server`` (the
same writer as a live sweep, without the minutes of training); the page is the one the sweep prints.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _mlflow_helpers import MlflowServer, fake_sweep

from latune.tracking.sync import sync

TRIALS = {  # (clean_acc, robust_acc, robust_class_error_sd) per epoch
    "f00d1_00000": {"delta": 0.0, "scores": [(0.6, 0.2, 0.3), (0.9, 0.3, 0.2)]},  # front
    "f00d1_00001": {"delta": 0.1, "scores": [(0.6, 0.3, 0.3), (0.8, 0.5, 0.1)]},  # front
    "f00d1_00002": {"delta": 0.3, "scores": [(0.4, 0.1, 0.3), (0.7, 0.2, 0.3)]},  # dominated
}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium binary; installed with apt-get (Debian package ``chromium``) where it is missing."""
    binary = "/usr/bin/chromium"
    if not os.path.exists(binary):
        if shutil.which("apt-get") is None or os.geteuid() != 0:
            pytest.skip("headless Chromium is missing and cannot be installed here (needs apt-get as root)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "chromium"]
        done = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
        if done.returncode != 0:  # a fresh machine has no package lists yet
            subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600, env=env)
            done = subprocess.run(install, capture_output=True, text=True, timeout=900, env=env)
        if not os.path.exists(binary):
            pytest.skip(f"apt-get install chromium failed: {(done.stderr or done.stdout)[-500:]}")
    return binary


@pytest.fixture(scope="module")
def pareto_page(tmp_path_factory):
    """A server holding one backfilled sweep; returns (the sweep's Pareto page URL, the server's URL)."""
    root = tmp_path_factory.mktemp("ui")
    server = MlflowServer(root)
    server.start()
    try:
        tracker = sync(str(fake_sweep(root / "runs", TRIALS, name="uisweep")), tracking_uri=server.url)
        yield tracker.pareto_url(), server.url, tracker.experiment_id
    finally:
        server.stop()


def _browse(chromium: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Chromium headless: loads the page and runs its scripts for up to 15 s of virtual time."""
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _text(dom: str) -> str:
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def test_the_runs_page_shows_the_trials_grouped_by_the_pareto_tag(chromium, pareto_page, tmp_path):
    url, server, experiment_id = pareto_page
    assert url.startswith(f"{server}/#/experiments/{experiment_id}/runs?viewStateShareKey=")
    done = _browse(chromium, tmp_path / "profile", url, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    text = _text(done.stdout)
    assert "Group by: pareto" in text, text[:3000]
    groups = dict(re.findall(r"Group: (true|false) (.*?)(?=Group: |$)", text))
    assert set(groups) == {"true", "false"}, text[:3000]
    assert sorted(re.findall(r"f00d1_\d+", groups["true"])) == ["f00d1_00000", "f00d1_00001"], groups  # front
    assert re.findall(r"f00d1_\d+", groups["false"]) == ["f00d1_00002"], groups
    assert "clean_acc" in text and "pareto_rank" in text  # the objectives and the rank are columns


def test_screenshot_of_the_pareto_page(chromium, pareto_page, tmp_path):
    url, _, _ = pareto_page
    shot = tmp_path / "pareto_page.png"
    done = _browse(chromium, tmp_path / "profile", url, f"--screenshot={shot}", "--window-size=1600,1000")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
