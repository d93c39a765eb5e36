"""Signals sent during each request's (or context's) life with the database.

They follow Flask's own signals: blinker signals whose sender is the
application. Connect a receiver to count, time or audit::

    from flask_zodb import signals

    conflicts = 0

    @signals.request_retried.connect_via(app)
    def count_conflict(app, attempt, error, **extra):
        global conflicts
        conflicts += 1

Every signal but ``request_retried`` passes ``handle``, the request's
:class:`zodb_wsgi.ZODBHandle` (``handle.connection``, ``handle.activity``,
``handle.transaction``).
"""

from __future__ import annotations

from typing import Any

from blinker import Namespace
from flask import Flask

from zodb_wsgi import RequestEvents, ZODBHandle

_signals = Namespace()

#: The request opened its connection: it used the database for the first time.
connection_opened = _signals.signal("zodb-connection-opened")
#: The request's transaction is about to commit.
before_commit = _signals.signal("zodb-before-commit")
#: The request's transaction committed.
after_commit = _signals.signal("zodb-after-commit")
#: The request's transaction was aborted.
after_abort = _signals.signal("zodb-after-abort")
#: A transient error (a conflict) made the request run again; sent with
#: ``attempt`` (the attempt that failed), ``error`` and ``environ``.
request_retried = _signals.signal("zodb-request-retried")


class SignalEvents(RequestEvents):
    """Turns the middleware's events into the signals above, sent by *app*."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def connection_opened(self, handle: ZODBHandle) -> None:
        if connection_opened.receivers:
            connection_opened.send(self.app, handle=handle)

    def before_commit(self, handle: ZODBHandle) -> None:
        if before_commit.receivers:
            before_commit.send(self.app, handle=handle)

    def after_commit(self, handle: ZODBHandle) -> None:
        if after_commit.receivers:
            after_commit.send(self.app, handle=handle)

    def after_abort(self, handle: ZODBHandle) -> None:
        if after_abort.receivers:
            after_abort.send(self.app, handle=handle)

    def retried(self, environ: dict[str, Any], attempt: int, error: BaseException) -> None:
        """The middleware's ``on_retry`` hook."""
        if request_retried.receivers:
            request_retried.send(self.app, attempt=attempt, error=error, environ=environ)
