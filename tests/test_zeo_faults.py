"""A ZEO server that goes away, and comes back.

While the server is down, a request that needs it gets, within a few
seconds (the client's ``wait_timeout``, 5 s unless the URI says otherwise),
a 503 whose body says the database is unreachable, with ``Retry-After``;
it does not hang until its worker is killed, and it is not reported as a
conflict ("busy"). Nothing is left broken: once the server is back on the
same port, the same connection pool, the same process and, under gunicorn,
the same workers serve again, without a restart. No acknowledged increment
is lost.

The first tests run the app in this process with a short ``wait_timeout``;
the last one runs gunicorn with four workers and the default.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import transaction
import webtest
import ZODB
from apps.counter_app import create_app
from apps.serving import Gunicorn, Reply, ZEOServer, call, gunicorn
from flask import Flask
from persistent.mapping import PersistentMapping

from flask_zodb import ZODB as FlaskZODB
from zodb_wsgi import Database, resolve_storage
from zodb_wsgi.middleware import UNREACHABLE_RETRY_AFTER
from zodb_wsgi.storage import DEFAULT_ZEO_WAIT_TIMEOUT

pytestmark = pytest.mark.slow

WAIT = 1  # the in-process tests' wait_timeout, in seconds
THINK = 0.05  # each client's pause between requests under gunicorn, in seconds


def assert_unreachable(response: webtest.TestResponse, started: float) -> None:
    assert response.status_int == 503
    assert "unreachable" in response.text and "busy" not in response.text
    assert response.headers["Retry-After"] == str(UNREACHABLE_RETRY_AFTER)
    # One wait for the server, and perhaps a second one while aborting.
    assert time.monotonic() - started < 2 * WAIT + 2


def wait_until_connected(database: Database, timeout: float = 15.0) -> None:
    """Wait until the ZEO client of each of *database*'s databases is back."""
    deadline = time.monotonic() + timeout
    for member in database.get().databases.values():
        while not member.storage.is_connected():
            assert time.monotonic() < deadline, "the ZEO client did not reconnect"
            time.sleep(0.05)


def assert_pool_is_whole(database: Database) -> None:
    pool = database.get().pool
    # Every connection the requests used is back, none lost or left open.
    assert len(pool.available) == len(pool.all) >= 1


@pytest.fixture
def stopped_zeo(tmp_path: Path) -> Iterator[ZEOServer]:
    """A ZEO server that is not running yet; the test starts it."""
    directory = tmp_path / "zeo-stopped"
    directory.mkdir()
    server = ZEOServer(directory)
    try:
        yield server
    finally:
        server.stop()


def test_a_server_down_at_the_first_request_gets_a_quick_503_then_recovers(
    stopped_zeo: ZEOServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(ZODB_STORAGE=stopped_zeo.uri(wait_timeout=WAIT))
    test_app = webtest.TestApp(app)
    try:
        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="zodb_wsgi"):
            assert_unreachable(test_app.post("/increment", status=503), started)
        (line,) = [r.getMessage() for r in caplog.records if r.name == "zodb_wsgi"]
        assert f"cannot open ZODB_STORAGE zeo://{stopped_zeo.address}" in line
        assert "ClientDisconnected" in line

        stopped_zeo.start()
        assert test_app.post("/increment").json["count"] == 1
        assert_pool_is_whole(app.extensions["zodb"].database)
    finally:
        app.extensions["zodb"].database.close()


def test_a_commit_while_the_server_is_away_gets_503_and_nothing_stays_broken(
    zeo_server: ZEOServer,
) -> None:
    app = create_app(ZODB_STORAGE=zeo_server.uri(wait_timeout=WAIT))
    database = app.extensions["zodb"].database
    test_app = webtest.TestApp(app)
    try:
        assert test_app.post("/increment").json["count"] == 1
        zeo_server.stop()
        for _ in range(2):  # again, on the connection that just failed
            started = time.monotonic()
            # The counter is read from the client's cache; the commit fails.
            assert_unreachable(test_app.post("/increment", status=503), started)
        assert_pool_is_whole(database)

        zeo_server.start()
        wait_until_connected(database)
        # The failed increments were not stored, and the pool works again.
        assert test_app.post("/increment").json["count"] == 2
        assert test_app.get("/count").json["count"] == 2
        assert_pool_is_whole(database)
    finally:
        database.close()


def test_a_load_in_the_view_while_the_server_is_away_gets_503(
    zeo_server: ZEOServer, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask(__name__)
    app.config["ZODB_STORAGE"] = zeo_server.uri(wait_timeout=WAIT)
    db = FlaskZODB(app)

    @app.get("/note")
    def note() -> str:
        return str(db["note"]["text"]) if "note" in db else "none"

    database = app.extensions["zodb"].database
    test_app = webtest.TestApp(app)
    try:
        assert test_app.get("/note").text == "none"
        # Another client writes an object that this one has never loaded.
        factory, kwargs = resolve_storage(zeo_server.uri())
        other = ZODB.DB(factory(), **kwargs)
        try:
            with other.transaction() as connection:
                connection.root()["note"] = PersistentMapping(text="hello")
        finally:
            other.close()
        time.sleep(0.2)  # let the invalidation reach this client
        zeo_server.stop()

        started = time.monotonic()
        with caplog.at_level(logging.ERROR, logger="zodb_wsgi"):
            assert_unreachable(test_app.get("/note", status=503), started)
        logged = [r.getMessage() for r in caplog.records if r.name == "zodb_wsgi"]
        assert any(f"zeo://{zeo_server.address}" in line for line in logged), logged
        assert_pool_is_whole(database)

        zeo_server.start()
        wait_until_connected(database)
        assert test_app.get("/note").text == "hello"
        assert_pool_is_whole(database)
    finally:
        database.close()
        transaction.abort()


def test_a_second_database_whose_server_is_away_gets_503(
    zeo_server: ZEOServer, stopped_zeo: ZEOServer
) -> None:
    # The main database's server answers; the catalog's goes away. The
    # request is not retried as if it were a conflict (each attempt would
    # wait for the catalog's server again).
    stopped_zeo.start()
    app = Flask(__name__)
    app.config["ZODB_STORAGE"] = zeo_server.uri(wait_timeout=WAIT)
    app.config["ZODB_DATABASES"] = {"catalog": stopped_zeo.uri(wait_timeout=WAIT)}
    db = FlaskZODB(app)

    @app.post("/index")
    def index() -> str:
        db["hits"] = db.get("hits", 0) + 1
        catalog = db.get_root("catalog")
        catalog["entries"] = catalog.get("entries", 0) + 1
        return str(catalog["entries"])

    database = app.extensions["zodb"].database
    test_app = webtest.TestApp(app)
    try:
        assert test_app.post("/index").text == "1"
        stopped_zeo.stop()
        started = time.monotonic()
        assert_unreachable(test_app.post("/index", status=503), started)
        stopped_zeo.start()
        wait_until_connected(database)
        assert test_app.post("/index").text == "2"
    finally:
        database.close()


def test_gunicorn_workers_ride_out_a_zeo_restart(stopped_zeo: ZEOServer, tmp_path: Path) -> None:
    """Four workers, eight clients, the default wait_timeout; the server is
    down at the first request and goes away once more in the middle."""
    outage = DEFAULT_ZEO_WAIT_TIMEOUT + 2  # long enough for waits to run out
    log = tmp_path / "gunicorn.log"
    with gunicorn(f"zeo://{stopped_zeo.address}", log, workers=4) as server:
        workers = server.wait_for_workers(4)

        # Down at the first request: a clear 503 after one wait, no hang.
        first = call(server.port, "POST", "/increment")
        assert first.status == 503 and "unreachable" in first.body, first
        assert first.seconds < DEFAULT_ZEO_WAIT_TIMEOUT + 3
        stopped_zeo.start()

        replies: list[tuple[float, Reply]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                reply = call(server.port, "POST", "/increment")
                with lock:
                    replies.append((sent, reply))
                # A pause between requests, as real clients make: saturating
                # four workers with writes to one object is another test's
                # business (test_concurrency_processes).
                time.sleep(THINK if reply.status == 200 else 0.1)

        clients = [threading.Thread(target=client, daemon=True) for _ in range(8)]
        for thread in clients:
            thread.start()
        try:
            wait_for(lambda: sum(r.status == 200 for _, r in replies) >= 40, 30, server)
            stopped_zeo.stop()
            down = time.monotonic()
            time.sleep(outage)
            stopped_zeo.start()
            up = time.monotonic()

            def every_worker_serves_again() -> bool:
                with lock:
                    pids = {r.data["pid"] for sent, r in replies if sent > up and r.status == 200}
                return pids == workers

            wait_for(every_worker_serves_again, 40, server)
        finally:
            stop.set()
            for thread in clients:
                thread.join(60)
        assert not any(thread.is_alive() for thread in clients)
        assert server.worker_pids() == workers, "a worker was restarted"
        final = call(server.port, "GET", "/count").data["count"]

    ok = [r for _, r in replies if r.status == 200]
    failed = [(sent, r) for sent, r in replies if r.status != 200]
    assert failed, "no request met the outage"
    for sent, reply in failed:
        assert reply.status == 503, reply
        assert "unreachable" in reply.body and "busy" not in reply.body, reply.body
        assert reply.retry_after == str(UNREACHABLE_RETRY_AFTER)
        assert down - 1 < sent < up + DEFAULT_ZEO_WAIT_TIMEOUT, "a 503 outside the outage"
    # Nobody waited anywhere near the worker timeout (30 s).
    assert max(r.seconds for _, r in replies) < 3 * DEFAULT_ZEO_WAIT_TIMEOUT
    counts = [r.data["count"] for r in ok]
    assert len(set(counts)) == len(counts), "two responses acknowledged the same value"
    # No acknowledged increment is lost; at most the unacknowledged ones
    # (a commit cut off after the server stored it) were stored as well.
    assert len(ok) <= final <= len(ok) + len(failed)
    text = log.read_text()
    assert "WORKER TIMEOUT" not in text, text
    assert "the database is unreachable" in text, text


def wait_for(condition: Callable[[], bool], timeout: float, server: Gunicorn) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out:\n{server.log_text}"
        time.sleep(0.1)
