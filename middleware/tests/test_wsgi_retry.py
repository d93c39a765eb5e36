"""Conflicts are retried: the request runs again from the start, and only
the attempt that succeeds reaches the client."""

from __future__ import annotations

import logging

import pytest
import transaction
import webtest
from ZODB.POSException import ConflictError, POSKeyError, ReadConflictError

from zodb_wsgi import UnstorableValueError, ZODBMiddleware


def commit_meanwhile(handle, key="count", step=10):
    """Another connection of the same database (as another thread or process
    would) commits a change to the root, which the request has already read
    and changed: the request's own commit then meets a real ConflictError."""
    db = handle.database.get()
    manager = transaction.TransactionManager()
    other = db.open(transaction_manager=manager)
    try:
        root = other.root()
        root[key] = root.get(key, 0) + step
        manager.commit()
    finally:
        other.close()


def test_a_real_conflict_at_commit_is_retried(wrap, stored):
    attempts = []
    errors = []

    def app(environ, start_response):
        handle = environ["zodb"]
        attempts.append(handle.attempt)
        root = handle.root
        root["count"] = root.get("count", 0) + 1
        if handle.attempt == 1:
            commit_meanwhile(handle)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"count %d" % root["count"]]

    middleware = wrap(app, on_retry=lambda environ, attempt, error: errors.append(error))
    response = webtest.TestApp(middleware).post("/")
    assert attempts == [1, 2]
    assert type(errors[0]) is ConflictError  # raised by the storage at commit
    # The retry started over from the other's commit: nothing was lost.
    assert stored(middleware) == {"count": 11}
    assert response.text == "count 11"


def test_nothing_of_a_failed_attempt_reaches_the_client(wrap, server):
    def app(environ, start_response):
        handle = environ["zodb"]
        root = handle.root
        root["count"] = root.get("count", 0) + 1
        if handle.attempt == 1:
            commit_meanwhile(handle)
            write = start_response("201 Created", [("X-Attempt", "1")])
            write(b"written by the first attempt")
            return [b"the first attempt's body"]
        start_response("200 OK", [("X-Attempt", "2")])
        return [b"the second attempt's body"]

    srv = server(wrap(app))
    assert srv("/", method="POST") == b"the second attempt's body"
    assert srv.started == [("200 OK", [("X-Attempt", "2")], None)]


@pytest.mark.parametrize("error", [ConflictError, ReadConflictError])
def test_a_conflict_raised_in_the_view_is_retried(wrap, stored, error):
    attempts = []

    def app(environ, start_response):
        handle = environ["zodb"]
        attempts.append(handle.attempt)
        handle.root["written by attempt"] = handle.attempt
        if handle.attempt < 3:
            raise error("somebody else changed it")
        start_response("200 OK", [])
        return [b"ok"]

    middleware = wrap(app)
    assert webtest.TestApp(middleware).post("/").text == "ok"
    assert attempts == [1, 2, 3]
    assert stored(middleware) == {"written by attempt": 3}


def test_each_attempt_starts_from_a_fresh_copy_of_the_environ(wrap, server):
    seen = []

    def app(environ, start_response):
        handle = environ["zodb"]
        seen.append((environ["PATH_INFO"], "app.cache" in environ, handle))
        environ["PATH_INFO"] = "/rewritten"
        environ["app.cache"] = object()
        if handle.attempt == 1:
            raise ConflictError()
        start_response("200 OK", [])
        return [b""]

    srv = server(wrap(app))
    request = srv.request("/original")
    srv(request)
    (path1, cached1, handle1), (path2, cached2, handle2) = seen
    assert (path1, cached1) == (path2, cached2) == ("/original", False)
    assert handle1 is not handle2
    assert request.environ["PATH_INFO"] == "/original"


def test_the_retry_hook_is_called_before_each_retry(wrap, server, caplog):
    calls = []

    def app(environ, start_response):
        if environ["zodb"].attempt < 3:
            raise ReadConflictError()
        start_response("200 OK", [])
        return [b""]

    def on_retry(environ, attempt, error):
        calls.append((environ["PATH_INFO"], attempt, type(error)))

    srv = server(wrap(app, on_retry=on_retry, attempts=5))
    with caplog.at_level(logging.INFO, logger="zodb_wsgi"):
        srv("/hooked")
    assert calls == [("/hooked", 1, ReadConflictError), ("/hooked", 2, ReadConflictError)]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert messages == [
        "ReadConflictError on attempt 1 of 5 for GET /hooked; retrying",
        "ReadConflictError on attempt 2 of 5 for GET /hooked; retrying",
    ]


def test_giving_up_answers_503_and_logs(wrap, server, stored, caplog):
    attempts = []

    def app(environ, start_response):
        handle = environ["zodb"]
        attempts.append(handle.attempt)
        handle.root["request"] = "must never be stored"
        handle.root.get("count")
        commit_meanwhile(handle)  # every attempt loses the race
        start_response("200 OK", [])
        return [b"stored"]

    middleware = wrap(app, attempts=3)
    srv = server(middleware)
    with caplog.at_level(logging.WARNING, logger="zodb_wsgi"):
        body = srv("/busy", method="POST")
    assert attempts == [1, 2, 3]
    assert srv.status == "503 Service Unavailable"
    assert srv.headers["Retry-After"] == "1"
    assert srv.headers["Content-Type"].startswith("text/plain")
    assert b"nothing was changed" in body
    assert stored(middleware) == {"count": 30}  # only the others' commits
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "POST /busy" in message
    assert "3 attempt(s)" in message
    assert "ConflictError" in message


def test_one_attempt_means_no_retry(wrap, server):
    attempts = []

    def app(environ, start_response):
        attempts.append(environ["zodb"].attempt)
        raise ConflictError()

    srv = server(wrap(app, attempts=1))
    srv("/")
    assert attempts == [1]
    assert srv.status == "503 Service Unavailable"


def test_request_retry_retries_an_error_the_app_turned_into_a_response(wrap, server):
    attempts = []

    def app(environ, start_response):
        handle = environ["zodb"]
        attempts.append(handle.attempt)
        if handle.attempt == 1:
            try:
                raise ConflictError("caught by the framework's error handler")
            except ConflictError as error:
                handle.request_retry(error)
            start_response("500 Internal Server Error", [])
            return [b"error page"]
        start_response("200 OK", [])
        return [b"fine"]

    srv = server(wrap(app))
    assert srv("/") == b"fine"
    assert attempts == [1, 2]
    assert srv.status == "200 OK"


def unstorable(handle):
    handle.root["x"] = lambda: None


def missing_object(handle):
    handle.connection.get(b"\0\0\0\0\0\0\x10\x00")  # no such oid: a real POSKeyError


def plain_error(handle):
    raise ValueError("not a conflict")


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        (unstorable, UnstorableValueError),
        (missing_object, POSKeyError),
        (plain_error, ValueError),
    ],
)
def test_other_errors_are_not_retried(wrap, server, fail, error):
    attempts = []

    def app(environ, start_response):
        attempts.append(environ["zodb"].attempt)
        fail(environ["zodb"])
        start_response("200 OK", [])
        return [b""]

    with pytest.raises(error):
        server(wrap(app))("/")
    assert attempts == [1]


@pytest.mark.parametrize("attempts", [0, -1, True, 2.5, "3"])
def test_attempts_must_be_a_positive_integer(attempts):
    with pytest.raises(ValueError, match="attempts must be an integer of 1 or more"):
        ZODBMiddleware(lambda e, s: [], "memory://", attempts=attempts)
