"""Hooks into each request's life with the database, and what it cost.

Pass a :class:`RequestEvents` subclass to
``ZODBMiddleware(app, storage, events=...)`` to be told when a request opens
its connection, is about to commit, has committed or has aborted; for
metrics, audit logs, or to send a framework's signals (Flask-ZODB sends
blinker signals from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .handle import ZODBHandle


class RequestEvents:
    """Receives the events of every request; each method does nothing here.

    The methods run in the request's thread, inside the request: an
    exception raised by one fails the request like one raised by the app
    (before the commit, that aborts the transaction).
    """

    def connection_opened(self, handle: ZODBHandle) -> None:
        """The request opened its connection (the first time it used the database)."""

    def before_commit(self, handle: ZODBHandle) -> None:
        """The request's transaction is about to commit."""

    def after_commit(self, handle: ZODBHandle) -> None:
        """The request's transaction committed."""

    def after_abort(self, handle: ZODBHandle) -> None:
        """The request's transaction was aborted (error, doom, veto, retry)."""


@dataclass(frozen=True)
class RequestActivity:
    """What one request did with the database.

    :ivar loads: objects loaded from the storage (not from the cache).
    :ivar stores: objects written at commit.
    :ivar commit_seconds: time spent committing (0.0 if nothing was committed).
    :ivar attempt: which attempt of the request this was (1 unless retried).
    """

    loads: int
    stores: int
    commit_seconds: float
    attempt: int

    def server_timing(self) -> str:
        """The activity as the value of an HTTP ``Server-Timing`` header."""
        return (
            f'zodb;dur={self.commit_seconds * 1000:.2f};desc="commit", '
            f'zodb-loads;desc="{self.loads}", zodb-stores;desc="{self.stores}", '
            f'zodb-attempt;desc="{self.attempt}"'
        )
