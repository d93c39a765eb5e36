"""Bodies that are produced while they are sent: generators, iterables with
close(), start_response called late, bodies closed early."""

from __future__ import annotations

import pytest
import webtest


class Body:
    """An application iterable with ``close()`` (PEP 3333), which records
    how far it was read and whether it was closed; it raises at *fail_at*."""

    def __init__(self, chunks, *, fail_at=None, close_error=None, before=None):
        self.chunks = chunks
        self.fail_at = fail_at
        self.close_error = close_error
        self.before = before
        self.read = 0
        self.closed = 0

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == 0 and self.before is not None:
                self.before()
            if i == self.fail_at:
                raise RuntimeError(f"the body failed at chunk {i}")
            self.read += 1
            yield chunk

    def close(self):
        self.closed += 1
        if self.close_error is not None:
            raise self.close_error


def pool_is_full(middleware):
    pool = middleware.database.get().pool
    return len(pool.available) == len(pool.all)


def test_a_streamed_body_reads_the_committed_state(wrap, stored):
    middleware = None

    def app(environ, start_response):
        root = environ["zodb"].root
        root["n"] = root.get("n", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            # Runs after the commit: another connection sees the write...
            yield b"stored %d, " % stored(middleware)["n"]
            # ...and so does the request's own.
            yield b"mine %d" % environ["zodb"].root["n"]

        return body()

    middleware = wrap(app)
    client = webtest.TestApp(middleware)
    assert client.get("/").text == "stored 1, mine 1"
    assert client.get("/").text == "stored 2, mine 2"


def test_start_response_may_be_called_inside_the_generator(wrap, stored):
    def app(environ, start_response):
        root = environ["zodb"].root
        root["n"] = root.get("n", 0) + 1
        yield b""  # empty strings before start_response are allowed and dropped
        start_response("201 Created", [("Content-Type", "text/plain")])
        yield b"created %d" % root["n"]
        yield b", and more"

    middleware = wrap(app)
    response = webtest.TestApp(middleware).post("/", status=201)
    assert response.text == "created 1, and more"
    assert stored(middleware) == {"n": 1}


def test_a_lazy_generator_decides_the_fate_of_its_transaction(wrap, stored):
    def app(environ, start_response):
        environ["zodb"].root["n"] = 1
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        yield b"no such thing"

    middleware = wrap(app)
    assert webtest.TestApp(middleware).get("/", status=404).text == "no such thing"
    assert stored(middleware) == {}


def test_a_lazy_generator_may_send_no_body_at_all(wrap, stored):
    def app(environ, start_response):
        environ["zodb"].root["n"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return
        yield  # makes this a generator

    middleware = wrap(app)
    assert webtest.TestApp(middleware).post("/").body == b""
    assert stored(middleware) == {"n": 1}


def test_write_then_iterate_keeps_the_order(wrap, server):
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"1 ")
        write(b"2 ")
        return Body([b"3 ", b"4"])

    assert server(wrap(app))("/") == b"1 2 3 4"


def test_an_app_that_never_starts_the_response_is_an_error(wrap, server, stored):
    body = Body([b"a body without a status"])

    def app(environ, start_response):
        environ["zodb"].root["n"] = 1
        return body

    middleware = wrap(app)
    srv = server(middleware)
    with pytest.raises(RuntimeError, match="without calling start_response"):
        srv("/")
    assert srv.started == []
    assert body.closed == 1
    assert stored(middleware) == {}
    assert pool_is_full(middleware)


def test_the_body_is_closed_after_a_full_response(wrap, server):
    body = Body([b"a", b"b"])

    def app(environ, start_response):
        environ["zodb"].root["n"] = 1
        start_response("200 OK", [])
        return body

    middleware = wrap(app)
    assert server(middleware)("/") == b"ab"
    assert (body.read, body.closed) == (2, 1)
    assert pool_is_full(middleware)


def test_a_body_closed_early_by_the_server_is_closed_and_ends_the_request(wrap, server):
    body = Body([b"a", b"b", b"c"])
    handles = []

    def app(environ, start_response):
        handles.append(environ["zodb"])
        environ["zodb"].root["n"] = 1
        start_response("200 OK", [])
        return body

    middleware = wrap(app)
    srv = server(middleware)
    environ = srv.request("/").environ
    result = middleware(environ, srv.start_response)
    assert next(iter(result)) == b"a"
    result.close()  # the client went away
    assert (body.read, body.closed) == (1, 1)
    assert handles[0].is_closed
    assert "zodb" not in environ
    assert pool_is_full(middleware)


def test_a_generator_closed_early_runs_its_cleanup(wrap, server):
    cleaned = []

    def app(environ, start_response):
        start_response("200 OK", [])
        try:
            yield b"first"
            yield b"never sent"  # closed before
        finally:
            cleaned.append(True)

    middleware = wrap(app)
    srv = server(middleware)
    result = middleware(srv.request("/").environ, srv.start_response)
    assert next(iter(result)) == b"first"
    result.close()
    assert cleaned == [True]


def test_a_body_that_fails_before_the_response_started_is_closed(wrap, server, stored):
    def app(environ, start_response):
        environ["zodb"].root["n"] = 1
        return body

    body = Body([b"a", b"b"], fail_at=0)
    middleware = wrap(app)
    srv = server(middleware)
    with pytest.raises(RuntimeError, match="failed at chunk 0"):
        srv("/")
    assert srv.started == []
    assert body.closed == 1
    assert stored(middleware) == {}
    assert pool_is_full(middleware)


def test_a_body_that_fails_while_streaming_is_closed_and_the_commit_stands(wrap, server, stored):
    def app(environ, start_response):
        environ["zodb"].root["n"] = 1
        start_response("200 OK", [])
        return body

    body = Body([b"a", b"b"], fail_at=1)
    middleware = wrap(app)
    srv = server(middleware)
    with pytest.raises(RuntimeError, match="failed at chunk 1"):
        srv("/")
    assert srv.sent == [b"a"]
    assert body.closed == 1
    assert stored(middleware) == {"n": 1}  # committed before the body was sent
    assert pool_is_full(middleware)


def test_writes_made_while_streaming_are_discarded(wrap, stored):
    def app(environ, start_response):
        root = environ["zodb"].root
        root["before"] = root.get("before", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            root["after"] = "not stored"  # after the commit: thrown away
            yield b"streamed"

        return body()

    middleware = wrap(app)
    client = webtest.TestApp(middleware)
    assert client.get("/").text == "streamed"
    assert client.get("/").text == "streamed"
    assert stored(middleware) == {"before": 2}


@pytest.mark.parametrize("fail_at", [None, 0])
def test_a_close_that_fails_still_ends_the_request(wrap, server, fail_at):
    handles = []

    def app(environ, start_response):
        handles.append(environ["zodb"])
        environ["zodb"].root["n"] = 1
        if fail_at is None:
            start_response("200 OK", [])
        return body

    body = Body([b"a"], fail_at=fail_at, close_error=OSError("close failed"))
    middleware = wrap(app)
    with pytest.raises(OSError, match="close failed"):
        server(middleware)("/")
    assert body.closed == 1
    assert handles[0].is_closed
    assert pool_is_full(middleware)
