"""The receiver benchmark's baseline: a bare Starlette endpoint that reads the body, returns 202.

``python -m bench.baseline_app --port PORT`` serves it under uvicorn with the options that
``omhooks serve`` passes (omhooks/cli.py), so the two differ only in what the endpoint does.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def accept(request: Request) -> Response:
    """Read the whole body and respond 202 with no body."""
    await request.body()
    return Response(status_code=202)


async def healthz(request: Request) -> Response:
    """Respond 200, so the benchmark can tell that the server has started."""
    return Response(status_code=200)


def create_app() -> Starlette:
    """Build the bare app."""
    return Starlette(
        routes=[
            Route("/webhooks/ordermesh", accept, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def serve(factory: str, description: str) -> None:
    """Serve the app that ``factory`` (``module:function``) builds on the ``--port`` given."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True, help="Port to listen on.")
    args = parser.parse_args()
    # The same options as omhooks/cli.py passes for `omhooks serve`, with one worker process.
    uvicorn.run(
        factory,
        factory=True,
        host="127.0.0.1",
        port=args.port,
        workers=1,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


def main() -> None:
    serve("bench.baseline_app:create_app", "Serve the bare baseline app on 127.0.0.1.")


if __name__ == "__main__":
    main()
