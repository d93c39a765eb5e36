"""A database server that does not answer gets a quick 503, not a request
retried until the worker is killed."""

from __future__ import annotations

import logging
import time

import pytest
import webtest
from ZEO.Exceptions import ClientDisconnected
from ZODB.POSException import ConflictError

from zodb_wsgi import Database, ZODBMiddleware


def wait_until(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:  # a stuck server
            pytest.fail("timed out")
        time.sleep(0.02)


def counter(environ, start_response):
    root = environ["zodb"].root
    root["count"] = root.get("count", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % root["count"]]


def test_a_zeo_server_that_went_away_gets_503_at_once_and_is_found_again(zeo_server, caplog):
    attempts = []

    def app(environ, start_response):
        attempts.append(environ["zodb"].attempt)
        return counter(environ, start_response)

    middleware = ZODBMiddleware(app, zeo_server.uri(wait_timeout=1), backoff=0)
    client = webtest.TestApp(middleware)
    try:
        assert client.post("/").text == "1"
        storage = middleware.database.get().storage
        zeo_server.stop()
        wait_until(lambda: not storage.is_connected())
        attempts.clear()
        with caplog.at_level(logging.ERROR, logger="zodb_wsgi"):
            response = client.post("/orders", status=503)
        assert attempts == [1]  # not retried: the server is away
        assert response.headers["Retry-After"] == "5"
        assert "unreachable" in response.text
        (record,) = caplog.records
        message = record.getMessage()
        assert message.startswith("POST /orders: the database is unreachable: zeo://")
        assert "does not answer (ClientDisconnected" in message

        zeo_server.start()
        wait_until(storage.is_connected)
        assert client.post("/").text == "2"
    finally:
        middleware.database.close()


def test_a_disconnect_the_client_recovered_from_is_retried(zeo_server):
    def app(environ, start_response):
        if environ["zodb"].attempt == 1:
            # The transaction began on a connection that broke and came back.
            raise ClientDisconnected()
        return counter(environ, start_response)

    middleware = ZODBMiddleware(app, zeo_server.uri(), backoff=0)
    try:
        middleware.database.get()
        assert webtest.TestApp(middleware).post("/").text == "1"
    finally:
        middleware.database.close()


def test_what_counts_as_unreachable(file_uri):
    database = Database(file_uri)
    try:
        assert not database.unreachable(ConflictError())
        # Not opened (or opened by another process): nothing to ask.
        assert database.unreachable(ClientDisconnected())
        database.get()
        # A storage that cannot tell whether it is connected.
        assert database.unreachable(ClientDisconnected())
        assert not database.unreachable(ValueError())
    finally:
        database.close()
