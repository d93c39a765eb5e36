"""ZODB for any WSGI application: one transaction per request, done right.

:class:`ZODBMiddleware` owns the database, opens a connection only for the
requests that use it, commits before the response is sent, aborts on errors
and retries on conflicts. Applications reach the database through
``environ["zodb"]`` (a :class:`ZODBHandle`) or the helpers below.
"""

from __future__ import annotations

from .database import Database
from .environ import HANDLE_KEY, MANAGER_KEY, get_connection, get_handle, get_root
from .errors import (
    ConfigurationError,
    HandleClosedError,
    NoHandleError,
    StorageUnavailableError,
    UnstorableValueError,
    ZODBWSGIError,
)
from .events import RequestActivity, RequestEvents
from .handle import RequestTransactionManager, ZODBHandle
from .middleware import (
    DEFAULT_ATTEMPTS,
    TRANSACTION_HEADER,
    ZODBMiddleware,
    default_commit_veto,
)
from .storage import mask_uri, resolve_storage

__all__ = [
    "DEFAULT_ATTEMPTS",
    "HANDLE_KEY",
    "MANAGER_KEY",
    "TRANSACTION_HEADER",
    "ConfigurationError",
    "Database",
    "HandleClosedError",
    "NoHandleError",
    "RequestActivity",
    "RequestEvents",
    "RequestTransactionManager",
    "StorageUnavailableError",
    "UnstorableValueError",
    "ZODBHandle",
    "ZODBMiddleware",
    "ZODBWSGIError",
    "default_commit_veto",
    "get_connection",
    "get_handle",
    "get_root",
    "mask_uri",
    "resolve_storage",
]
