"""Reaching the request's database from a WSGI environ.

Any WSGI application wrapped in :class:`~zodb_wsgi.ZODBMiddleware` finds its
handle under ``environ["zodb"]`` and the transaction manager under
``environ["transaction.manager"]``; these helpers add a clear error when the
application is not wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from persistent.mapping import PersistentMapping
from ZODB.Connection import Connection

from .errors import NoHandleError
from .handle import ZODBHandle

HANDLE_KEY = "zodb"
MANAGER_KEY = "transaction.manager"


def get_handle(environ: Mapping[str, Any]) -> ZODBHandle:
    """Return the request's :class:`~zodb_wsgi.handle.ZODBHandle`."""
    handle = environ.get(HANDLE_KEY)
    if handle is None:
        raise NoHandleError(
            f"this WSGI environ has no {HANDLE_KEY!r} key: the application is not "
            "running inside ZODBMiddleware, or the request has already ended. Wrap "
            "the application: app = ZODBMiddleware(app, 'file://app.fs')."
        )
    return handle  # type: ignore[no-any-return]


def get_connection(environ: Mapping[str, Any]) -> Connection:
    """Return the request's ZODB connection, opening it on first use."""
    return get_handle(environ).connection


def get_root(environ: Mapping[str, Any]) -> PersistentMapping:
    """Return the database's root mapping for this request."""
    return get_handle(environ).root
