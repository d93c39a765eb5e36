"""Serving ``counter_app`` under a real gunicorn and talking to it over HTTP.

Shared by the concurrency, fault and fork tests. Everything listens on
127.0.0.1 and a free port; every wait has a deadline; :class:`Gunicorn` is a
context manager that always stops (and if need be kills) its master.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

APPS = Path(__file__).resolve().parent


def _project_conftest() -> ModuleType:
    # The top-level conftest.py holds the real-server helpers. Its module
    # name, "conftest", is shared with tests/conftest.py (pytest keeps only
    # the last one imported in sys.modules), so it is loaded by its path,
    # under a name of its own, once.
    name = "flask_zodb_project_conftest"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, APPS.parent.parent / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


_conftest = _project_conftest()
ZEOServer = _conftest.ZEOServer
free_port: Callable[[], int] = _conftest.free_port
PG_HOST: str = _conftest.PG_HOST
PG_USER: str = _conftest.PG_USER
postgres_uri: Callable[..., str] = _conftest.postgres_uri
wait_for_port: Callable[..., None] = _conftest.wait_for_port
HTTP_TIMEOUT = 40.0  # longer than a worker's timeout: a hang shows as a reset, not ours
STOP_TIMEOUT = 20.0


@dataclass
class Reply:
    """One HTTP exchange as a client saw it."""

    status: int  # 0: no response at all (connection refused or reset)
    body: str
    seconds: float
    retry_after: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


def call(port: int, method: str, path: str, *, timeout: float = HTTP_TIMEOUT) -> Reply:
    """Send one request to 127.0.0.1:*port* on a connection of its own."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, headers={"Content-Length": "0"})
        response = connection.getresponse()
        body = response.read().decode("utf-8", "replace")
        return Reply(
            response.status, body, time.monotonic() - started, response.getheader("Retry-After")
        )
    except (OSError, http.client.HTTPException) as exc:
        return Reply(0, f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    finally:
        connection.close()


def hammer(
    port: int, *, clients: int = 8, each: int = 25, method: str = "POST", path: str = "/increment"
) -> list[Reply]:
    """*clients* threads, each sending *method* *path* *each* times, all at once."""
    replies: list[Reply] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client() -> None:
        start.wait(10)
        for _ in range(each):
            reply = call(port, method, path)
            with lock:
                replies.append(reply)

    run_threads(client, clients)
    return replies


def run_threads(target: Callable[[], None], count: int, *, timeout: float = 120.0) -> None:
    """Run *target* in *count* threads and wait for all; fail on an error or a hang."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = [thread for thread in threads if thread.is_alive()]
    assert not stuck, f"{len(stuck)} threads still running after {timeout} s"
    assert not errors, errors


class Gunicorn:
    """A gunicorn master serving ``counter_app:create_app()`` with sync workers.

    Its stdout and stderr (the workers' too) go to *log*, read by
    :attr:`log_text`.
    """

    def __init__(
        self,
        storage: str,
        log: Path,
        *,
        workers: int = 4,
        preload: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.log = log
        self.args = [
            sys.executable,
            "-m",
            "gunicorn",
            "--chdir",
            str(APPS),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--timeout",
            "30",
            "--graceful-timeout",
            "10",
            *(["--preload"] if preload else []),
            "counter_app:create_app()",
        ]
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("FLASK_", "GUNICORN_", "ZODB_", "COUNTER_"))
        }
        self.env.update({"FLASK_ZODB_STORAGE": storage, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.port, timeout=30, process=self.process)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; gunicorn's log:\n{self.log_text}") from None

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck master
            process.kill()
            process.wait()

    def worker_pids(self) -> set[int]:
        """The pids of the master's live child processes (its workers)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def wait_for_workers(self, count: int, *, timeout: float = 30.0) -> set[int]:
        """Wait until the master has *count* workers; return their pids."""
        deadline = time.monotonic() + timeout
        while True:
            pids = self.worker_pids()
            if len(pids) == count:
                return pids
            assert time.monotonic() < deadline, f"workers {pids}, not {count}:\n{self.log_text}"
            time.sleep(0.05)


@contextmanager
def gunicorn(storage: str, log: Path, **options: Any) -> Iterator[Gunicorn]:
    """Start a :class:`Gunicorn`, yield it, stop it whatever happens."""
    server = Gunicorn(storage, log, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def statuses(replies: list[Reply]) -> dict[int, int]:
    """How many replies had each status."""
    counts: dict[int, int] = {}
    for reply in replies:
        counts[reply.status] = counts.get(reply.status, 0) + 1
    return counts
