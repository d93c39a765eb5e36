"""Many writers, many processes: gunicorn workers sharing one database.

Four sync workers of a real gunicorn serve ``tests/apps/counter_app.py``
(configured through ``FLASK_ZODB_STORAGE`` and
``app.config.from_prefixed_env()``); eight client threads send 25 increments
each over HTTP, all at once. Against ZEO, RelStorage on PostgreSQL and
RelStorage on SQLite, the counter ends exactly at 200, each response is a
200 carrying a value no other response carried, and no worker was lost on
the way.

A FileStorage cannot be shared like this: a second process that opens it
gets a :class:`~zodb_wsgi.StorageUnavailableError` that says so and names
the storages that can be shared, both in the exception and, under
gunicorn, in the worker's log.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import webtest
from apps.counter_app import create_app
from apps.serving import gunicorn, hammer, postgres_uri, statuses
from ZODB.FileStorage import FileStorage
from ZODB.POSException import ReadOnlyError

from zodb_wsgi import Database, StorageUnavailableError, resolve_storage

CLIENTS = 8
EACH = 25
SHARING_HELP = ("one process only", "zeo://", "sqlite://?data_dir=", "postgres://")


def empty_postgres(database: str) -> str:
    uri = postgres_uri(database)
    factory, _ = resolve_storage(uri)
    storage = factory()
    try:
        storage.zap_all()
    finally:
        storage.close()
    return uri


@pytest.fixture(params=["zeo", "postgres", "sqlite"])
def shared_storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URI of an empty database that several processes can open at once."""
    if request.param == "zeo":
        return request.getfixturevalue("zeo_server").uri()  # type: ignore[no-any-return]
    if request.param == "postgres":
        return empty_postgres(request.getfixturevalue("pg_database"))
    directory = tmp_path / "sqlite"
    directory.mkdir()
    return f"sqlite://?data_dir={directory}"


@pytest.mark.slow
def test_four_workers_increment_one_counter_exactly(shared_storage: str, tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    with gunicorn(shared_storage, log, workers=4) as server:
        workers = server.wait_for_workers(4)
        replies = hammer(server.port, clients=CLIENTS, each=EACH)
        assert statuses(replies) == {200: CLIENTS * EACH}, (
            [r.body for r in replies if r.status != 200][:3],
            server.log_text,
        )
        counts = sorted(reply.data["count"] for reply in replies)
        assert counts == list(range(1, CLIENTS * EACH + 1))
        served_by = {reply.data["pid"] for reply in replies}
        assert served_by <= workers and len(served_by) > 1
        attempts = max(reply.data["attempt"] for reply in replies)
        assert attempts <= 20
        # The same four workers are still there: none crashed or timed out.
        assert server.worker_pids() == workers
    text = log.read_text()
    assert "Traceback" not in text and "WORKER TIMEOUT" not in text, text


@pytest.mark.slow
def test_workers_starting_together_on_a_new_database_all_serve(
    new_pg_database: str, tmp_path: Path
) -> None:
    # Each worker's first request creates RelStorage's tables at the same
    # moment as the others'; the losers of that race open the storage again
    # a moment later, and ZODB.DB's root-creation conflicts are retried.
    log = tmp_path / "gunicorn.log"
    with gunicorn(postgres_uri(new_pg_database), log, workers=4) as server:
        server.wait_for_workers(4)
        replies = hammer(server.port, clients=8, each=5)
        assert statuses(replies) == {200: 40}, ([r.body for r in replies][:3], server.log_text)
        assert sorted(r.data["count"] for r in replies) == list(range(1, 41))


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
from zodb_wsgi import Database

uri, start = sys.argv[1], Path(sys.argv[2])
database = Database(uri)
print("ready", flush=True)
while not start.exists():
    time.sleep(0.001)
try:
    database.get()
    print("opened", flush=True)
except Exception as error:
    print(f"{type(error).__name__}: {error}", flush=True)
finally:
    database.close()
"""


@pytest.mark.slow
def test_processes_opening_a_new_relstorage_database_at_once_all_succeed(
    new_pg_database: str, tmp_path: Path
) -> None:
    # All four create RelStorage's tables at the same moment; on PostgreSQL
    # all but one fail with a UniqueViolation, and open again a moment later.
    start = tmp_path / "start"
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, postgres_uri(new_pg_database), str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for opener in openers:
            assert opener.stdout is not None
            assert opener.stdout.readline() == "ready\n"
        start.touch()
        results = [opener.communicate(timeout=60)[0].strip() for opener in openers]
    finally:
        for opener in openers:
            if opener.poll() is None:  # pragma: no cover - a stuck opener
                opener.kill()
                opener.communicate()
    assert results == ["opened"] * 4


def test_a_storage_that_fails_to_open_is_tried_again(tmp_path: Path) -> None:
    # Another process is about to create what the storage needs (here the
    # directory of a FileStorage; for RelStorage, its tables).
    directory = tmp_path / "not-yet"
    database = Database(f"file://{directory / 'Data.fs'}")
    creator = threading.Timer(0.03, directory.mkdir)
    creator.start()
    try:
        assert database.get().storage.getName().endswith("Data.fs")
    finally:
        creator.join()
        database.close()
    # What keeps failing is reported after the last try.
    with pytest.raises(StorageUnavailableError, match="FileNotFoundError"):
        Database(f"file://{tmp_path / 'never' / 'Data.fs'}").get()


@pytest.fixture
def locked_file(tmp_path: Path) -> Iterator[Path]:
    """A FileStorage held open by another process for the test's duration."""
    path = tmp_path / "Data.fs"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                from ZODB.FileStorage import FileStorage
                storage = FileStorage({str(path)!r})
                print("open", flush=True)
                sys.stdin.read()  # until the test closes our stdin
                storage.close()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"open\n"
        yield path
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        try:
            holder.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck holder
            holder.kill()
            holder.wait()
        holder.stdout.close()


def test_a_file_storage_locked_by_another_process_gets_a_clear_error(
    locked_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(f"file://{locked_file}")
    with pytest.raises(StorageUnavailableError) as raised:
        database.get()
    message = str(raised.value)
    assert "locked by another process" in message
    for hint in SHARING_HELP:
        assert hint in message

    app = create_app(ZODB_STORAGE=f"file://{locked_file}")
    try:
        with caplog.at_level(logging.ERROR, logger="zodb_wsgi"):
            response = webtest.TestApp(app).post("/increment", status=503)
        assert "unreachable" in response.text
        assert response.headers["Retry-After"]
        logged = [r.getMessage() for r in caplog.records if r.name == "zodb_wsgi"]
        assert any(
            "locked by another process" in line and all(hint in line for hint in SHARING_HELP)
            for line in logged
        ), logged
    finally:
        app.extensions["zodb"].database.close()


def test_a_file_storage_is_usable_once_the_other_process_let_go(tmp_path: Path) -> None:
    path = tmp_path / "Data.fs"
    app = create_app(ZODB_STORAGE=f"file://{path}")
    test_app = webtest.TestApp(app)
    try:
        holder = Database(f"file://{path}")
        holder.get()
        try:
            test_app.post("/increment", status=503)
        finally:
            holder.close()
        # The failed open left nothing behind: the next request opens it.
        assert test_app.post("/increment").json["count"] == 1
    finally:
        app.extensions["zodb"].database.close()


class RecordingFileStorage(FileStorage):
    """A FileStorage that remembers whether it was closed."""

    closed = False

    def close(self) -> None:
        self.closed = True
        super().close()


def test_a_database_that_fails_to_open_closes_its_storage(tmp_path: Path) -> None:
    # Workers that start together on an empty database all create its root
    # object: all but one fail with a ConflictError inside ZODB.DB(), and
    # each must close its storage (a ZEO client that stayed connected took
    # a server connection and received every invalidation). A read-only
    # storage without a root fails there too, every time.
    path = tmp_path / "Data.fs"
    FileStorage(str(path)).close()
    opened: list[RecordingFileStorage] = []

    def factory() -> RecordingFileStorage:
        opened.append(RecordingFileStorage(str(path), read_only=True))
        return opened[-1]

    database = Database(factory)
    for _ in range(2):
        with pytest.raises(ReadOnlyError):
            database.get()
    assert len(opened) == 2 and all(storage.closed for storage in opened)
    assert not database.is_open


@pytest.mark.slow
def test_two_gunicorn_workers_on_one_file_storage_log_why(tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    with gunicorn(f"file://{tmp_path / 'Data.fs'}", log, workers=2) as server:
        server.wait_for_workers(2)
        # Slow requests from four clients at once keep both workers busy, so
        # that each of them has to open the database.
        replies = hammer(server.port, clients=4, each=3, path="/increment?hold=0.2")
        counted = statuses(replies)
        assert set(counted) == {200, 503}, (counted, server.log_text)
        assert all("unreachable" in r.body for r in replies if r.status == 503)
        assert {r.data["pid"] for r in replies if r.status == 200} == {
            next(r.data["pid"] for r in replies if r.status == 200)
        }, "two workers had one FileStorage open"
    lines = [line for line in log.read_text().splitlines() if "locked by another process" in line]
    assert lines, log.read_text()
    assert all(hint in lines[0] for hint in SHARING_HELP), lines[0]
