"""The request's transaction as a view sees it: commit, abort, doom, notes,
savepoints, async views, other data managers, streaming and conflict retries."""

from __future__ import annotations

import pytest
import transaction
import webtest
from flask import Response, abort, redirect, request, stream_with_context
from transaction.interfaces import IDataManager
from ZODB.POSException import ConflictError
from zope.interface import implementer


@pytest.fixture
def app_db(make_app):
    return make_app()


# -- what decides commit or abort -----------------------------------------------


def test_a_successful_view_commits(app_db, stored):
    app, db = app_db

    @app.post("/")
    def view():
        db["done"] = True
        return "ok"

    assert app.test_client().post("/").status_code == 200
    assert stored(app) == {"done": True}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_commit(app_db, stored, status):
    app, db = app_db

    @app.post("/")
    def view():
        db["posted"] = status
        return redirect("/done", code=status)

    assert app.test_client().post("/").status_code == status
    assert stored(app) == {"posted": status}


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 500, 502, 503])
def test_client_and_server_error_statuses_abort(app_db, stored, status):
    app, db = app_db

    @app.post("/")
    def view():
        db["posted"] = status
        return "refused", status

    assert app.test_client().post("/").status_code == status
    assert stored(app) == {}


def test_flask_abort_aborts(app_db, stored):
    app, db = app_db

    @app.post("/")
    def view():
        db["posted"] = True
        abort(404)

    assert app.test_client().post("/").status_code == 404
    assert stored(app) == {}


def test_an_exception_in_the_view_aborts_and_propagates_when_testing(app_db, stored):
    app, db = app_db

    @app.post("/")
    def view():
        db["posted"] = True
        raise LookupError("no such thing")

    with pytest.raises(LookupError, match="no such thing"):
        app.test_client().post("/")
    assert stored(app) == {}


def test_an_exception_in_the_view_aborts_with_a_500_in_production(app_db, stored):
    app, db = app_db
    app.testing = False

    @app.post("/")
    def view():
        db["posted"] = True
        raise LookupError("no such thing")

    response = webtest.TestApp(app).post("/", expect_errors=True)
    assert response.status_int == 500
    assert stored(app) == {}


def test_the_response_is_sent_after_the_commit(app_db, stored):
    # By the time the server is given the status, the data is stored.
    app, db = app_db

    @app.post("/")
    def view():
        db["value"] = "stored"
        return "ok"

    seen = []

    def observe(status, headers, exc_info=None):
        seen.append((status, stored(app).get("value")))
        return lambda data: None

    environ = webtest.TestRequest.blank("/", method="POST").environ
    body = app.wsgi_app(environ, observe)
    body.close()
    assert seen == [("200 OK", "stored")]


@pytest.mark.parametrize(("status", "ran"), [(200, True), (500, False)])
def test_after_commit_runs_only_once_committed(app_db, stored, status, ran):
    app, db = app_db
    calls = []

    @app.post("/")
    def view():
        db["registered"] = True
        db.after_commit(lambda: calls.append(stored(app).get("registered")))
        assert calls == []
        return "answer", status

    app.test_client().post("/")
    assert calls == ([True] if ran else [])


# -- the transaction API, from a view -------------------------------------------


def test_transaction_doom_in_a_view_aborts(app_db, stored):
    app, db = app_db

    @app.post("/")
    def view():
        db["doomed"] = True
        transaction.doom()
        return "doomed but fine"

    response = app.test_client().post("/")
    assert response.status_code == 200
    assert response.text == "doomed but fine"
    assert stored(app) == {}


def test_transaction_doom_before_touching_db_aborts(app_db, stored):
    app, db = app_db

    @app.post("/")
    def view():
        transaction.doom()
        db["doomed"] = True
        return "ok"

    app.test_client().post("/")
    assert stored(app) == {}


def test_transaction_note_in_a_view_is_recorded(make_app, file_uri):
    app, db = make_app(file_uri)

    @app.post("/shout")
    def view():
        db["shoutout"] = "hi"
        transaction.get().note("added a shoutout")
        return "ok"

    app.test_client().post("/shout")
    storage = db.create_db(app).storage
    last = list(storage.iterator())[-1]
    assert last.description == b"POST /shout\nadded a shoutout"


def test_remote_user_is_the_transactions_user(make_app, file_uri):
    app, db = make_app(file_uri)

    @app.post("/")
    def view():
        db["x"] = 1
        return "ok"

    app.test_client().post("/", environ_base={"REMOTE_USER": "ada"})
    last = list(db.create_db(app).storage.iterator())[-1]
    assert last.user == b"ada"


def test_savepoint_rollback_in_a_view(app_db, stored):
    app, db = app_db

    @app.post("/")
    def view():
        db["before"] = 1
        savepoint = transaction.savepoint()
        db["after"] = 2
        db["before"] = "changed"
        savepoint.rollback()
        return {"keys": sorted(db)}

    assert app.test_client().post("/").json == {"keys": ["before"]}
    assert stored(app) == {"before": 1}


def test_an_async_view_reads_and_writes(app_db, stored):
    app, db = app_db

    @app.post("/")
    async def view():
        db["hits"] = db.get("hits", 0) + 1
        return str(db["hits"])

    client = app.test_client()
    assert client.post("/").text == "1"
    assert client.post("/").text == "2"
    assert stored(app) == {"hits": 2}


def test_an_async_view_that_fails_aborts(app_db, stored):
    app, db = app_db

    @app.post("/")
    async def view():
        db["hits"] = 1
        return "no", 400

    assert app.test_client().post("/").status_code == 400
    assert stored(app) == {}


def test_transaction_doom_and_note_in_an_async_view_reach_the_request(make_app, file_uri):
    app, db = make_app(file_uri)

    @app.post("/doomed")
    async def doomed():
        db["doomed"] = True
        transaction.doom()
        return "ok"

    @app.post("/noted")
    async def noted():
        db["noted"] = True
        transaction.get().note("from an async view")
        return "ok"

    client = app.test_client()
    assert client.post("/doomed").status_code == 200
    assert client.post("/noted").status_code == 200
    history = app.extensions["zodb"].database.get().undoLog(0, 1)
    assert history[0]["description"] == "POST /noted\nfrom an async view"
    with app.app_context():
        assert "doomed" not in db and db["noted"] is True


# -- when the connection goes back to the pool --------------------------------------


def checked_out(app):
    db = app.extensions["zodb"].database.get()
    return len(db.pool.all) - len(db.pool.available)


def call(app, path):
    """Call the app as a WSGI server does, without closing the body yet."""
    environ = webtest.TestRequest.blank(path).environ
    return app(environ, lambda status, headers, exc_info=None: None)


def test_a_response_in_memory_gives_its_connection_back_at_the_commit(app_db):
    app, db = app_db

    @app.get("/")
    def view():
        return str(db.get("n", 0))

    body = call(app, "/")
    assert checked_out(app) == 0  # before the server even read the body
    assert b"".join(body) == b"0"
    body.close()
    assert checked_out(app) == 0


def test_a_streamed_response_keeps_its_connection_until_closed(app_db):
    app, db = app_db

    @app.get("/")
    def view():
        db.get("n")
        return Response(stream_with_context(iter([str(db.get("n", 0))])))

    body = call(app, "/")
    assert checked_out(app) == 1
    assert b"".join(body) == b"0"
    body.close()
    assert checked_out(app) == 0


# -- another data manager in the same transaction ----------------------------------


@implementer(IDataManager)
class RecordingDataManager:
    """A data manager keeping one value, committed in two phases with ZODB.

    A stand-in for an external resource (a mail queue, an SQL session): it
    stores *value* into *target* only when the whole transaction commits and
    records each call that the transaction made.
    """

    def __init__(self, manager, target, value, *, fail_vote=False):
        self.transaction_manager = manager
        self.target = target
        self.value = value
        self.fail_vote = fail_vote
        self.calls = []

    def abort(self, txn):
        self.calls.append("abort")

    def tpc_begin(self, txn):
        self.calls.append("tpc_begin")

    def commit(self, txn):
        self.calls.append("commit")

    def tpc_vote(self, txn):
        self.calls.append("tpc_vote")
        if self.fail_vote:
            raise OSError("the other resource refused")

    def tpc_finish(self, txn):
        self.calls.append("tpc_finish")
        self.target.append(self.value)

    def tpc_abort(self, txn):
        self.calls.append("tpc_abort")

    def sortKey(self):
        return "~recording"  # after ZODB's connection


def joining_app(app_db, *, fail_vote=False):
    app, db = app_db
    sent = []
    managers = []

    @app.post("/<int:status>")
    def view(status):
        manager = request.environ["transaction.manager"]
        assert manager is db.transaction_manager
        data_manager = RecordingDataManager(manager, sent, "mail", fail_vote=fail_vote)
        manager.get().join(data_manager)
        managers.append(data_manager)
        db["user"] = "registered"
        return "ok", status

    return app, sent, managers


def test_a_joined_data_manager_commits_with_zodb(app_db, stored):
    app, sent, managers = joining_app(app_db)
    assert app.test_client().post("/200").status_code == 200
    assert managers[0].calls == ["tpc_begin", "commit", "tpc_vote", "tpc_finish"]
    assert sent == ["mail"]
    assert stored(app) == {"user": "registered"}


def test_a_joined_data_manager_aborts_with_zodb(app_db, stored):
    app, sent, managers = joining_app(app_db)
    assert app.test_client().post("/400").status_code == 400
    assert managers[0].calls == ["abort"]
    assert sent == []
    assert stored(app) == {}


def test_zodb_aborts_when_a_joined_data_manager_votes_no(app_db, stored):
    app, sent, managers = joining_app(app_db, fail_vote=True)
    with pytest.raises(OSError, match="refused"):
        app.test_client().post("/200")
    calls = managers[0].calls
    assert calls[:3] == ["tpc_begin", "commit", "tpc_vote"]
    assert "tpc_abort" in calls
    assert "tpc_finish" not in calls
    assert sent == []
    assert stored(app) == {}


# -- streamed responses ---------------------------------------------------------


def test_a_streamed_response_reads_the_committed_state(app_db):
    app, db = app_db
    pool = app.extensions["zodb"].database

    @app.post("/")
    def view():
        db["message"] = "committed"

        def generate():
            # Runs after the commit: another connection already sees it.
            other = pool.get().open(transaction_manager=transaction.TransactionManager())
            try:
                yield f"{other.root().get('message')} "
            finally:
                other.close()
            yield f"{db['message']} {request.path}"

        return Response(stream_with_context(generate()))

    response = webtest.TestApp(app).post("/")
    assert response.text == "committed committed /"


def test_a_generator_that_only_reads_db_after_the_view(app_db):
    app, db = app_db

    @app.post("/write")
    def write():
        db["items"] = ["a", "b"]
        return "ok"

    @app.get("/")
    def view():
        def generate():
            yield from db["items"]

        return Response(stream_with_context(generate()))

    testapp = webtest.TestApp(app)
    testapp.post("/write")
    assert testapp.get("/").text == "ab"


def test_streaming_cleanup_runs_twice_and_is_idempotent(app_db, stored):
    # Flask 3 tears the app context down when the view returns and again
    # when the stream ends; the second time must find nothing left to do.
    app, db = app_db
    teardowns = []
    handles = []

    @app.teardown_appcontext
    def count(error):
        teardowns.append(error)

    @app.post("/")
    def view():
        db["streamed"] = True
        handles.append(db.handle)

        def generate():
            yield "a"
            yield str(db["streamed"])

        return Response(stream_with_context(generate()))

    testapp = webtest.TestApp(app)
    assert testapp.post("/").text == "aTrue"
    assert teardowns == [None, None]
    assert handles[0].is_closed
    assert stored(app) == {"streamed": True}
    # Nothing was left behind for the next request.
    assert testapp.post("/").text == "aTrue"
    assert len(teardowns) == 4


def test_streaming_in_a_test_request_context_commits_once(app_db, stored):
    app, db = app_db
    with app.test_request_context("/"):
        db["value"] = 1

        def generate():
            yield str(db["value"])

        body = list(stream_with_context(generate()))
    assert body == ["1"]
    assert stored(app) == {"value": 1}


# -- conflicts ------------------------------------------------------------------


def conflicting_app(app_db, conflicts):
    """A view that meets *conflicts* ConflictErrors before it succeeds."""
    app, db = app_db
    attempts = []

    @app.post("/")
    def view():
        attempts.append(request.environ["zodb"])
        db["attempts"] = len(attempts)
        if len(attempts) <= conflicts:
            raise ConflictError("another request changed it")
        return f"done after {len(attempts)}"

    return app, attempts


def test_a_conflict_in_a_view_is_retried(app_db, stored):
    app, attempts = conflicting_app(app_db, conflicts=2)
    response = webtest.TestApp(app).post("/")
    assert response.text == "done after 3"
    assert len(attempts) == 3
    assert len({id(handle) for handle in attempts}) == 3  # a fresh handle each time
    assert stored(app) == {"attempts": 3}


def test_a_conflict_is_retried_despite_a_catch_all_error_handler(app_db, stored):
    app, attempts = conflicting_app(app_db, conflicts=2)
    caught = []

    @app.errorhandler(Exception)
    def everything(error):
        caught.append(error)
        return "something went wrong", 500

    response = webtest.TestApp(app).post("/")
    assert response.text == "done after 3"
    assert len(attempts) == 3
    assert caught == []
    assert stored(app) == {"attempts": 3}


def test_a_conflict_in_an_async_view_is_retried(app_db, stored):
    app, db = app_db
    attempts = []

    @app.post("/")
    async def view():
        attempts.append(1)
        db["attempts"] = len(attempts)
        if len(attempts) == 1:
            raise ConflictError("another request changed it")
        return "ok"

    assert webtest.TestApp(app).post("/").text == "ok"
    assert stored(app) == {"attempts": 2}


def test_a_body_is_read_again_by_each_attempt(app_db, stored):
    app, db = app_db
    forms = []

    @app.post("/")
    def view():
        forms.append(request.form["message"])
        db["message"] = request.form["message"]
        if len(forms) == 1:
            raise ConflictError("try again")
        return "ok"

    webtest.TestApp(app).post("/", {"message": "hello"})
    assert forms == ["hello", "hello"]
    assert stored(app) == {"message": "hello"}


def test_a_conflict_in_a_pushed_context_is_raised(app_db):
    # No middleware runs a pushed context, so nothing can retry it: the
    # error reaches the caller, as the error handler hands it back.
    app, db = app_db

    @app.post("/")
    def view():
        db["x"] = 1
        raise ConflictError("no retry here")

    with app.test_request_context("/", method="POST"), pytest.raises(ConflictError):
        app.full_dispatch_request()
