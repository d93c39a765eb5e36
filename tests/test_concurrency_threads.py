"""Many writers in one process: threads incrementing one counter.

Each thread sends its requests through the whole WSGI stack (WebTest, its
own ``TestApp``, the Flask app, the ZODB middleware, the view) to a
FileStorage. Eight threads write the same object at once, so their
transactions conflict; the retry loop, with its default attempts and
backoff, must absorb every conflict: each request gets a 2xx and the counter
ends exactly at the number of requests. With retries turned off
(``ZODB_RETRY_ATTEMPTS=1``), the same contention shows as 503s, and each
503 is a request whose change was not stored.
"""

from __future__ import annotations

import threading
from pathlib import Path

import webtest
from apps.counter_app import create_app
from apps.serving import run_threads

from flask_zodb.config import DEFAULTS
from zodb_wsgi import middleware

THREADS = 8
EACH = 25


def increment_from_threads(app: object, path: str = "/increment") -> list[webtest.TestResponse]:
    responses: list[webtest.TestResponse] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def client() -> None:
        test_app = webtest.TestApp(app)
        start.wait(10)
        for _ in range(EACH):
            response = test_app.post(path, expect_errors=True)
            with lock:
                responses.append(response)

    run_threads(client, THREADS)
    return responses


def test_the_retry_defaults_are_the_documented_ones() -> None:
    assert middleware.DEFAULT_ATTEMPTS == 20
    assert middleware.DEFAULT_BACKOFF == 0.01
    assert middleware.DEFAULT_MAX_BACKOFF == 0.5
    assert DEFAULTS["ZODB_RETRY_ATTEMPTS"] == middleware.DEFAULT_ATTEMPTS


def test_eight_threads_increment_one_counter_exactly(tmp_path: Path) -> None:
    app = create_app(ZODB_STORAGE=f"file://{tmp_path / 'Data.fs'}")
    retries: list[int] = []
    state = app.extensions["zodb"]
    state.middleware.on_retry = lambda environ, attempt, error: retries.append(attempt)
    try:
        responses = increment_from_threads(app)
        assert [r.status_int for r in responses if r.status_int >= 300] == []
        # Each acknowledged increment saw a value of its own: none was lost
        # or applied twice.
        assert sorted(r.json["count"] for r in responses) == list(range(1, THREADS * EACH + 1))
        assert webtest.TestApp(app).get("/count").json["count"] == THREADS * EACH
    finally:
        state.database.close()
    assert retries, "the threads never conflicted: the test proved nothing about retries"


def test_without_retries_contention_shows_as_503_and_loses_nothing(tmp_path: Path) -> None:
    app = create_app(ZODB_STORAGE=f"file://{tmp_path / 'Data.fs'}", ZODB_RETRY_ATTEMPTS=1)
    try:
        # A short pause between read and write makes the threads conflict.
        responses = increment_from_threads(app, "/increment?hold=0.002")
        ok = [r for r in responses if r.status_int == 200]
        busy = [r for r in responses if r.status_int == 503]
        assert len(ok) + len(busy) == len(responses)
        assert busy, "no request conflicted"
        for response in busy:
            assert "busy" in response.text
            assert response.headers["Retry-After"] == "1"
        # Every 200 was stored, and nothing of the 503s was.
        assert sorted(r.json["count"] for r in ok) == list(range(1, len(ok) + 1))
        assert webtest.TestApp(app).get("/count").json["count"] == len(ok)
    finally:
        app.extensions["zodb"].database.close()
