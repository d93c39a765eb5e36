"""The process's database: opened on first use, one per process (a forked
child opens its own), closed at exit, and clear about why it cannot open."""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback

import pytest
import transaction
import webtest
from ZODB.FileStorage import FileStorage
from ZODB.fsIndex import fsIndex

from zodb_wsgi import ConfigurationError, Database, StorageUnavailableError, ZODBMiddleware


def write(db, key, value):
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        connection.root()[key] = value
        manager.commit()
    finally:
        connection.close()


def read(db, key):
    manager = transaction.TransactionManager()
    connection = db.open(transaction_manager=manager)
    try:
        return connection.root().get(key)
    finally:
        manager.abort()
        connection.close()


def test_nothing_is_opened_before_the_first_use(tmp_path):
    path = tmp_path / "Data.fs"
    middleware = ZODBMiddleware(lambda environ, start_response: [], f"file://{path}")
    database = middleware.database
    try:
        assert not path.exists()
        assert not database.is_open
        assert repr(database) == f"<Database file://{path} (not opened)>"
        db = database.get()
        assert path.exists()
        assert database.is_open
        assert repr(database) == f"<Database file://{path} (open)>"
        assert database.get() is db  # one per process
        assert database.open(transaction.TransactionManager()).db() is db
    finally:
        database.close()


def test_middlewares_given_one_database_share_it(file_uri):
    database = Database(file_uri)
    try:
        first = ZODBMiddleware(lambda e, s: [], database)
        second = ZODBMiddleware(lambda e, s: [], database)
        assert first.database is second.database is database
        assert "around" in repr(first) and file_uri in repr(first)
    finally:
        database.close()


def test_requests_arriving_together_open_one_database(tmp_path):
    opened = []
    release = threading.Event()

    def slow_storage():
        opened.append(threading.current_thread().name)
        release.wait(10)
        return FileStorage(str(tmp_path / "Data.fs"))

    database = Database(slow_storage)
    results = {}

    def first_request(name):
        results[name] = database.get()

    threads = [threading.Thread(target=first_request, args=(f"t{i}",)) for i in range(3)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.1)  # the others wait for the first one's storage
        release.set()
        for thread in threads:
            thread.join(10)
        assert len(opened) == 1
        assert len({id(db) for db in results.values()}) == 1
    finally:
        release.set()
        database.close()


def test_close_and_reopen(file_uri):
    database = Database(file_uri)
    try:
        first = database.get()
        write(first, "kept", True)
        database.close()
        assert not database.is_open
        database.close()  # twice is fine
        second = database.get()
        assert second is not first
        assert read(second, "kept") is True
    finally:
        database.close()


def test_db_kwargs_override_the_uris(file_uri):
    database = Database(f"{file_uri}?connection_cache_size=100", db_kwargs={"cache_size": 50})
    try:
        assert database.get().getCacheSize() == 50
    finally:
        database.close()


def test_unknown_db_kwargs_are_a_configuration_error(file_uri):
    database = Database(file_uri, db_kwargs={"pool_sise": 3})
    with pytest.raises(ConfigurationError) as error:
        database.get()
    message = str(error.value)
    assert message.startswith("storage: unknown database option(s) 'pool_sise'; ")
    assert "pool_size" in message and "cache_size" in message
    assert not database.is_open


def test_a_db_option_of_the_wrong_kind_is_a_configuration_error_and_frees_the_storage(
    file_uri,
):
    database = Database(file_uri, db_kwargs={"database_name": ["not", "hashable"]})
    with pytest.raises(ConfigurationError) as error:
        database.get()
    assert "'database_name'" in str(error.value)
    assert "not all accepted by ZODB.DB" in str(error.value)
    assert not database.is_open
    # The storage it opened was closed again: the file is not left locked.
    other = Database(file_uri)
    try:
        other.get()
    finally:
        other.close()


def test_a_storage_that_cannot_be_opened_names_the_cause(tmp_path):
    missing = tmp_path / "no such directory" / "Data.fs"
    database = Database(f"file://{missing}")
    with pytest.raises(StorageUnavailableError) as error:
        database.get()
    message = str(error.value)
    assert message.startswith(f"cannot open storage file://{missing}: ")
    assert "FileNotFoundError" in message or "No such file" in message


def test_a_factory_whose_driver_is_missing_says_to_install_it():
    def storage_of_an_uninstalled_package():
        import zodb_wsgi_tests_no_such_driver  # noqa: F401 - really not installed

    database = Database(storage_of_an_uninstalled_package)
    with pytest.raises(StorageUnavailableError) as error:
        database.get()
    message = str(error.value)
    assert "storage_of_an_uninstalled_package" in message
    assert "zodb_wsgi_tests_no_such_driver" in message
    assert "Install the package that provides this storage." in message


def test_a_relstorage_uri_without_its_driver_names_the_package():
    # RelStorage is installed, a MySQL driver is not.
    database = Database("mysql://app:secret@127.0.0.1/app")
    with pytest.raises(StorageUnavailableError) as error:
        database.get()
    message = str(error.value)
    assert "Install RelStorage[mysql]" in message
    assert "secret" not in message
    assert "mysql://app:***@127.0.0.1/app" in message


HOLD_THE_LOCK = textwrap.dedent(
    """
    import sys
    from ZODB.FileStorage import FileStorage

    storage = FileStorage(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
    storage.close()
    """
)


@pytest.fixture
def locked_by_another_process(tmp_path):
    """A FileStorage held open by another, real process until the test ends."""
    path = tmp_path / "Data.fs"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"locked\n"
        yield path, holder
    finally:
        holder.stdin.close()
        holder.wait(10)
        holder.stdout.close()


def test_a_file_storage_locked_by_another_process_explains_what_to_do(
    locked_by_another_process,
):
    path, holder = locked_by_another_process
    database = Database(f"file://{path}")
    with pytest.raises(StorageUnavailableError) as error:
        database.get()
    message = str(error.value)
    assert f"file://{path}" in message
    assert "locked by another process" in message
    assert "one process only" in message
    assert "zeo://" in message
    assert "sqlite://?data_dir=" in message
    assert "postgres://" in message
    # Once the other process lets go, the same Database opens.
    holder.stdin.close()
    holder.wait(10)
    assert holder.returncode == 0
    try:
        assert database.get() is not None
    finally:
        database.close()


def test_a_request_meeting_a_locked_storage_gets_503(locked_by_another_process, caplog):
    path, _ = locked_by_another_process

    def app(environ, start_response):
        environ["zodb"].root["x"] = 1
        start_response("200 OK", [])
        return [b"stored"]

    middleware = ZODBMiddleware(app, f"file://{path}", backoff=0)
    with caplog.at_level(logging.ERROR, logger="zodb_wsgi"):
        response = webtest.TestApp(middleware).post("/orders", status=503)
    assert response.headers["Retry-After"] == "5"
    assert "unreachable" in response.text
    (record,) = caplog.records
    assert "POST /orders" in record.getMessage()
    assert "locked by another process" in record.getMessage()


SERVE_AND_EXIT = textwrap.dedent(
    """
    import io, os, sys
    from zodb_wsgi import ZODBMiddleware

    def app(environ, start_response):
        environ["zodb"].root["written"] = "before exit"
        start_response("200 OK", [])
        return [b""]

    middleware = ZODBMiddleware(app, "file://" + sys.argv[1])
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}
    result = middleware(environ, lambda status, headers, exc_info=None: None)
    list(result)
    result.close()
    # The process ends without closing anything itself.
    """
)


def index_is_current(path):
    """True if the FileStorage's saved index covers the whole file (a
    storage closed cleanly); a stale one must be brought up to date at the
    next start by reading the file."""
    return fsIndex.load(f"{path}.index")["pos"] == path.stat().st_size


def test_the_database_is_closed_when_the_process_exits(tmp_path, child_coverage):
    path = tmp_path / "Data.fs"
    done = subprocess.run(
        [sys.executable, "-c", SERVE_AND_EXIT, str(path)],
        capture_output=True,
        timeout=60,
        env={**os.environ, **child_coverage.env()},
        check=True,
    )
    assert done.stderr == b""
    assert index_is_current(path)
    storage = FileStorage(str(path), read_only=True)
    try:
        assert len(storage) == 1  # the root, holding the request's write
        assert b"before exit" in storage.load(b"\0" * 8)[0]
    finally:
        storage.close()


def _wait_for_child(pid, read_fd, timeout=60):
    ready, _, _ = select.select([read_fd], [], [], timeout)
    report = os.read(read_fd, 65536) if ready else b""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return report, os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:  # a stuck child
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child did not finish")
        time.sleep(0.01)


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_opens_its_own_database_and_leaves_the_parents(zeo_server, child_coverage):
    used = Database(zeo_server.uri())  # used in the child
    dropped = Database(zeo_server.uri())  # only closed in the child
    try:
        parent_db = used.get()
        parent_dropped = dropped.get()
        write(parent_db, "written by", "the parent")
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            status = 1
            try:
                os.close(read_fd)
                with child_coverage.forked():
                    assert not used.is_open  # inherited, but not this process's
                    child_db = used.get()
                    report = {
                        "new database": child_db is not parent_db,
                        "reads": read(child_db, "written by"),
                    }
                    write(child_db, "child", "was here")
                    used.close()
                    dropped.close()  # the parent's database: dropped, not closed
                os.write(write_fd, json.dumps(report).encode())
                status = 0
            except BaseException:
                os.write(write_fd, traceback.format_exc().encode())
            finally:
                os._exit(status)
        os.close(write_fd)
        try:
            report, code = _wait_for_child(pid, read_fd)
        finally:
            os.close(read_fd)
        assert code == 0, report.decode()
        assert json.loads(report) == {"new database": True, "reads": "the parent"}
        # The parent's databases are untouched and still work.
        assert used.get() is parent_db
        assert dropped.get() is parent_dropped
        # The ZEO server tells the parent's clients of the child's commit
        # a moment later.
        deadline = time.monotonic() + 10
        seen = []
        while time.monotonic() < deadline:
            seen = [read(parent_db, "child"), read(parent_dropped, "child")]
            if seen == ["was here", "was here"]:
                break
            time.sleep(0.01)
        assert seen == ["was here", "was here"]
    finally:
        used.close()
        dropped.close()


def test_a_storage_factory_that_returns_nothing_is_named():
    # ZODB.DB(None) would quietly use a throw-away MappingStorage.
    def make_storage():
        return None

    database = Database(make_storage)
    with pytest.raises(ConfigurationError, match="returned None"):
        database.get()
