"""The blinker signals of flask_zodb.signals, sent by the application."""

from __future__ import annotations

import contextlib

import pytest
import transaction
from flask import Flask, request
from persistent.mapping import PersistentMapping
from ZODB.POSException import ConflictError

from flask_zodb import ZODB, signals
from flask_zodb.signals import SignalEvents
from zodb_wsgi import RequestEvents, ZODBHandle, ZODBMiddleware

ALL = {
    "connection_opened": signals.connection_opened,
    "before_commit": signals.before_commit,
    "after_commit": signals.after_commit,
    "after_abort": signals.after_abort,
}


@pytest.fixture
def received():
    """Connects a receiver to every signal; yields the list of what came."""
    calls: list[tuple[str, object, dict]] = []

    def receiver_for(name):
        def receive(sender, **extra):
            calls.append((name, sender, extra))

        return receive

    receivers = {name: receiver_for(name) for name in ALL}
    receivers["request_retried"] = receiver_for("request_retried")
    with contextlib.ExitStack() as stack:
        for name, signal in {**ALL, "request_retried": signals.request_retried}.items():
            stack.enter_context(signal.connected_to(receivers[name]))
        yield calls


def names(calls):
    return [name for name, _, _ in calls]


@pytest.fixture
def app_and_db(make_app, file_uri):
    app, db = make_app(file_uri)

    @app.post("/write")
    def write():
        db["key"] = request.form.get("value", "x")
        if request.form.get("fail"):
            return "refused", 400
        return "ok"

    @app.get("/read")
    def read():
        return str(db.get("key"))

    @app.get("/idle")
    def idle():
        return "idle"

    return app, db


def test_a_committing_request_sends_opened_before_and_after_commit(app_and_db, received):
    app, _ = app_and_db
    app.test_client().post("/write", data={"value": "1"})
    assert names(received) == ["connection_opened", "before_commit", "after_commit"]
    handles = {id(extra["handle"]) for _, _, extra in received}
    assert len(handles) == 1
    for _, sender, extra in received:
        assert sender is app
        assert isinstance(extra["handle"], ZODBHandle)
        assert extra["handle"].note == "POST /write"
        assert set(extra) == {"handle"}


def test_a_refused_request_sends_after_abort(app_and_db, received):
    app, _ = app_and_db
    app.test_client().post("/write", data={"value": "1", "fail": "1"})
    assert names(received) == ["connection_opened", "after_abort"]
    assert all(sender is app for _, sender, _ in received)
    assert app.test_client().get("/read").text == "None"


def test_a_request_that_does_not_use_the_database_sends_nothing(app_and_db, received):
    app, _ = app_and_db
    app.test_client().get("/idle")
    assert received == []


def test_a_read_only_request_sends_only_connection_opened(app_and_db, received):
    # Reading starts no transaction: there is nothing to commit or abort.
    app, _ = app_and_db
    app.test_client().post("/write", data={"value": "1"})
    received.clear()
    assert app.test_client().get("/read").text == "1"
    assert names(received) == ["connection_opened"]


def test_app_context_use_sends_the_signals_too(app_and_db, received):
    app, db = app_and_db
    with app.app_context():
        db["key"] = "from a context"
    assert names(received) == ["connection_opened", "before_commit", "after_commit"]
    assert all(sender is app for _, sender, _ in received)
    assert received[0][2]["handle"].note == "flask app context"

    received.clear()
    with pytest.raises(ZeroDivisionError), app.app_context():
        db["key"] = "lost"
        1 / 0  # noqa: B018
    assert names(received) == ["connection_opened", "after_abort"]
    assert app.test_client().get("/read").text == "from a context"


def test_test_request_context_use_sends_the_signals(app_and_db, received):
    app, db = app_and_db
    with app.test_request_context("/somewhere"):
        db["key"] = "v"
    assert names(received) == ["connection_opened", "before_commit", "after_commit"]
    assert received[0][2]["handle"].note == "GET /somewhere"


def test_signals_are_sent_only_for_the_app_they_are_connected_via(make_app, file_uri):
    one, db_one = make_app(file_uri)
    two, db_two = make_app("memory://")
    got = []

    def receive(sender, handle, **extra):
        got.append(sender)

    with signals.after_commit.connected_to(receive, sender=two):
        with one.app_context():
            db_one["a"] = 1
        with two.app_context():
            db_two["a"] = 1
    assert got == [two]


def test_request_retried_is_sent_with_the_attempt_and_the_error(make_app, file_uri, received):
    app, db = make_app(file_uri)
    database = app.extensions["zodb"].database

    @app.post("/count")
    def count():
        counter = db["counter"]
        counter["n"] += 1
        if db.handle.attempt == 1:
            other = database.get().open(transaction_manager=transaction.TransactionManager())
            other.root()["counter"]["n"] += 10
            other.transaction_manager.commit()
            other.close()
        return str(counter["n"])

    with app.app_context():
        db["counter"] = PersistentMapping(n=0)
    app.extensions["zodb"].middleware.backoff = 0
    received.clear()

    assert app.test_client().post("/count").text == "11"
    retried = [(sender, extra) for name, sender, extra in received if name == "request_retried"]
    assert len(retried) == 1
    sender, extra = retried[0]
    assert sender is app
    assert extra["attempt"] == 1
    assert isinstance(extra["error"], ConflictError)
    assert extra["environ"]["PATH_INFO"] == "/count"
    assert names(received) == [
        "connection_opened",
        "before_commit",
        "after_abort",
        "request_retried",
        "connection_opened",
        "before_commit",
        "after_commit",
    ]
    attempts = [extra["handle"].attempt for name, _, extra in received if "handle" in extra]
    assert attempts == [1, 1, 1, 2, 2, 2]


def test_without_receivers_nothing_is_sent(make_app, file_uri):
    # SignalEvents skips sending when no one listens; the request still works.
    app, db = make_app(file_uri)
    events = app.extensions["zodb"].events
    assert isinstance(events, SignalEvents)
    assert events.app is app
    for signal in (*ALL.values(), signals.request_retried):
        assert not signal.receivers
    with app.app_context():
        db["a"] = 1
    with pytest.raises(ZeroDivisionError), app.app_context():
        db["a"] = 2
        1 / 0  # noqa: B018
    events.retried({}, 1, ConflictError())
    with app.app_context():
        assert db["a"] == 1


def test_an_app_wrapped_by_hand_sends_the_signals_too(file_uri, received):
    app = Flask(__name__)
    app.config["TESTING"] = True
    app.wsgi_app = ZODBMiddleware(app.wsgi_app, file_uri, backoff=0)
    db = ZODB(app)
    database = app.extensions["zodb"].database

    @app.post("/count")
    def count():
        counter = db["counter"]
        counter["n"] += 1
        if db.handle.attempt == 1:
            other = database.get().open(transaction_manager=transaction.TransactionManager())
            other.root()["counter"]["n"] += 10
            other.transaction_manager.commit()
            other.close()
        return str(counter["n"])

    try:
        with app.app_context():
            db["counter"] = PersistentMapping(n=0)
        received.clear()
        assert app.test_client().post("/count", buffered=True).text == "11"
        assert names(received) == [
            "connection_opened",
            "before_commit",
            "after_abort",
            "request_retried",
            "connection_opened",
            "before_commit",
            "after_commit",
        ]
        assert all(sender is app for _, sender, _ in received)
    finally:
        database.close()


def test_a_hand_wrapped_middleware_keeps_its_own_hooks(file_uri):
    def own_retry(environ, attempt, error):
        pass  # pragma: no cover - no conflict here

    own_events = RequestEvents()
    app = Flask(__name__)
    app.wsgi_app = ZODBMiddleware(app.wsgi_app, file_uri, events=own_events, on_retry=own_retry)
    ZODB(app)
    try:
        assert app.wsgi_app.events is own_events
        assert app.wsgi_app.on_retry is own_retry
    finally:
        app.extensions["zodb"].database.close()
