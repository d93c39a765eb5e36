"""No request path leaks a connection, and none opens one it does not need.

The checks read the app's own ``ZODB.DB`` pool: ``pool.all`` holds every
connection the pool made (weakly), ``pool.available`` those back in the pool,
and a connection's ``opened`` is None once it was closed. The views also keep
a strong reference to every connection they used, so that a connection that
was never closed cannot escape notice by being garbage collected.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import transaction
import webtest
from flask import Flask, Response, abort, redirect, request, stream_with_context, url_for
from werkzeug.test import EnvironBuilder
from ZODB import DB
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ConflictError

from flask_zodb import ZODB

POOL_SIZE = 3
ATTEMPTS = 3

#: The ways a request of the mixed run can go, and how often (weights).
KINDS = {
    "ping": 8,  # never touches the database
    "read": 10,
    "write": 12,
    "redirect": 6,  # writes, then 302
    "fail": 6,  # writes, then raises: 500
    "404": 6,  # writes, then abort(404)
    "400": 6,  # writes, then returns a 400
    "stream": 6,  # reads while the body streams, after the commit
    "stream-early": 8,  # the server closes the body after 0-2 chunks
    "stream-error": 4,  # the body raises half-way
    "write-stream-early": 6,  # writes, streams, closed after 0-1 chunk
    "conflict-in-view": 8,  # ConflictError in the view, then success
    "conflict-at-commit": 8,  # a real ConflictError at commit, then success
    "always-conflict": 2,  # retries used up: 503
    "context-write": 3,  # test_request_context, committed at pop
    "context-fail": 3,  # app_context ended by an error: aborted
}


class LeakApp:
    """A Flask app with one view per way a request can end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        app = self.app = Flask(__name__)
        app.config.update(
            ZODB_STORAGE=f"file://{path}",
            ZODB_POOL_SIZE=POOL_SIZE,
            ZODB_RETRY_ATTEMPTS=ATTEMPTS,
            PROPAGATE_EXCEPTIONS=False,
        )
        db = self.db = ZODB(app)
        #: Every connection a view used, by id, kept alive on purpose.
        self.used: dict[int, Any] = {}
        self.attempts: Counter[str] = Counter()
        self.peak = 0

        connected = self.connected

        @app.get("/ping")
        def ping() -> str:
            assert not db.is_connected
            return "pong"

        @app.get("/read/<key>")
        def read(key: str) -> str:
            return str(connected().get(key, "-"))

        @app.post("/write/<key>")
        def write(key: str) -> str:
            connected()[key] = request.form["value"]
            return "ok"

        @app.post("/write-redirect/<key>")
        def write_redirect(key: str) -> Any:
            connected()[key] = request.form["value"]
            return redirect(url_for("read", key=key))

        @app.post("/write-fail/<key>")
        def write_fail(key: str) -> str:
            connected()[key] = request.form["value"]
            raise RuntimeError("the view failed after writing")

        @app.post("/write-404/<key>")
        def write_404(key: str) -> str:
            connected()[key] = request.form["value"]
            abort(404)

        @app.post("/write-400/<key>")
        def write_400(key: str) -> Any:
            connected()[key] = request.form["value"]
            return "refused", 400

        @app.get("/stream")
        def stream() -> Response:
            def chunks() -> Any:
                # Reads the database while the body is sent, after the commit.
                for i in range(5):
                    yield f"{i}:{len(connected())}\n"

            return Response(stream_with_context(chunks()))

        @app.get("/stream-error")
        def stream_error() -> Response:
            def chunks() -> Any:
                yield f"{len(connected())}\n"
                raise RuntimeError("the body failed half-way")

            return Response(stream_with_context(chunks()))

        @app.post("/write-stream/<key>")
        def write_stream(key: str) -> Response:
            connected()[key] = request.form["value"]

            def chunks() -> Any:
                for i in range(5):
                    yield f"{i}:{connected().get(key)}\n"

            return Response(stream_with_context(chunks()))

        @app.post("/conflict-in-view/<key>")
        def conflict_in_view(key: str) -> str:
            connected()[key] = request.form["value"]
            self.attempts[key] += 1
            if self.attempts[key] == 1:
                raise ConflictError("a conflict raised by the view")
            return "ok"

        @app.post("/conflict-at-commit/<key>")
        def conflict_at_commit(key: str) -> str:
            root = connected()
            root.get(key)  # the root is now read in this transaction
            self.attempts[key] += 1
            if self.attempts[key] == 1:
                # Another connection changes the root and commits first: this
                # request's commit then fails with a real ConflictError.
                side_manager = transaction.TransactionManager()
                side = db.create_db(app).open(transaction_manager=side_manager)
                self.used[id(side)] = side
                try:
                    side.root()["_side"] = side.root().get("_side", 0) + 1
                    side_manager.commit()
                finally:
                    side.close()
            root[key] = request.form["value"]
            return "ok"

        @app.post("/always-conflict/<key>")
        def always_conflict(key: str) -> str:
            connected()[key] = request.form["value"]
            raise ConflictError("a conflict that never goes away")

    def connected(self) -> ZODB:
        """The facade, once its connection is open (and remembered)."""
        connection = self.db.connection
        self.used[id(connection)] = connection
        self.peak = max(self.peak, len(self.pool.all))
        return self.db

    @property
    def pool(self) -> Any:
        return self.db.create_db(self.app).pool

    def check_pool(self) -> None:
        pool = self.pool
        checked_out = [c for c in pool.all if c.opened is not None]
        assert not checked_out, f"connections still checked out: {checked_out}"
        assert len(pool.available) == len(pool.all)
        assert all(c.opened is None for c in self.used.values())
        self.peak = max(self.peak, len(pool.all))


def early_closed(app: Flask, path: str, chunks: int, form: dict[str, str] | None = None) -> str:
    """Call *app* as a server would, read *chunks* chunks, then close the body."""
    builder = EnvironBuilder(path=path, method="POST" if form else "GET", data=form)
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)
        return lambda data: None

    body = app(environ, start_response)
    try:
        for _ in itertools.islice(body, chunks):
            pass
    finally:
        body.close()  # type: ignore[attr-defined]
    return statuses[0]


def stored(path: Path) -> dict[str, Any]:
    """What the FileStorage at *path* holds, read by a database of its own."""
    db = DB(FileStorage(str(path), read_only=True))
    try:
        with db.transaction() as connection:
            return dict(connection.root())
    finally:
        db.close()


@pytest.fixture
def leak_app(tmp_path: Path) -> Any:
    leaks = LeakApp(tmp_path / "Data.fs")
    try:
        yield leaks
    finally:
        leaks.app.extensions["zodb"].database.close()


def test_a_request_without_the_database_opens_nothing(leak_app: LeakApp) -> None:
    client = webtest.TestApp(leak_app.app)
    database = leak_app.app.extensions["zodb"].database

    assert client.get("/ping").text == "pong"
    assert not database.is_open  # not even the ZODB.DB was opened

    client.post("/write/a", {"value": "1"})
    zodb = leak_app.db.create_db(leak_app.app)
    pool = list(zodb.pool.available)  # (time returned to the pool, connection)
    last = zodb.lastTransaction()
    assert len(pool) == 1

    for _ in range(20):
        assert client.get("/ping").text == "pong"
    # The same entries, not re-pushed: no connection left the pool and came back.
    assert all(a is b for a, b in zip(zodb.pool.available, pool, strict=True))
    assert zodb.lastTransaction() == last
    leak_app.check_pool()


@pytest.mark.slow
def test_a_thousand_mixed_requests_leak_nothing(
    leak_app: LeakApp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="ZODB.DB")
    app = leak_app.app
    client = webtest.TestApp(app)
    thread_manager = transaction.manager.manager
    rng = random.Random(20240601)
    expected: dict[str, Any] = {}
    side_commits = 0
    kinds = Counter[str]()

    for n in range(1000):
        key, value = f"k{n}", f"v{n}"
        form = {"value": value}
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        kinds[kind] += 1
        if kind == "ping":
            client.get("/ping")
        elif kind == "read":
            known = rng.choice([*expected, "missing"])
            assert client.get(f"/read/{known}").text == expected.get(known, "-")
        elif kind == "write":
            client.post(f"/write/{key}", form)
            expected[key] = value
        elif kind == "redirect":
            assert client.post(f"/write-redirect/{key}", form, status=302).follow().text == value
            expected[key] = value
        elif kind == "fail":
            client.post(f"/write-fail/{key}", form, status=500)
        elif kind == "404":
            client.post(f"/write-404/{key}", form, status=404)
        elif kind == "400":
            client.post(f"/write-400/{key}", form, status=400)
        elif kind == "stream":
            lines = client.get("/stream").text.splitlines()
            assert lines == [f"{i}:{len(expected) + bool(side_commits)}" for i in range(5)]
        elif kind == "stream-early":
            assert early_closed(app, "/stream", chunks=rng.choice([0, 1, 2])) == "200 OK"
        elif kind == "stream-error":
            with pytest.raises(RuntimeError, match="half-way"):
                early_closed(app, "/stream-error", chunks=10)
        elif kind == "write-stream-early":
            status = early_closed(app, f"/write-stream/{key}", chunks=rng.choice([0, 1]), form=form)
            assert status == "200 OK"
            expected[key] = value  # committed before the first chunk was sent
        elif kind == "conflict-in-view":
            client.post(f"/conflict-in-view/{key}", form)
            assert leak_app.attempts[key] == 2
            expected[key] = value
        elif kind == "conflict-at-commit":
            client.post(f"/conflict-at-commit/{key}", form)
            assert leak_app.attempts[key] == 2
            expected[key] = value
            side_commits += 1
        elif kind == "always-conflict":
            response = client.post(f"/always-conflict/{key}", form, status=503)
            assert response.headers["Retry-After"]
        elif kind == "context-write":
            # Outside any WSGI call: the facade's own handle, committed at pop.
            with app.test_request_context():
                leak_app.connected()[key] = value
            expected[key] = value
        else:
            with pytest.raises(KeyError), app.app_context():
                leak_app.connected()[key] = value
                raise KeyError(key)  # the context ends with an error: aborted
        leak_app.check_pool()
        assert transaction.manager.manager is thread_manager

    assert set(kinds) == set(KINDS), kinds
    assert leak_app.peak <= POOL_SIZE
    assert len(leak_app.used) <= POOL_SIZE
    assert not [r for r in caplog.records if r.name == "ZODB.DB"]
    zodb = leak_app.db.create_db(app)
    assert all(info["opened"] is None for info in zodb.connectionDebugInfo())

    leak_app.app.extensions["zodb"].database.close()
    assert stored(leak_app.path) == {**expected, "_side": side_commits}
