"""A run's HTML artifacts: at most 5 MB in all, and drawn offline inside MLflow's own UI.

A tiny real run logs its pages and one shared plotly.js; `mlflow ui` serves the store and a
headless Chromium (Debian's chromium + chromium-driver, via Selenium) opens each page in
MLflow's artifact viewer, which shows HTML in a sandboxed ``blob:`` iframe.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from convopt_mlflow.config import build_config
from convopt_mlflow.evaluation.figures import PLOTLY_BUNDLE
from convopt_mlflow.training.coordinator import train

TINY = ["data.source=synthetic:n_bars=3000,seed=1,signal_ic=0.1", "env.n_envs=4", "ppo.n_steps=64",
        "ppo.batch_size=64", "ppo.n_epochs=1", "ppo.net_arch=16", "env.window=8", "env.episode_length=64",
        "run.total_timesteps=1024", "run.checkpoint_freq=512", "run.progress_bar=false", "monitoring_window=4"]
MAX_HTML_BYTES = 5_000_000


def _files(client, run_id, path=None):
    for item in client.list_artifacts(run_id, path):
        yield from _files(client, run_id, item.path) if item.is_dir else [item]


@pytest.fixture(scope="module")
def tiny_run(module_mlflow):
    uri, root = module_mlflow
    result = train(build_config("baseline", TINY), preset="baseline", checkpoint_root=str(root / "ckpt"))
    assert result.status == "FINISHED"
    return uri, root, result.run_id


def test_html_artifacts_of_a_run_hold_plotly_once_and_stay_under_5_mb(tiny_run):
    uri, _, run_id = tiny_run
    files = list(_files(MlflowClient(tracking_uri=uri), run_id))
    pages = [f for f in files if f.path.endswith(".html")]
    assert {"dashboards/convergence.html", "backtest/equity_val.html", "backtest/equity_test.html"} <= \
        {f.path for f in pages}
    assert [f.path for f in files if f.path.endswith((".js", ".mjs"))] == [PLOTLY_BUNDLE]  # once per run
    bundle = next(f for f in files if f.path == PLOTLY_BUNDLE)
    assert all(f.file_size < 500_000 for f in pages) and bundle.file_size < 2_100_000  # plotly.js once, packed
    assert sum(f.file_size for f in pages) + bundle.file_size <= MAX_HTML_BYTES


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None, reason="chromium/chromedriver not installed")
def test_pages_draw_inside_mlflows_artifact_viewer(tiny_run):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.common.by import By

    uri, root, run_id = tiny_run
    experiment_id = MlflowClient(tracking_uri=uri).get_run(run_id).info.experiment_id
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    ui = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--port", str(port)],
                          cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = None
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and ui.poll() is None, "mlflow ui did not start"
                time.sleep(0.5)
        driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
        for page in ("dashboards/convergence.html", "backtest/equity_test.html"):
            driver.get(f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs/{run_id}/artifacts/{page}")
            drawn = None
            for _ in range(60):
                time.sleep(1)
                frames = driver.find_elements(By.CSS_SELECTOR, "iframe.mlflow-html-iframe, iframe#html")
                if not frames:
                    continue
                driver.switch_to.frame(frames[0])
                drawn = driver.execute_script(
                    "return [typeof Plotly, document.querySelectorAll('.main-svg').length, location.protocol]")
                driver.switch_to.default_content()
                if drawn[1] > 0:
                    break
            assert drawn is not None and drawn[0] == "object" and drawn[1] > 0 and drawn[2] == "blob:", (page, drawn)
    finally:
        if driver is not None:
            driver.quit()
        ui.terminate()
        ui.wait(timeout=30)
