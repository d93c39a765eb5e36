"""Production settings: pool and cache sizes, credentials, missing drivers.

* ``ZODB_POOL_SIZE``, ``ZODB_POOL_TIMEOUT``, ``ZODB_CACHE_SIZE`` and
  ``ZODB_CACHE_SIZE_BYTES`` (from ``app.config``, or ``FLASK_ZODB_*``
  variables through ``from_prefixed_env()``) and a URI's ``connection_*``
  parameters reach ``ZODB.DB`` and its connections; the Flask settings win.
* A ``zeo://`` URI without ``wait_timeout`` gets 5 seconds (ZEO's own 30
  equal gunicorn's worker timeout).
* A password in a storage URI never shows: not in a log line, not in an
  exception, also when the connection fails.
* A ``postgres://`` URI without RelStorage, or without psycopg2, fails with
  an error that names what to install. The missing package is simulated in
  a subprocess whose import system hides it (a meta path finder that
  refuses the name); nothing is uninstalled.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import transaction
import webtest
from apps.counter_app import create_app
from apps.serving import free_port

from zodb_wsgi import ConfigurationError, Database, StorageUnavailableError
from zodb_wsgi.storage import DEFAULT_ZEO_WAIT_TIMEOUT, zeo_defaults

SECRET = "secret"
ROOT = Path(__file__).resolve().parent.parent


def test_flask_settings_reach_the_database_and_its_connections(tmp_path: Path) -> None:
    app = create_app(
        ZODB_STORAGE=f"file://{tmp_path / 'Data.fs'}",
        ZODB_POOL_SIZE=3,
        ZODB_POOL_TIMEOUT=120,
        ZODB_CACHE_SIZE=1234,
        ZODB_CACHE_SIZE_BYTES=10_000_000,
    )
    db = app.extensions["zodb"].extension.create_db(app)
    try:
        assert db.getPoolSize() == 3
        assert db.pool.getTimeout() == 120
        assert db.getCacheSize() == 1234
        assert db.getCacheSizeBytes() == 10_000_000
        connection = db.open()
        try:
            assert connection._cache.cache_size == 1234
            assert connection._cache.cache_size_bytes == 10_000_000
        finally:
            connection.close()
    finally:
        db.close()


def test_settings_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_ZODB_STORAGE", f"file://{tmp_path / 'Data.fs'}")
    monkeypatch.setenv("FLASK_ZODB_POOL_SIZE", "5")
    monkeypatch.setenv("FLASK_ZODB_CACHE_SIZE_BYTES", "2000000")
    monkeypatch.setenv("FLASK_ZODB_RETRY_ATTEMPTS", "3")
    app = create_app()
    state = app.extensions["zodb"]
    try:
        assert state.middleware.attempts == 3
        assert state.database.get().getPoolSize() == 5
        assert state.database.get().getCacheSizeBytes() == 2_000_000
        assert webtest.TestApp(app).post("/increment").json["count"] == 1
    finally:
        state.database.close()


def test_uri_connection_parameters_reach_the_database(tmp_path: Path) -> None:
    uri = (
        f"file://{tmp_path / 'Data.fs'}?connection_pool_size=4&connection_cache_size=555"
        "&connection_cache_size_bytes=1MB&connection_pool_timeout=60"
    )
    database = Database(uri)
    try:
        db = database.get()
        assert db.getPoolSize() == 4
        assert db.getCacheSize() == 555
        assert db.getCacheSizeBytes() == 1 << 20
        assert db.pool.getTimeout() == 60
    finally:
        database.close()

    # The Flask settings override the URI's, key by key.
    app = create_app(ZODB_STORAGE=uri, ZODB_POOL_SIZE=2)
    try:
        db = app.extensions["zodb"].database.get()
        assert db.getPoolSize() == 2
        assert db.getCacheSize() == 555
    finally:
        app.extensions["zodb"].database.close()


@pytest.mark.slow
def test_connection_parameters_of_server_uris(zeo_server: object, pg_database: str) -> None:
    for uri in (
        zeo_server.uri(connection_pool_size=2, connection_cache_size=321),  # type: ignore[attr-defined]
        f"postgres://root@127.0.0.1/{pg_database}?connection_pool_size=2&connection_cache_size=321",
    ):
        database = Database(uri)
        try:
            db = database.get()
            assert (db.getPoolSize(), db.getCacheSize()) == (2, 321), uri
        finally:
            database.close()


def query_of(uri: str) -> dict[str, list[str]]:
    return parse_qs(uri.partition("?")[2])


def test_a_zeo_uri_waits_five_seconds_unless_it_says_otherwise() -> None:
    assert DEFAULT_ZEO_WAIT_TIMEOUT == 5
    for uri in ("zeo://127.0.0.1:8100", "zeo:///run/zeo.sock"):
        completed = zeo_defaults(uri)
        assert completed.startswith(uri + "?")
        assert query_of(completed)["wait_timeout"] == ["5"]
    completed = zeo_defaults("zeo://127.0.0.1:8100?storage=1")
    assert query_of(completed)["storage"] == ["1"]
    assert query_of(completed)["wait_timeout"] == ["5"]
    assert query_of(zeo_defaults("zeo://127.0.0.1:8100?wait_timeout=12"))["wait_timeout"] == ["12"]


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text), text


def exception_chain(error: BaseException | None) -> list[str]:
    texts = []
    while error is not None:
        texts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return texts


@pytest.mark.slow
def test_a_password_in_the_uri_never_shows(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The server trusts 127.0.0.1, so the password is accepted and ignored.
    uri = f"postgres://root:{SECRET}@127.0.0.1/{pg_database}"
    caplog.set_level(logging.DEBUG)
    app = create_app(ZODB_STORAGE=uri)
    state = app.extensions["zodb"]
    try:
        assert webtest.TestApp(app).post("/increment").status_int == 200
        assert_no_secret(repr(state.database), state.database.description, repr(state.middleware))
        assert_no_secret(repr(state.database.get().storage))
    finally:
        state.database.close()
        transaction.abort()
    assert caplog.records
    assert_no_secret(*(record.getMessage() for record in caplog.records))


@pytest.mark.slow
def test_a_password_never_shows_when_the_connection_fails(
    pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"postgres://root:{SECRET}@127.0.0.1:{free_port()}/{pg_database}"
    caplog.set_level(logging.DEBUG)
    database = Database(uri, setting="ZODB_STORAGE")
    with pytest.raises(StorageUnavailableError) as raised:
        database.get()
    assert "postgres://root:***@127.0.0.1" in str(raised.value)
    assert_no_secret(*exception_chain(raised.value))

    app = create_app(ZODB_STORAGE=uri)
    response = webtest.TestApp(app).post("/increment", status=503)
    assert "unreachable" in response.text
    assert_no_secret(response.text)
    logged = [record.getMessage() for record in caplog.records]
    assert any("postgres://root:***@127.0.0.1" in line for line in logged), logged
    assert_no_secret(*logged)
    for record in caplog.records:
        if record.exc_info:
            assert_no_secret(*exception_chain(record.exc_info[1]))


@pytest.mark.parametrize(
    "uri",
    [
        f"postgres://root:{SECRET}@127.0.0.1/db?no_such_option=1",
        f"postgres://root:{SECRET}@127.0.0.1/db?connection_pool_size=many",
        f"root:{SECRET}@127.0.0.1/db",  # the scheme forgotten
        f"zeo://127.0.0.1:1?username=root&password={SECRET}&no_such_option=1",
    ],
)
def test_a_password_never_shows_in_a_configuration_error(uri: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Database(uri, setting="ZODB_STORAGE")
    assert "ZODB_STORAGE" in str(raised.value)
    assert_no_secret(*exception_chain(raised.value))


def run_without(hidden: str, uri: str) -> dict[str, str]:
    """Open *uri* in a Python whose imports of *hidden* fail as if it were
    not installed; return the error's type and message."""
    script = textwrap.dedent(
        f"""
        import importlib.abc, json, sys

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] == {hidden!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, Hide())
        from zodb_wsgi import Database
        try:
            Database({uri!r}, setting="ZODB_STORAGE").get()
        except Exception as error:
            print(json.dumps({{"type": type(error).__name__, "message": str(error)}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=True,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.slow
def test_postgres_without_relstorage_names_the_package_to_install() -> None:
    error = run_without("relstorage", f"postgres://root:{SECRET}@127.0.0.1/db")
    assert error["type"] == "ConfigurationError"
    assert "Install RelStorage[postgresql]" in error["message"]
    assert "psycopg2" in error["message"]
    assert_no_secret(error["message"])


@pytest.mark.slow
def test_postgres_without_psycopg2_names_the_package_to_install(pg_database: str) -> None:
    error = run_without("psycopg2", f"postgres://root:{SECRET}@127.0.0.1/{pg_database}")
    assert error["type"] == "StorageUnavailableError"
    assert "Install RelStorage[postgresql] (RelStorage and psycopg2)" in error["message"]
    assert_no_secret(error["message"])
