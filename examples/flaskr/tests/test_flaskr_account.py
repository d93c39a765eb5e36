"""Renaming a user: every post shows the new name, and no post is rewritten."""

from __future__ import annotations

from typing import Any

from flask import Flask, session
from flask.testing import FlaskClient


def test_account_page(client: FlaskClient, auth: Any) -> None:
    auth.register("ada", "secret")
    client.post("/create", data={"title": "A post of mine"})
    page = client.get("/auth/account").get_data(as_text=True)
    assert 'value="ada"' in page
    assert "A post of mine" in page


def test_rename_shows_everywhere(app: Flask, client: FlaskClient, auth: Any, zodb: Any) -> None:
    auth.register("ada", "secret")
    for title in ("One", "Two", "Three"):
        client.post("/create", data={"title": title})
    auth.logout()
    auth.register("bob", "secret")
    client.post("/create", data={"title": "Bob's"})
    auth.logout()

    def serials() -> dict[int, bytes]:
        # The id of the transaction that last wrote each post (read its title
        # first: a post not yet loaded shows no serial).
        return {id: post.title and post._p_serial for id, post in zodb["posts"].items()}

    with app.app_context():
        before = serials()

    auth.login("ada", "secret")
    with client:
        response = client.post("/auth/account", data={"username": "Ada Lovelace"})
        assert response.headers["Location"] == "/auth/account"
        assert session["username"] == "Ada Lovelace"
        page = client.get("/auth/account").get_data(as_text=True)
        assert "You are now Ada Lovelace" in page

    page = client.get("/").get_data(as_text=True)
    assert page.count('by <span class="author">Ada Lovelace</span>') == 3
    assert page.count('by <span class="author">bob</span>') == 1
    assert '<span class="author">ada</span>' not in page
    assert 'class="me">Ada Lovelace<' in page  # still logged in

    with app.app_context():
        users = zodb["users"]
        assert list(users) == ["Ada Lovelace", "bob"]
        user = users["Ada Lovelace"]
        assert user.username == "Ada Lovelace"
        assert all(post.author is user for post in user.posts.values())
        # Not one post was written by the rename: each is at the revision
        # that its creation committed.
        assert serials() == before

    # The user logs in with the new name only, and still owns the posts.
    auth.logout()
    assert auth.login("ada", "secret").status_code == 400
    assert auth.login("Ada Lovelace", "secret").status_code == 302
    assert client.post("/1/update", data={"title": "Still mine"}).status_code == 302


def test_rename_validates(app: Flask, client: FlaskClient, auth: Any, zodb: Any) -> None:
    auth.register("bob", "secret")
    auth.logout()
    auth.register("ada", "secret")
    for name, message in [
        ("", "Username is required."),
        ("bob", "The username &#39;bob&#39; is already taken."),
    ]:
        response = client.post("/auth/account", data={"username": name})
        assert response.status_code == 400
        assert message in response.get_data(as_text=True)

    response = client.post("/auth/account", data={"username": " ada "})
    assert response.status_code == 302
    assert "That already is your username." in client.get(response.headers["Location"]).text
    with app.app_context():
        assert sorted(zodb["users"]) == ["ada", "bob"]
        assert zodb["users"]["ada"].username == "ada"
