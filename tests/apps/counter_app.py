"""A Flask-ZODB counter for the concurrency tests.

One integer in the database's root, ``count``: ``POST /increment`` adds one
and answers the new value, ``GET /count`` reads it, ``GET /status`` tells
which process answered and whether it has its own database open, without
touching the database.

The tests serve it in their own process (``create_app(ZODB_STORAGE=...)``)
and under gunicorn, from this directory::

    FLASK_ZODB_STORAGE=zeo://127.0.0.1:8100 gunicorn --workers 4 'counter_app:create_app()'

``app.config.from_prefixed_env()`` turns ``FLASK_ZODB_*`` variables into
``ZODB_*`` settings. With ``COUNTER_OPEN_AT_IMPORT=1`` the application writes
to its database while it is being made (``opened_by``: its pid), as an
application that sets up its data at import time would: under
``gunicorn --preload`` that happens in the master, before the workers are
forked. ``COUNTER_LOG_LEVEL=INFO`` shows the middleware's and ZEO's log
(each retry, each reconnection), for when a test needs explaining.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from flask import Flask, request

from flask_zodb import ZODB
from zodb_wsgi import HANDLE_KEY


def create_app(**config: Any) -> Flask:
    """The counter application; *config* overrides the environment's settings."""
    if os.environ.get("COUNTER_LOG_LEVEL"):
        logging.basicConfig(
            level=os.environ["COUNTER_LOG_LEVEL"],
            format="%(asctime)s %(process)d %(name)s %(message)s",
        )
    app = Flask(__name__)
    app.config.from_prefixed_env()
    app.config.update(config)
    db = ZODB(app)

    @app.post("/increment")
    def increment() -> dict[str, Any]:
        count = db.get("count", 0) + 1
        # ?hold=SECONDS widens the window between read and write, so that
        # concurrent requests are sure to conflict.
        hold = request.args.get("hold", 0.0, type=float)
        if hold:
            time.sleep(hold)
        db["count"] = count
        attempt = request.environ[HANDLE_KEY].attempt  # 1, or more after conflicts
        return {"count": count, "pid": os.getpid(), "attempt": attempt}

    @app.get("/count")
    def count() -> dict[str, Any]:
        return {
            "count": db.get("count", 0),
            "opened_by": db.get("opened_by"),
            "pid": os.getpid(),
        }

    @app.get("/status")
    def status() -> dict[str, Any]:
        # ?hold=SECONDS keeps the worker busy, so that concurrent calls
        # reach different workers.
        time.sleep(request.args.get("hold", 0.0, type=float))
        return {
            "pid": os.getpid(),
            "database_open": app.extensions["zodb"].database.is_open,
            "threads": sorted(thread.name for thread in threading.enumerate()),
        }

    if os.environ.get("COUNTER_OPEN_AT_IMPORT"):
        with app.app_context():
            db["opened_by"] = os.getpid()
    return app
