"""The blog's data: users and posts, plain Python objects in the database.

The database's root holds three things::

    db["users"]     BTree   username -> User
    db["posts"]     BTree   post id (1, 2, 3, ...) -> Post
    db["post_ids"]  Length  the last post id handed out

A post does not store its author's id or name: ``post.author`` *is* the
:class:`User` object. Renaming a user changes that one object (and its key in
``db["users"]``); every post then shows the new name, and no post is written.

Every collection is a BTree, so that two requests adding different posts or
different users change different objects, or resolve their changes to one
bucket, instead of conflicting over one big mapping.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from BTrees.Length import Length
from werkzeug.security import check_password_hash, generate_password_hash

from flask_zodb import ZODB, BTree, Object

db = ZODB()


class User(Object):
    """Someone who can log in and write posts."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.set_password(password)
        #: This user's posts, by id: a BTree of their own, so that listing a
        #: user's posts does not go through everyone's.
        self.posts = BTree()

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)
        # A new login key ends the sessions that were opened with the old one.
        self.login_key = secrets.token_urlsafe(16)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def __repr__(self) -> str:
        return f"<User {self.username!r}>"


class Post(Object):
    """A blog post; ``author`` is the :class:`User` who wrote it."""

    def __init__(self, id: int, author: User, title: str, body: str) -> None:
        self.id = id
        self.author = author
        self.title = title
        self.body = body
        self.created = datetime.now(timezone.utc)
        self.updated: datetime | None = None

    def edit(self, title: str, body: str) -> None:
        self.title = title
        self.body = body
        self.updated = datetime.now(timezone.utc)

    def __repr__(self) -> str:
        return f"<Post {self.id} {self.title!r}>"


# -- reading ------------------------------------------------------------------


def users() -> BTree:
    """All users by username (an empty tree before the first registration)."""
    tree = db.get("users")
    return BTree() if tree is None else tree


def posts() -> BTree:
    """All posts by id (an empty tree before the first post)."""
    tree = db.get("posts")
    return BTree() if tree is None else tree


# -- writing ------------------------------------------------------------------
#
# The containers are added to the root by the first write that needs them, so
# that reading pages never writes to the database.


def _container(name: str, factory: type) -> object:
    container = db.get(name)
    if container is None:
        container = db[name] = factory()
    return container


def add_user(username: str, password: str) -> User:
    """Register a new user; the caller checked that *username* is free."""
    user = User(username, password)
    _container("users", BTree)[username] = user
    return user


def rename_user(user: User, new_username: str) -> None:
    """Give *user* a new username; the caller checked that it is free.

    Only the user and the ``users`` tree change: the posts refer to the user
    object, not to its name.
    """
    tree = _container("users", BTree)
    del tree[user.username]
    user.username = new_username
    tree[new_username] = user


def add_post(author: User, title: str, body: str) -> Post:
    """Store a new post by *author* under the next post id."""
    counter = _container("post_ids", Length)
    # Length resolves two concurrent increments to both; if two requests took
    # the same id, their inserts into the posts tree conflict and one of them
    # is retried (by the middleware) with the next id.
    counter.change(1)
    post = Post(counter(), author, title, body)
    _container("posts", BTree)[post.id] = post
    author.posts[post.id] = post
    return post


def delete_post(post: Post) -> None:
    del _container("posts", BTree)[post.id]
    del post.author.posts[post.id]
