"""Named databases: ZODB_DATABASES opens a ZODB multi-database."""

from __future__ import annotations

import subprocess
import sys

import pytest
import transaction
from flask import request
from ZODB.POSException import InvalidObjectReference

from flask_zodb import Object
from zodb_wsgi import ConfigurationError, Database, StorageUnavailableError


class Session(Object):
    def __init__(self, user: str) -> None:
        self.user = user


@pytest.fixture(params=["file", "zeo"])
def sessions_uri(request, tmp_path):
    """The storage of the 'sessions' database: a FileStorage or a ZEO server."""
    if request.param == "file":
        return f"file://{tmp_path / 'sessions.fs'}"
    return request.getfixturevalue("zeo_server").uri()


@pytest.fixture
def multi(make_app, file_uri, sessions_uri):
    app, db = make_app(None, ZODB_DATABASES={"": file_uri, "sessions": sessions_uri})
    del app.config["ZODB_STORAGE"]

    @app.post("/login/<user>")
    def login(user):
        session = Session(user)
        sessions = db.get_root("sessions")
        # A new object reachable from both databases is added to one first.
        db.get_connection("sessions").add(session)
        sessions[user] = session
        db["last_login"] = session
        return "ok"

    @app.post("/login-unadded/<user>")
    def login_unadded(user):
        session = Session(user)
        db.get_root("sessions")[user] = session
        db["last_login"] = session
        return "ok"

    @app.get("/last")
    def last():
        session = db.get("last_login")
        if session is None:
            return "nobody"
        same = session is db.get_root("sessions").get(session.user)
        return f"{session.user} {same} {session._p_jar.db().database_name}"

    @app.get("/main-only")
    def main_only():
        return f"{len(db)} {sorted(db.connection.connections)}"

    @app.post("/sessions/<key>")
    def put_session(key):
        db.get_root("sessions")[key] = request.form["value"]
        return str(sorted(db.connection.connections))

    return app, db


class ClosingClient:
    """A test client whose responses are closed at once, as a server does."""

    def __init__(self, app):
        self._client = app.test_client()

    def get(self, *args, **kwargs):
        return self._client.get(*args, buffered=True, **kwargs)

    def post(self, *args, **kwargs):
        return self._client.post(*args, buffered=True, **kwargs)


def all_closed(app):
    return all(c.opened is None for d in members(app).values() for c in d.pool.all)


def members(app):
    return app.extensions["zodb"].database.get().databases


def roots(app):
    """What each member database holds, read with connections of their own."""
    out = {}
    for name, database in members(app).items():
        connection = database.open(transaction_manager=transaction.TransactionManager())
        try:
            out[name] = dict(connection.root())
        finally:
            connection.close()
    return out


def test_the_members_and_their_names(multi):
    app, _ = multi
    assert sorted(members(app)) == ["sessions", "unnamed"]
    assert app.extensions["zodb"].database.names == ["sessions"]


def test_a_cross_database_reference_added_to_one_database_first(multi):
    app, _ = multi
    client = ClosingClient(app)
    assert client.post("/login/ada").text == "ok"
    assert client.get("/last").text == "ada True sessions"
    # A later context sees the same object through both roots.
    stored = roots(app)
    assert set(stored["sessions"]) == {"ada"}
    assert set(stored["unnamed"]) == {"last_login"}


def test_a_new_object_reachable_from_two_databases_is_refused(multi):
    app, _ = multi
    client = ClosingClient(app)
    client.post("/login/ada")
    before = roots(app)
    with pytest.raises(InvalidObjectReference, match="reachable from multiple databases"):
        client.post("/login-unadded/bob")
    # The transaction was aborted in both databases.
    assert roots(app).keys() == before.keys()
    assert set(roots(app)["sessions"]) == {"ada"}
    assert client.get("/last").text == "ada True sessions"
    assert all_closed(app)


def test_the_secondary_connection_opens_lazily(multi):
    app, _ = multi
    client = ClosingClient(app)
    assert client.get("/main-only").text == "0 ['unnamed']"
    assert client.post("/sessions/k", data={"value": "v"}).text == "['sessions', 'unnamed']"
    assert roots(app)["sessions"] == {"k": "v"}
    assert all_closed(app)


def test_get_root_and_get_connection_of_the_main_database(multi):
    app, db = multi
    with app.app_context():
        assert db.get_connection() is db.connection
        assert db.get_connection("") is db.connection
        assert db.get_root() is db.root
        assert db.get_connection("sessions").db().database_name == "sessions"
        assert db.get_connection("sessions") is db.connection.get_connection("sessions")


def test_an_unknown_name_lists_the_names(multi):
    app, db = multi
    with app.app_context(), pytest.raises(KeyError) as info:
        db.get_root("sesions")
    assert info.value.args[0] == (
        "there is no database named 'sesions'; the additional databases are: 'sessions'"
    )


def test_an_unknown_name_without_additional_databases(make_app):
    app, db = make_app()
    with app.app_context(), pytest.raises(KeyError, match="the additional databases are: none"):
        db.get_connection("sessions")


def test_a_context_writes_to_both_databases_in_one_transaction(multi):
    app, db = multi
    with pytest.raises(ZeroDivisionError), app.app_context():
        db["a"] = 1
        db.get_root("sessions")["a"] = 1
        1 / 0  # noqa: B018
    assert roots(app) == {"unnamed": {}, "sessions": {}}
    with app.app_context():
        db["a"] = 1
        db.get_root("sessions")["a"] = 2
    assert roots(app) == {"unnamed": {"a": 1}, "sessions": {"a": 2}}


# -- configuration ---------------------------------------------------------------


def test_zodb_databases_must_be_a_dict(make_app):
    with pytest.raises(ConfigurationError, match="ZODB_DATABASES must be a dict"):
        make_app(ZODB_DATABASES=["memory://"])


def test_the_main_database_named_twice(make_app):
    with pytest.raises(
        ConfigurationError, match=r"ZODB_STORAGE and ZODB_DATABASES\[''\] both name"
    ):
        make_app("memory://", ZODB_DATABASES={"": "memory://"})


def test_the_main_database_from_zodb_databases_only(make_app):
    app, db = make_app(None, ZODB_DATABASES={"": "memory://"})
    with app.app_context():
        db["a"] = 1
    assert app.extensions["zodb"].database.names == []


def test_neither_zodb_storage_nor_a_main_database(make_app):
    with pytest.raises(ConfigurationError, match="ZODB_STORAGE is not set"):
        make_app(None, ZODB_DATABASES={"sessions": "memory://"})


@pytest.mark.parametrize("name", [0, None, b"sessions"])
def test_names_must_be_non_empty_strings(make_app, name):
    with pytest.raises(ConfigurationError, match="must be non-empty strings; got"):
        make_app("memory://", ZODB_DATABASES={name: "memory://"})


def test_an_empty_name_for_the_middleware():
    with pytest.raises(ConfigurationError, match="non-empty strings; got ''"):
        Database("memory://", databases={"": "memory://"})


def test_a_member_with_the_main_database_name(make_app):
    with pytest.raises(ConfigurationError, match="the main database is named 'main'"):
        make_app(
            "memory://?database_name=main",
            ZODB_DATABASES={"main": "memory://"},
        )
    with pytest.raises(ConfigurationError, match="named 'unnamed'"):
        make_app("memory://", ZODB_DATABASES={"unnamed": "memory://"})


def test_a_bad_member_storage_names_its_key(make_app):
    with pytest.raises(ConfigurationError, match=r"ZODB_STORAGE\['sessions'\]"):
        make_app("memory://", ZODB_DATABASES={"sessions": "nosuchscheme://x"})


def test_a_member_that_cannot_open_closes_the_others(make_app, tmp_path):
    main = tmp_path / "main.fs"
    locked = tmp_path / "sessions.fs"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from ZODB.FileStorage import FileStorage; "
            f"s = FileStorage({str(locked)!r}); print('open', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"open\n"
        database = Database(f"file://{main}", databases={"sessions": f"file://{locked}"})
        with pytest.raises(StorageUnavailableError) as info:
            database.get()
        assert "cannot open storage['sessions']" in str(info.value)
        assert "locked by another process" in str(info.value)
        assert not database.is_open
        # The main FileStorage was closed again: this process can open it.
        alone = Database(f"file://{main}")
        alone.get()
        alone.close()
    finally:
        holder.communicate(b"")
    database.get()
    assert sorted(database.get().databases) == ["sessions", "unnamed"]
    database.close()


def test_the_middleware_with_named_databases(tmp_path):
    import webtest

    from zodb_wsgi import ZODBMiddleware

    def app(environ, start_response):
        handle = environ["zodb"]
        handle.get_connection("cache").root()["hits"] = 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(sorted(handle.connection.connections)).encode()]

    middleware = ZODBMiddleware(
        app, f"file://{tmp_path / 'main.fs'}", databases={"cache": "memory://"}
    )
    try:
        assert webtest.TestApp(middleware).get("/").text == "['cache', 'unnamed']"
        db = middleware.database.get()
        with db.databases["cache"].transaction() as connection:
            assert connection.root()["hits"] == 1
    finally:
        middleware.database.close()
