"""The pytest plugin of Flask-ZODB: the ``zodb`` fixture (see
:mod:`flask_zodb.testing`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from .extension import ZODB
from .testing import isolated


@pytest.fixture
def zodb(app: Flask) -> Iterator[ZODB]:
    """The app's :class:`~flask_zodb.ZODB`, with every write of the test
    thrown away after it. Requires an ``app`` fixture that returns the
    application."""
    with isolated(app) as db:
        yield db
