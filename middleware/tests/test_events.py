"""RequestEvents, RequestActivity and the Server-Timing header, without Flask.

Each application below runs under a real ZODBMiddleware on a real
FileStorage; the events are recorded by a RequestEvents subclass.
"""

from __future__ import annotations

import logging

import pytest
import transaction
import webtest
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError

from zodb_wsgi import Database, RequestActivity, RequestEvents, ZODBHandle, ZODBMiddleware


class Recorder(RequestEvents):
    """Records each event as (name, attempt), and the handles."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.handles: list[ZODBHandle] = []

    def _record(self, name: str, handle: ZODBHandle) -> None:
        self.calls.append((name, handle.attempt))
        self.handles.append(handle)

    def connection_opened(self, handle: ZODBHandle) -> None:
        assert handle.is_connected
        self._record("connection_opened", handle)

    def before_commit(self, handle: ZODBHandle) -> None:
        self._record("before_commit", handle)

    def after_commit(self, handle: ZODBHandle) -> None:
        self._record("after_commit", handle)

    def after_abort(self, handle: ZODBHandle) -> None:
        self._record("after_abort", handle)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def text(start_response, body="ok", status="200 OK", headers=()):
    start_response(status, [("Content-Type", "text/plain"), *headers])
    return [body.encode()]


def writer(environ, start_response):
    """Writes ``value`` from the query string (or 'x') to root['key']."""
    environ["zodb"].root["key"] = environ.get("QUERY_STRING") or "x"
    path = environ["PATH_INFO"]
    if path == "/doom":
        environ["zodb"].doom()
    if path == "/fail":
        raise ZeroDivisionError("the view failed")
    if path == "/bad":
        return text(start_response, "bad", "400 Bad Request")
    if path == "/header-abort":
        return text(start_response, headers=[("X-ZODB-Transaction", "abort")])
    return text(start_response)


def idle(environ, start_response):
    return text(start_response, "no database here")


@pytest.fixture
def serve(file_uri):
    """``serve(app, **options)`` -> (TestApp, middleware) over the FileStorage."""
    made = []

    def make(app, **options):
        middleware = ZODBMiddleware(app, file_uri, **options)
        made.append(middleware)
        return webtest.TestApp(middleware), middleware

    yield make
    for middleware in made:
        middleware.database.close()


def stored(middleware) -> dict:
    db = middleware.database.get()
    connection = db.open(transaction_manager=transaction.TransactionManager())
    try:
        return dict(connection.root())
    finally:
        connection.close()


# -- the order of the events ---------------------------------------------------


def test_a_commit_sends_opened_before_commit_after_commit(serve):
    events = Recorder()
    client, middleware = serve(writer, events=events)
    client.get("/", "v=1")
    assert events.names == ["connection_opened", "before_commit", "after_commit"]
    assert {id(h) for h in events.handles} == {id(events.handles[0])}
    assert events.handles[0].note == "GET /"
    assert stored(middleware) == {"key": "v=1"}


def test_a_request_that_does_not_use_the_database_sends_nothing(serve):
    events = Recorder()
    client, _ = serve(idle, events=events)
    assert client.get("/").text == "no database here"
    assert events.calls == []


def test_a_vetoed_request_is_aborted_with_after_abort(serve):
    events = Recorder()
    client, middleware = serve(writer, events=events)
    client.get("/bad", status=400)
    client.get("/header-abort")
    assert events.names == ["connection_opened", "after_abort"] * 2
    assert stored(middleware) == {}


def test_an_exception_in_the_app_sends_after_abort(serve):
    events = Recorder()
    client, middleware = serve(writer, events=events)
    with pytest.raises(ZeroDivisionError):
        client.get("/fail")
    assert events.names == ["connection_opened", "after_abort"]
    assert events.handles[-1].is_closed
    assert stored(middleware) == {}


def test_a_doomed_transaction_sends_after_abort(serve):
    events = Recorder()
    client, middleware = serve(writer, events=events)
    client.get("/doom")
    assert events.names == ["connection_opened", "after_abort"]
    assert stored(middleware) == {}


def test_a_real_conflict_is_retried_with_the_events_of_each_attempt(serve):
    events = Recorder()
    retries = []

    def on_retry(environ, attempt, error):
        retries.append((attempt, type(error)))

    def conflicting(environ, start_response):
        handle = environ["zodb"]
        counter = handle.root["counter"]
        counter["n"] += 1
        if handle.attempt == 1:
            # Another writer changes the same object and commits first.
            other = middleware.database.get().open(
                transaction_manager=transaction.TransactionManager()
            )
            other.root()["counter"]["n"] += 10
            other.transaction_manager.commit()
            other.close()
        return text(start_response, str(counter["n"]))

    client, middleware = serve(conflicting, events=events, on_retry=on_retry, backoff=0)
    with middleware.database.get().transaction() as connection:
        connection.root()["counter"] = PersistentMapping(n=0)

    assert client.post("/").text == "11"
    assert retries == [(1, ConflictError)]
    assert events.calls == [
        ("connection_opened", 1),
        ("before_commit", 1),
        ("after_abort", 1),
        ("connection_opened", 2),
        ("before_commit", 2),
        ("after_commit", 2),
    ]
    assert stored(middleware)["counter"]["n"] == 11


# -- events that raise -----------------------------------------------------------


class Failing(Recorder):
    def __init__(self, *failing: str) -> None:
        super().__init__()
        self.failing = failing

    def _record(self, name: str, handle: ZODBHandle) -> None:
        super()._record(name, handle)
        if name in self.failing:
            raise RuntimeError(f"{name} failed")


def test_an_after_abort_raising_in_close_is_logged_not_raised(serve, caplog):
    events = Failing("after_abort")
    client, middleware = serve(writer, events=events)
    with pytest.raises(ZeroDivisionError, match="the view failed"):
        client.get("/fail")
    assert events.names == ["connection_opened", "after_abort"]
    failures = [r for r in caplog.records if r.name == "zodb_wsgi" and "after_abort" in r.message]
    assert len(failures) == 1
    assert failures[0].exc_info[1].args == ("after_abort failed",)
    assert events.handles[-1].is_closed
    assert stored(middleware) == {}


def test_a_before_commit_raising_aborts_the_transaction(serve):
    events = Failing("before_commit")
    client, middleware = serve(writer, events=events)
    with pytest.raises(RuntimeError, match="before_commit failed"):
        client.get("/")
    assert events.names == ["connection_opened", "before_commit", "after_abort"]
    assert stored(middleware) == {}
    assert events.handles[-1].is_closed
    # The connection went back to the pool: the next request works.
    events.failing = ()
    client.get("/", "v=2")
    assert stored(middleware) == {"key": "v=2"}


def test_the_base_class_does_nothing(serve):
    client, middleware = serve(writer, events=RequestEvents())
    client.get("/", "v=3")
    assert stored(middleware) == {"key": "v=3"}


# -- activity ---------------------------------------------------------------------


def test_activity_counts_loads_after_a_cache_miss_and_stores_at_commit(serve):
    seen: list[RequestActivity] = []

    def app(environ, start_response):
        handle = environ["zodb"]
        if environ["REQUEST_METHOD"] == "POST":
            handle.root["tree"] = PersistentMapping(
                a=PersistentMapping(), b=PersistentMapping(), c=PersistentMapping()
            )
            seen.append(handle.activity)
            handle.after_commit(lambda: seen.append(handle.activity))
        else:
            tree = handle.root["tree"]
            assert len(tree["a"]) + len(tree["b"]) == 0  # reads both mappings
            seen.append(handle.activity)
        return text(start_response)

    client, middleware = serve(app)
    client.post("/")
    before, after = seen
    assert (before.stores, before.commit_seconds, before.attempt) == (0, 0.0, 1)
    # The root and the four new mappings are written.
    assert after.stores == 5
    assert after.commit_seconds > 0.0

    # Nothing in the cache: root, tree, a and b come from the storage.
    middleware.database.get().cacheMinimize()
    client.get("/")
    assert seen[-1] == RequestActivity(loads=4, stores=0, commit_seconds=0.0, attempt=1)

    # Now they are cached: the same request loads nothing.
    client.get("/")
    assert seen[-1].loads == 0


def test_activity_of_a_handle_that_never_connected(file_uri):
    handle = ZODBHandle(Database(file_uri), attempt=3)
    assert handle.activity == RequestActivity(0, 0, 0.0, 3)
    handle.close()


def test_server_timing_value():
    activity = RequestActivity(loads=3, stores=2, commit_seconds=0.0015, attempt=2)
    assert activity.server_timing() == (
        'zodb;dur=1.50;desc="commit", zodb-loads;desc="3", '
        'zodb-stores;desc="2", zodb-attempt;desc="2"'
    )


def test_server_timing_header_on_requests_that_used_the_database(serve):
    client, _ = serve(writer, server_timing=True)
    header = client.get("/", "v=1").headers["Server-Timing"]
    parts = [part.strip() for part in header.split(",")]
    assert parts[0].startswith("zodb;dur=")
    assert parts[0].endswith(';desc="commit"')
    assert float(parts[0].split("dur=")[1].split(";")[0]) > 0
    assert parts[1:] == [
        'zodb-loads;desc="0"',
        'zodb-stores;desc="1"',
        'zodb-attempt;desc="1"',
    ]
    # Aborted requests report too, with no commit time.
    aborted = client.get("/bad", status=400).headers["Server-Timing"]
    assert aborted.startswith('zodb;dur=0.00;desc="commit"')


def test_no_server_timing_header_without_the_database_or_when_off(serve):
    client, _ = serve(idle, server_timing=True)
    assert "Server-Timing" not in client.get("/").headers
    client, _ = serve(writer)
    assert "Server-Timing" not in client.get("/").headers


def test_activity_is_logged_at_debug(serve, caplog):
    client, _ = serve(writer)
    client.post("/items")
    assert not [r for r in caplog.records if r.name == "zodb_wsgi"]
    caplog.set_level(logging.DEBUG, logger="zodb_wsgi")
    client.post("/items")
    (record,) = [r for r in caplog.records if r.name == "zodb_wsgi"]
    assert record.levelno == logging.DEBUG
    assert record.getMessage().startswith("POST /items: 0 loads, 1 stores, commit ")
    assert record.getMessage().endswith(" ms, attempt 1")
