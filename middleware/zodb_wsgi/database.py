"""One ``ZODB.DB`` per process, created on first use.

A database opened before a pre-fork server (``gunicorn --preload``) forks would
be shared by every worker: its storage's file handles and sockets would be used
by several processes at once. :class:`Database` therefore opens the ``ZODB.DB``
only when a request first needs it, remembers the process that opened it, and
opens a new one when it finds itself in another process. The database is
closed when the process exits, so that a FileStorage writes its index and the
next start does not have to rebuild it.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import transaction
import ZODB
from ZODB.Connection import Connection
from ZODB.DemoStorage import DemoStorage

from .errors import ConfigurationError, StorageUnavailableError
from .storage import (
    SCHEME_PROVIDERS,
    StorageFactory,
    StorageSpec,
    describe,
    mask_uri,
    resolve_storage,
)

log = logging.getLogger("zodb_wsgi")

_LOCKED_HELP = (
    "A file storage can be opened by one process only. To share one database "
    "between several processes, serve it with ZEO ('zeo://host:port'), or use "
    "RelStorage: 'sqlite://?data_dir=/path' for processes on one machine, "
    "'postgres://user@host/dbname' for many machines. If only one process should "
    "have it open, stop the other one (another server, a shell, a CLI command)."
)


class Database:
    """A lazily opened, fork-aware ``ZODB.DB`` for one storage configuration.

    :param storage: any of the forms :func:`zodb_wsgi.storage.resolve_storage`
        accepts.
    :param db_kwargs: keyword arguments for ``ZODB.DB`` (``pool_size``,
        ``cache_size``, ``cache_size_bytes``, ...). They override those that
        the URI or the tuple carries.
    :param setting: the name of the setting, used in error messages.
    :param databases: more databases, by name, each in any storage form, to
        open together with the main one as a ZODB multi-database: objects in
        one may refer to objects in another, and a request's connection
        reaches them with ``connection.get_connection(name)``.
    """

    def __init__(
        self,
        storage: StorageSpec,
        *,
        db_kwargs: Mapping[str, Any] | None = None,
        setting: str = "storage",
        databases: Mapping[str, StorageSpec] | None = None,
    ) -> None:
        self._factory, kwargs = resolve_storage(storage, setting=setting)
        kwargs.update(db_kwargs or {})
        self.db_kwargs: dict[str, Any] = kwargs
        self.description = describe(storage)
        self._setting = setting
        self._others: dict[str, tuple[StorageFactory, dict[str, Any], str]] = {}
        for name, spec in (databases or {}).items():
            if not name or not isinstance(name, str):
                raise ConfigurationError(
                    f"{setting}: the names of additional databases must be non-empty "
                    f"strings; got {name!r}."
                )
            factory, other_kwargs = resolve_storage(spec, setting=f"{setting}[{name!r}]")
            other_kwargs["database_name"] = name
            self._others[name] = (factory, other_kwargs, describe(spec))
        if self._others:
            main_name = self.db_kwargs.get("database_name", "unnamed")
            if main_name in self._others:
                raise ConfigurationError(
                    f"{setting}: the main database is named {main_name!r}, like one "
                    "of the additional databases; give them different names."
                )
        self._db: ZODB.DB | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self.is_open else "not opened"
        return f"<Database {self.description} ({state})>"

    @property
    def is_open(self) -> bool:
        """True if this process has the ``ZODB.DB`` open."""
        return self._db is not None and self._pid == os.getpid()

    def get(self) -> ZODB.DB:
        """Return this process's ``ZODB.DB``, opening it on first use."""
        db = self._db
        if db is not None and self._pid == os.getpid():
            return db
        with self._lock:
            if self._db is not None and self._pid == os.getpid():
                return self._db
            if self._db is not None:
                # Inherited across a fork: the parent still uses its storage's
                # files and sockets, so the child must not close them. Drop it.
                log.info("process %s forked: opening its own database", os.getpid())
                self._db = None
            db = self._open()
            self._db, self._pid = db, os.getpid()
        _close_at_exit(self)
        return db

    @property
    def names(self) -> list[str]:
        """The names of the additional databases (empty for a single one)."""
        return list(self._others)

    def open(self, transaction_manager: transaction.TransactionManager) -> Connection:
        """Open a connection from the pool, bound to *transaction_manager*."""
        return self.get().open(transaction_manager=transaction_manager)

    def close(self) -> None:
        """Close this process's database, if open. It reopens on next use."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None and self._pid == os.getpid():
                _close_databases(db)

    def unreachable(self, error: BaseException) -> bool:
        """True if *error* says that the storage's server cannot be reached now.

        That is a ZEO ``ClientDisconnected`` while this process's client
        storage is still disconnected: running the request again would only
        wait for the server once more. A disconnect that the client has
        already recovered from (the request's transaction began on the old
        connection) is not unreachable: a retry will succeed. With several
        databases, any ZEO client that is disconnected makes it unreachable;
        a storage that cannot tell (no ``is_connected``) is not trusted to
        have recovered.
        """
        if not _is_disconnect(error):
            return False
        db = self._db
        if db is None or self._pid != os.getpid():
            return True
        checks = [getattr(member.storage, "is_connected", None) for member in db.databases.values()]
        connected = [check() for check in checks if check is not None]
        return not connected or not all(connected)

    @contextlib.contextmanager
    def layered(self) -> Iterator[ZODB.DB]:
        """Serve a throw-away layer over the storage for the duration of a
        ``with`` block.

        Inside the block this process's database is a ``DemoStorage`` whose
        base is the real storage: requests read what the storage holds and
        write only to the layer, which is dropped when the block ends. Tests
        use it (through the Flask-ZODB pytest plugin) so that no test sees
        another's writes.
        """
        base = self.get()
        shared: dict[str, ZODB.DB] = {}
        layer = ZODB.DB(
            DemoStorage(base=base.storage, close_base_on_close=False),
            databases=shared,
            **self.db_kwargs,
        )
        for name, (_, kwargs, _) in self._others.items():
            other = base.databases[name]
            ZODB.DB(
                DemoStorage(base=other.storage, close_base_on_close=False),
                databases=shared,
                **kwargs,
            )
        with self._lock:
            self._db = layer
        try:
            yield layer
        finally:
            with self._lock:
                restored = self._db is layer
                if restored:
                    self._db = base
            _close_databases(layer)
            if not restored and self._db is None and self._pid == os.getpid():
                # close() was called in the block and closed only the layer:
                # close the storage too, or it stays open (a FileStorage locked).
                _close_databases(base)

    def _open(self) -> ZODB.DB:
        if not self._others:
            return self._open_one(self._factory, self.db_kwargs, self.description, self._setting)
        shared: dict[str, ZODB.DB] = {}
        try:
            main = self._open_one(
                self._factory,
                {**self.db_kwargs, "databases": shared},
                self.description,
                self._setting,
            )
            for name, (factory, kwargs, description) in self._others.items():
                self._open_one(
                    factory,
                    {**kwargs, "databases": shared},
                    description,
                    f"{self._setting}[{name!r}]",
                )
        except BaseException:
            for db in list(shared.values()):
                db.close()
            raise
        return main

    @staticmethod
    def _open_one(
        factory: StorageFactory, kwargs: dict[str, Any], description: str, setting: str
    ) -> ZODB.DB:
        unknown = sorted(set(kwargs) - _DB_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"{setting}: unknown database option(s) {', '.join(map(repr, unknown))}; "
                f"ZODB.DB accepts {', '.join(sorted(_DB_OPTIONS - {'databases'}))}."
            )
        attempt = 1
        while True:
            try:
                storage = factory()
                break
            except ImportError as exc:
                raise StorageUnavailableError(
                    f"cannot open {setting} {description}: {exc}. {_driver_hint(description)}"
                ) from exc
            except Exception as exc:
                if _is_lock_error(exc):
                    raise StorageUnavailableError(
                        f"cannot open {setting} {description}: it is locked by "
                        f"another process. {_LOCKED_HELP}"
                    ) from exc
                if _is_missing_driver(exc):
                    raise StorageUnavailableError(
                        f"cannot open {setting} {description}: {type(exc).__name__}: "
                        f"{mask_uri(str(exc))} {_driver_hint(description)}"
                    ) from exc
                if attempt < _OPEN_ATTEMPTS and not _is_disconnect(exc):
                    # Workers that open a new RelStorage database at once all
                    # create its tables, and all but one fail; a moment later
                    # the tables are there. (A ZEO client has waited already.)
                    log.info("opening %s failed (%s); again", description, mask_uri(str(exc)))
                    time.sleep(_OPEN_BACKOFF * attempt)
                    attempt += 1
                    continue
                raise StorageUnavailableError(
                    f"cannot open {setting} {description}: {type(exc).__name__}: "
                    f"{mask_uri(str(exc))}"
                ) from exc
        if storage is None:
            raise ConfigurationError(
                f"{setting}: the storage factory {description} returned None instead "
                "of a storage (a missing 'return'?). ZODB would quietly use a "
                "throw-away in-memory storage instead."
            )
        try:
            return ZODB.DB(storage, **kwargs)
        except BaseException as exc:
            # Whatever failed, the storage must not outlive it: a ZEO client
            # would stay connected, a file stay locked. (On an empty database
            # ZODB.DB creates the root: workers that start together conflict
            # there, and the middleware retries that ConflictError.)
            storage.close()
            if not isinstance(exc, TypeError):
                raise
            options = sorted(k for k in kwargs if k != "databases")
            raise ConfigurationError(
                f"{setting}: the database options {options} are not all accepted by ZODB.DB: {exc}"
            ) from exc


#: How many times a storage is opened before its error is reported, and the
#: wait before the second time (seconds; doubled before the third).
_OPEN_ATTEMPTS = 3
_OPEN_BACKOFF = 0.1

# ZODB.DB takes unknown keywords as arguments for a storage of its own making
# and only asserts that there are none: they are checked against this instead.
_DB_OPTIONS = frozenset(inspect.signature(ZODB.DB.__init__).parameters) - {
    "self",
    "storage",
    "storage_args",
}


def _close_databases(db: ZODB.DB) -> None:
    # A multi-database's members share one ``databases`` mapping; close all.
    for member in list(db.databases.values()):
        member.close()


def _is_lock_error(exc: BaseException) -> bool:
    try:
        from zc.lockfile import LockError
    except ImportError:  # pragma: no cover - zc.lockfile comes with ZODB
        return False
    return isinstance(exc, LockError)


def _is_missing_driver(exc: BaseException) -> bool:
    """True for RelStorage's error for a database driver that is not installed.

    RelStorage looks for its driver when the storage opens, and that error is
    not an ImportError. (If RelStorage was never imported, it is not this.)
    """
    interfaces = sys.modules.get("relstorage.adapters.interfaces")
    return interfaces is not None and isinstance(exc, interfaces.DriverNotAvailableError)


def _is_disconnect(error: BaseException) -> bool:
    """True for ZEO's ClientDisconnected (ZEO is imported only if installed)."""
    try:
        from ZEO.Exceptions import ClientDisconnected
    except ImportError:  # pragma: no cover - ZEO is optional
        return False
    return isinstance(error, ClientDisconnected)


def _driver_hint(description: str) -> str:
    scheme = description.split("://", 1)[0]
    provider = SCHEME_PROVIDERS.get(scheme)
    if provider:
        return f"Install {provider} to use {scheme}:// storages."
    return "Install the package that provides this storage."


_open_databases: weakref.WeakSet[Database] = weakref.WeakSet()
_registered = False


def _close_at_exit(database: Database) -> None:
    global _registered
    _open_databases.add(database)
    if not _registered:
        _registered = True
        atexit.register(_close_all)


def _close_all() -> None:
    for database in list(_open_databases):
        try:
            database.close()
        except Exception:  # pragma: no cover - nothing more can be done at exit
            log.exception("closing %s at exit failed", database.description)
