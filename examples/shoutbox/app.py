"""The shoutbox: the smallest useful Flask-ZODB application.

Run it from the repository's root::

    flask --app examples/shoutbox/app.py run

or under gunicorn::

    gunicorn --chdir examples/shoutbox app:app

The database is a file in the app's instance folder, which one process at a
time can open. To use another storage (for several gunicorn workers, say),
set FLASK_ZODB_STORAGE, for example to ``zeo://127.0.0.1:8100``.
"""

import os

from flask import Flask, redirect, render_template, request, url_for

from flask_zodb import ZODB

app = Flask(__name__)
app.config.from_prefixed_env()  # FLASK_ZODB_STORAGE sets ZODB_STORAGE
if "ZODB_STORAGE" not in app.config:
    os.makedirs(app.instance_path, exist_ok=True)
    app.config["ZODB_STORAGE"] = "file://" + os.path.join(app.instance_path, "shoutbox.fs")

db = ZODB(app)


@app.route("/", methods=["GET", "POST"])
def index():
    if request.method == "POST":
        message = request.form.get("message", "").strip()
        if not message:
            # A 4xx response aborts the request's transaction: nothing is stored.
            return show(error="Your message is empty: write something, then shout!"), 400
        db["shoutout"] = message
        return redirect(url_for("index"))
    return show()


def show(error=None):
    message = db.get("shoutout", "Be the first to shout!")
    return render_template("index.html", message=message, error=error)
