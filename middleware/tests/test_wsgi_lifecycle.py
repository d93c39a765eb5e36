"""A request's life with the database: handle in, connection out only when
used, everything back and gone when the request ends."""

from __future__ import annotations

import pytest
import transaction
import webtest
from transaction import TransactionManager
from ZODB.Connection import Connection

from zodb_wsgi import (
    HANDLE_KEY,
    MANAGER_KEY,
    HandleClosedError,
    NoHandleError,
    RequestTransactionManager,
    ZODBHandle,
    get_connection,
    get_handle,
    get_root,
)


def ok(start_response, body=b"ok"):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def test_the_handle_and_the_transaction_manager_are_in_the_environ(wrap):
    seen = {}

    def app(environ, start_response):
        seen["handle"] = environ["zodb"]
        seen["manager"] = environ["transaction.manager"]
        return ok(start_response)

    webtest.TestApp(wrap(app)).get("/")
    assert HANDLE_KEY == "zodb" and MANAGER_KEY == "transaction.manager"
    assert isinstance(seen["handle"], ZODBHandle)
    assert isinstance(seen["manager"], RequestTransactionManager)
    assert seen["manager"] is seen["handle"].transaction_manager


def test_a_request_that_never_touches_the_database_opens_nothing(wrap):
    seen = {}

    def app(environ, start_response):
        seen["connected"] = environ["zodb"].is_connected
        return ok(start_response)

    middleware = wrap(app)
    webtest.TestApp(middleware).get("/")
    assert seen["connected"] is False
    # Not even the database: the storage file was never created.
    assert not middleware.database.is_open


def test_a_request_that_never_touches_the_database_takes_no_connection(wrap):
    seen = {}
    middleware = None

    def app(environ, start_response):
        pool = middleware.database.get().pool
        seen["during"] = (len(pool.all), len(pool.available))
        return ok(start_response)

    middleware = wrap(app)
    pool = middleware.database.get().pool
    before = (len(pool.all), len(pool.available))
    webtest.TestApp(middleware).get("/")
    assert seen["during"] == before
    assert (len(pool.all), len(pool.available)) == before


def test_the_connection_opens_on_first_use_and_goes_back_to_the_pool(wrap):
    seen = {}

    def app(environ, start_response):
        handle = environ["zodb"]
        pool = handle.database.get().pool
        seen["idle"] = handle.is_connected
        available = len(pool.available)
        seen["connection"] = handle.connection
        seen["taken"] = available - len(pool.available)
        seen["same"] = handle.connection is seen["connection"]
        return ok(start_response)

    middleware = wrap(app)
    webtest.TestApp(middleware).get("/")
    assert seen["idle"] is False
    assert seen["taken"] == 1
    assert seen["same"]
    connection = seen["connection"]
    assert isinstance(connection, Connection)
    assert connection.opened is None  # closed...
    pool = middleware.database.get().pool
    assert connection in [c for _, c in pool.available]  # ...into the pool


def test_the_connection_stays_out_until_the_server_closes_the_body(wrap, server):
    def app(environ, start_response):
        environ["zodb"].root["seen"] = True
        return ok(start_response)

    middleware = wrap(app)
    pool = middleware.database.get().pool
    srv = server(middleware)
    result = middleware(srv.request("/").environ, srv.start_response)
    assert list(result) == [b"ok"]
    assert len(pool.available) == 0
    result.close()
    assert len(pool.available) == 1


@pytest.mark.parametrize("attempts", [1, 3])
def test_the_keys_are_removed_from_the_environ_after_the_request(wrap, server, attempts):
    seen = {}

    def app(environ, start_response):
        environ["zodb"].root["x"] = 1
        seen["environ"] = environ
        return ok(start_response)

    srv = server(wrap(app, attempts=attempts))
    request = srv.request("/")
    srv(request)
    assert HANDLE_KEY not in seen["environ"]
    assert MANAGER_KEY not in seen["environ"]
    assert HANDLE_KEY not in request.environ
    assert MANAGER_KEY not in request.environ
    with pytest.raises(NoHandleError, match="request has already ended"):
        get_handle(seen["environ"])


def test_a_handle_kept_after_its_request_refuses_to_be_used(wrap):
    kept = []

    def app(environ, start_response):
        handle = environ["zodb"]
        handle.root["x"] = 1
        kept.append(handle)
        return ok(start_response)

    webtest.TestApp(wrap(app)).get("/")
    handle = kept[0]
    assert handle.is_closed
    assert not handle.is_connected
    with pytest.raises(HandleClosedError) as error:
        _ = handle.connection
    message = str(error.value)
    assert "request that has ended" in message
    assert "environ['zodb']" in message
    with pytest.raises(HandleClosedError):
        _ = handle.root


def test_a_handle_that_never_connected_refuses_use_after_its_request(wrap):
    kept = []

    def app(environ, start_response):
        kept.append(environ["zodb"])
        return ok(start_response)

    webtest.TestApp(wrap(app)).get("/")
    with pytest.raises(HandleClosedError):
        _ = kept[0].root


def test_the_environ_helpers_reach_the_requests_database(wrap):
    seen = {}

    def app(environ, start_response):
        handle = get_handle(environ)
        seen["handle"] = handle is environ["zodb"]
        seen["connection"] = get_connection(environ) is handle.connection
        root = get_root(environ)
        seen["root"] = root is handle.connection.root()
        root["via helpers"] = True
        return ok(start_response)

    middleware = wrap(app)
    webtest.TestApp(middleware).get("/")
    assert seen == {"handle": True, "connection": True, "root": True}
    db = middleware.database.get()
    connection = db.open(transaction_manager=TransactionManager())
    try:
        assert connection.root()["via helpers"] is True
    finally:
        connection.close()


@pytest.mark.parametrize("helper", [get_handle, get_connection, get_root])
def test_the_helpers_say_what_to_do_outside_the_middleware(helper):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    with pytest.raises(NoHandleError) as error:
        helper(environ)
    assert "ZODBMiddleware" in str(error.value)
    assert "'zodb'" in str(error.value)
    assert isinstance(error.value, LookupError)


def test_the_thread_manager_reaches_the_request_and_is_restored_after(wrap):
    seen = {}
    before = transaction.manager.manager

    def app(environ, start_response):
        seen["same"] = transaction.get() is environ["zodb"].transaction
        seen["manager"] = transaction.manager.manager is environ["transaction.manager"]
        return ok(start_response)

    webtest.TestApp(wrap(app)).get("/")
    assert seen == {"same": True, "manager": True}
    assert transaction.manager.manager is before


def test_a_nested_middleware_of_the_same_database_passes_the_request_through(wrap, stored):
    seen = {}

    def app(environ, start_response):
        seen["handle"] = environ["zodb"]
        environ["zodb"].root["count"] = environ["zodb"].root.get("count", 0) + 1
        return ok(start_response)

    inner = wrap(app)
    outer = wrap(inner, inner.database)
    client = webtest.TestApp(outer)
    storage = outer.database.get().storage
    before = len(storage.undoLog(0, 100))
    client.get("/")
    client.get("/")
    # Only the outer one acted: one transaction per request, not two.
    assert stored(outer)["count"] == 2
    assert len(storage.undoLog(0, 100)) == before + 2
    assert seen["handle"].database is outer.database


def test_a_nested_middleware_of_another_database_serves_its_own(wrap, stored):
    # A sub-application with a database of its own, mounted inside another
    # (a URL dispatcher): its writes go to its database, and the outer
    # request's handle is still in the outer environ afterwards.
    seen = {}

    def sub(environ, start_response):
        environ["zodb"].root["where"] = "sub"
        return ok(start_response)

    inner = wrap(sub, "memory://")

    def main(environ, start_response):
        outer_handle = environ["zodb"]
        answer = inner(environ, lambda status, headers, exc_info=None: None)
        body = b"".join(answer)
        answer.close()
        seen["kept"] = environ["zodb"] is outer_handle
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body]

    outer = wrap(main)
    webtest.TestApp(outer).get("/")
    assert stored(inner) == {"where": "sub"}
    assert "where" not in stored(outer)
    assert seen["kept"]


def test_only_the_middlewares_own_handle_is_removed_from_the_environ(wrap, server):
    seen = {}

    def app(environ, start_response):
        environ["zodb"] = "the app's own value"
        seen["environ"] = environ
        return ok(start_response)

    server(wrap(app))("/")
    assert seen["environ"]["zodb"] == "the app's own value"
    assert "transaction.manager" in seen["environ"]
