"""Writing, listing, editing and deleting posts."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient


@pytest.fixture
def ada(auth: Any) -> Any:
    """Ada is registered and logged in."""
    auth.register("ada", "secret")
    return auth


def write(client: FlaskClient, title: str, body: str = "") -> None:
    response = client.post("/create", data={"title": title, "body": body})
    assert response.status_code == 302, response.get_data(as_text=True)


def test_index_without_posts(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "No posts yet." in response.get_data(as_text=True)
    assert "New post" not in response.get_data(as_text=True)


def test_create(app: Flask, client: FlaskClient, ada: Any, zodb: Any) -> None:
    assert client.get("/create").status_code == 200
    write(client, "Hello", "First post.")
    with app.app_context():
        post = zodb["posts"][1]
        user = zodb["users"]["ada"]
        assert (post.id, post.title, post.body) == (1, "Hello", "First post.")
        # The author is the user object itself, not an id or a name.
        assert post.author is user
        assert user.posts[1] is post
        assert post.created.tzinfo is not None
        assert post.updated is None


def test_index_lists_newest_first_with_the_author(client: FlaskClient, auth: Any) -> None:
    auth.register("ada", "secret")
    write(client, "Ada's first")
    auth.logout()
    auth.register("bob", "secret")
    write(client, "Bob's first", "Line one\nline two")
    write(client, "<b>Bob's second</b>")
    auth.logout()

    page = client.get("/").get_data(as_text=True)
    assert "&lt;b&gt;Bob&#39;s second&lt;/b&gt;" in page
    titles = ["Bob&#39;s second", "Bob&#39;s first", "Ada&#39;s first"]
    positions = [page.index(title) for title in titles]
    assert positions == sorted(positions)
    assert page.count('by <span class="author">bob</span>') == 2
    assert page.count('by <span class="author">ada</span>') == 1
    assert "Edit</a>" not in page  # nobody is logged in


def test_create_requires_a_title(app: Flask, client: FlaskClient, ada: Any, zodb: Any) -> None:
    response = client.post("/create", data={"title": "  ", "body": "text"})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Title is required." in page
    assert ">text</textarea>" in page  # what was typed is kept
    with app.app_context():
        assert "posts" not in zodb
        assert len(zodb["users"]["ada"].posts) == 0


def test_update(app: Flask, client: FlaskClient, ada: Any, zodb: Any) -> None:
    write(client, "Hello", "First post.")
    assert client.get("/1/update").status_code == 200
    response = client.post("/1/update", data={"title": "Hello again", "body": "Edited."})
    assert response.headers["Location"] == "/"
    with app.app_context():
        post = zodb["posts"][1]
        assert (post.title, post.body) == ("Hello again", "Edited.")
        assert post.updated is not None
    assert "Hello again" in client.get("/").get_data(as_text=True)


def test_update_requires_a_title(app: Flask, client: FlaskClient, ada: Any, zodb: Any) -> None:
    write(client, "Hello", "First post.")
    response = client.post("/1/update", data={"title": "", "body": "Edited."})
    assert response.status_code == 400
    assert "Title is required." in response.get_data(as_text=True)
    with app.app_context():
        assert zodb["posts"][1].title == "Hello"
        assert zodb["posts"][1].body == "First post."


def test_delete(app: Flask, client: FlaskClient, ada: Any, zodb: Any) -> None:
    write(client, "One")
    write(client, "Two")
    response = client.post("/1/delete")
    assert response.headers["Location"] == "/"
    with app.app_context():
        assert list(zodb["posts"]) == [2]
        assert list(zodb["users"]["ada"].posts) == [2]
    assert client.post("/1/delete").status_code == 404
    # Ids are never handed out twice, even after a deletion.
    client.post("/2/delete")
    write(client, "Three")
    with app.app_context():
        assert list(zodb["posts"]) == [3]


@pytest.mark.parametrize(("method", "path"), [("GET", "/7/update"), ("POST", "/7/delete")])
def test_missing_post(client: FlaskClient, ada: Any, method: str, path: str) -> None:
    assert client.open(path, method=method).status_code == 404


def test_only_the_author_may_change_a_post(
    app: Flask, client: FlaskClient, auth: Any, zodb: Any
) -> None:
    auth.register("ada", "secret")
    write(client, "Ada's", "Mine.")
    auth.logout()
    auth.register("bob", "secret")

    assert "Edit</a>" not in client.get("/").get_data(as_text=True)
    assert client.get("/1/update").status_code == 403
    assert client.post("/1/update", data={"title": "Bob's now"}).status_code == 403
    assert client.post("/1/delete").status_code == 403
    with app.app_context():
        post = zodb["posts"][1]
        assert (post.title, post.body, post.author.username) == ("Ada's", "Mine.", "ada")

    auth.logout()
    auth.login("ada", "secret")
    assert "Edit</a>" in client.get("/").get_data(as_text=True)
