"""Fixtures of the Flask facade's tests: applications set up with Flask-ZODB.

The storages themselves (``storage_uri``, ``file_uri``, ``zeo_server``) come
from the project's top-level ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import transaction
from flask import Flask

from flask_zodb import ZODB

MakeApp = Callable[..., tuple[Flask, ZODB]]


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """``make_app(storage="memory://", **config)`` -> ``(app, db)``.

    Each application is a testing Flask app set up with ``ZODB(app)``; its
    database is closed after the test, so that a FileStorage is unlocked and
    a ZEO or RelStorage connection does not outlive the test.
    """
    apps: list[Flask] = []

    def make(storage: Any = "memory://", **config: Any) -> tuple[Flask, ZODB]:
        app = Flask(__name__)
        app.config.update(TESTING=True, ZODB_STORAGE=storage, **config)
        db = ZODB(app)
        apps.append(app)
        return app, db

    yield make
    for app in apps:
        app.extensions["zodb"].database.close()


@pytest.fixture
def stored() -> Callable[[Flask], dict[str, Any]]:
    """``stored(app)``: what the app's database holds, read through a
    connection of its own (not through the facade), as a plain dict."""

    def read(app: Flask) -> dict[str, Any]:
        db = app.extensions["zodb"].database.get()
        connection = db.open(transaction_manager=transaction.TransactionManager())
        try:
            return dict(connection.root())
        finally:
            connection.close()

    return read
