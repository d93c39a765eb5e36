"""Registering, logging in and out, and renaming oneself."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for

from .models import User, add_user, rename_user, users

bp = Blueprint("auth", __name__, url_prefix="/auth")

MAX_USERNAME = 40


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Send visitors who are not logged in to the login page."""

    @functools.wraps(view)
    def wrapped(**kwargs: Any) -> Any:
        if g.user is None:
            flash("Please log in first.", "error")
            return redirect(url_for("auth.login"))
        return view(**kwargs)

    return wrapped


@bp.before_app_request
def load_logged_in_user() -> None:
    """Put the logged-in :class:`~flaskr.models.User` (or None) in ``g.user``.

    The session holds the username and the user's login key. The key makes a
    stale session worthless: after a rename, someone else may register the
    old name, and a browser still holding it must not log in as them.
    """
    g.user = None
    username = session.get("username")
    if username is None:
        return
    user = users().get(username)
    if user is not None and hmac.compare_digest(session.get("key", ""), user.login_key):
        g.user = user


def _log_in(user: User) -> None:
    session.clear()
    session["username"] = user.username
    session["key"] = user.login_key


def _check_username(username: str) -> str | None:
    """The problem with *username* as a new name, or None if it is usable."""
    if not username:
        return "Username is required."
    if len(username) > MAX_USERNAME:
        return f"Username must be at most {MAX_USERNAME} characters long."
    if username in users():
        return f"The username {username!r} is already taken."
    return None


@bp.route("/register", methods=("GET", "POST"))
def register() -> Any:
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        error = _check_username(username)
        if error is None and not password:
            error = "Password is required."
        if error is None:
            _log_in(add_user(username, password))
            flash(f"Welcome, {username}! You are registered and logged in.")
            return redirect(url_for("blog.index"))
        flash(error, "error")
        # A 4xx answer also aborts the request's transaction: nothing is stored.
        return render_template("auth/register.html", username=username), 400
    return render_template("auth/register.html", username="")


@bp.route("/login", methods=("GET", "POST"))
def login() -> Any:
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        user = users().get(username)
        if user is not None and user.check_password(password):
            _log_in(user)
            return redirect(url_for("blog.index"))
        if not username:
            flash("Username is required.", "error")
        else:
            flash("Unknown username or wrong password.", "error")
        return render_template("auth/login.html", username=username), 400
    return render_template("auth/login.html", username="")


@bp.route("/logout")
def logout() -> Any:
    session.clear()
    return redirect(url_for("blog.index"))


@bp.route("/account", methods=("GET", "POST"))
@login_required
def account() -> Any:
    """Change one's username. Every post shows the new one at once."""
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        if username == g.user.username:
            flash("That already is your username.")
            return redirect(url_for("auth.account"))
        error = _check_username(username)
        if error is None:
            rename_user(g.user, username)
            session["username"] = username
            flash(f"You are now {username}; all your posts show the new name.")
            return redirect(url_for("auth.account"))
        flash(error, "error")
        return render_template("auth/account.html", username=username), 400
    return render_template("auth/account.html", username=g.user.username)
