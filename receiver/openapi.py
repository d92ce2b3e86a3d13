"""The receiver's OpenAPI 3.0 description, written by hand and served at ``GET /openapi.json``.

It describes the routes of ``receiver.app`` and their responses, including the error codes of
README's response table. tests/test_openapi.py checks the running receiver against it.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["OPENAPI_SCHEMA", "openapi"]


def _json(schema_name: str, description: str) -> dict[str, Any]:
    reference = {"$ref": f"#/components/schemas/{schema_name}"}
    return {"description": description, "content": {"application/json": {"schema": reference}}}


def _error(description: str) -> dict[str, Any]:
    return _json("Error", description)


_ACCEPTED = {
    "200": _json("Accepted", "A redelivery of an event already queued (status duplicate)."),
    "202": _json("Accepted", "The event was queued (status queued)."),
}
_BODY_ERRORS = {
    "400": _error("The body is invalid: not UTF-8, not JSON, or not the expected object."),
    "408": _error("The whole body did not arrive in time."),
    "413": _error("The body, as received or decoded from gzip, is over the size limit."),
    "415": _error("The content type is not application/json, or the encoding is not gzip."),
    "503": _error("Redis is unreachable; the sender retries after Retry-After seconds."),
}
_SIGNATURE_HEADERS = [
    {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
]
_ORDER_ID = {"name": "orderid", "in": "query", "required": True, "schema": {"type": "string"}}


def _webhook_operation(summary: str, extra_responses: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": _SIGNATURE_HEADERS,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}
                },
            },
            "responses": {
                **_ACCEPTED,
                **_BODY_ERRORS,
                "401": _error("The delivery is not authenticated."),
                **extra_responses,
            },
        }
    }


def _legacy_operation(token_parameter: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": "Queue an unsigned order snapshot of an older account as order.snapshot.",
            "parameters": [token_parameter, _ORDER_ID],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                **_ACCEPTED,
                **_BODY_ERRORS,
                "401": _error("The token is missing or invalid."),
                "404": _error("Legacy deliveries are disabled (OMHOOKS_LEGACY_TOKEN is unset)."),
            },
        }
    }


def _status_operation(summary: str, statuses: dict[str, str]) -> dict[str, Any]:
    responses = {
        status: {
            "description": description,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
        for status, description in statuses.items()
    }
    return {"get": {"summary": summary, "responses": responses}}


OPENAPI_SCHEMA: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "ordermesh-hooks receiver", "version": "1"},
    "paths": {
        "/webhooks/ordermesh": _webhook_operation(
            "Verify a signed OrderMesh delivery and queue its event once.", {}
        ),
        "/webhooks/ordermesh/{account}": {
            "parameters": [
                {"name": "account", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            **_webhook_operation(
                "Verify a delivery of one account of OMHOOKS_ACCOUNTS and queue its event once.",
                {"404": _error("No account of that name is configured.")},
            ),
        },
        "/hooks/legacy/{token}": _legacy_operation(
            {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}}
        ),
        "/hooks/legacy": _legacy_operation(
            {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}
        ),
        "/healthz": _status_operation("Check that the process is alive.", {"200": "Alive."}),
        "/readyz": _status_operation(
            "Check that Redis is reachable.",
            {"200": "Redis is reachable.", "503": "Redis is unreachable."},
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of the receiver.",
                "responses": {
                    "200": {
                        "description": "Metrics in the Prometheus text format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": _status_operation("This description.", {"200": "The description."}),
    },
    "components": {
        "schemas": {
            "Envelope": {
                "type": "object",
                "required": ["id", "type", "createdAt"],
                "properties": {
                    "id": {"type": "string", "minLength": 1, "maxLength": 255},
                    "type": {"type": "string", "minLength": 1, "maxLength": 255},
                    "apiVersion": {"type": "string", "nullable": True},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "merchantId": {"type": "string", "nullable": True},
                    "data": {"type": "object"},
                },
            },
            "Accepted": {
                "type": "object",
                "required": ["status", "id"],
                "properties": {
                    "status": {"type": "string", "enum": ["queued", "duplicate"]},
                    "id": {"type": "string"},
                },
                "additionalProperties": False,
            },
            "Error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                    "message": {"type": "string"},
                },
                "additionalProperties": False,
            },
        }
    },
}


async def openapi(request: Request) -> JSONResponse:
    """Return the receiver's OpenAPI description."""
    return JSONResponse(OPENAPI_SCHEMA)
