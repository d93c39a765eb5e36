"""Side effects registered with ``handle.after_commit``: once, and only when
the request's transaction was stored."""

from __future__ import annotations

import logging

import pytest
import transaction
import webtest
from ZODB.POSException import ConflictError


def test_a_callback_runs_once_after_the_commit(wrap, stored):
    seen = []
    middleware = None

    def app(environ, start_response):
        environ["zodb"].root["order"] = "placed"
        environ["zodb"].after_commit(lambda: seen.append(stored(middleware).get("order")))
        start_response("200 OK", [])
        return [b""]

    middleware = wrap(app)
    webtest.TestApp(middleware).post("/")
    assert seen == ["placed"]  # once, and the data was already stored


def test_callbacks_run_in_the_order_they_were_added(wrap):
    seen = []

    def app(environ, start_response):
        environ["zodb"].root["x"] = 1
        for name in "abc":
            environ["zodb"].after_commit(lambda name=name: seen.append(name))
        start_response("200 OK", [])
        return [b""]

    webtest.TestApp(wrap(app)).post("/")
    assert seen == ["a", "b", "c"]


@pytest.mark.parametrize("reads", [False, True])
def test_a_request_that_writes_nothing_still_runs_its_callbacks(wrap, reads):
    seen = []

    def app(environ, start_response):
        if reads:
            environ["zodb"].root.get("x")
        environ["zodb"].after_commit(lambda: seen.append("sent"))
        start_response("200 OK", [])
        return [b""]

    webtest.TestApp(wrap(app)).post("/")
    assert seen == ["sent"]


ABORTING = {
    "error status": lambda environ, start_response: start_response("500 Oops", []),
    "header": lambda environ, start_response: start_response(
        "200 OK", [("X-ZODB-Transaction", "abort")]
    ),
    "doom": lambda environ, start_response: (
        transaction.doom(),
        start_response("200 OK", []),
    ),
}


@pytest.mark.parametrize("how", ABORTING)
def test_a_callback_never_runs_when_the_transaction_aborts(wrap, stored, how):
    seen = []

    def app(environ, start_response):
        environ["zodb"].root["x"] = 1
        environ["zodb"].after_commit(lambda: seen.append("ran"))
        ABORTING[how](environ, start_response)
        return [b""]

    middleware = wrap(app)
    webtest.TestApp(middleware).post("/", status="*")
    assert seen == []
    assert stored(middleware) == {}


def test_a_callback_never_runs_when_the_app_raises(wrap):
    seen = []

    def app(environ, start_response):
        environ["zodb"].root["x"] = 1
        environ["zodb"].after_commit(lambda: seen.append("ran"))
        raise LookupError("no")

    with pytest.raises(LookupError):
        webtest.TestApp(wrap(app)).post("/")
    assert seen == []


def test_a_retried_attempts_callbacks_are_dropped(wrap):
    seen = []

    def app(environ, start_response):
        handle = environ["zodb"]
        handle.root["x"] = handle.attempt
        handle.after_commit(lambda: seen.append(handle.attempt))
        if handle.attempt < 3:
            raise ConflictError("try again")
        start_response("200 OK", [])
        return [b""]

    webtest.TestApp(wrap(app)).post("/")
    assert seen == [3]


def test_a_failing_callback_is_logged_and_does_not_undo(wrap, stored, caplog):
    seen = []

    def boom():
        raise RuntimeError("the mail server is down")

    def app(environ, start_response):
        environ["zodb"].root["x"] = 1
        environ["zodb"].after_commit(boom)
        environ["zodb"].after_commit(lambda: seen.append("next one still runs"))
        start_response("200 OK", [])
        return [b"done"]

    middleware = wrap(app)
    with caplog.at_level(logging.ERROR, logger="zodb_wsgi"):
        response = webtest.TestApp(middleware).post("/")
    assert response.text == "done"
    assert stored(middleware) == {"x": 1}
    assert seen == ["next one still runs"]
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert "after-commit callback" in record.getMessage()
    assert "boom" in record.getMessage()
    assert "the mail server is down" in str(record.exc_info[1])
