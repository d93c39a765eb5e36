"""The handle used on its own, as the Flask facade uses it outside a
request (a shell, a CLI command): open lazily, finish, close."""

from __future__ import annotations

import logging

import persistent
import pytest
import transaction

from zodb_wsgi import Database, HandleClosedError, ZODBHandle


@pytest.fixture
def database(file_uri):
    database = Database(file_uri)
    yield database
    database.close()


def stored(database):
    manager = transaction.TransactionManager()
    connection = database.open(manager)
    try:
        return dict(connection.root())
    finally:
        manager.abort()
        connection.close()


def test_a_handle_opens_lazily_and_says_what_state_it_is_in(database):
    handle = ZODBHandle(database, note="shell")
    assert repr(handle) == "<ZODBHandle shell idle>"
    assert not handle.is_connected
    handle.root["x"] = 1
    assert handle.is_connected
    assert repr(handle) == "<ZODBHandle shell connected>"
    handle.close()
    assert repr(handle) == "<ZODBHandle shell closed>"
    assert repr(ZODBHandle(database)) == "<ZODBHandle (no note) idle>"


def test_finish_commits_and_says_so(database):
    handle = ZODBHandle(database, note="cli: import", user="admin")
    handle.root["imported"] = 3
    assert handle.finish(commit=True) is True
    handle.close()
    assert stored(database) == {"imported": 3}
    record = database.get().storage.undoLog(0, 1)[0]
    assert (record["description"], record["user_name"]) == (b"cli: import", b"admin")


def test_finish_without_a_note_leaves_the_description_alone(database):
    handle = ZODBHandle(database)
    handle.root["x"] = 1
    handle.transaction.note("only the caller's note")
    handle.finish(commit=True)
    handle.close()
    record = database.get().storage.undoLog(0, 1)[0]
    assert record["description"] == b"only the caller's note"
    assert record["user_name"] == b""


def test_finish_with_nothing_started_commits_nothing(database):
    handle = ZODBHandle(database)
    assert handle.finish(commit=True) is False
    handle.root.get("x")  # reading starts no transaction either
    assert handle.finish(commit=True) is False
    handle.close()


def test_finish_without_commit_aborts(database):
    handle = ZODBHandle(database)
    handle.root["x"] = 1
    assert handle.finish(commit=False) is False
    handle.close()
    assert stored(database) == {}


def test_a_doomed_handle_aborts_at_finish(database):
    handle = ZODBHandle(database)
    handle.root["x"] = 1
    handle.doom()
    assert handle.transaction.isDoomed()
    assert handle.finish(commit=True) is False
    handle.close()
    assert stored(database) == {}


def test_close_aborts_what_was_left_and_may_be_called_again(database):
    handle = ZODBHandle(database)
    handle.root["x"] = 1
    connection = handle.connection
    handle.close()
    handle.close()
    assert stored(database) == {}
    assert connection.opened is None
    with pytest.raises(HandleClosedError):
        _ = handle.connection


def test_binding_the_thread_reaches_the_handles_transaction(database):
    thread_manager = transaction.manager.manager
    handle = ZODBHandle(database)
    handle.bind_thread()
    try:
        assert transaction.get() is handle.transaction
    finally:
        handle.unbind_thread()
    assert transaction.manager.manager is thread_manager


def test_unbinding_an_outer_handle_leaves_an_inner_binding(database):
    thread_manager = transaction.manager.manager
    outer, inner = ZODBHandle(database), ZODBHandle(database)
    try:
        outer.bind_thread()
        inner.bind_thread()
        outer.unbind_thread()  # out of order: the inner handle keeps the thread
        assert transaction.manager.manager is inner.transaction_manager
        inner.unbind_thread()
        assert transaction.manager.manager is outer.transaction_manager
        outer.unbind_thread()  # unbinding twice does nothing
        assert transaction.manager.manager is outer.transaction_manager
    finally:
        transaction.manager.manager = thread_manager


class Stubborn(persistent.Persistent):
    """A persistent object whose changes cannot be thrown away (its
    ``_p_invalidate`` fails), so that an abort fails for real."""

    stubborn = True

    def _p_invalidate(self):
        if type(self).stubborn:
            raise RuntimeError("cannot forget its changes")
        super()._p_invalidate()


def test_failures_while_closing_are_logged_not_raised(database, caplog, monkeypatch):
    setup = ZODBHandle(database)
    setup.root["obj"] = Stubborn()
    setup.finish(commit=True)
    setup.close()

    handle = ZODBHandle(database, note="POST /stubborn")
    handle.root["obj"].value = 1
    connection = handle.connection
    with caplog.at_level(logging.ERROR, logger="zodb_wsgi"):
        handle.close()  # does not raise
    assert handle.is_closed
    messages = [r.getMessage() for r in caplog.records if r.name == "zodb_wsgi"]
    assert messages == [
        "aborting the transaction of <ZODBHandle POST /stubborn closed> failed",
        "closing the connection of <ZODBHandle POST /stubborn closed> failed",
    ]
    # Let the object go, so that its connection (and the database) can close.
    monkeypatch.setattr(Stubborn, "stubborn", False)
    connection.abort(None)
    connection.close()


def test_a_request_manager_says_whether_a_transaction_was_started():
    from zodb_wsgi import RequestTransactionManager

    manager = RequestTransactionManager()
    assert manager.current() is None
    txn = manager.get()
    assert manager.current() is txn
    manager.abort()
    assert manager.current() is None


def test_a_request_manager_makes_its_synchronizers_on_first_need(file_uri):
    # The set is made lazily (see RequestTransactionManager.__init__); a
    # connection registered with it must still hear of each transaction.
    from zodb_wsgi import RequestTransactionManager

    database = Database(file_uri)
    manager = RequestTransactionManager()
    try:
        connection = database.open(manager)
        assert manager.registeredSynchs()
        connection.root()["x"] = 1
        manager.commit()
        connection.close()
        assert not manager.registeredSynchs()
        with pytest.raises(AttributeError):
            manager.no_such_attribute  # noqa: B018
    finally:
        database.close()
