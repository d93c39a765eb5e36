"""The posts: listing, writing, editing and deleting them."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for

from .auth import login_required
from .models import Post, add_post, delete_post, posts

bp = Blueprint("blog", __name__)

MAX_TITLE = 200


@bp.route("/")
def index() -> Any:
    # Ids grow with time, so the tree's keys in reverse are newest first.
    return render_template("blog/index.html", posts=reversed(posts().values()))


def get_post(id: int, *, check_author: bool = True) -> Post:
    """The post *id*: 404 if there is none, 403 if it is not the user's."""
    post = posts().get(id)
    if post is None:
        abort(404, f"There is no post {id}.")
    # One connection holds one copy of each stored object, so the post's
    # author and the logged-in user are the same object if they are the same
    # user: no ids to compare.
    if check_author and post.author is not g.user:
        abort(403, "Only the author of a post may change it.")
    return post  # type: ignore[no-any-return]


def _read_form() -> tuple[str, str, str | None]:
    title = request.form.get("title", "").strip()
    body = request.form.get("body", "").strip()
    error = None
    if not title:
        error = "Title is required."
    elif len(title) > MAX_TITLE:
        error = f"Title must be at most {MAX_TITLE} characters long."
    return title, body, error


@bp.route("/create", methods=("GET", "POST"))
@login_required
def create() -> Any:
    if request.method == "POST":
        title, body, error = _read_form()
        if error is None:
            add_post(g.user, title, body)
            return redirect(url_for("blog.index"))
        flash(error, "error")
        return render_template("blog/create.html", title=title, body=body), 400
    return render_template("blog/create.html", title="", body="")


@bp.route("/<int:id>/update", methods=("GET", "POST"))
@login_required
def update(id: int) -> Any:
    post = get_post(id)
    if request.method == "POST":
        title, body, error = _read_form()
        if error is None:
            post.edit(title, body)
            return redirect(url_for("blog.index"))
        flash(error, "error")
        return render_template("blog/update.html", post=post, title=title, body=body), 400
    return render_template("blog/update.html", post=post, title=post.title, body=post.body)


@bp.route("/<int:id>/delete", methods=("POST",))
@login_required
def delete(id: int) -> Any:
    post = get_post(id)
    delete_post(post)
    flash(f"Deleted {post.title!r}.")
    return redirect(url_for("blog.index"))
