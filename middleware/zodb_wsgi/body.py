"""Buffering the request body so that a retried request reads it again.

A request that may be run more than once (a conflict retry) must see the same
body each time, but ``wsgi.input`` can be read only once. Before the first
attempt, :func:`buffer_body` copies the body with WebOb's
``make_body_seekable`` (in memory up to a threshold, spooled to a temporary
file beyond it; chunked bodies without a Content-Length included, where the
server sets ``wsgi.input_terminated``), so that each attempt can rewind it.
"""

from __future__ import annotations

import tempfile
from typing import IO, Any

from ._webob import webob

HTTPBadRequest = webob.exc.HTTPBadRequest
HTTPRequestEntityTooLarge = webob.exc.HTTPRequestEntityTooLarge


class _BodyTooLarge(Exception):
    pass


class _LimitedInput:
    """Reads a body of unknown length, failing once it exceeds *limit*."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._stream = stream
        self._left = limit

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._left -= len(data)
        if self._left < 0:
            raise _BodyTooLarge
        return data


def has_body(environ: dict[str, Any]) -> bool:
    """True if the request carries a body that must be buffered.

    In HTTP/1.1 a request has a body only if it says so, with a
    Content-Length or a chunked Transfer-Encoding. ``wsgi.input_terminated``
    is no such sign: gunicorn and waitress set it on every request, GETs
    included, and those must not pay for buffering.
    """
    length = environ.get("CONTENT_LENGTH")
    if length:
        return bool(length != "0")
    return "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()


def buffer_body(
    environ: dict[str, Any], *, spool_threshold: int, max_size: int | None
) -> webob.Response | None:
    """Make ``environ["wsgi.input"]`` seekable; return an error response
    (400 or 413) instead if the body cannot be read whole or is too large."""
    request = webob.Request(environ)
    request.request_body_tempfile_limit = spool_threshold
    spooled: list[IO[bytes]] = []

    def make_tempfile() -> IO[bytes]:
        # Kept, so that a file spooled before the body failed can be closed.
        spooled.append(tempfile.TemporaryFile())  # noqa: SIM115 - webob fills it
        return spooled[-1]

    request.make_tempfile = make_tempfile
    length = request.content_length
    if max_size is not None:
        if length is not None and length > max_size:
            return _too_large(max_size)
        if length is None:
            environ["wsgi.input"] = _LimitedInput(environ["wsgi.input"], max_size)
    if length is None and not request.is_body_readable:
        # A chunked body from a server that does not promise an end of input:
        # it cannot be read safely without a length.
        return HTTPBadRequest(
            "This request has a chunked body, but the server did not set "
            "wsgi.input_terminated, so its end cannot be found. Send a "
            "Content-Length."
        )
    try:
        request.make_body_seekable()
    except _BodyTooLarge:
        _close_all(spooled)
        return _too_large(max_size or 0)
    except (webob.request.DisconnectionError, OSError, ValueError):
        _close_all(spooled)
        return HTTPBadRequest(
            "The request body ended before its Content-Length was reached; "
            "nothing was done. Send the whole body."
        )
    return None


def _close_all(files: list[IO[bytes]]) -> None:
    for file in files:
        file.close()


def rewind(environ: dict[str, Any]) -> None:
    """Put a buffered body back at its start for another attempt."""
    stream = environ["wsgi.input"]
    stream.seek(0)


def _too_large(max_size: int) -> webob.Response:
    return HTTPRequestEntityTooLarge(
        f"The request body is larger than this application accepts ({max_size} bytes at most)."
    )
