"""Several OrderMesh accounts on one receiver: POST /webhooks/ordermesh/<account>."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import httpx
import pytest
from redis import Redis
from test_receiver import make_event, queued_bodies, signed

from omhooks.errors import ConfigurationError
from omhooks.settings import Settings
from ordermesh.sandbox.testing import running_server
from receiver.app import create_app
from workers.queues import DISPATCH_QUEUE, queue_keys

# A secret of the EU account only; the fixtures' secrets belong to the plain endpoint.
EU_SECRET = "whsec_c2hvcC1ldS1lbmRwb2ludC1zZWNyZXQtMDAwMQ=="


def queued_metas(redis: Redis, namespace: str) -> list[dict]:
    """Return the metadata of the messages on the dispatch queue, in queue order."""
    messages_key, list_key = queue_keys(namespace, DISPATCH_QUEUE)
    return [
        json.loads(redis.hget(messages_key, message_id))["args"][1]
        for message_id in redis.lrange(list_key, 0, -1)
    ]


@pytest.fixture
def settings(redis_url: str, namespace: str, secrets: dict[str, str]) -> Settings:
    accounts = {"shop-eu": {"secrets": [EU_SECRET]}, "shop-us": {"secrets": [secrets["previous"]]}}
    return Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        accounts=json.dumps(accounts),
        redis_durability="warn",
    )


@pytest.fixture
def receiver(settings: Settings) -> Iterator[httpx.Client]:
    with running_server(create_app(settings)) as url, httpx.Client(base_url=url) as client:
        yield client


def test_account_delivery_is_queued_with_account(receiver, redis_client, namespace):
    body, headers = signed(EU_SECRET, make_event())

    response = receiver.post("/webhooks/ordermesh/shop-eu", content=body, headers=headers)

    assert response.status_code == 202
    assert queued_bodies(redis_client, namespace) == [body.decode()]
    assert queued_metas(redis_client, namespace)[0]["account"] == "shop-eu"


def test_plain_endpoint_adds_no_account(receiver, secrets, redis_client, namespace):
    body, headers = signed(secrets["current"], make_event())

    response = receiver.post("/webhooks/ordermesh", content=body, headers=headers)

    assert response.status_code == 202
    assert "account" not in queued_metas(redis_client, namespace)[0]


@pytest.mark.parametrize(
    ("path", "secret_name"),
    [
        ("/webhooks/ordermesh/shop-us", "eu"),
        ("/webhooks/ordermesh/shop-eu", "current"),
        ("/webhooks/ordermesh", "eu"),
    ],
)
def test_secret_of_another_account_is_rejected(
    receiver, secrets, redis_client, namespace, path, secret_name
):
    secret = EU_SECRET if secret_name == "eu" else secrets[secret_name]
    body, headers = signed(secret, make_event())

    response = receiver.post(path, content=body, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert queued_bodies(redis_client, namespace) == []


def test_unknown_account_gets_404(receiver, redis_client, namespace):
    body, headers = signed(EU_SECRET, make_event())

    response = receiver.post("/webhooks/ordermesh/shop-asia", content=body, headers=headers)

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_account"
    assert queued_bodies(redis_client, namespace) == []


def test_account_secrets_stay_out_of_repr_metrics_and_logs(receiver, settings, caplog):
    caplog.set_level(logging.DEBUG)
    body, headers = signed(EU_SECRET, make_event())
    receiver.post("/webhooks/ordermesh/shop-eu", content=body, headers=headers)
    receiver.post(
        "/webhooks/ordermesh/shop-eu", content=body, headers={**headers, "webhook-signature": "x"}
    )

    metrics = receiver.get("/metrics").text

    assert 'account="shop-eu"' in metrics
    assert EU_SECRET not in metrics
    assert EU_SECRET not in repr(settings)
    assert EU_SECRET not in caplog.text


@pytest.mark.parametrize(
    ("accounts", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["whsec_c2hvcC1ldS1lbmRwb2ludC1zZWNyZXQtMDAwMQ=="]', "must be a JSON object"),
        ('{"Shop EU": {"secrets": []}}', "account name"),
        ('{"shop-eu": {"secrets": "whsec_c2hvcC1ldS1lbmRwb2ludC1zZWNyZXQtMDAwMQ=="}}', "a list"),
        ('{"shop-eu": {"secrets": ["whsec_c2hvcA=="]}}', "not a valid whsec_ secret"),
        ('{"shop-eu": {"secrets": []}}', "No webhook secret"),
    ],
)
def test_invalid_accounts_stop_the_receiver(redis_url, namespace, secrets, accounts, problem):
    settings = Settings(
        redis_url=redis_url,
        namespace=namespace,
        webhook_secrets=[secrets["current"]],
        accounts=accounts,
    )

    with pytest.raises(ConfigurationError, match=problem) as raised:
        create_app(settings)

    assert "c2hvc" not in str(raised.value)
