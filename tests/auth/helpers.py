"""Small helpers for auth tests: unique identities, sign-up and sign-in through the API."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from tests.auth.forge import parts

STRONG_PASSWORD = "violet-Harbor-93-kayak"


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}@example.com"


def random_ip() -> str:
    """A private (10/8) address, different for (almost) every call."""
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    return parts(token)[1]


@dataclass
class Account:
    email: str
    password: str
    user_id: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.access_token)


async def register(
    client: httpx.AsyncClient,
    *,
    email: str | None = None,
    password: str = STRONG_PASSWORD,
    display_name: str = "Test User",
) -> httpx.Response:
    return await client.post(
        "/auth/register",
        json={"email": email or unique_email(), "password": password, "display_name": display_name},
    )


async def login(
    client: httpx.AsyncClient, email: str, password: str = STRONG_PASSWORD, *, ip: str | None = None
) -> httpx.Response:
    # A fresh source address per sign-in keeps tests clear of the per-IP limit (tested on its own).
    return await client.post(
        "/auth/login",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": ip or random_ip()},
    )


async def signed_in(
    client: httpx.AsyncClient, *, display_name: str = "Test User", email: str | None = None
) -> Account:
    email = email or unique_email()
    registered = await register(client, email=email, display_name=display_name)
    assert registered.status_code == 201, registered.text
    response = await login(client, email)
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(
        email, STRONG_PASSWORD, registered.json()["id"], body["access_token"], body["refresh_token"]
    )


async def creator(client: httpx.AsyncClient, *, display_name: str = "Creator") -> tuple[Account, str]:
    """A signed-in account with a channel; (account, channel id)."""
    account = await signed_in(client, display_name=display_name)
    response = await client.post(
        "/users/me/channel",
        json={"channel_name": f"Channel {uuid.uuid4().hex[:10]}", "description": "Videos."},
        headers=account.headers,
    )
    assert response.status_code == 201, response.text
    return account, response.json()["channel"]["id"]
