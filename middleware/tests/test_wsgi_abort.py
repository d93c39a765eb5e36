"""When a request's transaction is aborted rather than committed: an error,
a doomed transaction, an error status, or the application's own say."""

from __future__ import annotations

import logging
import sys

import pytest
import transaction
import webtest

from zodb_wsgi import TRANSACTION_HEADER, default_commit_veto


def app_answering(status, headers=()):
    """An app that writes to the database, then answers *status*."""

    def app(environ, start_response):
        root = environ["zodb"].root
        root["count"] = root.get("count", 0) + 1
        start_response(status, [("Content-Type", "text/plain"), *headers])
        return [status.encode()]

    return app


def test_an_escaped_exception_aborts(wrap, stored):
    def app(environ, start_response):
        environ["zodb"].root["count"] = 1
        raise ValueError("the view failed")

    middleware = wrap(app)
    with pytest.raises(ValueError, match="the view failed"):
        webtest.TestApp(middleware).get("/")
    assert stored(middleware) == {}
    pool = middleware.database.get().pool
    assert len(pool.available) == len(pool.all)


def test_transaction_doom_in_the_app_aborts_but_answers(wrap, stored):
    def app(environ, start_response):
        environ["zodb"].root["count"] = 1
        transaction.doom()  # the thread's manager is the request's
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"only a preview"]

    middleware = wrap(app)
    response = webtest.TestApp(middleware).post("/")
    assert response.text == "only a preview"
    assert stored(middleware) == {}


def test_doom_through_the_handle_aborts(wrap, stored):
    def app(environ, start_response):
        environ["zodb"].root["count"] = 1
        environ["zodb"].doom()
        start_response("200 OK", [])
        return [b""]

    middleware = wrap(app)
    webtest.TestApp(middleware).post("/")
    assert stored(middleware) == {}


def test_transaction_get_in_the_app_is_the_requests_transaction(wrap):
    seen = []

    def app(environ, start_response):
        seen.append(transaction.get() is environ["transaction.manager"].get())
        seen.append(transaction.get().isDoomed())
        start_response("200 OK", [])
        return [b""]

    webtest.TestApp(wrap(app)).get("/")
    assert seen == [True, False]


@pytest.mark.parametrize("status", ["400 Bad Request", "404 Not Found", "409 Conflict"])
def test_a_4xx_status_aborts(wrap, stored, status):
    middleware = wrap(app_answering(status))
    webtest.TestApp(middleware).post("/", status="*")
    assert stored(middleware) == {}


@pytest.mark.parametrize("status", ["500 Internal Server Error", "503 Service Unavailable"])
def test_a_5xx_status_aborts(wrap, stored, status):
    middleware = wrap(app_answering(status))
    webtest.TestApp(middleware).post("/", status="*")
    assert stored(middleware) == {}


@pytest.mark.parametrize("status", ["200 OK", "201 Created", "202 Accepted"])
def test_a_2xx_status_commits(wrap, stored, status):
    middleware = wrap(app_answering(status))
    webtest.TestApp(middleware).post("/", status="*")
    assert stored(middleware) == {"count": 1}


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "303 See Other"])
def test_a_3xx_status_commits(wrap, stored, status):
    middleware = wrap(app_answering(status, [("Location", "http://localhost/next")]))
    webtest.TestApp(middleware).post("/", status="*")
    assert stored(middleware) == {"count": 1}


def test_the_default_veto_is_about_the_status_only():
    assert default_commit_veto({}, "404 Not Found", []) is True
    assert default_commit_veto({}, "500 Internal Server Error", []) is True
    assert default_commit_veto({}, "200 OK", []) is False
    assert default_commit_veto({}, "302 Found", []) is False


def test_the_header_can_commit_an_error_response(wrap, stored):
    middleware = wrap(app_answering("422 Unprocessable Entity", [(TRANSACTION_HEADER, "commit")]))
    response = webtest.TestApp(middleware).post("/", status=422)
    assert stored(middleware) == {"count": 1}
    assert TRANSACTION_HEADER not in response.headers


def test_the_header_can_abort_a_success(wrap, stored):
    middleware = wrap(app_answering("200 OK", [("x-zodb-transaction", " Abort ")]))
    response = webtest.TestApp(middleware).post("/")
    assert response.text == "200 OK"
    assert stored(middleware) == {}
    assert TRANSACTION_HEADER not in response.headers


@pytest.mark.parametrize(("status", "kept"), [("200 OK", {"count": 1}), ("500 Oops", {})])
def test_an_invalid_header_is_logged_removed_and_the_veto_decides(
    wrap, stored, caplog, status, kept
):
    middleware = wrap(app_answering(status, [(TRANSACTION_HEADER, "maybe")]))
    with caplog.at_level(logging.WARNING, logger="zodb_wsgi"):
        response = webtest.TestApp(middleware).post("/", status="*")
    assert stored(middleware) == kept
    assert TRANSACTION_HEADER not in response.headers
    (record,) = [r for r in caplog.records if r.name == "zodb_wsgi"]
    assert record.levelno == logging.WARNING
    assert "'maybe'" in record.getMessage()
    assert "'commit' or 'abort'" in record.getMessage()


def test_a_custom_veto_decides(wrap, stored):
    calls = []

    def veto(environ, status, headers):
        calls.append((environ["PATH_INFO"], status, list(headers)))
        return environ.get("HTTP_X_DRY_RUN") == "1"

    middleware = wrap(
        app_answering("200 OK", [(TRANSACTION_HEADER, "COMMIT"), ("X-Other", "1")]),
        commit_veto=veto,
    )
    client = webtest.TestApp(middleware)
    # The header has the last word: the veto is not asked.
    client.post("/header", headers={"X-Dry-Run": "1"})
    assert stored(middleware) == {"count": 1}
    assert calls == []

    middleware.app = app_answering("500 Internal Server Error", [("X-Other", "1")])
    client.post("/dry", headers={"X-Dry-Run": "1"}, status=500)
    client.post("/real", status=500)  # the custom veto commits even a 500
    assert stored(middleware) == {"count": 2}
    assert calls == [
        ("/dry", "500 Internal Server Error", [("Content-Type", "text/plain"), ("X-Other", "1")]),
        ("/real", "500 Internal Server Error", [("Content-Type", "text/plain"), ("X-Other", "1")]),
    ]


def test_an_error_response_given_with_exc_info_replaces_the_first(wrap, server, stored):
    def app(environ, start_response):
        environ["zodb"].root["count"] = 1
        start_response("200 OK", [("Content-Type", "text/html")])
        try:
            raise KeyError("missing template")
        except KeyError:
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"something broke"]

    middleware = wrap(app)
    srv = server(middleware)
    assert srv("/") == b"something broke"
    ((status, headers, exc_info),) = srv.started
    assert status == "500 Internal Server Error"
    assert headers == [("Content-Type", "text/plain")]
    assert exc_info[0] is KeyError
    assert stored(middleware) == {}
