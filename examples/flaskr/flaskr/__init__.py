"""Flaskr: a small blog whose data are plain Python objects in a ZODB.

Run it from the repository's root::

    flask --app examples/flaskr/flaskr run --debug

Settings come from ``FLASK_*`` environment variables: ``FLASK_ZODB_STORAGE``
chooses the storage (a file in the instance folder by default),
``FLASK_SECRET_KEY`` the key that signs the session cookie.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .models import db


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Make a Flaskr application; *test_config* overrides every other setting."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        # Replace it in production: FLASK_SECRET_KEY=... (a long random string).
        SECRET_KEY="dev",
        # Browsers then send the session cookie with no cross-site form post.
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.config.from_prefixed_env()
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config.get("ZODB_STORAGE"):
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["ZODB_STORAGE"] = "file://" + os.path.join(app.instance_path, "flaskr.fs")

    db.init_app(app)

    from . import auth, blog

    app.register_blueprint(auth.bp)
    app.register_blueprint(blog.bp)
    return app
