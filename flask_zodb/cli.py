"""The ``flask zodb`` command group: look at, pack and undo the database.

::

    flask --app app.py zodb info
    flask --app app.py zodb history -n 20
    flask --app app.py zodb undo BA10I05FsCI=
    flask --app app.py zodb pack --days 7

Each command works on the storage that the application is configured with
(file, ZEO, RelStorage). The middleware writes each request's method, path
and user into its transaction, so ``history`` is an audit trail of which
request changed what.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import click
import transaction
import ZODB
from flask import current_app
from flask.cli import AppGroup
from ZODB.POSException import UndoError
from ZODB.TimeStamp import TimeStamp

from zodb_wsgi import ZODBWSGIError

zodb_cli = AppGroup("zodb", help="Inspect and maintain the application's ZODB database.")


def _database() -> ZODB.DB:
    state = current_app.extensions.get("zodb")
    if state is None:
        raise click.ClickException(
            f"Flask-ZODB is not set up on the application {current_app.name!r}."
        )
    try:
        return state.database.get()
    except ZODBWSGIError as exc:
        raise click.ClickException(str(exc)) from exc


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _size(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


@zodb_cli.command("info")
def info_command() -> None:
    """Show the storage, its size, object count and last transaction."""
    db = _database()
    storage = db.storage
    last = db.lastTransaction()
    rows = [
        ("storage", f"{type(storage).__module__}.{type(storage).__name__}"),
        ("location", str(storage.getName()) or "-"),
        ("size", _size(storage.getSize())),
        ("objects", str(db.objectCount())),
        ("last transaction", _when(TimeStamp(last).timeTime()) if last.strip(b"\0") else "none"),
        ("undo", "supported" if db.supportsUndo() else "not supported"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


def _recent(db: ZODB.DB, count: int) -> Iterator[dict[str, Any]]:
    if db.supportsUndo():
        yield from db.undoLog(0, count)
        return
    records: deque[Any] = deque(maxlen=count)
    records.extend(db.storage.iterator())
    for record in reversed(records):
        yield {
            "id": None,
            "time": TimeStamp(record.tid).timeTime(),
            "user_name": record.user,
            "description": record.description,
        }


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@zodb_cli.command("history")
@click.option(
    "-n",
    "count",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many transactions to show, newest first.",
)
def history_command(count: int) -> None:
    """Show the newest transactions: time, user, note (and undo id)."""
    db = _database()
    shown = 0
    for entry in _recent(db, count):
        shown += 1
        note = _text(entry.get("description") or "").replace("\n", " | ") or "-"
        user = _text(entry.get("user_name") or "").strip() or "-"
        undo_id = entry.get("id")
        line = f"{_when(entry['time'])}  {user:<12}  {note}"
        if undo_id is not None:
            line += f"  [{_text(undo_id)}]"
        click.echo(line)
    if not shown:
        click.echo("no transactions")


@zodb_cli.command("undo")
@click.argument("ids", nargs=-1, required=True, metavar="TXID...")
def undo_command(ids: tuple[str, ...]) -> None:
    """Undo transactions by the ids that ``history`` shows in brackets."""
    db = _database()
    if not db.supportsUndo():
        raise click.ClickException(
            f"the storage {type(db.storage).__name__} does not support undo "
            "(a history-free storage keeps no old states); nothing was changed."
        )
    known = {_text(entry["id"]) for entry in db.undoLog(0, 1 << 30)}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise click.ClickException(
            f"no undoable transaction with the id {', '.join(unknown)}; "
            "'flask zodb history' shows the ids. Nothing was changed."
        )
    manager = transaction.TransactionManager()
    txn = manager.begin()
    txn.note(f"flask zodb undo {' '.join(ids)}")
    try:
        db.undoMultiple([i.encode() for i in ids], txn)
        txn.commit()
    except UndoError as exc:
        manager.abort()
        raise click.ClickException(
            f"cannot undo {', '.join(ids)}: {exc}. Nothing was changed."
        ) from exc
    click.echo(f"undid {len(ids)} transaction(s)")


@zodb_cli.command("pack")
@click.option(
    "--days",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Keep the history of the last N days.",
)
def pack_command(days: float) -> None:
    """Remove old object revisions and unreachable objects."""
    db = _database()
    before = db.storage.getSize()
    done = threading.Event()

    def progress() -> None:
        started = time.monotonic()
        while not done.wait(2.0):
            click.echo(f"  still packing ({time.monotonic() - started:.0f} s)", err=True)

    click.echo(f"packing {db.storage.getName()} (keeping {days:g} days of history)", err=True)
    reporter = threading.Thread(target=progress, daemon=True)
    reporter.start()
    try:
        db.pack(days=days)
    finally:
        done.set()
        reporter.join()
    click.echo(f"packed: {_size(before)} -> {_size(db.storage.getSize())}")
