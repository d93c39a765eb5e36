"""The shoutbox example under a real gunicorn, over real HTTP.

Each test starts ``python -m gunicorn --chdir examples/shoutbox app:app`` on
127.0.0.1 and a free port, talks to it with ``http.client``, stops it with
SIGTERM and checks what the database holds afterwards: with a FileStorage,
that the index was written when the worker exited (the database was closed)
and that a second start reads the message back; with ZEO, the same with two
workers sharing the database.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from markupsafe import escape
from ZODB.fsIndex import fsIndex

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "shoutbox"
DEFAULT_TEXT = "Be the first to shout!"
SHOUT = "<script>alert('pwned')</script> & \"hello\""
HTTP_TIMEOUT = 10
START_TIMEOUT = 30
STOP_TIMEOUT = 20


class Gunicorn:
    """One gunicorn master serving the example, with its log in a file."""

    def __init__(self, storage_uri: str, port: int, log: Path, *, workers: int) -> None:
        self.port = port
        self.log = log
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("FLASK_", "GUNICORN_"))
        }
        env["FLASK_ZODB_STORAGE"] = storage_uri
        with open(log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--chdir",
                    str(EXAMPLE),
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(workers),
                    "--no-control-socket",  # it would be shared with other gunicorns
                    "--graceful-timeout",
                    str(STOP_TIMEOUT // 2),
                    "app:app",
                ],
                env=env,
                cwd=log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def request(
        self, method: str, path: str = "/", form: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPMessage, str]:
        """Send one request; return (status, headers, text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT)
        try:
            headers: dict[str, str] = {}
            body = None
            if form is not None:
                body = urlencode(form)
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.headers, response.read().decode("utf-8")
        finally:
            conn.close()

    def stop(self) -> int:
        """SIGTERM, then wait; return the master's exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


Serve = Callable[..., AbstractContextManager[Gunicorn]]


@pytest.fixture
def serve(pytestconfig: pytest.Config, tmp_path: Path) -> Serve:
    """``with serve(storage_uri, workers=1) as server:`` runs gunicorn for the
    block, stops it with SIGTERM at the end, and kills it if anything fails."""
    # The top-level conftest.py, for its helpers: "import conftest" would
    # find tests/conftest.py instead.
    helpers = pytestconfig.pluginmanager.get_plugin(str(ROOT / "conftest.py"))
    assert helpers is not None, "the top-level conftest.py was not loaded"
    log = tmp_path / "gunicorn.log"

    @contextmanager
    def serve(storage_uri: str, *, workers: int = 1) -> Iterator[Gunicorn]:
        server = Gunicorn(storage_uri, helpers.free_port(), log, workers=workers)
        try:
            helpers.wait_for_port(server.port, timeout=START_TIMEOUT, process=server.process)
            yield server
            assert server.stop() == 0, server.output()
        finally:
            server.kill()
        assert "Traceback" not in server.output(), server.output()

    return serve


def shout_text(body: str) -> str:
    start = body.index('<p class="shout">') + len('<p class="shout">')
    return body[start : body.index("</p>", start)]


def check_shout(server: Gunicorn, expected: str) -> None:
    status, _, body = server.request("GET")
    assert status == 200, body
    assert shout_text(body) == str(escape(expected))


def shout(server: Gunicorn, message: str) -> None:
    status, headers, body = server.request("POST", form={"message": message})
    assert status == 302, body
    assert headers["Location"] == "/"


def test_file_storage_survives_a_restart(tmp_path: Path, serve: Serve) -> None:
    data = tmp_path / "Data.fs"
    uri = f"file://{data}"

    with serve(uri) as server:
        check_shout(server, DEFAULT_TEXT)

        status, _, body = server.request("POST", form={"message": "   "})
        assert status == 400
        assert "empty" in body
        status, _, body = server.request("POST")  # no field at all
        assert status == 400
        check_shout(server, DEFAULT_TEXT)

        shout(server, SHOUT)
        status, _, body = server.request("GET")
        assert status == 200
        assert "<script>" not in body
        assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt; &amp; &#34;hello&#34;" in body
        check_shout(server, SHOUT)

    # The worker closed the database at exit: the index covers the whole file,
    # so the next start does not have to scan the file to rebuild it.
    index = data.with_name(data.name + ".index")
    assert index.exists()
    assert fsIndex.load(str(index))["pos"] == data.stat().st_size

    with serve(uri) as server:
        check_shout(server, SHOUT)


def test_zeo_storage_shared_by_two_workers(zeo_server: Any, serve: Serve) -> None:
    with serve(zeo_server.uri(), workers=2) as server:
        check_shout(server, DEFAULT_TEXT)
        shout(server, SHOUT)
        # Whichever worker answers, it sees the committed message.
        for _ in range(6):
            check_shout(server, SHOUT)
        status, _, _ = server.request("POST", form={"message": ""})
        assert status == 400
        shout(server, "second")
        for _ in range(6):
            check_shout(server, "second")

    with serve(zeo_server.uri(), workers=2) as server:
        check_shout(server, "second")
