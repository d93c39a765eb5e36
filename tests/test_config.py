"""The ZODB_* settings, from app.config and from FLASK_ZODB_* environment variables."""

from __future__ import annotations

import pytest
import webtest
from flask import Flask
from ZODB.FileStorage import FileStorage
from ZODB.MappingStorage import MappingStorage
from ZODB.POSException import ConflictError

from flask_zodb import ZODB
from zodb_wsgi import ConfigurationError


def veto_dry_runs(environ, status, headers):
    """A commit veto: abort when the client asks for a dry run, or on errors."""
    return "HTTP_X_DRY_RUN" in environ or status.startswith(("4", "5"))


def writing_app(make_app, **config):
    app, db = make_app(**config)

    @app.post("/")
    def write():
        db["written"] = True
        return "ok"

    return app, db


# -- the three forms of ZODB_STORAGE ---------------------------------------------------


def test_storage_as_a_uri(make_app, stored, file_uri):
    app, _ = writing_app(make_app, storage=file_uri)
    app.test_client().post("/")
    assert isinstance(app.extensions["zodb"].database.get().storage, FileStorage)
    assert stored(app) == {"written": True}


def test_storage_as_a_factory_and_db_keyword_args(make_app, stored):
    app, db = writing_app(make_app, storage=(MappingStorage, {"pool_size": 3}))
    app.test_client().post("/")
    assert isinstance(db.create_db(app).storage, MappingStorage)
    assert db.create_db(app).getPoolSize() == 3
    assert stored(app) == {"written": True}


def test_storage_as_a_callable_factory(make_app, stored, tmp_path):
    path = tmp_path / "factory.fs"
    app, db = writing_app(make_app, storage=lambda: FileStorage(str(path)))
    app.test_client().post("/")
    assert db.create_db(app).storage.getName() == str(path)
    assert stored(app) == {"written": True}


def test_uri_connection_options_are_kept(make_app):
    app, db = make_app("memory://?connection_pool_size=5&connection_cache_size=321")
    assert db.create_db(app).getPoolSize() == 5
    assert db.create_db(app).getCacheSize() == 321


def test_config_options_override_those_of_the_storage(make_app):
    app, db = make_app((MappingStorage, {"pool_size": 3}), ZODB_POOL_SIZE=9)
    assert db.create_db(app).getPoolSize() == 9


# -- the options ------------------------------------------------------------------------


def test_pool_size(make_app):
    app, db = make_app(ZODB_POOL_SIZE=4)
    assert db.create_db(app).getPoolSize() == 4


def test_pool_timeout(make_app):
    app, db = make_app(ZODB_POOL_TIMEOUT=60)
    assert db.create_db(app).pool.timeout == 60


def test_cache_size(make_app):
    app, db = make_app(ZODB_CACHE_SIZE=1234)
    assert db.create_db(app).getCacheSize() == 1234


def test_cache_size_bytes(make_app):
    app, db = make_app(ZODB_CACHE_SIZE_BYTES=1 << 20)
    assert db.create_db(app).getCacheSizeBytes() == 1 << 20


def always_conflicting(make_app, **config):
    app, db = make_app(**config)
    attempts = []

    @app.post("/")
    def view():
        attempts.append(1)
        db["attempt"] = len(attempts)
        raise ConflictError("always")

    return app, attempts


def test_retry_attempts(make_app, stored):
    app, attempts = always_conflicting(make_app, ZODB_RETRY_ATTEMPTS=3)
    response = webtest.TestApp(app).post("/", expect_errors=True)
    assert len(attempts) == 3
    assert response.status_int == 503
    assert response.headers["Retry-After"] == "1"
    assert "nothing was changed" in response.text
    assert stored(app) == {}


def test_one_retry_attempt_turns_retries_off(make_app):
    app, attempts = always_conflicting(make_app, ZODB_RETRY_ATTEMPTS=1)
    assert webtest.TestApp(app).post("/", expect_errors=True).status_int == 503
    assert len(attempts) == 1


@pytest.mark.parametrize("attempts", [1, 2])
def test_max_body_size(make_app, stored, attempts):
    app, db = make_app(ZODB_MAX_BODY_SIZE=10, ZODB_RETRY_ATTEMPTS=attempts)
    bodies = []

    @app.post("/")
    def view():
        bodies.append(request_body())
        db["body"] = bodies[-1]
        return "ok"

    testapp = webtest.TestApp(app)
    assert testapp.post("/", b"0123456789").text == "ok"
    too_large = testapp.post("/", b"0123456789X", expect_errors=True)
    assert too_large.status_int == 413
    assert "10 bytes at most" in too_large.text
    assert bodies == [b"0123456789"]
    assert stored(app) == {"body": b"0123456789"}


def request_body():
    from flask import request

    return request.get_data()


def test_commit_veto(make_app, stored):
    app, _ = writing_app(make_app, ZODB_COMMIT_VETO=veto_dry_runs)
    client = app.test_client()
    client.post("/", headers={"X-Dry-Run": "1"})
    assert stored(app) == {}
    client.post("/")
    assert stored(app) == {"written": True}


def test_commit_veto_by_import_path(make_app, stored):
    app, _ = writing_app(make_app, ZODB_COMMIT_VETO=f"{__name__}:veto_dry_runs")
    app.test_client().post("/", headers={"X-Dry-Run": "1"})
    assert stored(app) == {}


@pytest.mark.parametrize(
    ("decision", "status", "committed"),
    [("abort", 200, False), ("commit", 409, True), (" Commit ", 200, True)],
)
def test_a_response_header_decides_for_its_request(make_app, stored, decision, status, committed):
    app, db = make_app()

    @app.post("/")
    def view():
        db["written"] = True
        return "answer", status, {"X-ZODB-Transaction": decision}

    response = app.test_client().post("/")
    assert response.status_code == status
    assert "X-ZODB-Transaction" not in response.headers
    assert stored(app) == ({"written": True} if committed else {})


# -- from environment variables -------------------------------------------------------


def test_settings_from_prefixed_environment_variables(monkeypatch, file_uri, stored):
    monkeypatch.setenv("FLASK_ZODB_STORAGE", file_uri)
    monkeypatch.setenv("FLASK_ZODB_RETRY_ATTEMPTS", "2")
    monkeypatch.setenv("FLASK_ZODB_POOL_SIZE", "4")
    monkeypatch.setenv("FLASK_ZODB_CACHE_SIZE", "2500")
    monkeypatch.setenv("FLASK_ZODB_MAX_BODY_SIZE", "100")
    monkeypatch.setenv("FLASK_ZODB_COMMIT_VETO", f"{__name__}.veto_dry_runs")
    app = Flask(__name__)
    app.config.from_prefixed_env()
    db = ZODB(app)

    @app.post("/")
    def view():
        db["written"] = True
        return "ok"

    try:
        middleware = app.extensions["zodb"].middleware
        assert middleware.attempts == 2
        assert middleware.max_body_size == 100
        assert db.create_db(app).getPoolSize() == 4
        assert db.create_db(app).getCacheSize() == 2500
        client = app.test_client()
        assert client.post("/", data=b"x" * 101).status_code == 413
        client.post("/", headers={"X-Dry-Run": "yes"})
        assert stored(app) == {}
        client.post("/")
        assert stored(app) == {"written": True}
    finally:
        app.extensions["zodb"].database.close()


def test_numbers_given_as_text_are_read(make_app):
    app, db = make_app(ZODB_POOL_SIZE="6", ZODB_RETRY_ATTEMPTS="2", ZODB_MAX_BODY_SIZE="50")
    assert db.create_db(app).getPoolSize() == 6
    assert app.extensions["zodb"].middleware.attempts == 2
    assert app.extensions["zodb"].middleware.max_body_size == 50


def test_whole_numbers_may_be_written_as_floats_and_timeouts_have_fractions(make_app):
    app, db = make_app(ZODB_POOL_SIZE=3.0, ZODB_POOL_TIMEOUT="0.5")
    assert db.create_db(app).getPoolSize() == 3
    assert db.create_db(app).pool.timeout == 0.5


# -- bad values ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ZODB_RETRY_ATTEMPTS", 0),
        ("ZODB_RETRY_ATTEMPTS", -1),
        ("ZODB_RETRY_ATTEMPTS", "many"),
        ("ZODB_RETRY_ATTEMPTS", None),
        ("ZODB_RETRY_ATTEMPTS", True),
        ("ZODB_RETRY_ATTEMPTS", 2.5),
        ("ZODB_RETRY_ATTEMPTS", "2.5"),
        ("ZODB_POOL_SIZE", -1),
        ("ZODB_POOL_SIZE", "seven"),
        ("ZODB_POOL_SIZE", [7]),
        ("ZODB_POOL_SIZE", 7.5),
        ("ZODB_POOL_TIMEOUT", "soon"),
        ("ZODB_CACHE_SIZE", "big"),
        ("ZODB_CACHE_SIZE", -5),
        ("ZODB_CACHE_SIZE_BYTES", "1 MB"),
        ("ZODB_MAX_BODY_SIZE", -1),
        ("ZODB_MAX_BODY_SIZE", "1 MB"),
        ("ZODB_MAX_BODY_SIZE", 0.5),
    ],
)
def test_a_bad_number_names_its_key(key, value):
    app = Flask(__name__)
    app.config.update(ZODB_STORAGE="memory://", **{key: value})
    with pytest.raises(ConfigurationError, match=rf"^{key} must be a"):
        ZODB(app)
    assert "zodb" not in app.extensions


@pytest.mark.parametrize(
    "value",
    [42, "no_such_module_here:veto", f"{__name__}:no_such_veto", "not an import path"],
)
def test_a_bad_commit_veto_names_its_key(value):
    app = Flask(__name__)
    app.config.update(ZODB_STORAGE="memory://", ZODB_COMMIT_VETO=value)
    with pytest.raises(ConfigurationError, match=r"^ZODB_COMMIT_VETO must be a callable"):
        ZODB(app)


def test_a_commit_veto_path_to_something_not_callable_is_refused():
    app = Flask(__name__)
    app.config.update(ZODB_STORAGE="memory://", ZODB_COMMIT_VETO=f"{__name__}:__doc__")
    with pytest.raises(ConfigurationError, match=r"^ZODB_COMMIT_VETO must be a callable"):
        ZODB(app)


@pytest.mark.parametrize("value", [2, "sometimes", ["yes"]])
def test_a_bad_flag_names_its_key(value):
    app = Flask(__name__)
    app.config.update(ZODB_STORAGE="memory://", ZODB_SERVER_TIMING=value)
    with pytest.raises(ConfigurationError, match=r"^ZODB_SERVER_TIMING must be true or false"):
        ZODB(app)
