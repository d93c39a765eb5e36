"""A commit reported to one process's client is seen by the next request in
any other process: read-your-writes across gunicorn workers.

Two middlewares over the same server stand for two worker processes: each
has its own ZODB.DB and its own storage client, as separate processes do.
"""

from __future__ import annotations

import pytest
import webtest

from zodb_wsgi import ZODBMiddleware

ROUNDS = 200


def counter(environ, start_response):
    root = environ["zodb"].root
    if environ["REQUEST_METHOD"] == "POST":
        root["n"] = root.get("n", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(root.get("n", 0)).encode()]


@pytest.fixture(params=["zeo", "postgres"])
def shared_uri(request):
    if request.param == "zeo":
        return request.getfixturevalue("zeo_server").uri()
    return request.getfixturevalue("pg_uri")


def test_a_write_answered_by_one_process_is_read_by_the_next_request_in_another(shared_uri):
    writer, reader = ZODBMiddleware(counter, shared_uri), ZODBMiddleware(counter, shared_uri)
    try:
        post, get = webtest.TestApp(writer).post, webtest.TestApp(reader).get
        get("/")  # the reader's connection is pooled, its cache warm
        stale = [
            (n, seen)
            for n, seen in ((post("/").text, get("/").text) for _ in range(ROUNDS))
            if n != seen
        ]
        assert stale == []
    finally:
        writer.database.close()
        reader.database.close()
