"""A database opened before a fork is never shared across it.

``gunicorn --preload`` imports the application in the master and forks the
workers from it; an application that touches its database at import time
has the master open it. :class:`zodb_wsgi.Database` remembers the process
that opened its ``ZODB.DB``: in a forked worker it opens one of its own and
leaves the inherited one (its sockets, its files, its ZEO client thread,
which did not survive the fork) to the parent.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import pytest
import transaction
from apps.serving import ZEOServer, call, gunicorn, hammer, statuses

from zodb_wsgi import Database

pytestmark = pytest.mark.slow


def fork() -> int:
    with warnings.catch_warnings():
        # Python 3.12 warns about forking a process that runs threads (here
        # the ZEO client's); what the child does next is what is tested.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def increment(database: Database) -> int:
    manager = transaction.TransactionManager()
    connection = database.open(manager)
    try:
        root = connection.root()
        root["count"] = root.get("count", 0) + 1
        manager.commit()
        return int(root["count"])
    finally:
        manager.abort()
        connection.close()


def test_a_forked_child_opens_a_database_of_its_own(zeo_server: ZEOServer) -> None:
    database = Database(zeo_server.uri())
    try:
        parents = database.get()
        assert increment(database) == 1
        read, write = os.pipe()
        child = fork()
        if child == 0:  # pragma: no cover - the child reports through the pipe
            code = 1
            try:
                assert not database.is_open  # inherited, not ours
                own = database.get()
                assert own is not parents and database.is_open
                assert any("zeo client" in t.name for t in threading.enumerate())
                code = 0 if increment(database) == 2 else 3
                database.close()  # closes the child's database only
            finally:
                os.write(write, str(code).encode())
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as pipe:
            reported = pipe.read()
        _, status = os.waitpid(child, 0)
        assert reported == "0" and os.waitstatus_to_exitcode(status) == 0, reported
        # The parent's database is the one it had, and it still works.
        assert database.get() is parents
        assert increment(database) == 3
    finally:
        database.close()


def test_gunicorn_preload_workers_do_not_share_the_masters_database(
    zeo_server: ZEOServer, tmp_path: Path
) -> None:
    log = tmp_path / "gunicorn.log"
    with gunicorn(
        zeo_server.uri(), log, workers=4, preload=True, env={"COUNTER_OPEN_AT_IMPORT": "1"}
    ) as server:
        workers = server.wait_for_workers(4)
        # The master opened the database and wrote to it before forking.
        assert call(server.port, "GET", "/count").data["opened_by"] == server.pid

        replies = hammer(server.port, clients=8, each=25)
        assert statuses(replies) == {200: 200}, server.log_text
        assert sorted(r.data["count"] for r in replies) == list(range(1, 201))
        served_by = {r.data["pid"] for r in replies}
        assert server.pid not in served_by and served_by <= workers

        # Each worker that served has a database of its own, with a ZEO
        # client thread of its own (the master's did not survive the fork).
        reports = hammer(server.port, clients=8, each=1, method="GET", path="/status?hold=0.3")
        assert statuses(reports) == {200: 8}
        checked = {r.data["pid"] for r in reports if r.data["pid"] in served_by}
        assert len(checked) > 1
        for report in reports:
            data = report.data
            if data["pid"] in served_by:
                assert data["database_open"], data
                assert any("zeo client" in name for name in data["threads"]), data
        assert server.worker_pids() == workers
    assert "Traceback" not in log.read_text(), log.read_text()
