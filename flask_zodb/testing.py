"""Test isolation for applications that use Flask-ZODB.

The pytest plugin (installed with Flask-ZODB, no configuration needed)
provides the ``zodb`` fixture. It needs an ``app`` fixture of yours that
returns the application; during each test that uses ``zodb``, the app's
database is a throw-away layer over its configured storage::

    @pytest.fixture
    def app():
        app = create_app({"ZODB_STORAGE": "memory://", "TESTING": True})
        return app

    def test_register(app, zodb):
        app.test_client().post("/register", data={"name": "ada"})
        with app.app_context():
            assert "ada" in zodb["users"]

Without pytest, use :func:`isolated` as a context manager.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from flask import Flask

from .extension import ZODB, _state


@contextlib.contextmanager
def isolated(app: Flask) -> Iterator[ZODB]:
    """Run a block with *app*'s database layered under a throw-away
    ``DemoStorage``: what the block writes is dropped when it ends, what the
    storage held before stays readable. Yields the app's :class:`ZODB`."""
    state = _state(app)
    with state.database.layered():
        yield state.extension
