"""Short names for the persistent types most applications store.

Changes to instances of these classes are noticed by ZODB and saved when the
request's transaction commits; changes to plain ``list``, ``dict`` or
``object`` instances inside the database are not (see the README's
"Mutating persisted objects").
"""

from __future__ import annotations

from BTrees.OOBTree import OOBTree as BTree
from persistent import Persistent as Object
from persistent.list import PersistentList as List
from persistent.mapping import PersistentMapping as Dict

__all__ = ["BTree", "Dict", "List", "Object"]
