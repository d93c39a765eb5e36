"""The :class:`ZODB` extension object: the database's root, as a mapping."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any

import transaction
import ZODB as _zodb
from flask import Flask, Response, current_app, g, has_app_context, has_request_context, request
from persistent.mapping import PersistentMapping
from transaction import TransactionManager
from transaction.interfaces import TransientError
from ZODB.Connection import Connection

from zodb_wsgi import (
    HANDLE_KEY,
    Database,
    RequestTransactionManager,
    StorageUnavailableError,
    ZODBHandle,
    ZODBMiddleware,
)

from .cli import zodb_cli
from .config import DEFAULTS, read_settings
from .signals import SignalEvents

_G_KEY = "_zodb_handle"

# The context handle that uses this thread's own transaction manager, if any.
_thread_context = threading.local()


@dataclass
class _State:
    """What ``init_app`` keeps in ``app.extensions["zodb"]``."""

    extension: ZODB
    database: Database
    middleware: ZODBMiddleware
    events: SignalEvents


class ZODB(MutableMapping[str, Any]):
    """The database of a Flask application.

    During a request (and in any Flask application context) the object
    behaves as the database's root mapping::

        db = ZODB(app)

        @app.post("/")
        def shout():
            db["shoutout"] = request.form["message"]
            return redirect(url_for("index"))

    :param app: the application to set up now; or call :meth:`init_app`
        later, once per application, for the application factory pattern.
    """

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {'bound' if has_app_context() else 'unbound'}>"

    # -- setting up ---------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Set up *app*: read its ``ZODB_*`` config and wrap its ``wsgi_app``
        in a :class:`~zodb_wsgi.ZODBMiddleware`.

        If ``app.wsgi_app`` already is (or wraps) a ``ZODBMiddleware``, that
        one is used as it is and ``ZODB_STORAGE`` is not needed.
        """
        if "zodb" in app.extensions:
            raise RuntimeError(
                f"Flask-ZODB is already set up on the application {app.name!r}; "
                "call init_app once per application."
            )
        if app._got_first_request:
            raise RuntimeError(
                f"the application {app.name!r} has already handled a request: set up "
                "Flask-ZODB (ZODB(app) or db.init_app(app)) before it serves."
            )
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        events = SignalEvents(app)
        middleware = _find_middleware(app.wsgi_app)
        if middleware is None:
            middleware = self._make_middleware(app, events)
            app.wsgi_app = middleware  # type: ignore[method-assign]
        else:
            # Wrapped by hand: send the signals unless it has hooks of its own.
            if middleware.events is None:
                middleware.events = events
            if middleware.on_retry is None:
                middleware.on_retry = events.retried
        app.extensions["zodb"] = _State(self, middleware.database, middleware, events)
        app.register_error_handler(TransientError, _hand_to_middleware)
        app.register_error_handler(StorageUnavailableError, _hand_to_middleware)
        app.after_request(_release_when_buffered)
        _bind_async_views(app)
        app.shell_context_processor(self._shell_context)
        app.cli.add_command(zodb_cli)

    def _shell_context(self) -> dict[str, Any]:
        return {"db": self, "root": self.root, "transaction": transaction}

    def _make_middleware(self, app: Flask, events: SignalEvents) -> ZODBMiddleware:
        settings = read_settings(app.config)
        database = Database(
            settings.storage,
            db_kwargs=settings.db_kwargs,
            setting="ZODB_STORAGE",
            databases=settings.databases,
        )
        return ZODBMiddleware(
            app.wsgi_app,
            database,
            attempts=settings.attempts,
            max_body_size=settings.max_body_size,
            commit_veto=settings.commit_veto,
            events=events,
            on_retry=events.retried,
            server_timing=settings.server_timing,
        )

    def create_db(self, app: Flask) -> _zodb.DB:
        """Return *app*'s ``ZODB.DB`` (its connection pool) in this process,
        opening it from the configuration on first use. There is one per
        application and process; do not close it while the app serves."""
        return _state(app).database.get()

    # -- the current context's handle -----------------------------------------

    @property
    def handle(self) -> ZODBHandle:
        """The :class:`~zodb_wsgi.ZODBHandle` of the current request or context."""
        handle = _request_handle()
        if handle is not None:
            return handle
        if not has_app_context():
            raise RuntimeError(
                "the ZODB database was used outside of a Flask application context. "
                "Use it in a view, or push a context first: "
                "'with app.app_context():' (or 'with app.test_request_context():'); "
                "'flask' CLI commands and 'flask shell' push one for you."
            )
        handle = g.get(_G_KEY)
        if handle is None:
            # A context that no middleware manages: it joins an enclosing
            # one of the same app, or gets a handle of its own, finished when
            # the context is popped (_finish_context).
            app = current_app._get_current_object()  # type: ignore[attr-defined]
            state = _state(app)
            handle = _joinable_handle(state) or _context_handle(app, state)
        return handle

    @property
    def connection(self) -> Connection:
        """The current context's ZODB connection, opened on first use."""
        return self.handle.connection

    def get_connection(self, name: str = "") -> Connection:
        """The connection to the database called *name* of a multi-database
        (``ZODB_DATABASES``); "" is the main one. Opened on first use."""
        return self.handle.get_connection(name)

    def get_root(self, name: str = "") -> PersistentMapping:
        """The root mapping of the database called *name* ("" is the main one)."""
        return self.get_connection(name).root()

    @property
    def root(self) -> PersistentMapping:
        """The database's root mapping (``db`` itself acts on it)."""
        return self.handle.root

    @property
    def is_connected(self) -> bool:
        """True if there is a Flask context and it has opened its connection."""
        if not has_app_context():
            return False
        handle = _request_handle() or g.get(_G_KEY)
        if handle is None:
            state = current_app.extensions.get("zodb")
            handle = None if state is None else _joinable_handle(state)
        return handle is not None and bool(handle.is_connected)

    @property
    def transaction_manager(self) -> TransactionManager:
        """The transaction manager of the current request or context."""
        return self.handle.transaction_manager

    def after_commit(self, callback: Callable[[], Any]) -> None:
        """Run *callback* once the current transaction has committed (see
        :meth:`zodb_wsgi.ZODBHandle.after_commit`)."""
        self.handle.after_commit(callback)

    # -- the root mapping -----------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        return self.handle.root[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.handle.root[key] = value

    def __delitem__(self, key: str) -> None:
        del self.handle.root[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.handle.root)

    def __len__(self) -> int:
        return len(self.handle.root)

    def __contains__(self, key: object) -> bool:
        return key in self.handle.root

    def get(self, key: str, default: Any = None) -> Any:
        return self.handle.root.get(key, default)


def _state(app: Flask) -> _State:
    try:
        return app.extensions["zodb"]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(
            f"Flask-ZODB is not set up on the application {app.name!r}: create "
            "the extension with ZODB(app), or call db.init_app(app)."
        ) from None


def _find_middleware(wsgi_app: Any) -> ZODBMiddleware | None:
    # Follow a chain of middlewares that keep their inner app as ``.app``.
    for _ in range(16):
        if isinstance(wsgi_app, ZODBMiddleware):
            return wsgi_app
        wsgi_app = getattr(wsgi_app, "app", None)
        if wsgi_app is None:
            break
    return None


def _request_handle() -> ZODBHandle | None:
    """The handle the middleware put in this request's environ, if it serves
    the current app's database (a sub-app under a dispatcher, or a view that
    pushes another app's context, must not write into this one's)."""
    if not has_request_context():
        return None
    # Through _get_current_object(): this runs on every access to the
    # database, and each attribute read through the proxy costs more than the
    # whole lookup done this way.
    environ: dict[str, Any] = request._get_current_object().environ  # type: ignore[attr-defined]
    handle = environ.get(HANDLE_KEY)
    if handle is not None and handle.database is _own_database():
        return handle  # type: ignore[no-any-return]
    return None


def _joinable_handle(state: _State) -> ZODBHandle | None:
    """An open handle of the same database that encloses the current context.

    A context pushed inside another context of the same app (a command or a
    helper that pushes its own), or a test_request_context pushed in a view
    (to build a URL or render a mail), joins that transaction, committed when
    the outer one ends. One of its own would write the same objects through
    a second connection: a conflict with itself, again on every retry.
    """
    outer_context = getattr(_thread_context, "handle", None)
    outer_request = getattr(transaction.manager.manager, "owner", None)
    for handle in (outer_context, outer_request):
        if handle is not None and not handle.is_closed and handle.database is state.database:
            return handle  # type: ignore[no-any-return]
    return None


def _context_handle(app: Flask, state: _State) -> ZODBHandle:
    if _finish_context not in app.teardown_appcontext_funcs:
        # Registered with the first context that needs it, not at init_app:
        # requests that the middleware manages never need it, and every
        # teardown function costs each request a call.
        app.teardown_appcontext_funcs.append(_finish_context)
    owner = getattr(_thread_context, "handle", None)
    thread_manager = transaction.manager.manager
    if isinstance(thread_manager, RequestTransactionManager) or owner is not None:
        # Inside a request that a middleware manages (a view that pushes a
        # test_request_context), or inside another app's context: a
        # transaction of its own, bound to the thread while it lasts.
        handle = ZODBHandle(state.database, note=_context_note(), events=state.events)
        handle.bind_thread()
    else:
        # The thread's own manager: transaction.doom(), note() or savepoint()
        # called before db is first touched act on this context's transaction.
        handle = _thread_context.handle = ZODBHandle(
            state.database,
            note=_context_note(),
            events=state.events,
            transaction_manager=thread_manager,
        )
    setattr(g, _G_KEY, handle)
    return handle


def _own_database() -> Database | None:
    # The database of the current app: a handle in the environ may belong to
    # another app (a sub-app under a dispatcher, a view that pushes another
    # app's context), whose writes must not land in this one's database.
    state = current_app._get_current_object().extensions.get("zodb")  # type: ignore[attr-defined]
    return None if state is None else state.database


def _context_note() -> str:
    if has_request_context():
        return f"{request.method} {request.path}"
    return "flask app context"


def _hand_to_middleware(error: TransientError | StorageUnavailableError) -> Any:
    # A conflict raised in a view must reach the middleware to be retried,
    # and an unreachable database to be answered with its 503, even when the
    # app has a catch-all error handler: hand it over and answer something
    # that the middleware will replace.
    handle = request.environ.get(HANDLE_KEY)
    if handle is None:
        raise error
    handle.request_retry(error)
    return "The database is busy; this request is being retried.", 503


def _release_when_buffered(response: Response) -> Response:
    # A body already in memory needs no connection while it is sent: give the
    # connection back at the commit, not once a slow client has read it all
    # (or, with Flask's test client, once the response is garbage-collected).
    if not response.is_streamed:
        handle = request._get_current_object().environ.get(HANDLE_KEY)  # type: ignore[attr-defined]
        if handle is not None:
            handle.release_after_commit = True
    return response


def _bind_async_views(app: Flask) -> None:
    # Flask runs an ``async def`` view in an event loop thread of its own;
    # bind that thread too, so that transaction.get() and transaction.doom()
    # in the view reach the request's transaction as they do in a sync view.
    to_sync = app.async_to_sync

    def async_to_sync(func: Callable[..., Any]) -> Callable[..., Any]:
        async def bound(*args: Any, **kwargs: Any) -> Any:
            handle = request.environ.get(HANDLE_KEY) if has_request_context() else None
            if handle is None:
                return await func(*args, **kwargs)
            with handle.bound():
                return await func(*args, **kwargs)

        return to_sync(bound)

    app.async_to_sync = async_to_sync  # type: ignore[method-assign]


def _finish_context(error: BaseException | None) -> None:
    # Runs at the end of every request: read g without the proxy's overhead.
    handle = g._get_current_object().pop(_G_KEY, None)
    if handle is None:
        return
    try:
        handle.finish(commit=error is None)
    finally:
        handle.unbind_thread()
        handle.close()
        if getattr(_thread_context, "handle", None) is handle:
            _thread_context.handle = None
