"""Each committed transaction says which request made it and for whom,
as the storage's undo log and history show it."""

from __future__ import annotations

import transaction
import webtest


def writer(environ, start_response):
    root = environ["zodb"].root
    root["count"] = root.get("count", 0) + 1
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def last_transaction(middleware):
    """The newest record of the storage's undo log: (description, user)."""
    record = middleware.database.get().storage.undoLog(0, 1)[0]
    return record["description"].decode("utf-8"), record["user_name"].decode("utf-8")


def test_the_note_is_the_method_and_the_path(wrap):
    middleware = wrap(writer)
    webtest.TestApp(middleware).post("/things/7?ignored=query")
    assert last_transaction(middleware) == ("POST /things/7", "")


def test_the_note_and_user_are_in_the_objects_history(wrap):
    middleware = wrap(writer)
    webtest.TestApp(middleware).put("/counter", extra_environ={"REMOTE_USER": "ada"})
    db = middleware.database.get()
    (latest, *_) = db.history(b"\0" * 8, 1)  # the root's oid
    assert latest["description"] == "PUT /counter"
    assert latest["user_name"] == "ada"


def test_the_user_is_remote_user(wrap):
    middleware = wrap(writer)
    webtest.TestApp(middleware).post("/", extra_environ={"REMOTE_USER": "grace"})
    assert last_transaction(middleware) == ("POST /", "grace")


def test_the_path_includes_the_script_name(wrap, server):
    middleware = wrap(writer)
    srv = server(middleware)
    srv(srv.request("/items", environ={"SCRIPT_NAME": "/shop"}))
    assert last_transaction(middleware)[0] == "GET /shop/items"


def test_a_utf8_path_is_noted_as_text(wrap):
    middleware = wrap(writer)
    webtest.TestApp(middleware).get("/caf%C3%A9/%E2%9C%93")
    assert last_transaction(middleware)[0] == "GET /café/✓"


def test_a_path_that_is_not_utf8_is_noted_as_the_server_gave_it(wrap):
    middleware = wrap(writer)
    webtest.TestApp(middleware).get("/%FF%FE")
    # PEP 3333 hands the raw bytes over decoded as latin-1; they stay so.
    assert last_transaction(middleware)[0] == "GET /\xff\xfe"


def test_an_empty_path_is_noted_as_the_root(wrap, server):
    middleware = wrap(writer)
    srv = server(middleware)
    request = srv.request("/")
    request.environ["PATH_INFO"] = ""
    request.environ["SCRIPT_NAME"] = ""
    srv(request)
    assert last_transaction(middleware)[0] == "GET /"


def test_the_views_own_note_is_kept_after_the_requests(wrap):
    def app(environ, start_response):
        environ["zodb"].root["x"] = 1
        transaction.get().note("imported 3 contacts")
        transaction.get().note("from the CSV upload")
        start_response("200 OK", [])
        return [b""]

    middleware = wrap(app)
    webtest.TestApp(middleware).post("/import")
    assert last_transaction(middleware)[0] == (
        "POST /import\nimported 3 contacts\nfrom the CSV upload"
    )


def test_a_user_set_by_the_view_is_kept(wrap):
    def app(environ, start_response):
        environ["zodb"].root["x"] = 1
        environ["zodb"].transaction.user = "cron"
        start_response("200 OK", [])
        return [b""]

    middleware = wrap(app)
    webtest.TestApp(middleware).post("/", extra_environ={"REMOTE_USER": "grace"})
    assert last_transaction(middleware) == ("POST /", "cron")


def test_the_note_is_also_on_the_handle(wrap):
    seen = []

    def app(environ, start_response):
        seen.append((environ["zodb"].note, environ["zodb"].user))
        start_response("200 OK", [])
        return [b""]

    webtest.TestApp(wrap(app)).delete("/a/b", extra_environ={"REMOTE_USER": "ada"})
    assert seen == [("DELETE /a/b", "ada")]
