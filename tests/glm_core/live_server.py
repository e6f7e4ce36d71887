"""A real uvicorn server on a free loopback port, run in a thread, for glm serve's tests."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn

START_TIMEOUT = 60.0


class LiveServer:
    """``with LiveServer(app) as server:`` serves ``app`` at ``server.url`` (127.0.0.1, a free port) until the
    block ends; the application's lifespan (its generation thread) runs as under ``glm serve``."""

    def __init__(self, app):
        self.app = app
        self.url = ""

    def __enter__(self) -> LiveServer:
        listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [listener]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no generation runs or waits (the model may then be used directly)."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if not health["generating"] and health["queued"] == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server still generates after {timeout}s: {health}")
            time.sleep(0.01)
