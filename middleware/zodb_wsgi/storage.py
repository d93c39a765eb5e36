"""Turning the accepted forms of storage configuration into a factory.

Three forms are accepted everywhere a storage is configured:

* a zodburi URI string such as ``"file://app.fs"`` or ``"zeo://host:8100"``;
* a tuple ``(storage_factory, db_keyword_args)``;
* a callable ``storage_factory`` that takes no argument and returns a storage.

Nothing here opens a storage: :func:`resolve_storage` only checks the form and
returns the factory, so that configuring an application never touches the
database (which would break servers that fork after loading the app).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote, urlsplit

import zodburi

from .errors import ConfigurationError

StorageFactory = Callable[[], Any]
StorageSpec = str | tuple[StorageFactory, Mapping[str, Any]] | StorageFactory

FORMS = (
    "a zodburi URI string (for example 'file://app.fs', 'memory://', "
    "'zeo://127.0.0.1:8100', 'postgres://user@host/dbname' or "
    "'sqlite://?data_dir=/var/lib/app'), a tuple (storage_factory, db_keyword_args), "
    "or a callable storage_factory that returns a storage"
)

# The distributions that provide the URI schemes users ask for most, so that a
# missing one is named in the error instead of a bare "no resolver".
SCHEME_PROVIDERS = {
    "zeo": "ZEO",
    "postgres": "RelStorage[postgresql] (RelStorage and psycopg2)",
    "mysql": "RelStorage[mysql] (RelStorage and a MySQL driver)",
    "oracle": "RelStorage[oracle] (RelStorage and cx_Oracle)",
    "sqlite": "RelStorage",
}

_PASSWORD = re.compile(r"(?P<head>://[^/@:?#]*:)(?P<secret>[^/@?#]*)(?P<tail>@)")
_QUERY_SECRET = re.compile(r"(?P<head>[?&](?:password|passwd|secret)=)(?P<secret>[^&#]*)", re.I)


def mask_uri(uri: str) -> str:
    """Return *uri* with any password replaced by ``***``.

    Every log line and error message that shows a storage URI goes through
    this function, so that ``postgres://app:secret@db/app`` is shown as
    ``postgres://app:***@db/app``.
    """
    uri = _PASSWORD.sub(r"\g<head>***\g<tail>", uri)
    return _QUERY_SECRET.sub(r"\g<head>***", uri)


def installed_schemes() -> list[str]:
    """The URI schemes that the installed zodburi resolvers understand."""
    return sorted({ep.name for ep in entry_points(group="zodburi.resolvers")})


def describe(spec: object) -> str:
    """A short, secret-free description of a storage spec for messages."""
    if isinstance(spec, str):
        return mask_uri(spec)
    if isinstance(spec, tuple) and spec:
        spec = spec[0]
    return getattr(spec, "__qualname__", None) or type(spec).__name__


def resolve_storage(
    spec: StorageSpec, *, setting: str = "storage"
) -> tuple[StorageFactory, dict[str, Any]]:
    """Check *spec* and return ``(storage_factory, db_keyword_args)``.

    *setting* names the option in error messages (the Flask facade passes
    ``"ZODB_STORAGE"``), so that the message says which key to fix.
    """
    if isinstance(spec, str):
        return _resolve_uri(spec, setting)
    if isinstance(spec, tuple):
        if len(spec) != 2 or not callable(spec[0]) or not isinstance(spec[1], Mapping):
            raise ConfigurationError(
                f"{setting} is a tuple but not (storage_factory, db_keyword_args): "
                f"got {_short(spec)}. Accepted forms: {FORMS}."
            )
        return spec[0], dict(spec[1])
    if callable(spec):
        return spec, {}
    raise ConfigurationError(
        f"{setting} must be {FORMS}; got {type(spec).__name__} {_short(spec)}."
    )


def _resolve_uri(uri: str, setting: str) -> tuple[StorageFactory, dict[str, Any]]:
    scheme = urlsplit(uri).scheme if "://" in uri else ""
    if not scheme:
        raise ConfigurationError(
            f"{setting} {mask_uri(uri)!r} is not a URI: it needs a scheme such as "
            f"'file://', 'memory://' or 'zeo://'. Installed schemes: "
            f"{', '.join(installed_schemes())}."
        )
    try:
        factory, db_kwargs = zodburi.resolve_uri(uri)
    except zodburi.NoResolverForScheme:
        provider = SCHEME_PROVIDERS.get(scheme)
        hint = f" Install {provider} to use it." if provider else ""
        raise ConfigurationError(
            f"{setting} {mask_uri(uri)!r} uses the scheme {scheme!r}, which no installed "
            f"package provides.{hint} Installed schemes: "
            f"{', '.join(installed_schemes())}."
        ) from None
    except KeyError as exc:  # zodburi.UnknownDatabaseKeywords and friends
        raise ConfigurationError(
            f"{setting} {mask_uri(uri)!r}: {exc.args[0] if exc.args else exc}."
        ) from None
    except ValueError as exc:
        raise ConfigurationError(f"{setting} {mask_uri(uri)!r}: {mask_uri(str(exc))}.") from None
    if scheme == "postgres":
        factory = postgres_factory(uri)
    return factory, db_kwargs


def postgres_factory(uri: str) -> StorageFactory:
    """RelStorage's factory for a ``postgres://`` URI, with a correct DSN.

    RelStorage's own resolver writes the parts a URI leaves out as the text
    ``'None'`` (``port='None'``, which libpq refuses) and does not decode
    percent-escapes; this one leaves absent parts to libpq's defaults (so
    ``postgres:///dbname`` uses the local socket) and decodes the rest.
    """
    from relstorage.zodburi_resolver import PostgreSQLAdapterHelper, RelStorageURIResolver

    class Helper(PostgreSQLAdapterHelper):  # type: ignore[misc]
        def __call__(self, parsed: Any, kw: dict[str, str]) -> tuple[Any, dict[str, str]]:
            parts = {
                "dbname": unquote(parsed.path[1:]) or None,
                "user": unquote(parsed.username) if parsed.username else None,
                "password": unquote(parsed.password) if parsed.password else None,
                "host": unquote(parsed.hostname) if parsed.hostname else None,
                "port": parsed.port,
            }
            options, unused = self.interpret_kwargs(kw)
            parts.update(options)
            dsn = " ".join(f"{k}={_dsn_quote(v)}" for k, v in parts.items() if v is not None)

            def factory(options: Any) -> Any:
                from relstorage.adapters.postgresql import PostgreSQLAdapter

                return PostgreSQLAdapter(dsn=dsn, options=options)

            return factory, unused

    factory, _ = RelStorageURIResolver(Helper())(uri)
    return factory  # type: ignore[no-any-return]


def _dsn_quote(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
