"""Read a request body up to a size limit, without trusting Content-Length."""

from __future__ import annotations

from starlette.requests import Request

from omhooks.errors import DeliveryRejected

__all__ = ["read_body"]


async def read_body(request: Request, limit: int) -> bytes:
    """Return the whole body, or raise ``DeliveryRejected`` 413 as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)

    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> DeliveryRejected:
    return DeliveryRejected(
        413, "payload_too_large", f"The body is larger than the limit of {limit} bytes."
    )
