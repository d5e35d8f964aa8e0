"""Helpers shared by the dashboard tests: a free port, and the app served on uvicorn in a thread."""
from __future__ import annotations

import http.client
import socket
import threading
import time

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``create_app(...)`` on uvicorn in a thread, on 127.0.0.1:<free port>."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def get(self, path: str, host: str | None = None, headers: dict | None = None, timeout: float = 30):
        """One GET on a fresh connection: ``(response, body text)``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request("GET", path, headers={"Host": host or f"127.0.0.1:{self.port}", **(headers or {})})
        response = conn.getresponse()
        body = response.read().decode("utf-8", errors="replace")
        conn.close()
        return response, body
