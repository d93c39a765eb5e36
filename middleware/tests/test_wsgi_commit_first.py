"""The response is held back until the transaction has committed: a client
is never told "200 OK" about a change that was not stored."""

from __future__ import annotations

import threading

import pytest
import transaction
import webtest

from zodb_wsgi import UnstorableValueError


def counter(environ, start_response):
    root = environ["zodb"].root
    root["count"] = root.get("count", 0) + 1
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    return [b"iterated"]


def test_the_server_hears_of_the_response_only_after_the_commit(wrap, server, stored):
    middleware = wrap(counter)
    srv = server(middleware)
    seen_by_server = []
    start_response = srv.start_response

    def server_start_response(status, headers, exc_info=None):
        seen_by_server.append(stored(middleware).get("count"))
        return start_response(status, headers, exc_info)

    srv.start_response = server_start_response
    assert srv("/") == b"written iterated"
    assert seen_by_server == [1]


def test_write_output_comes_first_in_the_body(wrap):
    response = webtest.TestApp(wrap(counter)).get("/")
    assert response.body == b"written iterated"
    assert response.status == "200 OK"
    assert response.headers["Content-Type"] == "text/plain"


def _local_class_instance():
    class Local:  # defined in a function: pickle cannot find it by name
        pass

    return Local()


UNSTORABLE = {
    "lock": threading.Lock,
    "lambda": lambda: lambda: None,
    "instance of a local class": _local_class_instance,
}


@pytest.mark.parametrize("kind", UNSTORABLE)
def test_a_commit_that_fails_sends_nothing_and_changes_nothing(wrap, server, stored, kind):
    make = UNSTORABLE[kind]

    def app(environ, start_response):
        root = environ["zodb"].root
        root["count"] = root.get("count", 0) + 1
        if environ["PATH_INFO"] == "/bad":
            root["bad"] = make()
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written before the commit")
        return [b"stored!"]

    middleware = wrap(app)
    server(middleware)("/")
    db = middleware.database.get()
    before = (db.lastTransaction(), stored(middleware))
    srv = server(middleware)
    with pytest.raises(UnstorableValueError) as error:
        srv("/bad")
    # The client was told nothing: no status, not even the write() output.
    assert srv.started == []
    assert srv.sent == []
    # The database is exactly as it was before the request.
    assert (db.lastTransaction(), stored(middleware)) == before
    assert before[1] == {"count": 1}
    # The connection is back in the pool, and the next request works.
    assert len(db.pool.available) == len(db.pool.all)
    assert server(middleware)("/") == b"written before the commitstored!"
    assert stored(middleware) == {"count": 2}
    message = str(error.value)
    assert "could not be stored" in message
    assert "picklable" in message
    assert "nothing of this request was written" in message
    assert isinstance(error.value, TypeError)
    assert error.value.__cause__ is not None


class FailingVote:
    """A second resource in the request's transaction (as zope.sqlalchemy
    would join one) whose vote fails: the whole transaction must abort."""

    def __init__(self, manager):
        self.transaction_manager = manager
        self.aborted = False

    def abort(self, txn):
        self.aborted = True

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_vote(self, txn):
        raise RuntimeError("the other database refused the transaction")

    def tpc_finish(self, txn):  # never reached: the vote fails first
        raise AssertionError("must not finish")

    def tpc_abort(self, txn):
        self.aborted = True

    def sortKey(self):
        return "~failing vote, after ZODB"


def test_any_error_at_commit_is_raised_unchanged_after_the_abort(wrap, server, stored):
    joined = []

    def app(environ, start_response):
        environ["zodb"].root["count"] = 1
        resource = FailingVote(environ["transaction.manager"])
        joined.append(resource)
        transaction.get().join(resource)
        start_response("200 OK", [])
        return [b"stored!"]

    middleware = wrap(app)
    srv = server(middleware)
    with pytest.raises(RuntimeError, match="refused the transaction"):
        srv("/")
    assert srv.started == []
    assert joined[0].aborted
    assert stored(middleware) == {}
