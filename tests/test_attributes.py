"""db.connection, db.root, db.is_connected and db.transaction_manager."""

from __future__ import annotations

import transaction
from flask import request
from persistent.mapping import PersistentMapping
from ZODB.Connection import Connection


def test_connection_is_the_requests_zodb_connection(make_app):
    app, db = make_app()
    seen = {}

    @app.get("/")
    def view():
        connection = db.connection
        seen["connection"] = connection
        assert isinstance(connection, Connection)
        assert db.connection is connection
        assert connection.transaction_manager is request.environ["transaction.manager"]
        return "ok"

    with app.test_client().get("/") as response:
        assert response.text == "ok"
        # The body is in memory: the connection went back to the pool at the
        # commit, before the body was sent.
        assert seen["connection"].opened is None


def test_each_request_gets_a_connection_of_its_own(make_app):
    app, db = make_app()
    seen = []

    @app.get("/")
    def view():
        seen.append(db.handle)
        db.connection  # noqa: B018 - opens it
        return "ok"

    client = app.test_client()
    client.get("/", buffered=True)
    client.get("/", buffered=True)
    assert seen[0] is not seen[1]
    assert all(handle.is_closed for handle in seen)


def test_root_is_the_database_root(make_app):
    app, db = make_app()

    @app.post("/")
    def view():
        assert isinstance(db.root, PersistentMapping)
        assert db.root is db.connection.root()
        db["through_db"] = 1
        db.root["through_root"] = 2
        return {"db": db["through_root"], "root": db.root["through_db"]}

    assert app.test_client().post("/").json == {"db": 2, "root": 1}


def test_the_main_database_by_name(make_app):
    # "" names the main database of a multi-database; it is db's.
    app, db = make_app()
    with app.app_context():
        assert db.get_connection() is db.connection
        assert db.get_connection("") is db.connection
        assert db.get_root() is db.root


def test_is_connected_is_false_outside_any_context(make_app):
    _, db = make_app()
    assert db.is_connected is False


def test_is_connected_is_false_in_a_request_that_did_not_touch_db(make_app):
    app, db = make_app()

    @app.get("/untouched")
    def untouched():
        return str(db.is_connected)

    @app.get("/touched")
    def touched():
        before = db.is_connected
        db.get("anything")
        return f"{before} {db.is_connected}"

    client = app.test_client()
    assert client.get("/untouched").text == "False"
    assert client.get("/touched").text == "False True"
    assert client.get("/untouched").text == "False"


def test_a_request_that_does_not_touch_db_does_not_open_the_database(make_app):
    app, _ = make_app()

    @app.get("/")
    def view():
        return "no database here"

    assert app.test_client().get("/").text == "no database here"
    assert not app.extensions["zodb"].database.is_open


def test_is_connected_in_an_app_context(make_app):
    app, db = make_app()
    with app.app_context():
        assert db.is_connected is False
        db.get("anything")
        assert db.is_connected is True
    assert db.is_connected is False


def test_is_connected_in_a_test_request_context(make_app):
    app, db = make_app()
    with app.test_request_context("/"):
        assert db.is_connected is False
        len(db)
        assert db.is_connected is True


def test_transaction_manager_is_the_requests(make_app):
    app, db = make_app()

    @app.get("/")
    def view():
        manager = db.transaction_manager
        assert manager is request.environ["transaction.manager"]
        assert manager is db.connection.transaction_manager
        # transaction.get() in a view reaches the same transaction.
        assert transaction.get() is manager.get()
        return "ok"

    assert app.test_client().get("/").text == "ok"


def test_transaction_manager_in_a_context_is_the_threads(make_app):
    # A context that no middleware manages uses the thread's own manager, so
    # that transaction.doom() or note() before db is first touched count.
    app, db = make_app()
    with app.app_context():
        manager = db.transaction_manager
        assert manager is db.connection.transaction_manager
        assert manager is transaction.manager.manager
        assert transaction.get() is manager.get()


def test_doom_before_db_is_touched_in_a_context_aborts_it(make_app, stored):
    app, db = make_app()
    with app.app_context():
        transaction.doom()
        db["doomed"] = True
    assert "doomed" not in stored(app)
