"""Registering, logging in and out, and the pages that need a login."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, session
from flask.testing import FlaskClient
from flaskr.models import User


def test_register_page(client: FlaskClient) -> None:
    response = client.get("/auth/register")
    assert response.status_code == 200
    assert b'name="username"' in response.data


def test_register_stores_the_user_and_logs_in(
    app: Flask, client: FlaskClient, auth: Any, zodb: Any
) -> None:
    response = auth.register("ada", "secret")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    with app.app_context():
        user = zodb["users"]["ada"]
        assert isinstance(user, User)
        assert user.username == "ada"
        assert "secret" not in user.password_hash
        assert user.check_password("secret")
        assert not user.check_password("Secret")
        assert len(user.posts) == 0
    page = client.get("/").get_data(as_text=True)
    assert "Welcome, ada!" in page
    assert "Log out" in page


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("", "secret", "Username is required."),
        ("   ", "secret", "Username is required."),
        ("ada", "", "Password is required."),
        ("x" * 41, "secret", "at most 40 characters"),
    ],
)
def test_register_validates(
    app: Flask, auth: Any, zodb: Any, username: str, password: str, message: str
) -> None:
    response = auth.register(username, password)
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    with app.app_context():
        assert "users" not in zodb


def test_register_refuses_a_taken_username(app: Flask, auth: Any, zodb: Any) -> None:
    auth.register("ada", "secret")
    auth.logout()
    response = auth.register("ada", "other")
    assert response.status_code == 400
    assert "The username &#39;ada&#39; is already taken." in response.get_data(as_text=True)
    with app.app_context():
        assert list(zodb["users"]) == ["ada"]
        assert zodb["users"]["ada"].check_password("secret")


def test_login_and_logout(client: FlaskClient, auth: Any) -> None:
    auth.register("ada", "secret")
    auth.logout()
    assert "Log in" in client.get("/").get_data(as_text=True)
    assert client.get("/auth/login").status_code == 200

    with client:
        response = auth.login("ada", "secret")
        assert response.headers["Location"] == "/"
        assert session["username"] == "ada"
        page = client.get("/").get_data(as_text=True)
        assert "Log out" in page
        assert 'class="me">ada<' in page

        auth.logout()
        assert "username" not in session
    assert "Log in" in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize(
    ("username", "password", "message"),
    [
        ("ada", "wrong", "Unknown username or wrong password."),
        ("bob", "secret", "Unknown username or wrong password."),
        ("", "secret", "Username is required."),
    ],
)
def test_login_validates(
    client: FlaskClient, auth: Any, username: str, password: str, message: str
) -> None:
    auth.register("ada", "secret")
    auth.logout()
    with client:
        response = auth.login(username, password)
        assert response.status_code == 400
        assert message in response.get_data(as_text=True)
        assert "username" not in session


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/create"),
        ("POST", "/create"),
        ("GET", "/1/update"),
        ("POST", "/1/update"),
        ("POST", "/1/delete"),
        ("GET", "/auth/account"),
        ("POST", "/auth/account"),
    ],
)
def test_login_required(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method, data={"title": "t", "username": "u"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login"
    assert "Please log in first." in client.get("/auth/login").get_data(as_text=True)


def test_a_session_for_an_unknown_user_is_logged_out(client: FlaskClient) -> None:
    with client.session_transaction() as sess:
        sess["username"] = "ghost"
        sess["key"] = "whatever"
    assert client.get("/create").status_code == 302


def test_an_old_session_does_not_log_in_as_whoever_takes_the_old_name(
    app: Flask, client: FlaskClient, auth: Any
) -> None:
    auth.register("ada", "secret")
    with client.session_transaction() as sess:
        old_session = dict(sess)
    client.post("/auth/account", data={"username": "ada2"})
    auth.logout()
    # Someone else registers the name that was freed.
    auth.register("ada", "mallory")
    auth.logout()

    # A browser that still has the session from before the rename...
    other = app.test_client()
    with other.session_transaction() as sess:
        sess.update(old_session)
    # ...is not logged in as the new "ada".
    assert other.get("/create").status_code == 302
