"""The application that W4 serves under gunicorn: Flask-ZODB on a ZEO server.

``BENCH_ZODB_URI`` names the storage (``zeo://127.0.0.1:PORT``); the routes
are those of the in-process stacks (see stacks.py).
"""

from __future__ import annotations

import itertools
import os
import random

from flask import Flask

from flask_zodb import ZODB

app = Flask(__name__)
app.config["ZODB_STORAGE"] = os.environ["BENCH_ZODB_URI"]
db = ZODB(app)

_size = int(os.environ.get("BENCH_TREE_SIZE", "10000"))
_rng = random.Random(os.getpid())
_next_key = itertools.cycle([f"key{_rng.randrange(_size):07d}" for _ in range(4096)]).__next__


@app.get("/w0")
def w0() -> str:
    return "ok"


@app.get("/read")
def read() -> str:
    return str(db["tree"][_next_key()])


@app.post("/inc")
def inc() -> str:
    db["counter"].change(1)
    return "ok"
