"""Each test runs on a throw-away layer: no test sees another's writes."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_starts_from_the_same_database(
    app: Flask, client: FlaskClient, zodb: Any, run: int
) -> None:
    with app.app_context():
        assert "users" not in zodb
        assert "posts" not in zodb
    # The app's FileStorage is under the test's layer and is never written.
    base = zodb.create_db(app).storage.base
    before = base.lastTransaction()

    client.post("/auth/register", data={"username": "isolde", "password": "pw"})
    client.post("/create", data={"title": f"Written by run {run}"})
    with app.app_context():
        assert list(zodb["users"]) == ["isolde"]
        assert [post.title for post in zodb["posts"].values()] == [f"Written by run {run}"]
    assert base.lastTransaction() == before
