"""Fixtures of the middleware's own tests: plain WSGI applications, no framework.

The storages themselves (``file_uri``, ``zeo_server``, ``pg_database``) come
from the project's top-level ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import transaction
import webob

from zodb_wsgi import ZODBMiddleware


@pytest.fixture
def wrap(file_uri: str) -> Iterator[Callable[..., ZODBMiddleware]]:
    """``wrap(app, storage=<a FileStorage in tmp_path>, **options)``.

    Retries wait no backoff unless the test asks for one; every database
    made is closed after the test, so that its FileStorage is unlocked.
    """
    made: list[ZODBMiddleware] = []

    def wrap(app: Any, storage: Any = None, **options: Any) -> ZODBMiddleware:
        options.setdefault("backoff", 0)
        middleware = ZODBMiddleware(app, file_uri if storage is None else storage, **options)
        made.append(middleware)
        return middleware

    yield wrap
    for middleware in made:
        middleware.database.close()


def read_stored(middleware: ZODBMiddleware) -> dict[str, Any]:
    """What the middleware's database holds, read through a connection of
    its own (not through any request), as a plain dict."""
    db = middleware.database.get()
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        return dict(connection.root())
    finally:
        manager.abort()
        connection.close()


@pytest.fixture
def stored() -> Callable[[ZODBMiddleware], dict[str, Any]]:
    """``stored(middleware)``: the root of its database as a plain dict."""
    return read_stored


class Server:
    """Calls a WSGI application the way a server does, and records what
    the client would have been sent: every ``start_response`` call and
    every byte, written or iterated."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.started: list[tuple[str, list[tuple[str, str]], Any]] = []
        self.sent: list[bytes] = []

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None):
        self.started.append((status, list(headers), exc_info))
        return self.sent.append

    def request(self, path: str = "/", **kwargs: Any) -> webob.Request:
        return webob.Request.blank(path, **kwargs)

    def __call__(self, path_or_request: str | webob.Request = "/", **kwargs: Any) -> bytes:
        """Run one request to its end (body iterated, then closed)."""
        request = (
            path_or_request
            if isinstance(path_or_request, webob.Request)
            else webob.Request.blank(path_or_request, **kwargs)
        )
        result = self.app(request.environ, self.start_response)
        try:
            for chunk in result:
                self.sent.append(chunk)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return b"".join(self.sent)

    @property
    def status(self) -> str:
        assert len(self.started) == 1, self.started
        return self.started[0][0]

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.started[-1][1])


@pytest.fixture
def server() -> Callable[[Any], Server]:
    """``server(app)``: a :class:`Server` around a WSGI application."""
    return Server


# -- coverage of the processes that the tests start ----------------------------


class ChildCoverage:
    """Measures what a forked child or a Python subprocess runs, when this
    test run measures coverage, and adds it to this run's own data.

    A child process has no coverage of its own: a forked child ends with
    ``os._exit``, which skips coverage's exit hook, and a subprocess starts
    without it. Each one here writes a data file of its own in the test's
    temporary directory; :meth:`collect` (called after the test) adds it to
    the data of this process, so that it counts however the run was
    started (``coverage run -m pytest`` or ``pytest --cov``).
    """

    def __init__(self, directory: Path) -> None:
        try:
            import coverage
        except ImportError:  # coverage is a test dependency
            self.parent = None
        else:
            self.parent = coverage.Coverage.current()
        self.data_file = str(directory / "child.coverage")

    @contextlib.contextmanager
    def forked(self) -> Iterator[None]:
        """``with child_coverage.forked(): ...`` in the child after os.fork."""
        if self.parent is None:
            yield
            return
        import coverage

        self.parent.stop()  # the parent's measurement, inherited: not saved
        child = coverage.Coverage(
            data_file=self.data_file,
            branch=self.parent.config.branch,
            source=self.parent.config.source,
            config_file=False,
        )
        with warnings.catch_warnings():
            # "previously imported, but not measured": measured from here on.
            warnings.simplefilter("ignore", coverage.exceptions.CoverageWarning)
            child.start()
            try:
                yield
            finally:
                child.stop()
                child.save()

    def env(self) -> dict[str, str]:
        """Variables for a Python subprocess's environment: coverage's
        documented start-up hook (``COVERAGE_PROCESS_CONFIG``)."""
        if self.parent is None:
            return {}
        config = copy.copy(self.parent.config)
        config.data_file = self.data_file
        config.parallel = False
        return {"COVERAGE_PROCESS_CONFIG": config.serialize()}

    def collect(self) -> None:
        if self.parent is None or not os.path.exists(self.data_file):
            return
        import coverage

        data = coverage.CoverageData(basename=self.data_file)
        data.read()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", coverage.exceptions.CoverageWarning)
            self.parent.get_data().update(data)


@pytest.fixture
def child_coverage(tmp_path: Path) -> Iterator[ChildCoverage]:
    """A :class:`ChildCoverage` whose data is collected after the test."""
    measured = ChildCoverage(tmp_path)
    yield measured
    measured.collect()
