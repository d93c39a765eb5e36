"""The application factory and its settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flaskr import create_app


@pytest.fixture
def instance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Give apps made in the test an instance folder in a temporary directory."""
    path = tmp_path / "instance"
    monkeypatch.setattr(Flask, "auto_find_instance_path", lambda self: str(path))
    for name in ("FLASK_ZODB_STORAGE", "FLASK_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    return path


def test_defaults_to_a_file_storage_in_the_instance_folder(instance: Path) -> None:
    app = create_app()
    assert app.config["ZODB_STORAGE"] == f"file://{instance / 'flaskr.fs'}"
    assert instance.is_dir()
    assert app.config["SECRET_KEY"] == "dev"
    assert not app.testing
    # Configuring the app does not open the database.
    assert not app.extensions["zodb"].database.is_open


def test_reads_the_environment(instance: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_ZODB_STORAGE", "memory://")
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-the-environment")
    app = create_app()
    assert app.config["ZODB_STORAGE"] == "memory://"
    assert app.config["SECRET_KEY"] == "from-the-environment"
    assert not instance.exists()


def test_test_config_wins(instance: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_ZODB_STORAGE", "memory://")
    app = create_app({"TESTING": True, "ZODB_STORAGE": "file:///elsewhere.fs"})
    assert app.testing
    assert app.config["ZODB_STORAGE"] == "file:///elsewhere.fs"
