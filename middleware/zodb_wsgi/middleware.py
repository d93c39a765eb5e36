"""The WSGI middleware: one transaction per request, committed before the response.

Usage::

    from zodb_wsgi import ZODBMiddleware

    def app(environ, start_response):
        root = environ["zodb"].root
        root["hits"] = root.get("hits", 0) + 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d hits" % root["hits"]]

    app = ZODBMiddleware(app, "file://app.fs")

The application runs with a handle in ``environ["zodb"]`` whose connection
opens on first use. What it returns is held back: the status and headers
reach the server only once the transaction has committed, so no client is
ever told "200 OK" about a change that was not stored.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol

from transaction.interfaces import TransientError

from ._webob import webob
from .body import buffer_body, has_body, rewind
from .database import Database
from .environ import HANDLE_KEY, MANAGER_KEY
from .errors import StorageUnavailableError
from .events import RequestEvents
from .handle import ZODBHandle
from .storage import StorageSpec, mask_uri

log = logging.getLogger("zodb_wsgi")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
Headers = list[tuple[str, str]]
StartResponse = Callable[..., Callable[[bytes], Any]]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
CommitVeto = Callable[[dict[str, Any], str, Headers], bool]

#: The response header through which a view decides the fate of its
#: transaction: ``commit`` or ``abort``. It is removed before the response
#: leaves the middleware.
TRANSACTION_HEADER = "X-ZODB-Transaction"

#: How many times a request may run when it meets conflicts. Measured with
#: four gunicorn workers and eight clients writing one object at once: most
#: requests commit at once, but a request that lost once tends to lose again
#: (the winners' caches are warm, its own is not), and on RelStorage about
#: one in a hundred needed more than 8 attempts, a few more than 10. Twenty
#: attempts absorb that; they wait about 7 s in all before the 503.
DEFAULT_ATTEMPTS = 20
#: The wait before the second attempt, in seconds; it doubles for each
#: further attempt up to :data:`DEFAULT_MAX_BACKOFF`, with ±50% jitter.
#: Shorter waits made losers lose more often; longer ones did not help.
DEFAULT_BACKOFF = 0.01
DEFAULT_MAX_BACKOFF = 0.5
DEFAULT_SPOOL_THRESHOLD = 1 << 20

#: The ``Retry-After`` (seconds) of the 503 answered while the database
#: cannot be reached: a server that went away is seldom back within a second.
UNREACHABLE_RETRY_AFTER = 5


class RetryHook(Protocol):
    def __call__(self, environ: dict[str, Any], attempt: int, error: BaseException) -> Any: ...


def default_commit_veto(environ: dict[str, Any], status: str, headers: Headers) -> bool:
    """Abort (return True) for a 4xx or 5xx status; commit anything else."""
    return status[:1] in ("4", "5")


class ZODBMiddleware:
    """Wrap *app* so that each request runs in one ZODB transaction.

    :param app: any WSGI application.
    :param storage: a zodburi URI, a ``(storage_factory, db_kwargs)`` tuple,
        a storage factory, or a :class:`~zodb_wsgi.database.Database` to share.
    :param db_kwargs: extra keyword arguments for ``ZODB.DB``.
    :param databases: additional named databases (a multi-database), each
        in any form *storage* accepts; see
        :meth:`~zodb_wsgi.ZODBHandle.get_connection`.
    :param attempts: how many times a request may run when it meets a
        transient error (a conflict); 1 turns retries off.
    :param backoff: the first retry's wait in seconds; each further retry
        doubles it, up to *max_backoff*, with jitter of ±50%.
    :param commit_veto: ``veto(environ, status, headers) -> bool``; True
        aborts the transaction. The default aborts on 4xx and 5xx.
    :param max_body_size: bodies larger than this get a 413 before the
        application runs (None: no limit).
    :param spool_threshold: bodies larger than this are buffered in a
        temporary file rather than in memory.
    :param on_retry: called as ``on_retry(environ, attempt, error)`` before
        each retry, for logging or metrics.
    :param events: a :class:`~zodb_wsgi.events.RequestEvents` told when each
        request opens its connection, commits or aborts.
    :param server_timing: add a ``Server-Timing`` header with the request's
        loads, stores, commit time and attempt to each response that used the
        database.
    """

    def __init__(
        self,
        app: WSGIApp,
        storage: StorageSpec | Database,
        *,
        db_kwargs: Mapping[str, Any] | None = None,
        databases: Mapping[str, StorageSpec] | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        commit_veto: CommitVeto = default_commit_veto,
        max_body_size: int | None = None,
        spool_threshold: int = DEFAULT_SPOOL_THRESHOLD,
        on_retry: RetryHook | None = None,
        events: RequestEvents | None = None,
        server_timing: bool = False,
    ) -> None:
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ValueError(f"attempts must be an integer of 1 or more, got {attempts!r}")
        self.app = app
        if isinstance(storage, Database):
            self.database = storage
        else:
            self.database = Database(storage, db_kwargs=db_kwargs, databases=databases)
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.commit_veto = commit_veto
        self.max_body_size = max_body_size
        self.spool_threshold = spool_threshold
        self.on_retry = on_retry
        self.events = events
        self.server_timing = server_timing

    def __repr__(self) -> str:
        return f"<ZODBMiddleware {self.database.description} around {self.app!r}>"

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        outer = environ.get(HANDLE_KEY)
        if outer is not None:
            if outer.database is self.database:
                # An outer middleware already manages this request's
                # transaction: two acting on one request would commit twice.
                return self.app(environ, start_response)
            # Another database's (a sub-app mounted under a dispatcher): this
            # request gets a handle of its own, in a copy of the environ, so
            # that the outer one's is still there when the sub-app returns.
            return self._run(environ, start_response, True)
        retries = self.attempts > 1
        if (retries or self.max_body_size is not None) and has_body(environ):
            given = environ.get("wsgi.input")
            problem = buffer_body(
                environ, spool_threshold=self.spool_threshold, max_size=self.max_body_size
            )
            if problem is not None:
                return problem(environ, start_response)  # type: ignore[no-any-return]
            # The copy made here (perhaps a temporary file) is ours to close; a
            # body that was seekable already (an outer WebOb layer) is not.
            buffered = environ["wsgi.input"] if environ["wsgi.input"] is not given else None
            try:
                result = self._run(environ, start_response, retries)
            except BaseException:
                _close(buffered)
                raise
            if isinstance(result, _ClosingIterable):
                result.buffered = buffered  # closed with the response
            else:
                _close(buffered)  # the middleware's own answer: the body is done with
            return result
        return self._run(environ, start_response, retries)

    def _run(
        self, environ: dict[str, Any], start_response: StartResponse, retries: bool
    ) -> Iterable[bytes]:
        attempt = 1
        while True:
            try:
                # Each attempt gets its own copy: the application may change
                # the environ, and a retry must start from the request as sent.
                return self._attempt(
                    environ.copy() if retries else environ, start_response, attempt
                )
            except TransientError as error:
                if self.database.unreachable(error):
                    return self._unreachable(environ, error, start_response)
                if attempt >= self.attempts:
                    return self._give_up(environ, attempt, error, start_response)
                self._before_retry(environ, attempt, error)
                attempt += 1
            except StorageUnavailableError as error:
                return self._unreachable(environ, error, start_response)

    # -- one attempt --------------------------------------------------------

    def _attempt(
        self, environ: dict[str, Any], start_response: StartResponse, attempt: int = 1
    ) -> Iterable[bytes]:
        handle = ZODBHandle(
            self.database,
            note=_note(environ),
            user=environ.get("REMOTE_USER") or "",
            events=self.events,
            attempt=attempt,
        )
        environ[HANDLE_KEY] = handle
        environ[MANAGER_KEY] = handle.transaction_manager
        response = _HeldResponse()
        app_iter: Iterable[bytes] | None = None
        handle.bind_thread()
        try:
            app_iter = self.app(environ, response.start_response)
            body = response.run_until_started(app_iter)
            if handle.retry_error is not None:
                raise handle.retry_error
            handle.finish(commit=not self._vetoed(environ, response))
            if handle.is_connected:
                self._report(handle, response)
            # Only now, with the transaction stored, may the client hear of it.
            start_response(response.status, response.headers, response.exc_info)
            if handle.release_after_commit:
                _end(handle, environ)
        except BaseException:
            try:
                _close(app_iter)
            finally:
                # Even if closing the app's iterable fails: no leaked connection.
                _end(handle, environ)
            raise
        finally:
            handle.unbind_thread()
        return _ClosingIterable(body, app_iter, handle, environ)

    def _report(self, handle: ZODBHandle, response: _HeldResponse) -> None:
        if self.server_timing:
            response.headers.append(("Server-Timing", handle.activity.server_timing()))
        if log.isEnabledFor(logging.DEBUG):
            activity = handle.activity
            log.debug(
                "%s: %d loads, %d stores, commit %.2f ms, attempt %d",
                handle.note,
                activity.loads,
                activity.stores,
                activity.commit_seconds * 1000,
                activity.attempt,
            )

    def _vetoed(self, environ: dict[str, Any], response: _HeldResponse) -> bool:
        decision = response.pop_header(TRANSACTION_HEADER)
        if decision is not None:
            decision = decision.strip().lower()
            if decision in ("commit", "abort"):
                return decision == "abort"
            log.warning("ignoring %s: %r (use 'commit' or 'abort')", TRANSACTION_HEADER, decision)
        return self.commit_veto(environ, response.status, response.headers)

    # -- retries --------------------------------------------------------------

    def _before_retry(self, environ: dict[str, Any], attempt: int, error: BaseException) -> None:
        log.info(
            "%s on attempt %d of %d for %s; retrying",
            type(error).__name__,
            attempt,
            self.attempts,
            _note(environ),
        )
        if self.on_retry is not None:
            self.on_retry(environ, attempt, error)
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        time.sleep(delay * random.uniform(0.5, 1.5))
        if "webob.is_body_seekable" in environ:
            rewind(environ)

    def _give_up(
        self,
        environ: dict[str, Any],
        attempt: int,
        error: BaseException,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        log.warning(
            "%s: gave up after %d attempt(s): %s: %s",
            _note(environ),
            attempt,
            type(error).__name__,
            error,
        )
        response = webob.Response(
            "The database is busy with other changes and this request could not "
            "be completed; nothing was changed. Please try again.\n",
            status=503,
            content_type="text/plain",
            charset="utf-8",
        )
        response.headers["Retry-After"] = "1"
        return response(environ, start_response)  # type: ignore[no-any-return]

    def _unreachable(
        self, environ: dict[str, Any], error: BaseException, start_response: StartResponse
    ) -> Iterable[bytes]:
        """Answer 503 at once: the storage cannot be opened or its server is
        away (see :meth:`Database.unreachable`). Retrying within the request
        would only keep the client (and the worker) waiting."""
        detail = str(error)
        if not isinstance(error, StorageUnavailableError):
            # A ZEO disconnect says little by itself: name the storage.
            kind = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
            detail = f"{self.database.description} does not answer ({kind})"
        log.error("%s: the database is unreachable: %s", _note(environ), mask_uri(detail))
        response = webob.Response(
            "The database is unreachable right now, so this request could not be "
            "completed. Please try again in a moment.\n",
            status=503,
            content_type="text/plain",
            charset="utf-8",
        )
        response.headers["Retry-After"] = str(UNREACHABLE_RETRY_AFTER)
        return response(environ, start_response)  # type: ignore[no-any-return]


class _HeldResponse:
    """Records what the application starts, so it can be sent after commit."""

    __slots__ = ("exc_info", "headers", "status", "written")

    def __init__(self) -> None:
        self.status: str = ""
        self.headers: Headers = []
        self.exc_info: ExcInfo | None = None
        self.written: list[bytes] = []

    def start_response(
        self, status: str, headers: Headers, exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], Any]:
        if exc_info is not None:
            try:
                # Nothing was sent yet, so the error's headers may replace the
                # old ones; PEP 3333 requires no more than that.
                self.exc_info = exc_info
            finally:
                exc_info = None
        self.status, self.headers = status, headers
        return self.written.append

    def run_until_started(self, app_iter: Iterable[bytes]) -> Iterable[bytes]:
        """Return the body to send: output of ``write()`` first, then the rest.

        PEP 3333 lets an application call start_response as late as its first
        chunk of body, so *app_iter* is advanced until it has; the chunks read
        on the way are kept, not lost.
        """
        head = self.written
        if self.status:
            return itertools.chain(head, app_iter) if head else app_iter
        iterator = iter(app_iter)
        for chunk in iterator:
            if chunk:
                head.append(chunk)
            if self.status:
                return itertools.chain(head, iterator)
        if self.status:
            return head
        raise RuntimeError("the WSGI application returned without calling start_response")

    def pop_header(self, name: str) -> str | None:
        lowered = name.lower()
        for i, (key, value) in enumerate(self.headers):
            if key.lower() == lowered:
                del self.headers[i]
                return value
        return None


class _ClosingIterable:
    """The response body as the server sees it: closing it ends the request."""

    __slots__ = ("_app_iter", "_body", "_environ", "_handle", "buffered")

    def __init__(
        self,
        body: Iterable[bytes],
        app_iter: Iterable[bytes],
        handle: ZODBHandle,
        environ: dict[str, Any],
    ) -> None:
        self._body = body
        self._app_iter = app_iter
        self._handle = handle
        self._environ = environ
        #: The request body that the middleware buffered, if it did.
        self.buffered: object = None

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            _close(self._app_iter)
        finally:
            _end(self._handle, self._environ)
            _close(self.buffered)


def _close(app_iter: object) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


def _end(handle: ZODBHandle, environ: dict[str, Any]) -> None:
    handle.close()
    if environ.get(HANDLE_KEY) is handle:
        del environ[HANDLE_KEY]
        environ.pop(MANAGER_KEY, None)


def _note(environ: Mapping[str, Any]) -> str:
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    # PEP 3333 carries the path as latin-1 decoded bytes; most clients send UTF-8.
    # An ASCII path reads the same either way (and skipping it is a third of
    # this function's cost on every request).
    if not path.isascii():
        with contextlib.suppress(UnicodeError):
            path = path.encode("latin-1").decode("utf-8")
    return f"{environ.get('REQUEST_METHOD', 'GET')} {path or '/'}"
