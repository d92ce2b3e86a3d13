"""The accounts of ``OMHOOKS_ACCOUNTS``: each one's name and signature verifier.

The setting is a JSON object such as ``{"shop-eu": {"secrets": ["whsec_..."]}}``. It is parsed
here, not by pydantic, so that no error message can echo a secret.
"""

from __future__ import annotations

import json
import re

from omhooks.errors import ConfigurationError

from .verification import SignatureVerifier

__all__ = ["ACCOUNT_NAME", "load_account_secrets", "load_account_verifiers"]

# Account names go into URLs, queue metadata, log lines and metric labels.
ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def load_account_verifiers(raw: str, *, tolerance_seconds: int) -> dict[str, SignatureVerifier]:
    """Return a verifier per account name, or raise ``ConfigurationError`` naming the problem."""
    return {
        name: SignatureVerifier(
            secrets,
            tolerance_seconds=tolerance_seconds,
            source=f"account {name!r} of OMHOOKS_ACCOUNTS",
        )
        for name, secrets in load_account_secrets(raw).items()
    }


def load_account_secrets(raw: str) -> dict[str, list[str]]:
    """Return each account's secrets, or raise ``ConfigurationError`` naming the problem."""
    if not raw.strip():
        return {}
    try:
        accounts = json.loads(raw)
    except ValueError:
        raise ConfigurationError(
            "OMHOOKS_ACCOUNTS is not valid JSON; expected an object such as "
            '{"shop-eu": {"secrets": ["whsec_..."]}}.'
        ) from None
    if not isinstance(accounts, dict):
        raise ConfigurationError(
            "OMHOOKS_ACCOUNTS must be a JSON object of account name to its settings."
        )

    secrets_by_account = {}
    for name, account in accounts.items():
        if ACCOUNT_NAME.fullmatch(name) is None:
            raise ConfigurationError(
                f"The account name {name[:64]!r} in OMHOOKS_ACCOUNTS is invalid; use 1 to 64 "
                "lower-case letters, digits, '-' and '_', starting with a letter or digit."
            )
        secrets = account.get("secrets") if isinstance(account, dict) else None
        if not isinstance(secrets, list) or not all(isinstance(s, str) for s in secrets):
            raise ConfigurationError(
                f'Account {name!r} in OMHOOKS_ACCOUNTS needs "secrets": a list of its endpoint '
                "secrets (whsec_...)."
            )
        secrets_by_account[name] = secrets
    return secrets_by_account
