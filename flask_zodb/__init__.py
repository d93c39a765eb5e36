"""Flask-ZODB: an object database for Flask applications.

.. code-block:: python

    app.config["ZODB_STORAGE"] = "file://app.fs"
    db = ZODB(app)

``db`` then acts as the database's root mapping in views and in any Flask
context; each request is one transaction, committed before the response.
"""

from __future__ import annotations

from zodb_wsgi import ZODBMiddleware

from .extension import ZODB
from .objects import BTree, Dict, List, Object

__version__ = "0.3.0.dev0"

__all__ = ["ZODB", "BTree", "Dict", "List", "Object", "ZODBMiddleware"]
