"""Every code sample of the Flask-ZODB 0.2 documentation still works.

The samples below are the documentation's own text, put together into one
application module (its view with the ``else:`` branch that the page lost)
and one template, written into a temporary directory and imported from
there. Each test runs twice: once with the samples importing from
``flaskext.zodb``, as the documentation has it, and once with the same
samples importing from ``flask_zodb``.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import persistent
import pytest
from BTrees.OOBTree import OOBTree
from persistent.list import PersistentList
from persistent.mapping import PersistentMapping

import flask_zodb

# -- the documentation's samples, verbatim ------------------------------------------

STUB = """\
from flask import Flask
app = Flask(__name__)
"""

SETUP = """\
app.config['ZODB_STORAGE'] = 'file://app.fs'

from flaskext.zodb import ZODB
db = ZODB(app)
"""

VIEW = """\
from flask import request, redirect, render_template

@app.route('/', methods=['GET', 'POST'])
def index():
    if request.method == 'POST':
        db['shoutout'] = request.form['message']
        return redirect('index')
    else:
        message = db.get('shoutout', 'Be the first to shout!')
        return render_template('index.html', message=message)
"""

TEMPLATE = """\
<h1>{{ message }}</h1>

<form action="{{ url_for('index') }}" method=POST>
  <input name=message>
  <button type=submit>Post!</button>
"""

USER = """\
from flaskext.zodb import Object, List

class User(Object):

    def __init__(self, name, password):
        self.name = name
        self.password = password
        self.shoutouts = List()
"""

IMPORT_PATHS = ["flaskext.zodb", "flask_zodb"]


def fresh_flaskext(monkeypatch):
    """Import flaskext.zodb anew (a module warns only when first imported);
    the module that was imported before is put back after the test."""
    monkeypatch.delitem(sys.modules, "flaskext.zodb", raising=False)
    with pytest.deprecated_call(match="import from 'flask_zodb' instead") as record:
        import flaskext.zodb as module
    return module, record


@pytest.fixture(params=IMPORT_PATHS)
def import_path(request):
    return request.param


@pytest.fixture
def seed_app(import_path, tmp_path, monkeypatch):
    """The documentation's application, as a module of its own in tmp_path,
    run from tmp_path (its 'file://app.fs' is relative to the working
    directory)."""
    name = f"seed_app_{import_path.replace('.', '_')}"
    source = STUB + "\n" + SETUP + "\n" + VIEW + "\n" + USER
    if import_path == "flask_zodb":
        source = source.replace("from flaskext.zodb import", "from flask_zodb import")
    (tmp_path / f"{name}.py").write_text(source)
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "index.html").write_text(TEMPLATE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    if import_path == "flaskext.zodb":
        monkeypatch.delitem(sys.modules, "flaskext.zodb", raising=False)
        with pytest.deprecated_call(match="flask_zodb"):
            module = importlib.import_module(name)
    else:
        module = importlib.import_module(name)
    module.app.testing = True
    try:
        yield module
    finally:
        module.app.extensions["zodb"].database.close()
        sys.modules.pop(name, None)


# -- the import paths -------------------------------------------------------------------


def test_flaskext_zodb_warns_that_it_is_deprecated(monkeypatch):
    _, record = fresh_flaskext(monkeypatch)
    assert len(record) == 1
    warning = record[0]
    assert warning.category is DeprecationWarning
    assert "'flaskext.zodb' is deprecated" in str(warning.message)
    assert "from flask_zodb import ZODB" in str(warning.message)
    # The warning points at the code that imports the old path.
    assert warning.filename == __file__


def test_flaskext_zodb_is_flask_zodb(monkeypatch):
    module, _ = fresh_flaskext(monkeypatch)
    for name in ("ZODB", "Object", "List", "Dict", "BTree"):
        assert getattr(module, name) is getattr(flask_zodb, name)
    assert sorted(module.__all__) == ["BTree", "Dict", "List", "Object", "ZODB"]


def test_flask_zodb_does_not_warn():
    # In a fresh interpreter, so that nothing is imported already.
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import flask_zodb"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def aliases_from(import_path, monkeypatch):
    if import_path == "flaskext.zodb":
        return fresh_flaskext(monkeypatch)[0]
    return importlib.import_module(import_path)


def test_the_persistent_aliases_are_exactly_the_zodb_types(import_path, monkeypatch):
    module = aliases_from(import_path, monkeypatch)
    assert module.Object is persistent.Persistent
    assert module.List is PersistentList
    assert module.Dict is PersistentMapping
    assert module.BTree is OOBTree


# -- the shoutbox -----------------------------------------------------------------------


def test_the_shoutbox_invites_the_first_shout(seed_app):
    response = seed_app.app.test_client().get("/")
    assert response.status_code == 200
    assert "<h1>Be the first to shout!</h1>" in response.text
    assert '<form action="/" method=POST>' in response.text


def test_a_shout_is_stored_and_shown(seed_app, tmp_path):
    client = seed_app.app.test_client()
    response = client.post("/", data={"message": "Hello, ZODB!"})
    # The documentation redirects to the relative URL 'index', literally.
    assert response.status_code == 302
    assert response.headers["Location"] == "index"
    assert "<h1>Hello, ZODB!</h1>" in client.get("/").text
    # 'file://app.fs' is relative to the working directory.
    assert (tmp_path / "app.fs").exists()


def test_shouts_survive_a_restart(seed_app):
    client = seed_app.app.test_client()
    client.post("/", data={"message": "still here"})
    restart(seed_app.app)
    assert "<h1>still here</h1>" in client.get("/").text


def test_a_message_is_escaped_in_the_template(seed_app):
    client = seed_app.app.test_client()
    client.post("/", data={"message": "<script>"})
    assert "<h1>&lt;script&gt;</h1>" in client.get("/").text


def test_the_test_request_context_snippet(seed_app):
    app, db = seed_app.app, seed_app.db

    # fmt: off
    with app.test_request_context():
        db['shoutout'] = 'Developer was here!'
    # fmt: on

    assert "<h1>Developer was here!</h1>" in app.test_client().get("/").text


# -- persisted objects: the User class ----------------------------------------------------


def test_user_objects_are_stored_with_their_list(seed_app):
    app, db, User = seed_app.app, seed_app.db, seed_app.User
    with app.test_request_context():
        db["users"] = OOBTree()
        db["users"]["ada"] = User("ada", "secret")
    with app.test_request_context():
        user = db["users"]["ada"]
        assert isinstance(user, persistent.Persistent)
        assert isinstance(user.shoutouts, PersistentList)
        assert (user.name, user.password, list(user.shoutouts)) == ("ada", "secret", [])


def test_mutating_a_user_and_its_list_is_saved(seed_app):
    # The "Gotcha" section: Object and List notice their own changes.
    app, db, User = seed_app.app, seed_app.db, seed_app.User
    with app.app_context():
        db["ada"] = User("ada", "secret")
    with app.app_context():
        db["ada"].shoutouts.append("first!")
        db["ada"].password = "better secret"
    with app.app_context():
        assert list(db["ada"].shoutouts) == ["first!"]
        assert db["ada"].password == "better secret"


def test_a_plain_list_inside_an_object_needs_p_changed(seed_app):
    # ... and a plain list does not, until _p_changed is set.
    app, db, User = seed_app.app, seed_app.db, seed_app.User
    with app.app_context():
        user = User("ada", "secret")
        user.plain = []
        db["ada"] = user
    with app.app_context():
        db["ada"].plain.append("lost")
    restart(app)
    with app.app_context():
        assert db["ada"].plain == []
        db["ada"].plain.append("kept")
        db["ada"]._p_changed = True
    restart(app)
    with app.app_context():
        assert db["ada"].plain == ["kept"]


def restart(app):
    """Close the app's database, as a server that stops; it reopens on next
    use, with nothing in memory but what the storage holds."""
    app.extensions["zodb"].database.close()


class Shoutout(persistent.Persistent):
    """A shout that refers to its author, the User object itself."""

    def __init__(self, author, text):
        self.author = author
        self.text = text

    def __str__(self):
        return f"{self.author.name}: {self.text}"


def test_a_reference_to_a_user_follows_the_user(seed_app):
    # "associate a blog post with a user object directly ... and it Just
    # Works even after the user changes their account data"
    app, db, User = seed_app.app, seed_app.db, seed_app.User
    with app.test_request_context():
        ada = User("ada", "secret")
        shout = Shoutout(ada, "Hello!")
        ada.shoutouts.append(shout)
        db["users"] = OOBTree({"ada": ada})
        db["shoutout"] = shout
    client = app.test_client()
    assert "<h1>ada: Hello!</h1>" in client.get("/").text

    with app.test_request_context():
        db["users"]["ada"].name = "Ada Lovelace"

    restart(app)  # what is shown comes from the storage, not from a cache
    assert "<h1>Ada Lovelace: Hello!</h1>" in client.get("/").text
    with app.test_request_context():
        user = db["users"]["ada"]
        assert db["shoutout"].author is user
        assert user.shoutouts[0] is db["shoutout"]
