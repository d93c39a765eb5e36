"""Several applications in one request: each app's writes reach its own database."""

from __future__ import annotations

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from flask_zodb import signals


def test_a_sub_app_under_a_dispatcher_writes_to_its_own_database(make_app, stored):
    main, main_db = make_app()
    sub, sub_db = make_app()

    @sub.post("/write")
    def write():
        sub_db["where"] = "sub"
        return "ok"

    @main.post("/write")
    def main_write():
        main_db["where"] = "main"
        return "ok"

    main.wsgi_app = DispatcherMiddleware(main.wsgi_app, {"/sub": sub})  # type: ignore[method-assign]
    client = main.test_client()
    assert client.post("/sub/write").status_code == 200
    assert stored(sub) == {"where": "sub"}
    assert stored(main) == {}
    assert client.post("/write").status_code == 200
    assert stored(main) == {"where": "main"}


def test_another_apps_context_in_a_view_writes_to_that_apps_database(make_app, stored):
    app, db = make_app()
    other, other_db = make_app()

    @app.post("/")
    def view():
        db["here"] = 1
        with other.app_context():
            other_db["there"] = 1
        return "ok"

    assert app.test_client().post("/").status_code == 200
    assert stored(app) == {"here": 1}
    assert stored(other) == {"there": 1}


def test_a_test_request_context_in_a_view_joins_the_request(make_app, stored):
    # A view that pushes a context of its own app (to build a URL for a mail,
    # say) and writes in it: one transaction, committed once.
    app, db = make_app()

    @app.post("/signup")
    def signup():
        db["users"] = db.get("users", 0) + 1
        with app.test_request_context("/welcome"):
            db["mails"] = db.get("mails", 0) + 1
        return "welcome"

    client = app.test_client()
    assert client.post("/signup").status_code == 200
    assert client.post("/signup").status_code == 200
    assert stored(app) == {"users": 2, "mails": 2}


def test_a_failing_after_commit_receiver_does_not_undo_the_answer(make_app, stored, caplog):
    app, db = make_app()
    ran = []

    def broken(sender, **extra):
        raise RuntimeError("receiver bug")

    @app.post("/")
    def view():
        db["order"] = 1
        db.after_commit(lambda: ran.append("mail"))
        return "ok"

    with signals.after_commit.connected_to(broken, app):
        assert app.test_client().post("/").status_code == 200
    assert stored(app) == {"order": 1}
    assert ran == ["mail"]
    assert "receiver bug" in caplog.text


def test_a_failing_after_abort_receiver_keeps_the_status(make_app, stored):
    app, db = make_app()

    def broken(sender, **extra):
        raise RuntimeError("receiver bug")

    @app.post("/")
    def view():
        db["x"] = 1
        return "missing", 404

    with signals.after_abort.connected_to(broken, app):
        assert app.test_client().post("/").status_code == 404
    assert stored(app) == {}


def test_init_app_after_the_first_request_is_refused_cleanly(make_app):
    from flask import Flask

    from flask_zodb import ZODB

    app = Flask(__name__)
    app.config["ZODB_STORAGE"] = "memory://"

    @app.get("/")
    def view():
        return "ok"

    app.test_client().get("/")
    wsgi_app = app.wsgi_app
    with pytest.raises(RuntimeError, match="already handled a request"):
        ZODB(app)
    assert "zodb" not in app.extensions
    assert app.wsgi_app == wsgi_app  # not wrapped
