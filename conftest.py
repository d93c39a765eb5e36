"""Real database servers for the tests of both distributions.

Every storage here is the real thing: FileStorage in a temporary directory,
a ZEO server started with ``runzeo`` on 127.0.0.1 and a free port, RelStorage
on the machine's PostgreSQL (a database made for this test run and dropped
after it) and RelStorage on SQLite in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_HOST = os.environ.get("FLASK_ZODB_TEST_PGHOST", "127.0.0.1")
PG_USER = os.environ.get("FLASK_ZODB_TEST_PGUSER", "root")

STORAGE_KINDS = ["memory", "file", "zeo", "postgres", "sqlite"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = 20.0, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server on port {port} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class ZEOServer:
    """A ``runzeo`` process serving a FileStorage in *directory*.

    It can be stopped and started again on the same port, with the same data,
    for the tests of what happens when the database server goes away.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def uri(self, **query: object) -> str:
        params = {"wait_timeout": 5, **query}
        return f"zeo://{self.address}?" + "&".join(f"{k}={v}" for k, v in params.items())

    def start(self) -> None:
        log = open(self.directory / "zeo.log", "ab")  # noqa: SIM115 - kept by the process
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ZEO.runzeo",
                "-a",
                self.address,
                "-f",
                str(self.directory / "Data.fs"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port(self.port, process=self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def zeo_server(tmp_path: Path) -> Iterator[ZEOServer]:
    """A fresh ZEO server for one test, stopped after it."""
    directory = tmp_path / "zeo"
    directory.mkdir()
    server = ZEOServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pg_admin():  # type: ignore[no-untyped-def]
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, user=PG_USER, dbname="postgres", connect_timeout=5)
    conn.autocommit = True
    return conn


@contextlib.contextmanager
def _made_pg_database(prefix: str) -> Iterator[str]:
    """Create a PostgreSQL database named *prefix* plus a random suffix;
    drop it (ending its sessions first) when the block ends."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        admin = _pg_admin()
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is not reachable on {PG_HOST} as {PG_USER} ({exc}); start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """The name of a PostgreSQL database made for this test run, dropped after."""
    with _made_pg_database("flask_zodb_test") as name:
        yield name


@pytest.fixture
def new_pg_database() -> Iterator[str]:
    """A PostgreSQL database just created: RelStorage has no tables in it yet."""
    with _made_pg_database("flask_zodb_new") as name:
        yield name


def postgres_uri(database: str, **query: object) -> str:
    uri = f"postgres://{PG_USER}@{PG_HOST}/{database}"
    return uri + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def _zap_postgres(uri: str) -> None:
    from zodb_wsgi import resolve_storage

    factory, _ = resolve_storage(uri)
    storage = factory()
    try:
        storage.zap_all()
    finally:
        storage.close()


@pytest.fixture
def pg_uri(pg_database: str) -> str:
    """A ``postgres://`` URI of an empty RelStorage database."""
    uri = postgres_uri(pg_database)
    _zap_postgres(uri)
    return uri


@pytest.fixture(params=STORAGE_KINDS)
def storage_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A zodburi URI of an empty database, once for each kind of storage."""
    kind = request.param
    if kind == "memory":
        return "memory://"
    if kind == "file":
        return f"file://{tmp_path / 'Data.fs'}"
    if kind == "zeo":
        return request.getfixturevalue("zeo_server").uri()
    if kind == "postgres":
        return str(request.getfixturevalue("pg_uri"))
    directory = tmp_path / "sqlite"
    directory.mkdir()
    return f"sqlite://?data_dir={directory}"


@pytest.fixture
def file_uri(tmp_path: Path) -> str:
    """A FileStorage in a temporary directory."""
    return f"file://{tmp_path / 'Data.fs'}"


@pytest.fixture(autouse=True)
def _no_leftover_thread_transaction() -> Iterator[None]:
    """Each test starts and ends with the thread's own transaction manager free."""
    import transaction

    transaction.abort()
    yield
    transaction.abort()
