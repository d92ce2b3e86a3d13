"""Settings of every part of the service, read from environment variables and an optional ``.env``.

Every setting is an environment variable with the ``OMHOOKS_`` prefix, e.g.
``OMHOOKS_WEBHOOK_SECRETS``. ``REDIS_URL`` is accepted as well as ``OMHOOKS_REDIS_URL``.
Lists are given comma-separated.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["DEFAULT_REDIS_URL", "Settings", "get_settings", "settings_reference"]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    """The effective configuration; secrets are ``SecretStr`` so they never show in a ``repr``."""

    model_config = SettingsConfigDict(
        env_prefix="OMHOOKS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OMHOOKS_REDIS_URL", "REDIS_URL"),
        description=f"Redis of the queues and the duplicate filter (default {DEFAULT_REDIS_URL}).",
    )
    redis_sentinels: CommaList = Field(
        default_factory=list,
        description="Redis Sentinel addresses (host:port, comma-separated); when set, the "
        "master named by OMHOOKS_REDIS_SENTINEL_MASTER is used, with the database and password "
        "of the Redis URL.",
    )
    redis_sentinel_master: str = Field(
        default="mymaster", description="Name of the master the Sentinels watch."
    )
    redis_durability: Literal["require", "warn"] = Field(
        default="require",
        description="What the receiver does when Redis would lose accepted events (no "
        "append-only file, or eviction on): stop at start (require) or log an error (warn).",
    )
    broker_heartbeat_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="After this long without a heartbeat a worker counts as dead and its "
        "unfinished messages are queued again.",
    )
    broker_maintenance_per_million: int = Field(
        default=10000,
        ge=1,
        le=1_000_000,
        description="How many broker commands in a million also requeue dead workers' messages.",
    )
    namespace: str = Field(
        default="omhooks",
        description="Prefix of every Redis key and queue, so deployments can share a Redis.",
    )

    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Endpoint secrets (whsec_...), comma-separated; several during a rotation.",
    )
    accounts: SecretStr = Field(
        default=SecretStr(""),
        description="Further OrderMesh accounts served on POST /webhooks/ordermesh/<account>, as "
        'a JSON object of account name to its secrets: {"shop-eu": {"secrets": ["whsec_..."]}}.',
    )
    legacy_token: SecretStr = Field(
        default=SecretStr(""),
        description="Token that turns on POST /hooks/legacy/<token> for the unsigned order "
        "snapshots of older OrderMesh accounts: at least 32 characters of A-Z, a-z, 0-9, "
        "'-', '_', '.' and '~'; empty keeps the route off (404).",
    )
    timestamp_tolerance_seconds: int = Field(
        default=300,
        ge=1,
        description="How far a delivery's webhook-timestamp may be from our clock.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body the receiver reads."
    )
    body_timeout_seconds: float = Field(
        default=10.0,
        ge=1,
        le=15,
        description="Maximum time the receiver waits for a request's whole body; a slower body "
        "gets 408 body_timeout. Reads are checked once a second (four times per limit for a "
        "limit under 4 seconds), so the 408 comes up to that much later. At most 15, because "
        "OrderMesh stops waiting for an answer after 15 seconds.",
    )
    dedup_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long an event id is remembered to drop redeliveries (longer than "
        "OrderMesh's retry window of about 28 hours).",
    )
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After sent with a 503 when Redis is unreachable."
    )

    api_base_url: str = Field(
        default="http://127.0.0.1:8070/v1", description="Base URL of the OrderMesh API."
    )
    api_client_id: str = Field(default="", description="Service client id for /client/token.")
    api_client_secret: SecretStr = Field(
        default=SecretStr(""), description="Service client secret for /client/token."
    )
    api_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one call to the OrderMesh API."
    )

    handler_modules: CommaList = Field(
        default_factory=list,
        description="Modules to import for handlers, besides the installed plugins' entry points.",
    )
    disabled_handlers: CommaList = Field(
        default_factory=list,
        description="Names of handlers that stay off, e.g. refund_cancelled_items.",
    )
    order_lock_seconds: int = Field(
        default=30,
        ge=1,
        description="Time to live of an order's lock, renewed while its run lasts: after a "
        "worker crash, the order's next run waits at most this long.",
    )
    ordering_key: Literal["order", "merchant", "none"] = Field(
        default="order",
        description="What runs of one handler are serialised and ordered by: the event's order "
        "id, its merchant id, or nothing (every run in parallel).",
    )
    ordering_wait_seconds: float = Field(
        default=120.0,
        ge=0,
        description="Time after which a run stops waiting for an older pending event of its "
        "order, if no run of the order finished meanwhile.",
    )

    dead_letter_retention_seconds: int = Field(
        default=14 * 24 * 3600, ge=60, description="How long dead letters are kept."
    )
    journal_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        ge=60,
        description="How long the journal keeps each event and its handlers' outcomes.",
    )

    retry_max_retries: int = Field(
        default=20, ge=0, description="Retries of a failed handler run before it is dead-lettered."
    )
    retry_min_backoff_seconds: float = Field(
        default=15.0, gt=0, description="Backoff before the first retry; it doubles each time."
    )
    retry_max_backoff_seconds: float = Field(
        default=600.0, gt=0, description="Maximum backoff between two retries."
    )
    retry_time_limit_seconds: float = Field(
        default=120.0, gt=0, description="Maximum time one handler run may take."
    )

    reconcile_interval_seconds: int = Field(
        default=0,
        ge=0,
        description="Seconds between reconciliation runs scheduled in the workers, e.g. 900; "
        "0 turns the schedule off (omhooks reconcile still runs one by hand).",
    )
    reconcile_overlap_seconds: int = Field(
        default=600,
        ge=0,
        description="How far before the stored watermark a run starts again, so that an order "
        "whose updatedAt is written late is still scanned.",
    )
    reconcile_first_window_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        description="How far back a run looks when no watermark is stored yet.",
    )
    reconcile_min_age_seconds: int = Field(
        default=120,
        ge=0,
        description="Orders changed more recently than this are left to the next run, so that "
        "webhooks still on their way do not count as missed.",
    )
    reconcile_page_size: int = Field(
        default=100, ge=1, le=500, description="Orders per page of GET /orders during a run."
    )

    worker_processes: int = Field(
        default=1, ge=1, description="Worker processes of omhooks worker."
    )
    worker_threads: int = Field(default=4, ge=1, description="Threads per worker process.")
    worker_poll_max_ms: int = Field(
        default=100,
        ge=1,
        description="Maximum pause, in ms, of a worker between polls of a queue that gave it "
        "nothing, for queues of new messages (delay queues keep Dramatiq's worker_timeout, "
        "1000 ms). The pause starts at 2 ms and doubles after each such poll, so this bounds how "
        "long a message can wait for a sleeping worker. Lower values poll idle queues more "
        "often.",
    )

    worker_shutdown_seconds: float = Field(
        default=60.0,
        gt=0,
        description="On SIGTERM, how long workers let runs under way finish before they stop; "
        "messages not started are queued again at once.",
    )
    worker_metrics_port: int = Field(
        default=9191,
        ge=0,
        le=65535,
        description="Port of the workers' /metrics (0 turns it off).",
    )
    worker_metrics_host: str = Field(
        default="0.0.0.0", description="Address the workers' metrics listen on."
    )
    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="Logs as JSON lines (json), readable lines (text), or text in a terminal "
        "and JSON otherwise (auto).",
    )
    log_level: str = Field(default="INFO", description="Level of the service's logs.")

    @field_validator(
        "webhook_secrets", "handler_modules", "disabled_handlers", "redis_sentinels", mode="before"
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def effective_redis_url(self) -> str:
        """The Redis URL to use: the configured one or the local default."""
        return self.redis_url or DEFAULT_REDIS_URL

    def secret_values(self) -> list[str]:
        """Return the configured webhook secrets in clear, for the verifier only."""
        return [secret.get_secret_value() for secret in self.webhook_secrets]


def settings_reference() -> str:
    """Return a Markdown table of every setting: variable, default and meaning."""
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        variable = f"OMHOOKS_{name.upper()}"
        if name == "redis_url":
            variable += " or REDIS_URL"
        default = field.get_default(call_default_factory=True)
        if isinstance(default, SecretStr):
            default = ""
        shown = ", ".join(default) if isinstance(default, list) else default
        rows.append(f"| `{variable}` | `{shown}` | {field.description or ''} |")
    return "\n".join(rows) + "\n"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the settings of this process, read once from the environment.

    With ``OMHOOKS_SECRETS_DIR`` set, each setting can also come from a file of that folder
    named after its variable (e.g. ``OMHOOKS_WEBHOOK_SECRETS``), as container secrets are
    mounted; an environment variable of the same name wins.
    """
    folder = os.environ.get("OMHOOKS_SECRETS_DIR")
    if folder:
        return Settings(_secrets_dir=folder)  # type: ignore[call-arg]
    return Settings()
