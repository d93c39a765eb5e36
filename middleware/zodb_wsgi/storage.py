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
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

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

#: Seconds a ``zeo://`` storage waits for its server when the URI gives no
#: ``wait_timeout`` (see :func:`zeo_defaults`).
DEFAULT_ZEO_WAIT_TIMEOUT = 5

# The distributions that provide the URI schemes users ask for most, so that a
# missing one is named in the error instead of a bare "no resolver".
SCHEME_PROVIDERS = {
    "zeo": "ZEO",
    "postgres": "RelStorage[postgresql] (RelStorage and psycopg2)",
    "mysql": "RelStorage[mysql] (RelStorage and a MySQL driver)",
    "oracle": "RelStorage[oracle] (RelStorage and cx_Oracle)",
    "sqlite": "RelStorage",
}

# user:password@ after the scheme, or at the start of a value that lacks its
# scheme; the password runs to the last "@" before the path (an unescaped "@"
# in it must not leave its end showing).
# The password runs to the "@" of the authority: unescaped "/", "?", "#" or
# "+" in it (base64 passwords) must not let any of it show. It stops at
# spaces and quotes, so that a message naming several URIs is not masked
# from one to the next.
_PASSWORD = re.compile(r"(?P<head>//[^/@:?#\s]*:)(?P<secret>[^@\s'\"]*)(?P<tail>@)")
# The same, for a URI given without its scheme ("user:secret@host/db").
_BARE_PASSWORD = re.compile(r"(?P<head>^[^/@:?#\s]*:)(?P<secret>[^@\s'\"]*)(?P<tail>@)")
_QUERY_SECRET = re.compile(r"(?P<head>[?&](?:password|passwd|secret)=)(?P<secret>[^&#]*)", re.I)


def mask_uri(uri: str) -> str:
    """Return *uri* with any password replaced by ``***``.

    Every log line and error message that shows a storage URI goes through
    this function, so that ``postgres://app:secret@db/app`` is shown as
    ``postgres://app:***@db/app``.
    """
    password = _PASSWORD if "://" in uri else _BARE_PASSWORD
    uri = password.sub(r"\g<head>***\g<tail>", uri)
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
    # Messages show the URI as given; zeo:// URIs are resolved with defaults.
    resolved = zeo_defaults(uri) if scheme == "zeo" else uri
    try:
        # zodburi does not know server_sync; zeo_factory below handles it.
        factory, db_kwargs = zodburi.resolve_uri(
            _without(resolved, "server_sync") if scheme == "zeo" else resolved
        )
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
        detail = mask_uri(str(exc))
        if mask_uri(uri) != uri:
            # The parser's words may quote a piece of the password.
            detail = (
                "it cannot be parsed; characters such as '/', '?', '#', '@' or "
                "spaces in a user name or password must be percent-encoded"
            )
        raise ConfigurationError(f"{setting} {mask_uri(uri)!r}: {detail}.") from None
    except ImportError as exc:  # the resolver is registered, but its package is broken
        raise _unimportable(uri, scheme, setting, exc) from exc
    if scheme == "postgres":
        try:
            factory = postgres_factory(uri)
        except ImportError as exc:
            raise _unimportable(uri, scheme, setting, exc) from exc
    elif scheme == "zeo":
        factory = zeo_factory(resolved)
    return factory, db_kwargs


def _unimportable(uri: str, scheme: str, setting: str, exc: ImportError) -> ConfigurationError:
    """The error for a scheme whose package is registered but cannot be imported."""
    provider = SCHEME_PROVIDERS.get(scheme, "the package that provides it")
    return ConfigurationError(
        f"{setting} {mask_uri(uri)!r} uses the scheme {scheme!r}, but {provider} cannot "
        f"be imported ({exc}). Install {provider} to use it."
    )


def zeo_defaults(uri: str) -> str:
    """Return the ``zeo://`` *uri* with ``wait_timeout`` and ``server_sync``
    set where it has none.

    ``server_sync=1`` makes each request that opens a connection ask the
    server for the invalidations still on their way (one round trip). ZEO
    sends them to its clients asynchronously: without the round trip, a
    request in one process may read the state from before a commit that
    another process has already reported to its user (a POST answered by
    one gunicorn worker, the redirected GET by another, showing the old
    page). Give ``?server_sync=0`` to trade that guarantee for the round trip.

    A ZEO client waits up to ``wait_timeout`` seconds for its server each
    time it needs it while disconnected: when the storage is first opened,
    and for each call to the server while it is away (a load its cache
    cannot answer, the vote or the abort of a commit). ZEO's own default
    of 30 seconds is as long as a gunicorn worker's default timeout, so a
    request would hang until its worker is killed instead of getting a 503.
    :data:`DEFAULT_ZEO_WAIT_TIMEOUT` is short enough for a clear, quick
    answer and long enough to ride out a quick restart of the server.
    Only waiting for a connection is bounded: a long operation on a
    connected server is not cut short. Give ``?wait_timeout=N`` to choose.
    """
    base, _, query = uri.partition("?")
    given = {key for key, _ in parse_qsl(query)}
    defaults = {"wait_timeout": DEFAULT_ZEO_WAIT_TIMEOUT, "server_sync": 1}
    added = [f"{key}={value}" for key, value in defaults.items() if key not in given]
    if not added:
        return uri
    return base + "?" + "&".join(([query] if query else []) + added)


def _without(uri: str, name: str) -> str:
    base, _, query = uri.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != name]
    return base + ("?" + urlencode(kept) if kept else "")


def zeo_factory(uri: str) -> StorageFactory:
    """The ``ClientStorage`` factory for a ``zeo://`` URI, which also
    understands ``server_sync`` (see :func:`zeo_defaults`)."""
    from zodburi.resolvers import ClientStorageURIResolver

    class Resolver(ClientStorageURIResolver):  # type: ignore[misc]
        _int_args = (*ClientStorageURIResolver._int_args, "server_sync")

    factory, _ = Resolver()(uri)
    return factory  # type: ignore[no-any-return]


def postgres_factory(uri: str) -> StorageFactory:
    """RelStorage's factory for a ``postgres://`` URI, with a correct DSN.

    RelStorage's own resolver writes the parts a URI leaves out as the text
    ``'None'`` (``port='None'``, which libpq refuses), passes ``ssl_mode``
    on under a name libpq does not know, and does not decode
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
            # RelStorage takes ?ssl_mode=, but libpq's keyword is sslmode.
            if "ssl_mode" in options:
                options["sslmode"] = options.pop("ssl_mode")
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
