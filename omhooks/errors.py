"""The exception tree of ordermesh-hooks, shaped by what the caller does next.

- ``DeliveryRejected``: the receiver answers the delivery with a 4xx or 5xx and queues nothing.
- ``TransientError``: a handler run failed for a reason that may pass; it is retried with backoff.
- ``PermanentError``: a handler run can never succeed as it is; it is dead-lettered at once.
- ``ConfigurationError``: the service cannot start with the settings it was given.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ApiPermanentError",
    "ApiTransientError",
    "ConfigurationError",
    "ConflictError",
    "DeliveryRejected",
    "HandlerError",
    "OmhooksError",
    "PermanentError",
    "TransientError",
]


class OmhooksError(Exception):
    """The root of every error that ordermesh-hooks raises on purpose."""


class ConfigurationError(OmhooksError):
    """The settings are invalid or incomplete; the message says which one and how to fix it."""


class DeliveryRejected(OmhooksError):
    """A webhook delivery the receiver refuses, with the HTTP status and a stable error code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class HandlerError(OmhooksError):
    """A handler run failed."""


class TransientError(HandlerError):
    """A failure that may pass (a timeout, a 5xx, a rate limit): the run is retried with backoff."""


class PermanentError(HandlerError):
    """A failure that retrying cannot fix: the run goes to the dead-letter queue at once."""


class ApiError(HandlerError):
    """An error answer of the OrderMesh API, with its HTTP status and error code."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ApiTransientError(ApiError, TransientError):
    """The API timed out, was unreachable, rate limited us or responded with a 5xx."""


class ApiPermanentError(ApiError, PermanentError):
    """The API answered 400, 403, 404 or 422: the same request will fail again."""


class ConflictError(ApiPermanentError):
    """The API answered 409: the change conflicts with its state, which often means it is done."""
