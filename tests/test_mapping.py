"""``db`` is a full mutable mapping over the database root, on every storage.

Each operation runs in a view (through the middleware) and its effect is then
read in the next request, so every test also shows that a request's writes
are committed and seen by the next one.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import pytest
from flask import request

from flask_zodb import ZODB


@pytest.fixture
def app_db(make_app, storage_uri):
    app, db = make_app(storage_uri)
    views = {}

    # One route for every view a test runs: Flask takes no new routes once
    # it has served a request.
    @app.post("/run/<name>")
    def dispatch(name):
        return views[name]()

    app.config["VIEWS"] = views
    return app, db


def run(app, view):
    """Run *view* as the body of one POST request; return its JSON answer."""
    app.config["VIEWS"][view.__name__] = view
    response = app.test_client().post(f"/run/{view.__name__}")
    assert response.status_code == 200, response.text
    return response.json


def seed(app, db, **items):
    def seed_items():
        db.update(items)
        return {}

    run(app, seed_items)


def test_db_is_a_mutable_mapping():
    assert isinstance(ZODB(), MutableMapping)


def test_item_assignment_and_access(app_db):
    app, db = app_db

    def assign():
        db["name"] = "ada"
        db["numbers"] = [1, 2, 3]
        return {"name": db["name"]}

    def access():
        return {"name": db["name"], "numbers": db["numbers"]}

    assert run(app, assign) == {"name": "ada"}
    assert run(app, access) == {"name": "ada", "numbers": [1, 2, 3]}


def test_missing_item_raises_key_error(app_db):
    app, db = app_db

    def missing():
        with pytest.raises(KeyError):
            db["nothing"]
        return {}

    run(app, missing)


def test_get(app_db):
    app, db = app_db
    seed(app, db, present="yes")

    def get():
        return {
            "present": db.get("present"),
            "absent": db.get("absent"),
            "default": db.get("absent", "fallback"),
        }

    assert run(app, get) == {"present": "yes", "absent": None, "default": "fallback"}


def test_in(app_db):
    app, db = app_db
    seed(app, db, present=0)

    def contains():
        return {"present": "present" in db, "absent": "absent" in db}

    assert run(app, contains) == {"present": True, "absent": False}


def test_del(app_db):
    app, db = app_db
    seed(app, db, doomed=1, kept=2)

    def delete():
        del db["doomed"]
        with pytest.raises(KeyError):
            del db["never-there"]
        return {}

    def keys():
        return {"keys": sorted(db)}

    run(app, delete)
    assert run(app, keys) == {"keys": ["kept"]}


def test_keys_items_values(app_db):
    app, db = app_db
    seed(app, db, a=1, b=2)

    def views():
        return {
            "keys": sorted(db.keys()),
            "items": sorted(db.items()),
            "values": sorted(db.values()),
        }

    assert run(app, views) == {
        "keys": ["a", "b"],
        "items": [["a", 1], ["b", 2]],
        "values": [1, 2],
    }


def test_len_and_iteration(app_db):
    app, db = app_db

    def empty():
        return {"len": len(db), "keys": list(db)}

    assert run(app, empty) == {"len": 0, "keys": []}
    seed(app, db, a=1, b=2, c=3)

    def full():
        return {"len": len(db), "keys": sorted(iter(db))}

    assert run(app, full) == {"len": 3, "keys": ["a", "b", "c"]}


def test_setdefault(app_db):
    app, db = app_db

    def setdefault():
        first = db.setdefault("tags", ["new"])
        second = db.setdefault("tags", ["ignored"])
        return {"first": first, "second": second}

    def read():
        return {"tags": db["tags"]}

    assert run(app, setdefault) == {"first": ["new"], "second": ["new"]}
    assert run(app, read) == {"tags": ["new"]}


def test_pop(app_db):
    app, db = app_db
    seed(app, db, a=1, b=2)

    def pop():
        popped = db.pop("a")
        default = db.pop("absent", "default")
        with pytest.raises(KeyError):
            db.pop("absent")
        return {"popped": popped, "default": default}

    def keys():
        return {"keys": sorted(db)}

    assert run(app, pop) == {"popped": 1, "default": "default"}
    assert run(app, keys) == {"keys": ["b"]}


def test_update(app_db):
    app, db = app_db
    seed(app, db, a=1)

    def update():
        db.update({"a": 10, "b": 2}, c=3)
        db.update([("d", 4)])
        return {}

    def items():
        return dict(db.items())

    run(app, update)
    assert run(app, items) == {"a": 10, "b": 2, "c": 3, "d": 4}


def test_writes_of_one_request_are_seen_by_the_next(app_db):
    app, db = app_db

    @app.route("/count", methods=["GET", "POST"])
    def count():
        if request.method == "POST":
            db["count"] = db.get("count", 0) + 1
        return str(db.get("count", 0))

    client = app.test_client()
    assert client.get("/count").text == "0"
    assert client.post("/count").text == "1"
    assert client.post("/count").text == "2"
    assert client.get("/count").text == "2"
