"""The run pages' shared plotly.js: packed once, kept in the cache folder, logged once per run."""
from __future__ import annotations

import base64
import gzip

from convopt_mlflow.evaluation.figures import PLOTLY_BUNDLE, plotly_bundle
from convopt_mlflow.tracking import open_run
from convopt_mlflow.tracking.html import bundle_script, log_plotly_bundle, packed_plotly


def test_packed_plotly_is_kept_on_disk_and_recomputed_when_damaged(tmp_path, monkeypatch):
    source = plotly_bundle().read_bytes()
    first = packed_plotly(tmp_path)
    assert gzip.decompress(first) == source
    entries = list(tmp_path.glob("plotly-*.npz"))
    assert len(entries) == 1
    calls = []
    monkeypatch.setattr("convopt_mlflow.tracking.html.pack_plotly", lambda data: calls.append(1) or b"unused")
    assert packed_plotly(tmp_path) == first and calls == []  # read back, not packed again
    entries[0].write_bytes(entries[0].read_bytes()[: 1000])  # a truncated entry is not trusted
    monkeypatch.undo()
    assert packed_plotly(tmp_path) == first


def test_the_logged_bundle_unpacks_to_plotly_js(store, tmp_path, monkeypatch):
    monkeypatch.setenv("CONVOPT_CACHE_DIR", str(tmp_path / "cache"))
    bundle_script.cache_clear()  # made once per process: an earlier test's run may have made it
    handle = open_run(experiment="html", run_id=None, run_name="pages", tags={}, client=store.client)
    log_plotly_bundle(handle)
    log_plotly_bundle(handle)  # once per run
    listed = [f.path for f in store.client.list_artifacts(handle.run_id, PLOTLY_BUNDLE.rsplit("/", 1)[0])]
    assert listed == [PLOTLY_BUNDLE]
    js = open(store.client.download_artifacts(handle.run_id, PLOTLY_BUNDLE, str(tmp_path))).read()
    packed = js.split('var packed = "', 1)[1].split('"', 1)[0]
    assert gzip.decompress(base64.b64decode(packed)) == plotly_bundle().read_bytes()
    assert list((tmp_path / "cache").glob("plotly-*.npz"))
    handle.end("FINISHED")
