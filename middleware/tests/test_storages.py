"""The middleware commits to, and reads back from, every kind of storage."""

from __future__ import annotations

import webtest

from zodb_wsgi import ZODBMiddleware


def counter(environ, start_response):
    root = environ["zodb"].root
    if environ["REQUEST_METHOD"] == "POST":
        root["count"] = root.get("count", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(root.get("count", 0)).encode()]


def test_writes_are_committed_and_read_back(storage_uri):
    middleware = ZODBMiddleware(counter, storage_uri)
    app = webtest.TestApp(middleware)
    try:
        assert app.get("/").text == "0"
        assert app.post("/").text == "1"
        assert app.post("/").text == "2"
        assert app.get("/").text == "2"
    finally:
        middleware.database.close()
    if not storage_uri.startswith("memory:"):
        # A new process-level database over the same storage sees the data.
        reopened = ZODBMiddleware(counter, storage_uri)
        try:
            assert webtest.TestApp(reopened).get("/").text == "2"
        finally:
            reopened.database.close()
