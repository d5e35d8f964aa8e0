"""The live dashboard in a real headless Chromium (Debian's chromium + chromium-driver, via Selenium).

A paced tiny training run (``slow_run.py``, a subprocess) and the dashboard (``convopt
dashboard``, a subprocess) share a fresh sqlite store. The page must list the run, draw
its convergence chart, grow it while the run trains, and show the forced intervention's
marker. The dashboard is started without a token, so it generates one and prints the URL
with it; the browser opens that URL once, the token moves into a cookie and leaves the
address bar. A dashboard bound to a non-local address refuses requests without its token.
The screenshot lands in ``$CONVOPT_TEST_ARTIFACTS`` (default: the test's tmp dir).
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[dev])")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="chromium/chromedriver not installed (apt-get install chromium "
                                       "chromium-driver; .ci/run installs them)")
INTERVENE_AT = 2560  # env step of the forced intervention (update 10 of 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(uri: str, token: str = "") -> dict[str, str]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]), CONVOPT_DASHBOARD_TOKEN=token)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(name, None)
    return env


def _dashboard(tmp_path: Path, uri: str, *args: str, token: str = "") -> tuple[subprocess.Popen, int, str]:
    """The dashboard process, its port, and the first line it printed (the URL to open)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "convopt_mlflow.cli", "dashboard", "--tracking-uri", uri,
                             "--port", str(port), *args], cwd=tmp_path, env=_env(uri, token),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = ""
    while not line.startswith("convopt dashboard: open"):
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"dashboard exited {proc.wait()} before printing its URL")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited {proc.returncode}: {proc.stdout.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port, line
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("dashboard did not start in 60 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)


def _has_run(uri: str) -> bool:
    from mlflow.tracking import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        return bool(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    except Exception:  # noqa: BLE001 - the store is still being created
        return False


def _wait(condition, timeout: float, what: str, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def test_live_dashboard_follows_a_training_run_in_chromium(tmp_path, mlflow_template):
    uri = mlflow_template.copy_to(tmp_path)
    shots = Path(os.environ.get("CONVOPT_TEST_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    # the store's tables exist before anyone opens it (a copy of the session's empty store): two
    # processes migrating one new sqlite file at once collide (the trainer, and this test polling)
    trainer = subprocess.Popen([sys.executable, str(ROOT / "tests" / "dashboards" / "slow_run.py"), "0.4",
                                str(INTERVENE_AT)], cwd=tmp_path, env=_env(uri),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    dashboard = browser = None
    try:
        _wait(lambda: trainer.poll() is not None or _has_run(uri), 180,
              "the training run to start")
        assert trainer.poll() is None, trainer.stdout.read()[-3000:]
        dashboard, port, line = _dashboard(tmp_path, uri)  # no token given: one is generated and printed
        url = re.search(rf"http://127\.0\.0\.1:{port}/\?token=[A-Za-z0-9_-]+", line)
        assert url, line
        browser = _browser()
        browser.get(f"http://127.0.0.1:{port}/")
        assert "401" in browser.find_element("tag name", "body").text  # no token, no page
        browser.get(url.group(0))
        _wait(lambda: "token=" not in browser.current_url, 30, "the token to leave the address bar")
        assert browser.current_url == f"http://127.0.0.1:{port}/"
        (cookie,) = browser.get_cookies()
        assert cookie["name"] == f"convopt_dashboard_{port}" and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly: no script can read it
        row = _wait(lambda: browser.find_elements("css selector", "#runs-table tr.run"), 120, "the run in the list")
        name = row[0].find_element("css selector", "td").text  # the run's overrides, compactly, on one line
        assert name.startswith("everything[") and name.endswith("]-s0") and "\n" not in name, name
        chart = browser.find_element("id", "convergence")
        points = lambda: int(chart.get_attribute("data-points") or 0)  # noqa: E731
        first = _wait(points, 120, "points on the convergence chart")
        assert browser.execute_script("return document.getElementById('convergence').data.length") > 0
        assert trainer.poll() is None, "the run ended before the chart could be seen growing; slow it down"
        grown = _wait(lambda: points() > first and points(), 120, "the chart to grow while the run trains")
        assert grown > first
        _wait(lambda: int(chart.get_attribute("data-interventions") or 0) >= 1, 180, "the forced intervention")
        names = browser.execute_script("return document.getElementById('convergence').data.map(t => t.name)")
        assert "intervention: increase_entropy" in names
        xs = browser.execute_script("return document.getElementById('convergence').data"
                                    ".find(t => t.name === 'intervention: increase_entropy').x")
        assert xs == [INTERVENE_AT]
        browser.save_screenshot(str(shots / "live_dashboard.png"))
        assert (shots / "live_dashboard.png").stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.quit()
        for proc in (dashboard, trainer):
            if proc is not None:
                _stop(proc)


def test_a_non_local_bind_refuses_requests_without_its_token(tmp_path, mlflow_template):
    uri = mlflow_template.copy_to(tmp_path)  # the dashboard reads a store; it never creates one
    dashboard, port, line = _dashboard(tmp_path, uri, "--host", "0.0.0.0", token="s3cret")
    assert "token from the environment" in line and "s3cret" not in line
    try:
        for path in ("/", "/api/runs", "/static/plotly.min.js"):
            with pytest.raises(urllib.error.HTTPError) as denied:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30)
            assert denied.value.code == 401
        with pytest.raises(urllib.error.HTTPError) as wrong:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs?token=guess", timeout=30)
        assert wrong.value.code == 401
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/runs",
                                         headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(request, timeout=30) as ok:
            assert ok.status == 200 and b'"runs"' in ok.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/?token=s3cret", timeout=30) as page:
            assert page.status == 200 and f"convopt_dashboard_{port}=s3cret" in page.headers.get("set-cookie", "")
            assert page.headers.get("referrer-policy") == "no-referrer"
    finally:
        _stop(dashboard)
