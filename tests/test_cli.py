"""The ``flask zodb`` command group and the ``flask shell`` context."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import transaction
from flask import Flask, request
from persistent.mapping import PersistentMapping
from ZODB.Connection import TransactionMetaData

from flask_zodb import ZODB
from flask_zodb.cli import _size, zodb_cli

UNDO_ID = re.compile(r"\[([^\]]+)\]$")


@pytest.fixture(autouse=True)
def _no_flask_env(monkeypatch):
    # The CLI runner reads FLASK_* variables; keep the caller's out.
    for key in list(os.environ):
        if key.startswith("FLASK_"):
            monkeypatch.delenv(key)


def make(make_app, storage):
    app, db = make_app(storage)

    @app.post("/items/<name>")
    def put(name):
        db[name] = request.form["value"]
        return "ok"

    @app.delete("/items/<name>")
    def delete(name):
        del db[name]
        return "gone"

    return app, db


def run(app, *args):
    return app.test_cli_runner().invoke(args=["zodb", *args])


def fields(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        name, value = re.split(r"\s{2,}", line, maxsplit=1)
        rows[name] = value
    return rows


def value_of(app, key):
    with app.app_context():
        return app.extensions["zodb"].extension.get(key)


# -- info ------------------------------------------------------------------------


def test_info_on_a_file_storage(make_app, tmp_path):
    path = tmp_path / "Data.fs"
    app, _ = make(make_app, f"file://{path}")
    app.test_client().post("/items/a", data={"value": "x" * 3000})
    result = run(app, "info")
    assert result.exit_code == 0, result.output
    info = fields(result.output)
    assert list(info) == ["storage", "location", "size", "objects", "last transaction", "undo"]
    assert info["storage"] == "ZODB.FileStorage.FileStorage.FileStorage"
    assert info["location"] == str(path)
    assert info["size"] == f"{path.stat().st_size / 1024:.1f} KiB"
    assert info["objects"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", info["last transaction"])
    assert info["undo"] == "supported"


def test_info_on_a_mapping_storage(make_app):
    app, _ = make(make_app, "memory://")
    result = run(app, "info")
    assert result.exit_code == 0, result.output
    info = fields(result.output)
    assert info["storage"] == "ZODB.MappingStorage.MappingStorage"
    assert info["location"] == "-"
    assert re.fullmatch(r"\d+ bytes", info["size"])
    assert info["undo"] == "not supported"
    assert info["last transaction"].endswith(" UTC")


def test_info_on_zeo(make_app, zeo_server):
    app, _ = make(make_app, zeo_server.uri())
    app.test_client().post("/items/a", data={"value": "1"})
    result = run(app, "info")
    assert result.exit_code == 0, result.output
    info = fields(result.output)
    assert info["storage"] == "ZEO.ClientStorage.ClientStorage"
    assert info["location"] == f"('127.0.0.1', {zeo_server.port}) (connected)"
    assert info["undo"] == "supported"
    assert info["objects"] == "1"


def test_sizes_are_shown_in_readable_units():
    assert _size(0) == "0 bytes"
    assert _size(1023) == "1023 bytes"
    assert _size(1536) == "1.5 KiB"
    assert _size(5 * 1024**2) == "5.0 MiB"
    assert _size(3 * 1024**3) == "3.0 GiB"
    assert _size(4096 * 1024**3) == "4096.0 GiB"


# -- history ---------------------------------------------------------------------


def test_history_shows_the_newest_first_with_user_and_note(make_app, file_uri):
    app, _ = make(make_app, file_uri)
    client = app.test_client()
    client.post("/items/a", data={"value": "1"}, environ_base={"REMOTE_USER": "ada"})
    client.post("/items/b", data={"value": "2"})
    result = run(app, "history")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 3
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC  -\s+POST /items/b  \[", lines[0])
    assert re.match(r".* UTC  ada\s+POST /items/a  \[", lines[1])
    assert "initial database creation" in lines[2]
    assert all(UNDO_ID.search(line) for line in lines)

    result = run(app, "history", "-n", "1")
    assert result.output.splitlines() == lines[:1]


def test_history_of_a_storage_without_undo_uses_its_iterator(make_app):
    app, _ = make(make_app, "memory://")
    client = app.test_client()
    for name in "abc":
        client.post(f"/items/{name}", data={"value": name}, environ_base={"REMOTE_USER": "bob"})
    result = run(app, "history", "-n", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("bob           POST /items/c")
    assert lines[1].endswith("bob           POST /items/b")
    assert "[" not in result.output

    lines = run(app, "history").output.splitlines()
    assert len(lines) == 4
    assert lines[-1].endswith("-             initial database creation")


def test_a_multi_line_note_is_shown_on_one_line(make_app, file_uri):
    app, db = make_app(file_uri)

    @app.post("/")
    def noted():
        db["a"] = 1
        transaction.get().note("and a note of the view")
        return "ok"

    app.test_client().post("/")
    newest = run(app, "history", "-n", "1").output
    assert "POST / | and a note of the view  [" in newest


def test_history_after_a_pack_shows_no_transactions(make_app, file_uri):
    app, _ = make(make_app, file_uri)
    app.test_client().post("/items/a", data={"value": "1"})
    time.sleep(0.01)
    assert run(app, "pack").exit_code == 0
    result = run(app, "history")
    assert result.exit_code == 0
    assert result.output == "no transactions\n"


def test_history_count_must_be_positive(make_app):
    app, _ = make(make_app, "memory://")
    result = run(app, "history", "-n", "0")
    assert result.exit_code == 2
    assert "0 is not in the range x>=1" in result.output


# -- undo ------------------------------------------------------------------------


def test_undo_restores_the_old_value(make_app, file_uri):
    app, _ = make(make_app, file_uri)
    client = app.test_client()
    client.post("/items/a", data={"value": "old"})
    client.post("/items/a", data={"value": "new"})
    newest = run(app, "history").output.splitlines()[0]
    assert "POST /items/a" in newest
    undo_id = UNDO_ID.search(newest).group(1)

    result = run(app, "undo", undo_id)
    assert result.exit_code == 0, result.output
    assert result.output == "undid 1 transaction(s)\n"
    assert value_of(app, "a") == "old"
    # The undo is itself a transaction, shown first.
    assert f"flask zodb undo {undo_id}  [" in run(app, "history", "-n", "1").output


def make_boxes(make_app, file_uri):
    """An app whose requests each change one box: a persistent object of its own."""
    app, db = make_app(file_uri)

    @app.post("/boxes/<name>")
    def fill(name):
        db["boxes"][name]["value"] = request.form["value"]
        return "ok"

    with app.app_context():
        db["boxes"] = PersistentMapping(a=PersistentMapping(), b=PersistentMapping())
    return app


def box(app, name):
    with app.app_context():
        return dict(app.extensions["zodb"].extension["boxes"][name])


def test_undo_of_several_transactions(make_app, file_uri):
    app = make_boxes(make_app, file_uri)
    client = app.test_client()
    client.post("/boxes/a", data={"value": "1"})
    client.post("/boxes/b", data={"value": "2"})
    client.post("/boxes/a", data={"value": "3"})
    lines = run(app, "history", "-n", "3").output.splitlines()
    # The second and third newest: b=2 and a=1.
    ids = [UNDO_ID.search(line).group(1) for line in lines[1:]]
    result = run(app, "undo", *ids)
    assert result.exit_code == 1
    assert "Some data were modified by a later transaction" in result.output

    # a=1 was changed by a later transaction; b=2 was not.
    result = run(app, "undo", ids[0])
    assert result.exit_code == 0, result.output
    assert box(app, "a") == {"value": "3"}
    assert box(app, "b") == {}


def test_undo_of_two_independent_transactions_at_once(make_app, file_uri):
    app = make_boxes(make_app, file_uri)
    client = app.test_client()
    client.post("/boxes/a", data={"value": "1"})
    client.post("/boxes/b", data={"value": "2"})
    lines = run(app, "history", "-n", "2").output.splitlines()
    result = run(app, "undo", *(UNDO_ID.search(line).group(1) for line in lines))
    assert result.exit_code == 0, result.output
    assert result.output == "undid 2 transaction(s)\n"
    assert box(app, "a") == box(app, "b") == {}


def test_undo_of_a_transaction_changed_later_is_refused_cleanly(make_app, file_uri):
    # Each request below writes the root mapping, so the older one cannot
    # be undone while the newer one stands.
    app, _ = make(make_app, file_uri)
    client = app.test_client()
    client.post("/items/a", data={"value": "old"})
    client.post("/items/b", data={"value": "other"})
    lines = run(app, "history").output.splitlines()
    older = UNDO_ID.search(lines[1]).group(1)
    result = run(app, "undo", older)
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot undo {older}: Undo error 0x00: ")
    assert result.output.endswith(
        "Some data were modified by a later transaction. Nothing was changed.\n"
    )
    assert result.exception is not None and isinstance(result.exception, SystemExit)
    assert run(app, "history").output.splitlines() == lines
    assert (value_of(app, "a"), value_of(app, "b")) == ("old", "other")


def test_undo_of_an_unknown_id_changes_nothing(make_app, file_uri):
    app, _ = make(make_app, file_uri)
    app.test_client().post("/items/a", data={"value": "1"})
    before = run(app, "history").output
    result = run(app, "undo", "AAAAAAAAAAA=", "nonsense")
    assert result.exit_code == 1
    assert result.output == (
        "Error: no undoable transaction with the id AAAAAAAAAAA=, nonsense; "
        "'flask zodb history' shows the ids. Nothing was changed.\n"
    )
    assert run(app, "history").output == before
    assert value_of(app, "a") == "1"


def test_undo_mixing_known_and_unknown_ids_changes_nothing(make_app, file_uri):
    app, _ = make(make_app, file_uri)
    app.test_client().post("/items/a", data={"value": "1"})
    known = UNDO_ID.search(run(app, "history", "-n", "1").output.strip()).group(1)
    result = run(app, "undo", known, "unknown")
    assert result.exit_code == 1
    assert "no undoable transaction with the id unknown;" in result.output
    assert value_of(app, "a") == "1"


def test_undo_on_a_storage_without_undo(make_app):
    app, _ = make(make_app, "memory://")
    app.test_client().post("/items/a", data={"value": "1"})
    result = run(app, "undo", "AAAAAAAAAAA=")
    assert result.exit_code == 1
    assert result.output == (
        "Error: the storage MappingStorage does not support undo (a history-free "
        "storage keeps no old states); nothing was changed.\n"
    )
    assert value_of(app, "a") == "1"


def test_undo_needs_an_id(make_app, file_uri):
    app, _ = make(make_app, file_uri)
    result = run(app, "undo")
    assert result.exit_code == 2
    assert "Missing argument 'TXID...'" in result.output


# -- pack ------------------------------------------------------------------------


def test_pack_reduces_the_size_after_deletes(make_app, tmp_path):
    path = tmp_path / "Data.fs"
    app, _ = make(make_app, f"file://{path}")
    client = app.test_client()
    for i in range(20):
        client.post(f"/items/k{i}", data={"value": "x" * 10_000})
    for i in range(20):
        client.delete(f"/items/k{i}")
    client.post("/items/kept", data={"value": "still here"})
    before = path.stat().st_size
    time.sleep(0.01)

    result = run(app, "pack")
    assert result.exit_code == 0, result.output
    after = path.stat().st_size
    assert after < before / 10
    assert result.stdout == f"packed: {_size(before)} -> {_size(after)}\n"
    assert result.stderr == f"packing {path} (keeping 0 days of history)\n"
    assert value_of(app, "kept") == "still here"
    assert value_of(app, "k0") is None


def test_pack_keeping_days_of_history_keeps_recent_changes(make_app, tmp_path):
    path = tmp_path / "Data.fs"
    app, _ = make(make_app, f"file://{path}")
    client = app.test_client()
    client.post("/items/a", data={"value": "x" * 10_000})
    client.delete("/items/a")
    before = path.stat().st_size
    result = run(app, "pack", "--days", "1.5")
    assert result.exit_code == 0, result.output
    assert "(keeping 1.5 days of history)" in result.stderr
    assert path.stat().st_size == before
    assert len(run(app, "history").output.splitlines()) == 3


def test_pack_days_must_not_be_negative(make_app):
    app, _ = make(make_app, "memory://")
    result = run(app, "pack", "--days", "-1")
    assert result.exit_code == 2


def test_a_long_pack_reports_progress(make_app, tmp_path):
    # A pack waits for a commit in progress to end before it finishes; while
    # it waits, it tells the user it is still working.
    path = tmp_path / "Data.fs"
    app, _ = make(make_app, f"file://{path}")
    client = app.test_client()
    client.post("/items/a", data={"value": "x" * 10_000})
    client.delete("/items/a")
    time.sleep(0.01)
    storage = app.extensions["zodb"].database.get().storage
    committing = threading.Event()

    def slow_commit():
        txn = TransactionMetaData()
        storage.tpc_begin(txn)
        committing.set()
        time.sleep(2.5)
        storage.tpc_abort(txn)

    writer = threading.Thread(target=slow_commit)
    writer.start()
    committing.wait()
    try:
        result = run(app, "pack")
    finally:
        writer.join()
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"  still packing \(\d s\)", result.stderr.splitlines()[1])
    assert result.stdout.startswith("packed: ")


# -- errors ----------------------------------------------------------------------


def test_a_storage_locked_by_another_process(make_app, tmp_path):
    path = tmp_path / "Data.fs"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from ZODB.FileStorage import FileStorage; "
            f"s = FileStorage({str(path)!r}); print('open', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline() == b"open\n"
        app, _ = make(make_app, f"file://{path}")
        for command in (["info"], ["history"], ["pack"], ["undo", "x"]):
            result = run(app, *command)
            assert result.exit_code == 1, command
            assert result.output.startswith("Error: cannot open ZODB_STORAGE file://")
            assert "it is locked by another process" in result.output
    finally:
        holder.communicate(b"")
    assert holder.returncode == 0
    # Once the other process is gone, the command works.
    assert run(app, "info").exit_code == 0


def test_an_app_without_flask_zodb():
    app = Flask("plain")
    app.cli.add_command(zodb_cli)
    result = app.test_cli_runner().invoke(args=["zodb", "info"])
    assert result.exit_code == 1
    assert result.output == "Error: Flask-ZODB is not set up on the application 'plain'.\n"


def test_the_commands_are_registered_on_init_app(make_app):
    app, _ = make_app()
    result = app.test_cli_runner().invoke(args=["zodb", "--help"])
    assert result.exit_code == 0
    for command in ("info", "history", "undo", "pack"):
        assert command in result.output


# -- a real 'flask' process ----------------------------------------------------


AUDIT_APP = """
import os

from flask import Flask, request

from flask_zodb import ZODB

app = Flask(__name__)
app.config["ZODB_STORAGE"] = os.environ["AUDIT_STORAGE"]
db = ZODB(app)


@app.post("/notes/<name>")
def note(name):
    db[name] = request.form["text"]
    return "stored"
"""


def test_flask_zodb_history_in_a_real_process(tmp_path, monkeypatch):
    (tmp_path / "audit_app.py").write_text(textwrap.dedent(AUDIT_APP))
    storage = f"file://{tmp_path / 'Data.fs'}"
    monkeypatch.setenv("AUDIT_STORAGE", storage)
    monkeypatch.syspath_prepend(str(tmp_path))
    import audit_app

    try:
        client = audit_app.app.test_client()
        client.post("/notes/first", data={"text": "1"}, environ_base={"REMOTE_USER": "ada"})
        client.post("/notes/second", data={"text": "2"}, environ_base={"REMOTE_USER": "grace"})
    finally:
        audit_app.app.extensions["zodb"].database.close()
        del sys.modules["audit_app"]

    flask = Path(sys.executable).with_name("flask")
    result = subprocess.run(
        [str(flask), "--app", "audit_app", "zodb", "history"],
        cwd=tmp_path,
        env={**os.environ, "AUDIT_STORAGE": storage},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert re.search(r"UTC  grace\s+POST /notes/second  \[", lines[0])
    assert re.search(r"UTC  ada\s+POST /notes/first  \[", lines[1])
    assert "initial database creation" in lines[2]


# -- flask shell -----------------------------------------------------------------


def test_the_shell_context(make_app):
    app, db = make_app()
    with app.app_context():
        context = app.make_shell_context()
        assert context["db"] is db
        assert context["transaction"] is transaction
        root = context["root"]
        assert isinstance(root, PersistentMapping)
        root["from the shell"] = True
        context["transaction"].commit()
    with app.app_context():
        assert db["from the shell"] is True


def test_two_apps_share_one_extension_in_the_shell():
    shared = ZODB()
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config.update(ZODB_STORAGE="memory://")
        shared.init_app(app)
        apps.append(app)
    try:
        for app in apps:
            with app.app_context():
                assert app.make_shell_context()["db"] is shared
    finally:
        for app in apps:
            app.extensions["zodb"].database.close()
