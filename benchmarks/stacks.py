"""The stacks under test.

Every stack is built on its own storage (the same URI form, a copy of the same
data) and configured the way its own documentation shows, so that each one
pays for exactly what its users pay for. A stack is a :class:`Stack`: a WSGI
application with the routes of the workloads, or (for the raw loop) a
function that does the work without any web layer, plus the ``ZODB.DB`` it
ended up with, for counting loads and checking the pool.

Routes, the same in every web stack:

``GET /w0``
    answers ``ok`` and never touches the database.
``GET /read``
    reads one key (the next of a fixed pseudo-random sequence) of the OOBTree
    at ``root["tree"]``.
``POST /inc``
    adds one to the ``BTrees.Length.Length`` counter at ``root["counter"]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import transaction
import ZODB
import zodburi

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class Stack:
    """One stack on one storage."""

    name: str
    #: The WSGI application, or None for a stack without a web layer.
    app: WSGIApp | None = None
    #: For a stack without a web layer: ``loops[route](n)`` does the work of
    #: *n* requests of that route.
    loops: dict[str, Callable[[int], None]] = field(default_factory=dict)
    #: The stack's ``ZODB.DB`` (None for the bare frameworks), opened lazily
    #: by some stacks: call :meth:`database`.
    db_getter: Callable[[], ZODB.DB] | None = None
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def database(self) -> ZODB.DB | None:
        return None if self.db_getter is None else self.db_getter()

    def close(self) -> None:
        for close in self.closers:
            close()
        self.closers.clear()


def _db_from_uri(uri: str) -> ZODB.DB:
    # zodburi's defaults (cache_size 10000, pool_size 7), as Flask-ZODB and
    # pyramid_zodbconn get them from the same URI.
    factory, dbkw = zodburi.resolve_uri(uri)
    return ZODB.DB(factory(), **dbkw)


# -- the bare frameworks: the baselines of W0 ---------------------------------


def flask_bare() -> Stack:
    from flask import Flask

    app = Flask("bare_flask")

    @app.get("/w0")
    def w0() -> str:
        return "ok"

    return Stack("bare Flask", app=app)


def pyramid_bare() -> Stack:
    from pyramid.config import Configurator
    from pyramid.response import Response

    def w0(request: Any) -> Response:
        return Response("ok")

    with Configurator() as config:
        config.add_route("w0", "/w0")
        config.add_view(w0, route_name="w0")
        app = config.make_wsgi_app()
    return Stack("bare Pyramid", app=app)


# -- Flask-ZODB -----------------------------------------------------------------


def flask_zodb(uri: str, keys: Sequence[str]) -> Stack:
    from flask import Flask

    from flask_zodb import ZODB as FlaskZODB

    app = Flask("flask_zodb_bench")
    app.config["ZODB_STORAGE"] = uri
    db = FlaskZODB(app)
    next_key = itertools.cycle(keys).__next__

    @app.get("/w0")
    def w0() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        return str(db["tree"][next_key()])

    @app.post("/inc")
    def inc() -> str:
        db["counter"].change(1)
        return "ok"

    stack = Stack("Flask-ZODB", app=app, db_getter=lambda: db.create_db(app))
    stack.closers.append(app.extensions["zodb"].database.close)
    return stack


# -- the floor: the same work written by hand in a Flask view -------------------


def flask_floor(uri: str, keys: Sequence[str]) -> Stack:
    """Open a connection, begin, work, commit, close: nothing else."""
    from flask import Flask

    zdb = _db_from_uri(uri)
    app = Flask("flask_floor")
    next_key = itertools.cycle(keys).__next__

    @app.get("/w0")
    def w0() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        conn = zdb.open()
        try:
            transaction.begin()
            value = conn.root()["tree"][next_key()]
            transaction.commit()
        except BaseException:
            transaction.abort()
            raise
        finally:
            conn.close()
        return str(value)

    @app.post("/inc")
    def inc() -> str:
        conn = zdb.open()
        try:
            transaction.begin()
            conn.root()["counter"].change(1)
            transaction.commit()
        except BaseException:
            transaction.abort()
            raise
        finally:
            conn.close()
        return "ok"

    return Stack("hand-written (floor)", app=app, db_getter=lambda: zdb, closers=[zdb.close])


# -- the storage's own floor: no web at all --------------------------------------


def raw_loop(uri: str, keys: Sequence[str]) -> Stack:
    zdb = _db_from_uri(uri)
    next_key = itertools.cycle(keys).__next__
    begin, commit = transaction.begin, transaction.commit

    def read(n: int) -> None:
        for _ in range(n):
            conn = zdb.open()
            begin()
            conn.root()["tree"][next_key()]
            commit()
            conn.close()

    def inc(n: int) -> None:
        for _ in range(n):
            conn = zdb.open()
            begin()
            conn.root()["counter"].change(1)
            commit()
            conn.close()

    return Stack(
        "raw ZODB loop",
        loops={"/read": read, "/inc": inc},
        db_getter=lambda: zdb,
        closers=[zdb.close],
    )


# -- Pyramid with pyramid_tm and pyramid_zodbconn --------------------------------


def pyramid_zodb(uri: str, keys: Sequence[str]) -> Stack:
    from pyramid.config import Configurator
    from pyramid.response import Response
    from pyramid_zodbconn import get_connection

    next_key = itertools.cycle(keys).__next__

    def w0(request: Any) -> Response:
        return Response("ok")

    def read(request: Any) -> Response:
        return Response(str(get_connection(request).root()["tree"][next_key()]))

    def inc(request: Any) -> Response:
        get_connection(request).root()["counter"].change(1)
        return Response("ok")

    settings = {
        "zodbconn.uri": uri,
        # What pyramid_tm's documentation recommends: a manager per request.
        "tm.manager_hook": "pyramid_tm.explicit_manager",
    }
    with Configurator(settings=settings) as config:
        config.include("pyramid_tm")
        config.include("pyramid_zodbconn")
        config.add_route("w0", "/w0")
        config.add_route("read", "/read", request_method="GET")
        config.add_route("inc", "/inc", request_method="POST")
        config.add_view(w0, route_name="w0")
        config.add_view(read, route_name="read")
        config.add_view(inc, route_name="inc")
        app = config.make_wsgi_app()
    zdb = app.registry._zodb_databases[""]
    return Stack(
        "Pyramid + pyramid_tm/zodbconn", app=app, db_getter=lambda: zdb, closers=[zdb.close]
    )


# -- Flask wrapped in repoze.tm2 and repoze.zodbconn ------------------------------


def repoze_flask(uri: str, keys: Sequence[str]) -> Stack:
    from flask import Flask, request
    from repoze.tm import TM, default_commit_veto
    from repoze.zodbconn.connector import CONNECTION_KEY, Connector
    from repoze.zodbconn.uri import db_from_uri

    zdb = db_from_uri(uri)
    app = Flask("repoze_flask")
    next_key = itertools.cycle(keys).__next__

    @app.get("/w0")
    def w0() -> str:
        return "ok"

    @app.get("/read")
    def read() -> str:
        return str(request.environ[CONNECTION_KEY].root()["tree"][next_key()])

    @app.post("/inc")
    def inc() -> str:
        request.environ[CONNECTION_KEY].root()["counter"].change(1)
        return "ok"

    # The connector opens the connection, the TM inside it begins the
    # transaction and commits it once the body has been sent.
    app.wsgi_app = Connector(  # type: ignore[method-assign]
        TM(app.wsgi_app, commit_veto=default_commit_veto), zdb
    )
    return Stack("Flask + repoze.tm2/zodbconn", app=app, db_getter=lambda: zdb, closers=[zdb.close])


#: The stacks that do the work, in the order they run within a round.
WORKING_STACKS: dict[str, Callable[[str, Sequence[str]], Stack]] = {
    "floor": flask_floor,
    "flask_zodb": flask_zodb,
    "repoze": repoze_flask,
    "pyramid": pyramid_zodb,
    "raw": raw_loop,
}
