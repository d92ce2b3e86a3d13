"""A stand-in for the HTTP service a handler calls (a shop, a support tool), for tests.

It records every request it receives on loopback. It can respond with given statuses to the
next requests to a path, so a test can make a call fail once and check what the retry sends::

    with running_fake_service() as shop:
        shop.respond_with("/orders/ord_1/tracking", 200, 503)
        ...
        assert [r.status for r in shop.requests] == [200, 503, 200]
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ordermesh.sandbox.testing import running_server

__all__ = ["FakeService", "RecordedRequest", "running_fake_service"]

_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake service received and the status of its response."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int


class FakeService:
    """A Starlette app that records every request and responds 200 with ``{"id": "fake_<n>"}``.

    ``respond_with`` makes it respond with other statuses to the next requests to a path, with
    a body of ``{"code": "scripted", "message": ...}``. ``url`` is set while it runs.
    """

    def __init__(self) -> None:
        self.url = ""
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._scripted: dict[str, deque[int]] = defaultdict(deque)
        self._ids = itertools.count(1)
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=_METHODS)])

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Return the requests received on one path, oldest first."""
        return [request for request in self.requests if request.path == path]

    def respond_with(self, path: str, *statuses: int) -> None:
        """Respond to the next requests to ``path`` with these statuses in order, then 200 again."""
        with self._lock:
            self._scripted[path].extend(statuses)

    async def _handle(self, request: Request) -> JSONResponse:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        with self._lock:
            scripted = self._scripted[request.url.path]
            status = scripted.popleft() if scripted else 200
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    headers={key.lower(): value for key, value in request.headers.items()},
                    body=body,
                    status=status,
                )
            )
            answer_id = f"fake_{next(self._ids)}"
        if status >= 300:
            message = f"The test set this response to status {status}."
            return JSONResponse({"code": "scripted", "message": message}, status_code=status)
        return JSONResponse({"id": answer_id}, status_code=status)


@contextmanager
def running_fake_service() -> Iterator[FakeService]:
    """Serve a new ``FakeService`` on a free loopback port for the duration of the block."""
    service = FakeService()
    with running_server(service.app) as url:
        service.url = url
        yield service
