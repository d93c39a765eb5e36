"""The request body is buffered before the first attempt, so that every
retry reads the same body; too large or truncated bodies never reach the app."""

from __future__ import annotations

import gc
import io
import json

import pytest
import webob
import webtest
from ZODB.POSException import ConflictError


class BodyReader:
    """An app that reads the body on every attempt (with *read*), stores
    what it read, and meets a conflict on its first attempt."""

    def __init__(self, read):
        self.read = read
        self.seen = []
        self.inputs = []

    def __call__(self, environ, start_response):
        handle = environ["zodb"]
        self.inputs.append(environ["wsgi.input"])
        value = self.read(environ)
        self.seen.append(value)
        handle.root["body"] = value
        if handle.attempt == 1:
            raise ConflictError()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"read"]


def raw(environ):
    return environ["wsgi.input"].read()


def test_a_form_post_is_seen_by_every_attempt(wrap, stored):
    app = BodyReader(lambda environ: dict(webob.Request(environ).POST))
    middleware = wrap(app)
    webtest.TestApp(middleware).post("/", {"name": "Ada", "lang": "en"})
    assert app.seen == [{"name": "Ada", "lang": "en"}] * 2
    assert stored(middleware) == {"body": {"name": "Ada", "lang": "en"}}


def test_a_json_body_is_seen_by_every_attempt(wrap):
    app = BodyReader(lambda environ: json.loads(raw(environ)))
    webtest.TestApp(wrap(app)).post_json("/", {"items": [1, 2, 3]})
    assert app.seen == [{"items": [1, 2, 3]}] * 2


def test_a_file_upload_is_seen_by_every_attempt(wrap):
    def upload(environ):
        field = webob.Request(environ).POST["file"]
        return (field.filename, field.value)

    app = BodyReader(upload)
    content = bytes(range(256)) * 40
    webtest.TestApp(wrap(app)).post(
        "/", {"title": "x"}, upload_files=[("file", "data.bin", content)]
    )
    assert app.seen == [("data.bin", content)] * 2


def chunked_request(data, *, terminated=True):
    """A request as a server hands over a chunked body: no Content-Length."""
    request = webob.Request.blank("/", method="POST")
    request.environ["wsgi.input"] = io.BytesIO(data)
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    if terminated:
        request.environ["wsgi.input_terminated"] = True
    return request


def test_a_chunked_body_is_seen_by_every_attempt(wrap, server):
    app = BodyReader(lambda environ: (environ["CONTENT_LENGTH"], raw(environ)))
    srv = server(wrap(app))
    assert srv(chunked_request(b"streamed by the client")) == b"read"
    assert app.seen == [("22", b"streamed by the client")] * 2


def test_a_chunked_body_with_no_promised_end_is_refused(wrap, server):
    app = BodyReader(raw)
    srv = server(wrap(app))
    body = srv(chunked_request(b"data", terminated=False))
    assert srv.status.startswith("400")
    assert b"wsgi.input_terminated" in body
    assert app.seen == []


def posted(data):
    """A request as a server hands over a body with a Content-Length."""
    request = webob.Request.blank("/", method="POST")
    request.environ["wsgi.input"] = io.BytesIO(data)
    request.environ["CONTENT_LENGTH"] = str(len(data))
    request.environ.pop("webob.is_body_seekable", None)
    return request


@pytest.mark.parametrize("make", [posted, chunked_request])
def test_a_large_body_is_spooled_to_a_file_closed_at_the_end(wrap, server, make):
    def read(environ):
        return environ["wsgi.input"].fileno() >= 0, raw(environ)  # a real file

    app = BodyReader(read)
    srv = server(wrap(app, spool_threshold=1000))
    data = b"0123456789" * 500
    srv(make(data))
    assert app.seen == [(True, data), (True, data)]
    spooled = app.inputs[0]
    assert spooled is app.inputs[1]
    assert spooled.closed  # closed when the request ended


def test_a_spooled_body_is_closed_when_the_request_fails(wrap, server):
    def app(environ, start_response):
        seen.append(environ["wsgi.input"])
        raise LookupError("no such thing")

    seen = []
    srv = server(wrap(app, spool_threshold=10))
    with pytest.raises(LookupError):
        srv(posted(b"x" * 100))
    assert seen[0].closed


def test_a_spooled_body_is_closed_when_retries_give_up(wrap, server):
    def app(environ, start_response):
        seen.append(environ["wsgi.input"])
        raise ConflictError()

    seen = []
    srv = server(wrap(app, spool_threshold=10, attempts=2))
    srv(posted(b"x" * 100))
    assert srv.status.startswith("503")
    assert seen[0] is seen[1]
    assert seen[0].closed


def test_a_body_made_seekable_by_an_outer_layer_is_left_open(wrap, server):
    app = BodyReader(raw)
    srv = server(wrap(app))
    request = webob.Request.blank("/", method="POST", body=b"already seekable")
    request.make_body_seekable()  # as an outer WebOb middleware may have done
    given = request.environ["wsgi.input"]
    srv(request)
    assert app.inputs == [given, given]
    assert app.seen == [b"already seekable"] * 2
    assert not given.closed


def test_a_small_body_stays_in_memory(wrap, server):
    app = BodyReader(raw)
    srv = server(wrap(app, spool_threshold=1000))
    srv(posted(b"small"))
    assert isinstance(app.inputs[0], io.BytesIO)


@pytest.mark.parametrize("attempts", [1, 8])
def test_a_body_over_the_limit_gets_413_before_the_app_runs(wrap, server, attempts):
    app = BodyReader(raw)
    srv = server(wrap(app, max_body_size=100, attempts=attempts))
    body = srv(posted(b"x" * 101))
    assert srv.status.startswith("413")
    assert b"100 bytes at most" in body
    assert app.seen == []


def test_a_chunked_body_over_the_limit_gets_413(wrap, server):
    app = BodyReader(raw)
    srv = server(wrap(app, max_body_size=100))
    body = srv(chunked_request(b"x" * 70_000))
    assert srv.status.startswith("413")
    assert b"100 bytes at most" in body
    assert app.seen == []


def test_a_body_at_the_limit_is_accepted(wrap, server):
    app = BodyReader(raw)
    srv = server(wrap(app, max_body_size=100))
    srv(posted(b"x" * 100))
    srv2 = server(srv.app)
    srv2(chunked_request(b"y" * 100))
    assert srv.status == srv2.status == "200 OK"
    assert app.seen == [b"x" * 100] * 2 + [b"y" * 100] * 2


@pytest.mark.parametrize("spool_threshold", [10_000_000, 10])
def test_a_truncated_body_gets_400_and_nothing_is_written(wrap, server, stored, spool_threshold):
    app = BodyReader(raw)
    middleware = wrap(app, spool_threshold=spool_threshold)
    srv = server(middleware)
    request = posted(b"only part of it" * 10_000)
    request.environ["CONTENT_LENGTH"] = "200000"  # the client went away
    body = srv(request)
    gc.collect()  # a file spooled on the way is closed, not left to the collector
    assert srv.status.startswith("400")
    assert b"ended before its Content-Length" in body
    assert app.seen == []
    assert stored(middleware) == {}


def test_a_request_without_a_body_is_not_buffered(wrap, server):
    app = BodyReader(raw)
    srv = server(wrap(app))
    request = srv.request("/")
    original = request.environ["wsgi.input"]
    srv(request)
    assert app.inputs == [original, original]
    assert app.seen == [b"", b""]


def test_without_retries_the_body_is_passed_as_it_is(wrap, server):
    seen = []

    def app(environ, start_response):
        seen.append(environ["wsgi.input"])
        start_response("200 OK", [])
        return [environ["wsgi.input"].read()]

    srv = server(wrap(app, attempts=1))
    request = posted(b"once")
    original = request.environ["wsgi.input"]
    assert srv(request) == b"once"
    assert seen == [original]


def test_a_chunked_body_over_the_limit_after_spooling_leaves_no_file_open(wrap, server):
    app = BodyReader(raw)
    srv = server(wrap(app, max_body_size=100_000, spool_threshold=10))
    # Read in 64 KiB pieces: spooled to a file after the first, too large
    # after the second.
    srv(chunked_request(b"x" * 200_000))
    gc.collect()
    assert srv.status.startswith("413")
    assert app.seen == []


def test_a_request_without_a_body_is_not_buffered_even_if_input_is_terminated(wrap, server):
    # gunicorn and waitress set wsgi.input_terminated on every request; a GET
    # without Content-Length or Transfer-Encoding still has no body to buffer.
    given = io.BytesIO(b"")
    app = BodyReader(lambda environ: environ["wsgi.input"] is given)
    request = webob.Request.blank("/")
    request.environ["wsgi.input"] = given
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ["wsgi.input_terminated"] = True
    srv = server(wrap(app))
    assert srv(request) == b"read"
    assert app.seen == [True, True]
