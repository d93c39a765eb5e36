"""Fixtures of Flaskr's tests.

One application, on a FileStorage in a temporary directory, serves the whole
test session; the ``zodb`` fixture of Flask-ZODB's pytest plugin layers a
throw-away storage over it for each test, so that every test starts from the
same (empty) database and what a test writes is gone after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flaskr import create_app
from werkzeug.test import TestResponse


class Client(FlaskClient):
    """A test client that reads each response whole and closes it, as a WSGI
    server does. Werkzeug's client closes a response only when asked to, and
    until then the request keeps its database connection out of the pool."""

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture(scope="session")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    path = tmp_path_factory.mktemp("flaskr") / "flaskr.fs"
    app = create_app({"TESTING": True, "SECRET_KEY": "test", "ZODB_STORAGE": f"file://{path}"})
    app.test_client_class = Client
    yield app
    app.extensions["zodb"].database.close()


@pytest.fixture(autouse=True)
def _isolated(zodb: Any) -> None:
    """Every test runs on its own throw-away layer of the database."""


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Auth:
    """Register and log in through the real forms."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def register(self, username: str = "ada", password: str = "secret") -> TestResponse:
        return self.client.post("/auth/register", data={"username": username, "password": password})

    def login(self, username: str = "ada", password: str = "secret") -> TestResponse:
        return self.client.post("/auth/login", data={"username": username, "password": password})

    def logout(self) -> TestResponse:
        return self.client.get("/auth/logout")


@pytest.fixture
def auth(client: FlaskClient) -> Auth:
    return Auth(client)
