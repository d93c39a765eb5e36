"""Sphinx configuration for the Flask-ZODB documentation."""

from __future__ import annotations

import importlib

import flask_zodb

project = "Flask-ZODB"
author = "the Flask-ZODB developers"
copyright = "Flask-ZODB developers"
release = flask_zodb.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

html_theme = "alabaster"
html_title = f"Flask-ZODB {release}"
html_static_path: list[str] = []
html_theme_options = {
    "description": "An object database for Flask applications",
}


def _own_source_only(app, modname, attribute):
    """Follow re-exported names to their defining module, but only within
    this project: flask_zodb.BTree and friends get no source link."""
    try:
        value = importlib.import_module(modname)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError):
        return None
    real = getattr(value, "__module__", None) or ""
    if real.split(".")[0] in ("flask_zodb", "zodb_wsgi", "flaskext"):
        return real
    return modname


def setup(app):
    app.connect("viewcode-follow-imported", _own_source_only)
