"""Test isolation: flask_zodb.testing.isolated() and the pytest 'zodb' fixture."""

from __future__ import annotations

import pytest
import transaction
from flask import Flask, request
from persistent.mapping import PersistentMapping
from ZODB.DemoStorage import DemoStorage

from flask_zodb import ZODB, Object
from flask_zodb.testing import isolated
from zodb_wsgi import Database

pytest_plugins = ["pytester"]


def read(database: Database, name: str = "") -> dict:
    """What the storage behind *database* holds, read past any layer."""
    db = database.get()
    member = db.databases[name] if name else db
    connection = member.open(transaction_manager=transaction.TransactionManager())
    try:
        return dict(connection.root())
    finally:
        connection.close()


def notes_app(make_app, storage, **config):
    app, db = make_app(storage, **config)

    @app.post("/notes/<name>")
    def add(name):
        db[name] = request.form["text"]
        return "ok"

    @app.get("/notes")
    def notes():
        return ",".join(sorted(db))

    return app, db


# -- the pytest fixture, in an inner session ---------------------------------------


INNER_TESTS = """
import pytest
from flask import Flask, request

from flask_zodb import ZODB

STORAGE = {storage!r}


@pytest.fixture(scope="module")
def app():
    app = Flask(__name__)
    app.config.update(TESTING=True, ZODB_STORAGE=STORAGE)
    db = ZODB(app)

    @app.post("/notes/<name>")
    def add(name):
        db[name] = request.form["text"]
        return "ok"

    @app.get("/notes")
    def notes():
        return ",".join(sorted(db))

    with app.app_context():
        db["before"] = "written before the layer"
    yield app
    app.extensions["zodb"].database.close()


def test_one_writes(app, zodb):
    client = app.test_client()
    assert client.get("/notes", buffered=True).text == "before"
    client.post("/notes/one", data={{"text": "1"}}, buffered=True)
    assert client.get("/notes", buffered=True).text == "before,one"
    with app.app_context():
        assert zodb["one"] == "1"
        assert zodb["before"] == "written before the layer"


def test_two_does_not_see_the_writes_of_one(app, zodb):
    client = app.test_client()
    assert client.get("/notes", buffered=True).text == "before"
    client.post("/notes/two", data={{"text": "2"}}, buffered=True)
    with app.app_context():
        assert sorted(zodb) == ["before", "two"]


def test_the_fixture_is_the_apps_extension(app, zodb):
    assert zodb is app.extensions["zodb"].extension
    with app.app_context():
        assert "one" not in zodb and "two" not in zodb


def test_without_the_fixture_writes_are_kept(app):
    app.test_client().post("/notes/kept", data={{"text": "k"}}, buffered=True)
"""


def test_the_zodb_fixture_isolates_tests(pytester, tmp_path):
    path = tmp_path / "Data.fs"
    pytester.makepyfile(test_inner=INNER_TESTS.format(storage=f"file://{path}"))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    # On disk: what was written outside the fixture, nothing from inside it.
    database = Database(f"file://{path}")
    try:
        assert read(database) == {"before": "written before the layer", "kept": "k"}
    finally:
        database.close()


def test_the_zodb_fixture_needs_an_app_fixture(pytester):
    pytester.makepyfile(
        test_no_app="""
        def test_uses_zodb(zodb):
            pass
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'app' not found*"])


def test_the_plugin_is_registered_by_its_entry_point(pytestconfig):
    import flask_zodb.pytest_plugin

    assert pytestconfig.pluginmanager.is_registered(flask_zodb.pytest_plugin)


# -- isolated() ------------------------------------------------------------------


def test_isolated_drops_what_the_block_wrote(make_app, file_uri):
    app, db = notes_app(make_app, file_uri)
    database = app.extensions["zodb"].database
    client = app.test_client()
    client.post("/notes/before", data={"text": "b"}, buffered=True)

    with isolated(app) as yielded:
        assert yielded is db
        assert isinstance(database.get().storage, DemoStorage)
        assert client.get("/notes", buffered=True).text == "before"
        client.post("/notes/inside", data={"text": "i"}, buffered=True)
        with app.app_context():
            db["from a context"] = 1
        assert client.get("/notes", buffered=True).text == "before,from a context,inside"
        assert read(database) == {"before": "b", "from a context": 1, "inside": "i"}

    assert not isinstance(database.get().storage, DemoStorage)
    assert client.get("/notes", buffered=True).text == "before"
    assert read(database) == {"before": "b"}
    # The app writes to the storage again.
    client.post("/notes/after", data={"text": "a"}, buffered=True)
    assert read(database) == {"after": "a", "before": "b"}


def test_isolated_ends_cleanly_when_the_block_raises(make_app, file_uri):
    app, db = notes_app(make_app, file_uri)
    with pytest.raises(ZeroDivisionError), isolated(app):
        with app.app_context():
            db["inside"] = 1
        1 / 0  # noqa: B018
    with app.app_context():
        assert "inside" not in db
        db["outside"] = 1
    assert read(app.extensions["zodb"].database) == {"outside": 1}


def test_isolated_blocks_nest(make_app):
    app, _ = notes_app(make_app, "memory://")
    client = app.test_client()
    with isolated(app):
        client.post("/notes/outer", data={"text": "o"}, buffered=True)
        with isolated(app):
            client.post("/notes/inner", data={"text": "i"}, buffered=True)
            assert client.get("/notes", buffered=True).text == "inner,outer"
        assert client.get("/notes", buffered=True).text == "outer"
    assert client.get("/notes", buffered=True).text == ""


def test_isolated_on_zeo(make_app, zeo_server):
    app, _ = notes_app(make_app, zeo_server.uri())
    client = app.test_client()
    client.post("/notes/before", data={"text": "b"}, buffered=True)
    with isolated(app):
        client.post("/notes/inside", data={"text": "i"}, buffered=True)
        assert client.get("/notes", buffered=True).text == "before,inside"
    assert client.get("/notes", buffered=True).text == "before"


def test_isolated_needs_flask_zodb():
    with (
        pytest.raises(RuntimeError, match="Flask-ZODB is not set up on the application"),
        isolated(Flask("plain")),
    ):
        pass  # pragma: no cover - not reached


def test_isolated_opens_a_database_not_opened_yet(make_app, file_uri):
    app, db = make_app(file_uri)
    database = app.extensions["zodb"].database
    assert not database.is_open
    with isolated(app), app.app_context():
        db["a"] = 1
    assert database.is_open
    assert read(database) == {}


def test_the_database_closed_inside_a_layered_block(file_uri):
    # Closing inside the block closes the layer; the storage under it must be
    # closed too, so that the next use can open it again.
    database = Database(file_uri)
    with database.layered():
        database.close()
        assert not database.is_open
    assert not database.is_open
    with database.get().transaction() as connection:
        connection.root()["a"] = 1
    assert read(database) == {"a": 1}
    database.close()


# -- named databases under isolated() ----------------------------------------------


@pytest.fixture(params=["file", "zeo"])
def sessions_uri(request, tmp_path):
    if request.param == "file":
        return f"file://{tmp_path / 'sessions.fs'}"
    return request.getfixturevalue("zeo_server").uri()


def test_named_databases_under_isolated(make_app, file_uri, sessions_uri):
    app, db = make_app(file_uri, ZODB_DATABASES={"sessions": sessions_uri})
    database = app.extensions["zodb"].database
    with app.app_context():
        db["users"] = PersistentMapping()
        db.get_root("sessions")["count"] = 1

    with isolated(app):
        layer = database.get()
        assert sorted(layer.databases) == ["sessions", "unnamed"]
        for member in layer.databases.values():
            assert isinstance(member.storage, DemoStorage)
        with app.app_context():
            assert db.get_root("sessions")["count"] == 1
            session = Object()
            db.get_connection("sessions").add(session)
            db.get_root("sessions")["ada"] = session
            db["users"]["ada"] = session
            db.get_root("sessions")["count"] = 2
        with app.app_context():
            assert db["users"]["ada"] is db.get_root("sessions")["ada"]
            assert db.get_root("sessions")["count"] == 2

    assert read(database) == {"users": {}}
    assert read(database, "sessions") == {"count": 1}
    with app.app_context():
        assert db.get_root("sessions")["count"] == 1
        assert "ada" not in db.get_root("sessions")
    # The layers are closed; the real members still serve.
    assert all(member.storage is not None for member in database.get().databases.values())


def test_a_shared_extension_isolates_each_app_on_its_own(tmp_path):
    shared = ZODB()
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config.update(TESTING=True, ZODB_STORAGE=f"file://{tmp_path / name}.fs")
        shared.init_app(app)
        apps.append(app)
    one, two = apps
    try:
        with isolated(one) as yielded:
            assert yielded is shared
            for app in apps:
                with app.app_context():
                    shared["written"] = app.name
        with one.app_context():
            assert "written" not in shared
        with two.app_context():
            assert shared["written"] == "two"
    finally:
        for app in apps:
            app.extensions["zodb"].database.close()
