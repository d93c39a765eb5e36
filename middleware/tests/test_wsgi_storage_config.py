"""The three ways to name a storage, and the errors for everything else;
passwords never appear in a message."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import os
import re
import sys

import pytest
import transaction
import webtest
import zodburi
from ZODB.MappingStorage import MappingStorage

from zodb_wsgi import (
    ConfigurationError,
    Database,
    StorageUnavailableError,
    ZODBMiddleware,
    mask_uri,
    resolve_storage,
)
from zodb_wsgi.storage import DEFAULT_ZEO_WAIT_TIMEOUT, zeo_defaults

PG_HOST = os.environ.get("FLASK_ZODB_TEST_PGHOST", "127.0.0.1")
PG_USER = os.environ.get("FLASK_ZODB_TEST_PGUSER", "root")


def round_trip(database):
    """Write through the database, read back through a new connection."""
    try:
        db = database.get()
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        connection.root()["written"] = "and read back"
        manager.commit()
        connection.close()
        connection = db.open(transaction_manager=manager)
        try:
            return connection.root()["written"]
        finally:
            connection.close()
    finally:
        database.close()


# -- the three forms -----------------------------------------------------------


def test_a_uri(file_uri):
    _, kwargs = resolve_storage(f"{file_uri}?connection_pool_size=3")
    assert kwargs["pool_size"] == 3
    assert round_trip(Database(f"{file_uri}?connection_pool_size=3")) == "and read back"


def test_a_factory_and_db_keyword_args():
    database = Database((MappingStorage, {"pool_size": 3, "cache_size": 123}))
    try:
        db = database.get()
        assert db.getPoolSize() == 3
        assert db.getCacheSize() == 123
        assert database.description == "MappingStorage"
    finally:
        database.close()


def test_a_callable_factory(tmp_path):
    from ZODB.FileStorage import FileStorage

    def app_storage():
        return FileStorage(str(tmp_path / "App.fs"))

    database = Database(app_storage)
    assert "app_storage" in database.description
    assert round_trip(database) == "and read back"
    database = Database(functools.partial(FileStorage, str(tmp_path / "Other.fs")))
    assert database.description == "partial"
    assert round_trip(database) == "and read back"


def test_a_middleware_takes_every_form(file_uri):
    def app(environ, start_response):
        start_response("200 OK", [])
        return [b"%d" % len(environ["zodb"].root)]

    for storage in (file_uri, (MappingStorage, {}), MappingStorage):
        middleware = ZODBMiddleware(app, storage)
        try:
            assert webtest.TestApp(middleware).get("/").text == "0"
        finally:
            middleware.database.close()


# -- what is refused -------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        ("file://app.fs", {}),  # a URI where the factory should be
        (MappingStorage,),
        (MappingStorage, {}, {}),
        (MappingStorage, [("pool_size", 3)]),
    ],
)
def test_a_tuple_must_be_factory_and_keyword_args(spec):
    with pytest.raises(ConfigurationError) as error:
        resolve_storage(spec, setting="ZODB_STORAGE")
    message = str(error.value)
    assert message.startswith("ZODB_STORAGE is a tuple but not (storage_factory, db_keyword_args)")
    assert "a zodburi URI string" in message  # the accepted forms


@pytest.mark.parametrize("spec", [42, None, b"file://app.fs", ["memory://"]])
def test_other_types_are_refused(spec):
    with pytest.raises(ConfigurationError) as error:
        Database(spec)
    message = str(error.value)
    assert message.startswith("storage must be a zodburi URI string")
    assert f"got {type(spec).__name__} {spec!r}" in message


def test_a_long_value_is_shortened_in_the_message():
    with pytest.raises(ConfigurationError) as error:
        resolve_storage(list(range(100)))
    assert "..." in str(error.value)
    assert "99" not in str(error.value)


@pytest.mark.parametrize("uri", ["app.fs", "/var/lib/app/Data.fs", "file:app.fs"])
def test_a_uri_needs_a_scheme(uri):
    with pytest.raises(ConfigurationError) as error:
        resolve_storage(uri, setting="ZODB_STORAGE")
    message = str(error.value)
    assert message.startswith(f"ZODB_STORAGE {uri!r} is not a URI")
    assert "Installed schemes: " in message
    for scheme in ("file", "memory", "zeo", "postgres", "sqlite"):
        assert scheme in message


def test_an_unknown_scheme_lists_the_installed_ones():
    with pytest.raises(ConfigurationError) as error:
        resolve_storage("mongodb://db/app")
    message = str(error.value)
    assert "uses the scheme 'mongodb', which no installed package provides." in message
    assert "Install " not in message  # no package to suggest
    assert "Installed schemes: demo, file, memory" in message


@pytest.fixture
def without_schemes(monkeypatch):
    """Hide zodburi resolvers, as if their packages were not installed.

    The packages are installed here, and uninstalling them for one test is
    not possible, so the entry point lookup that finds them is filtered.
    """

    def hide(*names):
        real = importlib.metadata.entry_points

        def entry_points(**selection):
            found = real(**selection)
            return importlib.metadata.EntryPoints(ep for ep in found if ep.name not in names)

        monkeypatch.setattr(zodburi, "entry_points", entry_points)
        monkeypatch.setattr("zodb_wsgi.storage.entry_points", entry_points)

    return hide


@pytest.mark.parametrize(
    ("uri", "package"),
    [
        ("zeo://127.0.0.1:8100", "Install ZEO to use it."),
        ("postgres://app@db/app", "Install RelStorage[postgresql] (RelStorage and psycopg2)"),
        ("sqlite://?data_dir=/var/lib/app", "Install RelStorage to use it."),
    ],
)
def test_a_scheme_whose_package_is_missing_names_the_package(without_schemes, uri, package):
    without_schemes("zeo", "postgres", "sqlite")
    with pytest.raises(ConfigurationError) as error:
        resolve_storage(uri)
    message = str(error.value)
    assert package in message
    assert "which no installed package provides" in message
    assert "zeo" not in message.split("Installed schemes: ")[1]


def test_a_registered_resolver_that_cannot_be_imported(monkeypatch):
    # A broken installation cannot be had for real: make its import fail.
    monkeypatch.setitem(sys.modules, "relstorage.zodburi_resolver", None)
    with pytest.raises(ConfigurationError) as error:
        resolve_storage("sqlite://?data_dir=/var/lib/app")
    message = str(error.value)
    assert "uses the scheme 'sqlite', but RelStorage cannot be imported" in message
    assert "Install RelStorage to use it." in message


def test_a_relstorage_without_the_postgresql_helper(monkeypatch):
    # An incompatible RelStorage version cannot be had for real: take away
    # the one name this package needs from it.
    import relstorage.zodburi_resolver

    monkeypatch.delattr(relstorage.zodburi_resolver, "PostgreSQLAdapterHelper")
    with pytest.raises(ConfigurationError) as error:
        resolve_storage("postgres://app:secret@db/app")
    message = str(error.value)
    assert "but RelStorage[postgresql] (RelStorage and psycopg2) cannot be imported" in message
    assert "secret" not in message


@pytest.mark.parametrize(
    "uri",
    ["memory://?connection_pool_sise=3", "file:///tmp/app.fs?cache=big"],
)
def test_unknown_db_keywords_in_the_query_are_named(uri):
    with pytest.raises(ConfigurationError) as error:
        resolve_storage(uri)
    assert "Unrecognized database keyword(s)" in str(error.value)
    assert uri.split("?")[1].split("=")[0] in str(error.value)


@pytest.mark.parametrize(
    ("uri", "detail"),
    [
        ("memory://?connection_cache_size=lots", "invalid literal for int()"),
        ("zeo://127.0.0.1:port", "Port could not be cast to integer"),
    ],
)
def test_a_bad_value_in_the_uri_is_named(uri, detail):
    with pytest.raises(ConfigurationError) as error:
        resolve_storage(uri)
    assert repr(uri) in str(error.value)
    assert detail in str(error.value)


# -- ZEO -----------------------------------------------------------------------------


def test_a_zeo_uri_waits_only_a_little_and_syncs_with_its_server_by_default():
    wait = f"wait_timeout={DEFAULT_ZEO_WAIT_TIMEOUT}"
    assert zeo_defaults("zeo://127.0.0.1:8100") == f"zeo://127.0.0.1:8100?{wait}&server_sync=1"
    assert zeo_defaults("zeo://127.0.0.1:8100?storage=1") == (
        f"zeo://127.0.0.1:8100?storage=1&{wait}&server_sync=1"
    )
    given = "zeo://h:1?wait_timeout=30&server_sync=0"
    assert zeo_defaults(given) == given


def test_server_sync_reaches_the_client_storage(zeo_server):
    for query, expected in (("", True), ("&server_sync=0", False)):
        database = Database(zeo_server.uri() + query)
        try:
            assert bool(database.get().storage.server_sync) is expected
        finally:
            database.close()


def test_a_zeo_uri_reaches_the_zeo_server(zeo_server):
    assert round_trip(Database(f"zeo://{zeo_server.address}")) == "and read back"


# -- passwords ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("postgres://app:secret@db/app", "postgres://app:***@db/app"),
        ("postgres://app:s%40cr%3At@db:5432/app", "postgres://app:***@db:5432/app"),
        ("postgres://app@db/app?password=secret", "postgres://app@db/app?password=***"),
        (
            "mysql://db/app?user=app&passwd=secret&x=1",
            "mysql://db/app?user=app&passwd=***&x=1",
        ),
        ("zeo://h:1?Secret=secret#frag", "zeo://h:1?Secret=***#frag"),
        ("postgres://app@db/app", "postgres://app@db/app"),
        ("file:///var/lib/app/Data.fs", "file:///var/lib/app/Data.fs"),
    ],
)
def test_mask_uri(uri, masked):
    assert mask_uri(uri) == masked


def test_a_password_appears_in_no_message():
    uri = "postgres://app:secret@127.0.0.1/app?password=secret&bogus=1"
    with pytest.raises(ConfigurationError) as error:
        resolve_storage(uri)
    assert "secret" not in str(error.value)
    assert "app:***@" in str(error.value)

    uri = "mysql://app:secret@127.0.0.1/app"
    database = Database(uri)
    middleware = ZODBMiddleware(lambda e, s: [], database)
    assert "secret" not in database.description
    assert "secret" not in repr(database)
    assert "secret" not in repr(middleware)
    with pytest.raises(StorageUnavailableError) as error:
        database.get()
    assert "secret" not in str(error.value)


def test_a_password_appears_neither_in_the_error_nor_in_the_log(pg_database, caplog):
    uri = f"postgres://{PG_USER}:secret@{PG_HOST}/{pg_database}_does_not_exist"
    database = Database(uri)
    with pytest.raises(StorageUnavailableError) as error:
        database.get()
    assert "secret" not in str(error.value)
    assert f"{PG_USER}:***@" in str(error.value)
    assert "does not exist" in str(error.value)

    def app(environ, start_response):
        environ["zodb"].root.get("x")
        start_response("200 OK", [])
        return [b""]

    with caplog.at_level(logging.DEBUG):
        webtest.TestApp(ZODBMiddleware(app, database)).get("/", status=503)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "does not exist" in logged
    assert "secret" not in logged


# -- PostgreSQL --------------------------------------------------------------------


def test_a_postgres_uri_without_port_or_password(pg_database):
    uri = f"postgres://{PG_USER}@{PG_HOST}/{pg_database}"
    assert round_trip(Database(uri)) == "and read back"


def test_a_postgres_uri_with_a_port_and_escapes(pg_database):
    # The password holds characters that must be quoted in a libpq DSN; the
    # server trusts local connections, so it is sent but not checked.
    uri = f"postgres://{PG_USER}:it%27s%20a%5Cpass@{PG_HOST}:5432/{pg_database}"
    assert round_trip(Database(uri)) == "and read back"


def test_a_postgres_uri_with_ssl_mode(pg_database):
    # RelStorage's own resolver passes ssl_mode on as is, which libpq refuses
    # ("invalid connection option"); it must reach libpq as sslmode.
    uri = f"postgres://{PG_USER}@{PG_HOST}/{pg_database}?ssl_mode=disable"
    assert round_trip(Database(uri)) == "and read back"


@pytest.mark.parametrize(
    "uri",
    [
        "postgres://root:Zm9v/YmFy+cXV4@127.0.0.1:5999/x",  # base64: '/' and '+'
        "postgres://root:Xq7pZw9Lk?Rt3v#Mv8q@127.0.0.1/x",
    ],
)
def test_a_password_with_unescaped_characters_never_shows(uri):
    secret = uri.split("root:", 1)[1].rsplit("@", 1)[0]
    fragments = [part for part in re.split(r"[/?#+]", secret) if part]
    assert all(part not in mask_uri(uri) for part in fragments)
    try:
        resolve_storage(uri)
    except ConfigurationError as error:
        assert all(part not in str(error) for part in fragments), error
