"""Exceptions raised by :mod:`zodb_wsgi`.

Each one names what went wrong and what to do about it, so that a message in
a log is enough to fix the cause without reading the source.
"""

from __future__ import annotations


class ZODBWSGIError(Exception):
    """Base class of every error this package raises itself."""


class ConfigurationError(ZODBWSGIError, ValueError):
    """The storage or an option was given in a form that cannot be used."""


class StorageUnavailableError(ZODBWSGIError, RuntimeError):
    """The storage could not be opened (locked, missing driver, unreachable)."""


class HandleClosedError(ZODBWSGIError, RuntimeError):
    """A request's handle was used after its request had ended."""


class NoHandleError(ZODBWSGIError, LookupError):
    """An environ carries no handle: the application is not wrapped."""


class UnstorableValueError(ZODBWSGIError, TypeError):
    """A value put into the database cannot be pickled, so it cannot be stored."""
