"""Auth service: accounts, sign-in, tokens and signing keys, profiles, channels, subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from common.app import build_service_app
from common.events import EventBus
from common.outbox import OutboxRelay
from common.periodic import stop
from common.ratelimit import RateLimiter
from common.tokens import JWKSLoader
from services.auth.api import routers
from services.auth.credentials import Passwords
from services.auth.keys import KeyRing
from services.auth.service import AuthService, run_purges
from services.auth.settings import AuthSettings


def _in_process_jwks(app: FastAPI) -> JWKSLoader:
    """The auth service verifies tokens against its own key ring, not through its own HTTP endpoint."""

    async def load() -> dict[str, Any]:
        keyring: KeyRing = app.state.auth.keyring
        return await keyring.jwks()

    return load


def create_app(settings: AuthSettings | None = None) -> FastAPI:
    settings = settings or AuthSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keyring = KeyRing(
            app.state.sessions,
            app.state.redis,
            passphrase=settings.signing_key_passphrase,
            retire_after_s=settings.signing_key_retire_after_s,
            reload_s=settings.signing_keys_reload_s,
        )
        await keyring.start()
        app.state.auth = AuthService(
            settings=settings,
            keyring=keyring,
            passwords=Passwords(
                time_cost=settings.argon2_time_cost,
                memory_cost_kib=settings.argon2_memory_cost_kib,
                parallelism=settings.argon2_parallelism,
                concurrency=settings.hash_concurrency,
            ),
            limiter=RateLimiter(settings.redis_url, prefix="auth-ratelimit"),
            redis=app.state.redis,
        )
        app.state.outbox = outbox = OutboxRelay(app.state.engine, EventBus(app.state.redis), source="auth")
        outbox.start()
        background: list[asyncio.Task[None]] = []
        if settings.refresh_purge_interval_s > 0:
            background.append(
                asyncio.create_task(run_purges(app.state.sessions, settings.refresh_purge_interval_s))
            )
        try:
            yield
        finally:
            await stop(background)
            await outbox.aclose()

    return build_service_app(
        name="auth",
        settings=settings,
        routers=routers,
        lifespan=lifespan,
        jwks_loader=_in_process_jwks,
        description="Accounts, sign-in, access and refresh tokens, signing keys, profiles, channels.",
    )
