"""Additional named databases (a ZODB multi-database) behind one middleware,
and the throw-away layer that tests run in."""

from __future__ import annotations

import persistent
import pytest
import transaction
import webtest

from zodb_wsgi import ConfigurationError, Database, StorageUnavailableError, ZODBMiddleware


class Item(persistent.Persistent):
    def __init__(self, name):
        self.name = name


@pytest.fixture
def catalog_uri(tmp_path):
    return f"file://{tmp_path / 'Catalog.fs'}"


def test_a_request_reaches_each_named_database_in_one_transaction(file_uri, catalog_uri):
    def app(environ, start_response):
        handle = environ["zodb"]
        catalog = handle.get_connection("catalog")
        assert handle.get_connection() is handle.connection
        item = Item("lamp")
        catalog.root()["items"] = [item]
        catalog.add(item)
        handle.root["featured"] = item  # a reference across databases
        start_response("200 OK", [])
        return [b""]

    middleware = ZODBMiddleware(app, file_uri, databases={"catalog": catalog_uri})
    try:
        assert middleware.database.names == ["catalog"]
        webtest.TestApp(middleware).post("/")
        db = middleware.database.get()
        manager = transaction.TransactionManager()
        connection = db.open(transaction_manager=manager)
        try:
            featured = connection.root()["featured"]
            assert featured.name == "lamp"
            assert featured._p_jar is connection.get_connection("catalog")
        finally:
            connection.close()
    finally:
        middleware.database.close()


def test_an_unknown_name_lists_the_names_there_are(file_uri, catalog_uri):
    seen = []

    def app(environ, start_response):
        with pytest.raises(KeyError) as error:
            environ["zodb"].get_connection("catalogue")
        seen.append(error.value.args[0])
        start_response("200 OK", [])
        return [b""]

    for databases, known in [({"catalog": catalog_uri}, "'catalog'"), (None, "none")]:
        middleware = ZODBMiddleware(app, file_uri, databases=databases)
        try:
            webtest.TestApp(middleware).get("/")
        finally:
            middleware.database.close()
        assert seen.pop() == (
            f"there is no database named 'catalogue'; the additional databases are: {known}"
        )


@pytest.mark.parametrize("name", ["", 3, None])
def test_a_name_must_be_a_non_empty_string(name):
    with pytest.raises(ConfigurationError, match="must be non-empty strings"):
        Database("memory://", databases={name: "memory://"})


def test_the_main_database_needs_a_name_of_its_own():
    with pytest.raises(ConfigurationError, match="the main database is named 'unnamed'"):
        Database("memory://", databases={"unnamed": "memory://"})
    Database("memory://?database_name=main", databases={"unnamed": "memory://"})


def test_a_named_database_that_cannot_open_closes_the_others(file_uri, tmp_path):
    missing = tmp_path / "missing" / "Catalog.fs"
    database = Database(file_uri, databases={"catalog": f"file://{missing}"})
    with pytest.raises(StorageUnavailableError, match=r"storage\['catalog'\]"):
        database.get()
    assert not database.is_open
    # The main storage was closed again: another Database can open the file.
    other = Database(file_uri)
    try:
        other.get()
    finally:
        other.close()


def test_closing_closes_every_named_database(file_uri, catalog_uri):
    database = Database(file_uri, databases={"catalog": catalog_uri})
    database.get()
    database.close()
    # Both files were let go: each one opens again on its own.
    for uri in (file_uri, catalog_uri):
        other = Database(uri)
        try:
            other.get()
        finally:
            other.close()


def read(database, key, name=""):
    manager = transaction.TransactionManager()
    connection = database.open(manager)
    try:
        if name:
            connection = connection.get_connection(name)
        return connection.root().get(key)
    finally:
        manager.abort()
        connection.close()


def test_a_layer_keeps_its_writes_from_the_storage(file_uri, catalog_uri):
    def app(environ, start_response):
        handle = environ["zodb"]
        handle.root["written"] = environ["PATH_INFO"]
        handle.get_connection("catalog").root()["written"] = environ["PATH_INFO"]
        start_response("200 OK", [])
        return [b""]

    middleware = ZODBMiddleware(app, file_uri, databases={"catalog": catalog_uri})
    database = middleware.database
    client = webtest.TestApp(middleware)
    try:
        client.post("/before")
        base = database.get()
        with database.layered() as layer:
            assert database.get() is layer
            client.post("/inside")
            assert read(database, "written") == "/inside"
            assert read(database, "written", "catalog") == "/inside"
        assert database.get() is base
        assert read(database, "written") == "/before"
        assert read(database, "written", "catalog") == "/before"
    finally:
        database.close()


def test_closing_the_database_inside_a_layer_closes_the_storage(file_uri):
    database = Database(file_uri)
    with database.layered():
        database.close()
    assert not database.is_open
    # The FileStorage was let go: it opens again, here and elsewhere.
    other = Database(file_uri)
    try:
        other.get()
    finally:
        other.close()
    try:
        database.get()
    finally:
        database.close()
