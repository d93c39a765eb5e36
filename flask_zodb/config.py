"""Reading Flask-ZODB's settings from ``app.config``.

Every key starts with ``ZODB_``. Only ``ZODB_STORAGE`` is required; the
others have defaults, and those left at ``None`` keep the defaults of the
storage URI (its ``connection_*`` query parameters) or of ``ZODB.DB``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.utils import import_string

from zodb_wsgi import DEFAULT_ATTEMPTS, ConfigurationError, default_commit_veto
from zodb_wsgi.middleware import CommitVeto
from zodb_wsgi.storage import FORMS, StorageSpec

#: ``ZODB.DB`` keyword arguments settable from the Flask config.
DB_KEYS = {
    "ZODB_POOL_SIZE": "pool_size",
    "ZODB_POOL_TIMEOUT": "pool_timeout",
    "ZODB_CACHE_SIZE": "cache_size",
    "ZODB_CACHE_SIZE_BYTES": "cache_size_bytes",
}

#: The settings that may have a fractional part (seconds); the others count.
FRACTIONAL_KEYS = frozenset({"ZODB_POOL_TIMEOUT"})

DEFAULTS: dict[str, Any] = {
    "ZODB_RETRY_ATTEMPTS": DEFAULT_ATTEMPTS,
    "ZODB_MAX_BODY_SIZE": None,
    "ZODB_COMMIT_VETO": None,
    "ZODB_DATABASES": None,
    "ZODB_SERVER_TIMING": False,
    **{key: None for key in DB_KEYS},
}


@dataclass(frozen=True)
class Settings:
    storage: StorageSpec
    databases: dict[str, StorageSpec]
    db_kwargs: dict[str, Any]
    attempts: int
    max_body_size: int | None
    commit_veto: CommitVeto
    server_timing: bool


def read_settings(config: Mapping[str, Any]) -> Settings:
    """Check the app's ``ZODB_*`` settings and return them, or raise a
    :class:`~zodb_wsgi.ConfigurationError` that names the key to fix."""
    storage = config.get("ZODB_STORAGE")
    databases = config.get("ZODB_DATABASES") or {}
    if not isinstance(databases, Mapping):
        raise ConfigurationError(
            "ZODB_DATABASES must be a dict of database names to storages (each in "
            f"any form ZODB_STORAGE accepts), with '' for the main one; got {databases!r}."
        )
    databases = dict(databases)
    if "" in databases:
        if storage:
            raise ConfigurationError(
                "ZODB_STORAGE and ZODB_DATABASES[''] both name the main database; "
                "set only one of them."
            )
        storage = databases.pop("")
    if storage is None or storage == "":
        raise ConfigurationError(
            f"ZODB_STORAGE is not set. Set app.config['ZODB_STORAGE'] (or the "
            f"FLASK_ZODB_STORAGE environment variable with "
            f"app.config.from_prefixed_env()) to {FORMS}, before ZODB(app) or "
            f"db.init_app(app)."
        )
    db_kwargs = {}
    for key, name in DB_KEYS.items():
        value = config.get(key)
        if value is not None:
            db_kwargs[name] = _number(key, value, minimum=0)
    attempts = _number("ZODB_RETRY_ATTEMPTS", config["ZODB_RETRY_ATTEMPTS"], minimum=1)
    max_body = config.get("ZODB_MAX_BODY_SIZE")
    veto = config.get("ZODB_COMMIT_VETO") or default_commit_veto
    problem = ""
    if isinstance(veto, str):
        # From an environment variable: the import path of the callable.
        try:
            veto = import_string(veto)
        except ImportError as exc:
            problem = f" ({exc})"
    if not callable(veto):
        raise ConfigurationError(
            "ZODB_COMMIT_VETO must be a callable veto(environ, status, headers) -> bool "
            "that returns True to abort, or its import path ('package.module:veto'); "
            f"got {config.get('ZODB_COMMIT_VETO')!r}{problem}."
        )
    return Settings(
        storage=storage,
        databases=databases,
        db_kwargs=db_kwargs,
        attempts=int(attempts),
        max_body_size=None
        if max_body is None
        else int(_number("ZODB_MAX_BODY_SIZE", max_body, minimum=0)),
        commit_veto=veto,
        server_timing=_flag("ZODB_SERVER_TIMING", config.get("ZODB_SERVER_TIMING")),
    )


def _number(key: str, value: Any, *, minimum: int) -> int | float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if "." in value else int(value)
    whole = key not in FRACTIONAL_KEYS
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or value < minimum
        or (whole and isinstance(value, float) and not value.is_integer())
    ):
        kind = "a whole number" if whole else "a number"
        raise ConfigurationError(f"{key} must be {kind} of {minimum} or more; got {value!r}.")
    return int(value) if whole else value


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("", "0", "false", "no", "off"):
            return False
    elif value is None or isinstance(value, bool):
        return bool(value)
    raise ConfigurationError(f"{key} must be true or false; got {value!r}.")
