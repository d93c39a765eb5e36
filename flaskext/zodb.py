"""The import path of Flask-ZODB 0.2, kept working: use :mod:`flask_zodb`."""

from __future__ import annotations

import warnings

from flask_zodb import ZODB, BTree, Dict, List, Object

warnings.warn(
    "'flaskext.zodb' is deprecated; import from 'flask_zodb' instead "
    "(from flask_zodb import ZODB).",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ZODB", "BTree", "Dict", "List", "Object"]
