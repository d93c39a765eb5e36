"""Using db outside requests: pushed contexts, CLI commands, ``flask shell``.

A Flask context that no middleware manages gets a handle of its own; it is
committed when the context is popped, aborted when an exception escapes.
"""

from __future__ import annotations

import click
import pytest
import transaction
from flask.cli import shell_command


def contexts(app):
    return {
        "test_request_context": app.test_request_context,
        "app_context": app.app_context,
    }


@pytest.fixture(params=["test_request_context", "app_context"])
def push(request):
    """Push one or the other kind of context: ``with push(app): ...``."""
    return lambda app: contexts(app)[request.param]()


def test_test_request_context_commits_when_popped(make_app):
    # The seed documentation's snippet, seen by a later request.
    app, db = make_app()

    @app.get("/")
    def index():
        return db.get("shoutout", "nothing")

    with app.test_request_context():
        db["shoutout"] = "Developer was here!"
    assert app.test_client().get("/").text == "Developer was here!"


def test_app_context_commits_when_popped(make_app):
    app, db = make_app()

    @app.get("/")
    def index():
        return db.get("shoutout", "nothing")

    with app.app_context():
        db["shoutout"] = "from an app context"
    assert app.test_client().get("/").text == "from an app context"


def test_commit_reaches_the_storage_itself(make_app, stored, file_uri, push):
    app, db = make_app(file_uri)
    with push(app):
        db["key"] = "value"
    assert stored(app) == {"key": "value"}


def test_nothing_is_committed_before_the_context_is_popped(make_app, stored, push):
    app, db = make_app()
    with push(app):
        db["key"] = "value"
        assert stored(app) == {}
    assert stored(app) == {"key": "value"}


def test_an_exception_escaping_the_block_aborts(make_app, stored, push):
    app, db = make_app()
    with push(app):
        db["kept"] = 1
    with pytest.raises(ZeroDivisionError), push(app):
        db["kept"] = 2
        db["lost"] = 3
        1 / 0  # noqa: B018
    assert stored(app) == {"kept": 1}


def test_transaction_doom_aborts(make_app, stored, push):
    app, db = make_app()
    with push(app):
        db["doomed"] = True
        transaction.doom()
        assert transaction.get().isDoomed()
    assert stored(app) == {}


def test_db_transaction_manager_doom_aborts(make_app, stored, push):
    app, db = make_app()
    with push(app):
        db["doomed"] = True
        db.transaction_manager.doom()
    assert stored(app) == {}


def test_the_thread_manager_is_given_back_when_popped(make_app, push):
    app, db = make_app()
    thread_manager = transaction.manager.manager
    with push(app):
        db.get("x")
        assert transaction.manager.manager is db.transaction_manager
    assert transaction.manager.manager is thread_manager


def test_a_context_that_does_not_touch_db_costs_nothing(make_app, push):
    app, db = make_app()
    with push(app):
        pass
    with app.app_context():
        assert db.is_connected is False
    assert not app.extensions["zodb"].database.is_open


def test_each_context_has_its_own_handle_closed_when_popped(make_app, push):
    app, db = make_app()
    with push(app):
        first = db.handle
        connection = db.connection
    assert first.is_closed
    assert connection.opened is None  # back in the pool
    with push(app):
        second = db.handle
        assert not second.is_closed
    assert second is not first
    assert second.is_closed


def test_a_cli_command_writes_and_commits(make_app, stored):
    app, db = make_app()

    @app.cli.command("add-user")
    @click.argument("name")
    def add_user(name):
        db.setdefault("users", [])
        db["users"] = [*db["users"], name]
        click.echo(f"added {name}")

    runner = app.test_cli_runner()
    result = runner.invoke(args=["add-user", "ada"])
    assert result.exit_code == 0, result.output
    assert result.output == "added ada\n"
    runner.invoke(args=["add-user", "grace"])
    assert stored(app) == {"users": ["ada", "grace"]}


def test_a_failing_cli_command_aborts(make_app, stored):
    app, db = make_app()

    @app.cli.command("half-done")
    def half_done():
        db["half"] = "done"
        raise click.ClickException("stopped half way")

    result = app.test_cli_runner().invoke(args=["half-done"])
    assert result.exit_code == 1
    assert "stopped half way" in result.output
    assert stored(app) == {}


def test_flask_shell_context_has_db(make_app):
    app, db = make_app()
    with app.app_context():
        assert app.make_shell_context()["db"] is db


def test_flask_shell_writes_are_committed_on_exit(make_app, stored):
    app, _ = make_app()
    result = app.test_cli_runner().invoke(
        shell_command, input="db['from_shell'] = sorted(db) + ['x']\n"
    )
    assert result.exit_code == 0, result.output
    assert stored(app) == {"from_shell": ["x"]}


# -- contexts inside requests, and requests outside the middleware -------------------


def test_a_request_context_pushed_in_a_view_shares_the_requests_fate(make_app, stored):
    app, db = make_app()

    @app.post("/")
    def view():
        db["outer"] = True
        with app.test_request_context("/inner"):
            db["inner"] = True  # joins the request's transaction
        return "refused", 400  # which aborts: nothing of it is stored

    assert app.test_client().post("/").status_code == 400
    assert stored(app) == {}


def test_a_view_dispatched_in_a_test_request_context_commits_with_it(make_app, stored):
    # Without the middleware (no WSGI call at all) the context's own handle
    # serves the view, for sync and async views alike.
    app, db = make_app()

    @app.post("/sync")
    def sync_view():
        db["sync"] = True
        return "ok"

    @app.post("/async")
    async def async_view():
        db["async"] = True
        return "ok"

    for path in ("/sync", "/async"):
        with app.test_request_context(path, method="POST"):
            assert app.full_dispatch_request().status_code == 200
    assert stored(app) == {"sync": True, "async": True}


def test_async_code_run_in_an_app_context_uses_the_contexts_database(make_app, stored):
    app, db = make_app()

    async def job():
        db["job"] = "done"

    with app.app_context():
        app.ensure_sync(job)()
    assert stored(app) == {"job": "done"}


def test_a_nested_app_context_joins_the_outer_contexts_transaction(make_app, file_uri, stored):
    # As a context pushed in a view joins the request's transaction: one
    # connection, one transaction, committed when the outer context is popped.
    app, db = make_app(file_uri)
    with app.app_context():
        db["outer"] = 1
        connection = db.connection
        with app.app_context():
            assert db.is_connected  # through the outer context's handle
            db["inner"] = 1
            assert db.connection is connection
        assert stored(app) == {}
    assert stored(app) == {"outer": 1, "inner": 1}


def test_a_context_of_another_app_inside_a_context_has_its_own_transaction(make_app, stored):
    app, db = make_app()
    other, other_db = make_app()
    with app.app_context():
        db["mine"] = 1
        with other.app_context():
            other_db["theirs"] = 1
            transaction.doom()  # the inner context's transaction only
        with other.app_context():
            other_db["kept"] = 1
    assert stored(app) == {"mine": 1}
    assert stored(other) == {"kept": 1}
