"""Read a request body up to a size limit and a time limit, without trusting Content-Length.

A ``Content-Encoding: gzip`` body is decoded while it streams in, and the size limit applies to
the decoded bytes too, so a small compressed body that inflates to gigabytes is stopped as soon
as its decoded size passes the limit.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from omhooks.errors import DeliveryRejected

__all__ = ["read_body"]

# wbits for zlib that accept the gzip format (RFC 1952) only: header, deflate data, trailer.
_GZIP_WBITS = 16 + zlib.MAX_WBITS
_IDENTITY = ("", "identity")
_GZIP = ("gzip", "x-gzip")


async def read_body(
    headers: Mapping[str, str], receive: Receive, limit: int, timeout_seconds: float
) -> bytes:
    """Return the whole body, decoded if it is gzip, or raise ``DeliveryRejected``.

    ``headers`` are the request's, by lowercase name, and ``receive`` is its ASGI receive
    channel. Raises Starlette's ``ClientDisconnect`` when the client goes away first.

    Raises 413 as soon as the body, as received or decoded, exceeds ``limit`` bytes. Raises 408
    when the whole body has not arrived within ``timeout_seconds``, so a sender that stalls
    cannot keep a request open. Raises 415 for a content encoding other than gzip or identity,
    and 400 for data that is not valid gzip.
    """
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in _IDENTITY + _GZIP:
        raise DeliveryRejected(
            415,
            "unsupported_content_encoding",
            f"Content-Encoding {encoding[:32]!r} is not supported; send gzip or no encoding.",
        )
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)

    decoder = _GzipDecoder(limit) if encoding in _GZIP else None
    try:
        async with asyncio.timeout(timeout_seconds):
            return await _read_stream(receive, limit, decoder)
    except TimeoutError as exc:
        raise DeliveryRejected(
            408,
            "body_timeout",
            f"The body did not arrive within {timeout_seconds:g} seconds.",
            headers={"Connection": "close"},
        ) from exc


async def _read_stream(receive: Receive, limit: int, decoder: _GzipDecoder | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if message["type"] != "http.request":
            continue
        more_body = message.get("more_body", False)
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk if decoder is None else decoder.feed(chunk))
    if decoder is not None:
        decoder.finish()
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _GzipDecoder:
    """Decode gzip data chunk by chunk, never holding more than ``limit`` decoded bytes.

    Several gzip members one after another decode as their concatenation, as ``gzip.decompress``
    does.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._inflater = zlib.decompressobj(_GZIP_WBITS)
        self._members = 0
        self._in_member = False

    def feed(self, data: bytes) -> bytes:
        """Return the bytes that ``data`` decodes to, or raise 413 or 400."""
        output: list[bytes] = []
        while data:
            self._in_member = True
            # Asking for one byte more than the room left shows whether the limit is passed
            # without inflating further. Output stops short only then, so none is left behind.
            room = self._limit - self._size
            try:
                decoded = self._inflater.decompress(data, room + 1)
            except zlib.error as exc:
                raise _invalid_encoding() from exc
            self._size += len(decoded)
            if self._size > self._limit:
                raise _too_large(self._limit)
            output.append(decoded)
            if self._inflater.eof:
                data = self._inflater.unused_data
                self._inflater = zlib.decompressobj(_GZIP_WBITS)
                self._members += 1
                self._in_member = False
            else:
                data = self._inflater.unconsumed_tail
        return b"".join(output)

    def finish(self) -> None:
        """Raise 400 unless the data held at least one gzip member and ended with one."""
        if self._in_member or self._members == 0:
            raise _invalid_encoding()


def _invalid_encoding() -> DeliveryRejected:
    return DeliveryRejected(
        400, "invalid_encoding", "The body is not valid gzip data, as Content-Encoding states."
    )


def _too_large(limit: int) -> DeliveryRejected:
    return DeliveryRejected(
        413, "payload_too_large", f"The body is larger than the limit of {limit} bytes."
    )
