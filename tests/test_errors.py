"""Clear errors: bad storage configuration, values that cannot be stored, db
used where there is no database to use."""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request

import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_zodb import ZODB
from zodb_wsgi import ConfigurationError, HandleClosedError, UnstorableValueError
from zodb_wsgi.storage import installed_schemes

# -- storage configuration --------------------------------------------------------


def setting_up(storage=None, **config):
    app = Flask(__name__)
    if storage is not None:
        app.config["ZODB_STORAGE"] = storage
    app.config.update(config)
    return lambda: ZODB(app)


@pytest.mark.parametrize("storage", [None, ""])
def test_missing_storage_names_the_key_and_the_three_forms(storage):
    with pytest.raises(ConfigurationError) as info:
        setting_up(storage)()
    message = str(info.value)
    assert "ZODB_STORAGE is not set" in message
    assert "FLASK_ZODB_STORAGE" in message
    assert "zodburi URI string" in message
    assert "tuple (storage_factory, db_keyword_args)" in message
    assert "callable storage_factory" in message


def test_a_failed_setup_leaves_the_app_as_it_was():
    app = Flask(__name__)
    wsgi_app = app.wsgi_app
    with pytest.raises(ConfigurationError):
        ZODB(app)
    assert "zodb" not in app.extensions
    assert app.wsgi_app == wsgi_app
    # Once configured, the same app can be set up.
    app.config["ZODB_STORAGE"] = "memory://"
    ZODB(app)


def test_an_unknown_scheme_lists_the_installed_schemes():
    with pytest.raises(ConfigurationError) as info:
        setting_up("nosuch://somewhere")()
    message = str(info.value)
    assert message.startswith("ZODB_STORAGE 'nosuch://somewhere'")
    assert "scheme 'nosuch'" in message
    assert f"Installed schemes: {', '.join(installed_schemes())}" in message
    for scheme in ("file", "memory", "zeo", "postgres", "sqlite"):
        assert scheme in installed_schemes()


def test_a_path_without_a_scheme_is_explained():
    with pytest.raises(ConfigurationError, match=r"ZODB_STORAGE 'app.fs' is not a URI") as info:
        setting_up("app.fs")()
    assert "file://" in str(info.value)
    assert "Installed schemes: " in str(info.value)


def test_a_bad_uri_query_is_reported_with_the_key():
    with pytest.raises(ConfigurationError, match=r"^ZODB_STORAGE 'memory://\?nonsense=1'"):
        setting_up("memory://?nonsense=1")()


def test_a_password_never_shows_in_the_error():
    with pytest.raises(ConfigurationError) as info:
        setting_up("nosuch://ada:s3cret@db.example/app")()
    assert "s3cret" not in str(info.value)
    assert "ada:***@" in str(info.value)


@pytest.mark.parametrize(
    "storage",
    [
        (lambda: None,),
        (lambda: None, {}, "extra"),
        ("not callable", {}),
        (lambda: None, "not a mapping"),
    ],
    ids=["too-short", "too-long", "factory-not-callable", "kwargs-not-a-mapping"],
)
def test_a_bad_tuple_is_explained(storage):
    with pytest.raises(ConfigurationError) as info:
        setting_up(storage)()
    message = str(info.value)
    assert message.startswith("ZODB_STORAGE is a tuple but not (storage_factory, db_keyword_args)")
    assert "Accepted forms: a zodburi URI string" in message


@pytest.mark.parametrize(
    ("storage", "type_name"),
    [(42, "int"), (["memory://"], "list"), (b"memory://", "bytes")],
)
def test_a_value_of_the_wrong_type_is_explained(storage, type_name):
    with pytest.raises(ConfigurationError) as info:
        setting_up(storage)()
    message = str(info.value)
    assert message.startswith("ZODB_STORAGE must be a zodburi URI string")
    assert f"got {type_name} " in message


def test_configuration_errors_are_value_errors():
    # Code that catches ValueError for bad settings keeps working.
    with pytest.raises(ValueError, match="ZODB_STORAGE"):
        setting_up(42)()


# -- values that cannot be stored ---------------------------------------------------


def unstorable_values(tmp_path):
    handle = open(tmp_path / "open-file.txt", "w")  # noqa: SIM115 - closed by the test
    return {
        "lambda": (lambda: "hi", "'function'"),
        "open-file": (handle, "'_io.TextIOWrapper'"),
        "lock": (threading.Lock(), "'_thread.lock'"),
    }


@pytest.fixture(params=["lambda", "open-file", "lock"])
def unstorable(request, tmp_path):
    values = unstorable_values(tmp_path)
    yield values[request.param]
    values["open-file"][0].close()


def app_storing(make_app, stored, value, uri):
    """An app whose database holds {"kept": ...} and whose view changes that,
    adds a key and then stores *value*."""
    app, db = make_app(uri)
    with app.app_context():
        db["kept"] = {"count": 1}
        db["other"] = "unchanged"

    @app.post("/")
    def view():
        db["kept"] = {"count": 2}
        db["added"] = "new"
        del db["other"]
        db["bad"] = value
        return "ok"

    before = stored(app)
    assert before == {"kept": {"count": 1}, "other": "unchanged"}
    return app, before


def test_an_unstorable_value_fails_the_request_naming_its_type(
    make_app, stored, unstorable, file_uri
):
    value, type_name = unstorable
    app, before = app_storing(make_app, stored, value, file_uri)
    with pytest.raises(UnstorableValueError) as info:
        app.test_client().post("/")
    assert f"cannot pickle {type_name} object" in str(info.value)
    assert "nothing of this request was written" in str(info.value)
    assert stored(app) == before


def test_an_unstorable_value_gives_the_client_a_500_and_logs_its_type(
    make_app, stored, file_uri, caplog
):
    # Under a real WSGI server (Werkzeug's, on 127.0.0.1), with the app in
    # production mode: the client gets a 500, not a "200 OK" for data that
    # was never stored, and the server's log says what could not be stored.
    app, before = app_storing(make_app, stored, threading.Lock(), file_uri)
    app.testing = False
    app.config["PROPAGATE_EXCEPTIONS"] = False
    server = make_server("127.0.0.1", 0, app)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/"
        with caplog.at_level(logging.ERROR), pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"))
        assert info.value.code == 500
        info.value.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert "cannot pickle '_thread.lock' object" in caplog.text
    assert "UnstorableValueError" in caplog.text
    assert stored(app) == before


def test_an_unstorable_value_in_a_context_aborts_it(make_app, stored):
    app, db = make_app()
    with pytest.raises(UnstorableValueError, match="'function'"), app.app_context():
        db["fine"] = 1
        db["bad"] = lambda: None
    assert stored(app) == {}


# -- db where there is no database --------------------------------------------------


@pytest.mark.parametrize(
    "use",
    [
        lambda db: db["key"],
        lambda db: db.get("key"),
        lambda db: len(db),
        lambda db: "key" in db,
        lambda db: db.connection,
        lambda db: db.root,
        lambda db: db.transaction_manager,
    ],
    ids=["item", "get", "len", "in", "connection", "root", "transaction_manager"],
)
def test_db_outside_a_flask_context_says_which_context_to_push(make_app, use):
    _, db = make_app()
    with pytest.raises(RuntimeError) as info:
        use(db)
    message = str(info.value)
    assert "outside of a Flask application context" in message
    assert "with app.app_context():" in message
    assert "with app.test_request_context():" in message


def test_an_app_without_init_app_names_init_app():
    db = ZODB()
    app = Flask("unconfigured")
    with app.app_context(), pytest.raises(RuntimeError) as info:
        db["key"]
    message = str(info.value)
    assert "not set up on the application 'unconfigured'" in message
    assert "db.init_app(app)" in message
    with pytest.raises(RuntimeError, match="init_app"):
        db.create_db(app)


def test_an_app_without_init_app_is_not_connected():
    db = ZODB()
    with Flask("unconfigured").app_context():
        assert db.is_connected is False


def test_a_handle_kept_past_its_request_is_refused(make_app):
    app, db = make_app()
    kept = []

    @app.get("/")
    def view():
        kept.append(db.handle)
        return "ok"

    with app.test_client().get("/"):
        pass
    with pytest.raises(HandleClosedError, match="belongs to a request that has ended"):
        kept[0].connection  # noqa: B018


def test_repr_tells_whether_bound(make_app):
    app, db = make_app()
    assert repr(db) == "<ZODB unbound>"
    with app.app_context():
        assert repr(db) == "<ZODB bound>"
