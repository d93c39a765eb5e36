"""The per-request handle: open lazily, finish (commit or abort), close.

This is the one implementation of a request's life with the database. The
middleware makes one handle per attempt of a request; the Flask facade makes
one for a Flask context that no middleware manages (``test_request_context``,
``app_context``, a CLI command). Either way the steps are the same:

1. The handle is created with a fresh transaction manager of its own, so the
   transaction belongs to the request, not to the thread that happens to run
   it (Flask runs ``async def`` views in another thread).
2. :attr:`ZODBHandle.connection` opens a connection from the pool the first
   time it is asked for; a request that never asks opens none.
3. :meth:`ZODBHandle.finish` commits or aborts whatever transaction the
   request started.
4. :meth:`ZODBHandle.close` aborts anything left over, returns the connection
   to the pool and refuses any further use. It may be called more than once.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
from collections.abc import Callable, Iterator
from typing import Any

import transaction
import zodbpickle.pickle
from persistent.mapping import PersistentMapping
from transaction.interfaces import ITransaction
from transaction.weakset import WeakSet
from ZODB.Connection import Connection

from .database import Database
from .errors import HandleClosedError, UnstorableValueError
from .events import RequestActivity, RequestEvents

log = logging.getLogger("zodb_wsgi")

_thread_managers = transaction.manager  # the global, thread-local manager

# ZODB pickles with zodbpickle, whose PicklingError is not the standard one.
_PICKLING_ERRORS = (pickle.PicklingError, zodbpickle.pickle.PicklingError)


class RequestTransactionManager(transaction.TransactionManager):  # type: ignore[misc]
    """A transaction manager that belongs to one request.

    It is an ordinary :class:`transaction.TransactionManager` (implicit mode:
    ``get()`` starts a transaction when there is none); it only adds
    :meth:`current`, which tells whether the request started a transaction at
    all, so that a request that never did costs nothing to finish.
    """

    def __init__(self, explicit: bool = False) -> None:
        # TransactionManager.__init__ also makes the set of synchronizers, a
        # WeakSet that costs most of a request that never uses the database;
        # __getattr__ makes it when it is first needed (a connection opens,
        # a transaction starts).
        self.explicit = explicit
        self._txn = None
        #: The handle this manager belongs to, while it is open: code that
        #: finds the manager bound to its thread (a Flask context pushed in a
        #: view) can join that request instead of starting a transaction
        #: that would conflict with it.
        self.owner: ZODBHandle | None = None

    def __getattr__(self, name: str) -> Any:
        if name == "_synchs":
            synchs = self._synchs = WeakSet()
            return synchs
        raise AttributeError(name)

    def current(self) -> ITransaction | None:
        """The transaction in progress, or None if none was started."""
        return _in_progress(self)


def _in_progress(manager: transaction.TransactionManager) -> ITransaction | None:
    # TransactionManager keeps its transaction in _txn and has no public way
    # to ask "is one started?" without starting one; this is the one place
    # that looks, so that an idle request costs nothing to finish.
    return manager._txn


class ZODBHandle:
    """One request's access to the database.

    :param database: the process's :class:`~zodb_wsgi.database.Database`.
    :param note: the text written into the transaction's description when it
        commits (the middleware passes the method and the path).
    :param user: the transaction's user (the middleware passes
        ``REMOTE_USER``).
    :param events: told when the connection opens and the transaction
        commits or aborts.
    :param attempt: which attempt of its request this handle serves.
    :param transaction_manager: the manager to use instead of a fresh
        :class:`RequestTransactionManager`.
    """

    __slots__ = (
        "__weakref__",
        "_after_commit",
        "_closed",
        "_commit_seconds",
        "_connection",
        "_finished",
        "_previous_manager",
        "attempt",
        "database",
        "events",
        "note",
        "release_after_commit",
        "retry_error",
        "transaction_manager",
        "user",
    )

    def __init__(
        self,
        database: Database,
        *,
        note: str = "",
        user: str = "",
        events: RequestEvents | None = None,
        attempt: int = 1,
        transaction_manager: transaction.TransactionManager | None = None,
    ) -> None:
        self.database = database
        self.events = events
        #: Which attempt of its request this handle serves (1 unless retried).
        self.attempt = attempt
        #: The request's own manager; a Flask context that no middleware
        #: manages passes the thread's (see flask_zodb).
        if transaction_manager is None:
            transaction_manager = RequestTransactionManager()
            transaction_manager.owner = self  # let go of in close()
        self.transaction_manager = transaction_manager
        self.note = note
        self.user = user
        #: A transient error that the application caught (for example in a
        #: Flask error handler) and handed to the middleware to be retried.
        self.retry_error: BaseException | None = None
        #: Set by a framework that knows the response body is already in
        #: memory: the middleware then gives the connection back to the pool
        #: as soon as the transaction is finished, not when the server closes
        #: the body (after a slow client has read it).
        self.release_after_commit = False
        self._connection: Connection | None = None
        self._closed = False
        self._after_commit: list[Callable[[], Any]] | None = None
        self._previous_manager: Any = None
        self._finished = False
        self._commit_seconds = 0.0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._connection else "idle"
        return f"<ZODBHandle {self.note or '(no note)'} {state}>"

    # -- access ---------------------------------------------------------------

    @property
    def connection(self) -> Connection:
        """The request's connection, opened from the pool on first use."""
        connection = self._connection
        if connection is None:
            if self._closed:
                raise HandleClosedError(
                    "this database handle belongs to a request that has ended; "
                    "its connection is back in the pool. Reach the database "
                    "through the current request (environ['zodb']) instead of "
                    "keeping a handle, a connection or a persistent object "
                    "from an earlier request."
                )
            manager = self.transaction_manager
            connection = self._connection = self.database.open(manager)
            if _in_progress(manager) is None:
                # Opening a pooled connection does not ask the storage what
                # changed (a transaction in progress would have). Without
                # asking, a ZEO client may not yet have heard of a commit that
                # another process already reported to its user, and a request
                # would read the state from before it.
                connection.newTransaction(None, True)
            connection.getTransferCounts(True)  # count this request's loads only
            if self.events is not None:
                self.events.connection_opened(self)
        return connection

    def get_connection(self, name: str = "") -> Connection:
        """The request's connection to the database called *name* in a
        multi-database ("" is the main one). Like the main connection it is
        opened on first use, and it shares the request's transaction."""
        connection = self.connection
        if not name:
            return connection
        first = name not in connection.connections
        try:
            secondary = connection.get_connection(name)
        except KeyError:
            known = ", ".join(repr(n) for n in self.database.names) or "none"
            raise KeyError(
                f"there is no database named {name!r}; the additional databases are: {known}"
            ) from None
        if first and _in_progress(self.transaction_manager) is None:
            # As for the main connection (see connection): a secondary one
            # opened from the pool must ask its storage what changed.
            secondary.newTransaction(None, True)
        return secondary

    @property
    def root(self) -> PersistentMapping:
        """The database's root mapping, through :attr:`connection`."""
        return self.connection.root()

    @property
    def is_connected(self) -> bool:
        """True if this request has opened its connection."""
        return self._connection is not None

    @property
    def is_closed(self) -> bool:
        """True once the request has ended and the handle was closed."""
        return self._closed

    @property
    def activity(self) -> RequestActivity:
        """What this request did with the database so far (loads, stores,
        commit time, attempt)."""
        loads = stores = 0
        if self._connection is not None:
            loads, stores = self._connection.getTransferCounts()
        return RequestActivity(loads, stores, self._commit_seconds, self.attempt)

    @property
    def transaction(self) -> ITransaction:
        """The request's transaction (started if there is none yet)."""
        return self.transaction_manager.get()

    def doom(self) -> None:
        """Doom the request's transaction: it will be aborted, never committed."""
        self.transaction_manager.get().doom()

    def request_retry(self, error: BaseException) -> None:
        """Ask the middleware to retry the request because of *error*.

        For frameworks that turn every exception into a response before the
        middleware can see it: their handler for
        :class:`transaction.interfaces.TransientError` calls this, and the
        middleware then retries exactly as if the error had escaped. A
        :class:`~zodb_wsgi.StorageUnavailableError` (or a disconnect from an
        unreachable server) handed over this way gets the middleware's 503.
        """
        self.retry_error = error

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run *callback* once, after the request's transaction has committed.

        Use it for side effects that must happen once and only if the data
        was stored: sending mail, queueing a job. It is not run when the
        transaction aborts, nor for an attempt that is retried; an exception
        it raises is logged and does not undo the commit.
        """
        if self._after_commit is None:
            self._after_commit = []
        self._after_commit.append(callback)
        # A request that only reads (or never touches the database) starts no
        # transaction; give it one, so that finish() commits and runs this.
        self.transaction_manager.get()

    # -- thread binding ---------------------------------------------------------

    def bind_thread(self) -> None:
        """Make ``transaction.get()`` in this thread reach the request's manager."""
        self._previous_manager = _thread_managers.manager
        _thread_managers.manager = self.transaction_manager

    def unbind_thread(self) -> None:
        """Undo :meth:`bind_thread`, in the thread that bound."""
        previous, self._previous_manager = self._previous_manager, None
        if previous is not None and _thread_managers.manager is self.transaction_manager:
            _thread_managers.manager = previous

    @contextlib.contextmanager
    def bound(self) -> Iterator[None]:
        """Bind the calling thread to the request's manager for a block.

        For code that runs part of a request in a thread of its own (Flask
        runs ``async def`` views in an event loop thread): there, too,
        ``transaction.get()`` and ``transaction.doom()`` then reach the
        request's transaction. Unlike :meth:`bind_thread` it keeps its state
        on the stack, so it may be used while the request's own thread is
        bound.
        """
        previous = _thread_managers.manager
        _thread_managers.manager = self.transaction_manager
        try:
            yield
        finally:
            _thread_managers.manager = previous

    # -- the end of the request -------------------------------------------------

    def finish(self, *, commit: bool) -> bool:
        """Commit the request's transaction if *commit* and it is not doomed,
        otherwise abort it. Return True if something was committed.

        A commit that fails is aborted before its exception is raised again,
        so that the database is as it was before the request.
        """
        self._finished = True
        txn = _in_progress(self.transaction_manager)
        if txn is None:
            return False
        events = self.events
        if not commit or txn.isDoomed():
            txn.abort()
            if events is not None:
                self._tell(events.after_abort)
            return False
        self._annotate(txn)
        started = time.perf_counter()
        try:
            if events is not None:
                events.before_commit(self)
            txn.commit()
        except BaseException as exc:
            self._abort_quietly()
            if events is not None:
                self._tell(events.after_abort)
            if isinstance(exc, (*_PICKLING_ERRORS, TypeError)) and _is_pickling(exc):
                raise UnstorableValueError(
                    f"a value could not be stored in the database: {exc}. Only "
                    "picklable values can be stored (no functions defined inline, "
                    "open files, sockets, locks or generators); keep such things "
                    "out of persistent objects, or give their class __getstate__. "
                    "The transaction was aborted: nothing of this request was "
                    "written."
                ) from exc
            raise
        self._commit_seconds = time.perf_counter() - started
        if events is not None:
            # Like the after-commit callbacks: the data is stored, so a
            # failing receiver must not turn the answer into an error.
            self._tell(events.after_commit)
        callbacks, self._after_commit = self._after_commit, None
        for callback in callbacks or ():
            try:
                callback()
            except Exception:
                log.exception("after-commit callback %r failed", callback)
        return True

    def close(self) -> None:
        """Abort what is left, return the connection to the pool, refuse reuse."""
        if self._closed:
            return
        self._closed = True
        self._after_commit = None
        if getattr(self.transaction_manager, "owner", None) is self:
            self.transaction_manager.owner = None
        if _in_progress(self.transaction_manager) is not None:
            self._abort_quietly()
            if not self._finished and self.events is not None:
                # The request ended without a decision (its app raised):
                # that is an abort too. Leftovers after a finish are not.
                self._tell(self.events.after_abort)
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                log.exception("closing the connection of %r failed", self)

    def _tell(self, event: Callable[[ZODBHandle], Any]) -> None:
        # Once the decision is taken (committed, or aborted), a failing
        # receiver is logged: it must not change the answer, nor stop a
        # conflict from being retried.
        try:
            event(self)
        except Exception:
            log.exception("%s of %r failed", getattr(event, "__name__", "event"), self)

    def _annotate(self, txn: ITransaction) -> None:
        if self.note:
            # The request's own note comes first, whatever the view added.
            txn.description = f"{self.note}\n{txn.description}" if txn.description else self.note
        if self.user and not txn.user:
            txn.user = self.user

    def _abort_quietly(self) -> None:
        try:
            self.transaction_manager.abort()
        except Exception:
            log.exception("aborting the transaction of %r failed", self)


def _is_pickling(exc: BaseException) -> bool:
    return isinstance(exc, _PICKLING_ERRORS) or "pickle" in str(exc)
