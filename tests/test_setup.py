"""Setting an application up: ZODB(app), init_app, several apps, wrapping by hand."""

from __future__ import annotations

import pytest
import ZODB as zodb_package
from flask import Flask, request
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_zodb import ZODB, ZODBMiddleware
from flask_zodb.config import DEFAULTS
from zodb_wsgi import DEFAULT_ATTEMPTS
from zodb_wsgi.events import RequestEvents


def counter_view(db: ZODB):
    def count():
        if request.method == "POST":
            db["count"] = db.get("count", 0) + 1
        return str(db.get("count", 0))

    return count


def test_zodb_app_sets_the_app_up_at_once(file_uri):
    app = Flask(__name__)
    app.config["ZODB_STORAGE"] = file_uri
    db = ZODB(app)
    app.add_url_rule("/", view_func=counter_view(db), methods=["GET", "POST"])
    try:
        client = app.test_client()
        assert client.post("/").text == "1"
        assert client.get("/").text == "1"
    finally:
        app.extensions["zodb"].database.close()


def test_init_app_sets_up_an_app_made_later(file_uri):
    db = ZODB()

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["ZODB_STORAGE"] = file_uri
        db.init_app(app)
        app.add_url_rule("/", view_func=counter_view(db), methods=["GET", "POST"])
        return app

    app = create_app()
    try:
        assert app.test_client().post("/").text == "1"
    finally:
        app.extensions["zodb"].database.close()


def test_state_is_kept_in_app_extensions(make_app):
    app, db = make_app()
    state = app.extensions["zodb"]
    assert state.extension is db
    assert state.middleware is app.wsgi_app
    assert isinstance(app.wsgi_app, ZODBMiddleware)
    assert state.database is state.middleware.database


def test_init_app_wraps_the_wsgi_app_it_found(make_app):
    app = Flask(__name__)
    original = app.wsgi_app
    app.config["ZODB_STORAGE"] = "memory://"
    ZODB(app)
    assert app.wsgi_app.app == original


def test_setting_up_does_not_open_the_storage(tmp_path):
    # A server that forks after loading the app must not share an open
    # storage: nothing is opened before the first request needs it.
    path = tmp_path / "Data.fs"
    app = Flask(__name__)
    app.config["ZODB_STORAGE"] = f"file://{path}"
    ZODB(app)
    assert not app.extensions["zodb"].database.is_open
    assert not path.exists()


def test_config_defaults_are_filled_in(make_app):
    app, _ = make_app()
    for key, value in DEFAULTS.items():
        assert app.config[key] == value
    assert app.config["ZODB_RETRY_ATTEMPTS"] == DEFAULT_ATTEMPTS


def test_config_defaults_do_not_replace_values_set_before(make_app):
    app, _ = make_app(ZODB_RETRY_ATTEMPTS=3, ZODB_POOL_SIZE=2)
    assert app.config["ZODB_RETRY_ATTEMPTS"] == 3
    assert app.config["ZODB_POOL_SIZE"] == 2
    assert app.config["ZODB_CACHE_SIZE"] is None
    assert app.wsgi_app.attempts == 3


def test_init_app_twice_is_refused(make_app):
    app, db = make_app()
    with pytest.raises(RuntimeError, match=r"already set up on the application .*init_app once"):
        db.init_app(app)
    with pytest.raises(RuntimeError, match="already set up"):
        ZODB(app)
    # The refused calls changed nothing: still one middleware, not two.
    assert not isinstance(app.wsgi_app.app, ZODBMiddleware)


def test_one_extension_serves_two_apps_with_their_own_storages(tmp_path):
    db = ZODB()
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config["ZODB_STORAGE"] = f"file://{tmp_path / name}.fs"
        db.init_app(app)

        @app.post("/")
        def write(name=name):
            db["owner"] = name
            db[name] = True
            return "ok"

        @app.get("/")
        def read():
            return ",".join(sorted(db))

        apps.append(app)
    one, two = apps
    try:
        assert one.extensions["zodb"].database is not two.extensions["zodb"].database
        one.test_client().post("/")
        two.test_client().post("/")
        assert one.test_client().get("/").text == "one,owner"
        assert two.test_client().get("/").text == "owner,two"
        with one.app_context():
            assert db["owner"] == "one"
        with two.app_context():
            assert db["owner"] == "two"
    finally:
        for app in apps:
            app.extensions["zodb"].database.close()


def test_wrapping_by_hand_is_found_and_not_wrapped_twice(file_uri):
    app = Flask(__name__)
    app.wsgi_app = ZODBMiddleware(app.wsgi_app, file_uri)
    middleware = app.wsgi_app
    # No ZODB_STORAGE: the middleware already has its storage.
    db = ZODB(app)
    app.add_url_rule("/", view_func=counter_view(db), methods=["GET", "POST"])
    try:
        assert app.wsgi_app is middleware
        assert not isinstance(middleware.app, ZODBMiddleware)
        assert app.extensions["zodb"].database is middleware.database

        @app.get("/handle")
        def handle():
            return str(db.handle is request.environ["zodb"])

        client = app.test_client()
        assert client.post("/").text == "1"
        assert client.post("/").text == "2"
        assert client.get("/handle").text == "True"
    finally:
        middleware.database.close()


def test_wrapping_by_hand_under_another_middleware_is_found(make_app):
    app = Flask(__name__)
    inner = ZODBMiddleware(app.wsgi_app, "memory://")
    app.wsgi_app = ProxyFix(inner)
    db = ZODB(app)
    app.add_url_rule("/", view_func=counter_view(db), methods=["GET", "POST"])
    try:
        assert app.extensions["zodb"].middleware is inner
        assert app.wsgi_app.app is inner
        assert app.test_client().post("/").text == "1"
    finally:
        inner.database.close()


def test_a_chain_without_the_middleware_gets_wrapped(make_app):
    app = Flask(__name__)
    app.wsgi_app = ProxyFix(app.wsgi_app)
    proxy = app.wsgi_app
    app.config["ZODB_STORAGE"] = "memory://"
    db = ZODB(app)
    app.add_url_rule("/", view_func=counter_view(db), methods=["GET", "POST"])
    try:
        assert isinstance(app.wsgi_app, ZODBMiddleware)
        assert app.wsgi_app.app is proxy
        assert app.test_client().post("/").text == "1"
    finally:
        app.extensions["zodb"].database.close()


def test_wrapping_by_hand_keeps_the_middlewares_own_hooks():
    app = Flask(__name__)
    events = RequestEvents()

    def on_retry(environ, attempt, error):
        pass

    middleware = ZODBMiddleware(app.wsgi_app, "memory://", events=events, on_retry=on_retry)
    app.wsgi_app = middleware
    ZODB(app)
    assert middleware.events is events
    assert middleware.on_retry is on_retry


def test_a_wsgi_app_chain_that_loops_is_not_followed_forever():
    class Loop:
        def __init__(self, wsgi_app):
            self.wsgi_app = wsgi_app
            self.app = self

        def __call__(self, environ, start_response):
            return self.wsgi_app(environ, start_response)

    app = Flask(__name__)
    app.wsgi_app = Loop(app.wsgi_app)
    app.config["ZODB_STORAGE"] = "memory://"
    ZODB(app)
    assert isinstance(app.wsgi_app, ZODBMiddleware)
    assert isinstance(app.wsgi_app.app, Loop)


def test_create_db_returns_the_apps_database(make_app, file_uri):
    app, db = make_app(file_uri)

    @app.post("/")
    def write():
        db["written"] = "by a request"
        return "ok"

    pool = db.create_db(app)
    assert isinstance(pool, zodb_package.DB)
    assert db.create_db(app) is pool
    app.test_client().post("/")
    # The requests use that very database: one DB per app and process.
    assert db.create_db(app) is pool
    connection = pool.open()
    try:
        assert connection.root()["written"] == "by a request"
    finally:
        connection.close()
