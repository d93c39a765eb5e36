"""What a request did with the database: Server-Timing and the DEBUG log line."""

from __future__ import annotations

import logging

import pytest
import transaction
from flask import request
from persistent.mapping import PersistentMapping

from zodb_wsgi import ConfigurationError


def make(make_app, storage, **config):
    app, db = make_app(storage, **config)

    @app.post("/items/<name>")
    def add(name):
        db[name] = PersistentMapping(value=request.form.get("value", ""))
        return "added"

    @app.get("/items/<name>")
    def show(name):
        return db[name]["value"]

    @app.get("/idle")
    def idle():
        return "no database"

    return app, db


def timing(response) -> dict[str, str]:
    """The Server-Timing header as {metric: 'dur=...;desc=...'}."""
    parts = {}
    for part in response.headers["Server-Timing"].split(","):
        name, _, params = part.strip().partition(";")
        parts[name] = params
    return parts


@pytest.mark.parametrize("flag", [True, "true", "1", "on"])
def test_server_timing_when_on(make_app, file_uri, flag):
    app, _ = make(make_app, file_uri, ZODB_SERVER_TIMING=flag)
    client = app.test_client()
    metrics = timing(client.post("/items/a", data={"value": "1"}))
    assert list(metrics) == ["zodb", "zodb-loads", "zodb-stores", "zodb-attempt"]
    assert metrics["zodb"].startswith("dur=")
    assert metrics["zodb"].endswith(';desc="commit"')
    assert float(metrics["zodb"][4:].split(";")[0]) > 0
    # The root and the new mapping.
    assert metrics["zodb-stores"] == 'desc="2"'
    assert metrics["zodb-attempt"] == 'desc="1"'

    app.extensions["zodb"].database.get().cacheMinimize()
    metrics = timing(client.get("/items/a"))
    assert metrics["zodb-loads"] == 'desc="2"'
    assert metrics["zodb-stores"] == 'desc="0"'
    assert metrics["zodb"].startswith("dur=0.00;")


def test_a_request_that_does_not_use_the_database_gets_no_server_timing(make_app, file_uri):
    app, _ = make(make_app, file_uri, ZODB_SERVER_TIMING=True)
    response = app.test_client().get("/idle")
    assert response.text == "no database"
    assert "Server-Timing" not in response.headers


@pytest.mark.parametrize("flag", [None, False, "off", "0", ""])
def test_no_server_timing_when_off(make_app, file_uri, flag):
    config = {} if flag is None else {"ZODB_SERVER_TIMING": flag}
    app, _ = make(make_app, file_uri, **config)
    response = app.test_client().post("/items/a")
    assert response.text == "added"
    assert "Server-Timing" not in response.headers


def test_server_timing_must_be_a_flag(make_app):
    with pytest.raises(ConfigurationError, match="ZODB_SERVER_TIMING must be true or false"):
        make_app(ZODB_SERVER_TIMING="sometimes")


def test_a_retried_request_reports_its_attempt(make_app, file_uri):
    app, db = make_app(file_uri, ZODB_SERVER_TIMING=True)
    database = app.extensions["zodb"].database
    app.extensions["zodb"].middleware.backoff = 0

    @app.post("/count")
    def count():
        counter = db["counter"]
        counter["n"] += 1
        if db.handle.attempt == 1:
            other = database.get().open(transaction_manager=transaction.TransactionManager())
            other.root()["counter"]["n"] += 10
            other.transaction_manager.commit()
            other.close()
        return str(counter["n"])

    with app.app_context():
        db["counter"] = PersistentMapping(n=0)
    response = app.test_client().post("/count")
    assert response.text == "11"
    assert timing(response)["zodb-attempt"] == 'desc="2"'
    assert timing(response)["zodb-stores"] == 'desc="1"'


def test_the_debug_log_line(make_app, file_uri, caplog):
    app, _ = make(make_app, file_uri)
    client = app.test_client()
    caplog.set_level(logging.DEBUG, logger="zodb_wsgi")
    client.post("/items/a", data={"value": "1"}, environ_base={"REMOTE_USER": "ada"})
    app.extensions["zodb"].database.get().cacheMinimize()
    client.get("/items/a")
    client.get("/idle")
    lines = [r for r in caplog.records if r.name == "zodb_wsgi"]
    assert [r.levelno for r in lines] == [logging.DEBUG, logging.DEBUG]
    post, get = (r.getMessage() for r in lines)
    assert post.startswith("POST /items/a: 0 loads, 2 stores, commit ")
    assert post.endswith(" ms, attempt 1")
    assert get == "GET /items/a: 2 loads, 0 stores, commit 0.00 ms, attempt 1"


def test_no_log_line_above_debug(make_app, file_uri, caplog):
    app, _ = make(make_app, file_uri)
    caplog.set_level(logging.INFO, logger="zodb_wsgi")
    app.test_client().post("/items/a")
    assert [r for r in caplog.records if r.name == "zodb_wsgi"] == []
