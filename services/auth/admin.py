"""Operator actions for the `streamify` CLI: create (or promote) an admin, rotate the signing keys.

Each opens its own engine on the auth database (already migrated), runs one transaction and closes.
"""

from __future__ import annotations

import uuid

import structlog
from redis.asyncio import Redis

from common.db import create_engine, session_factory
from services.auth.credentials import Passwords
from services.auth.keys import announce_rotation, rotate_signing_keys
from services.auth.service import create_or_promote_admin
from services.auth.settings import AuthSettings

log = structlog.get_logger("auth.admin")


def _settings(database_url: str, settings: AuthSettings | None) -> AuthSettings:
    if settings is None:
        return AuthSettings(database_url=database_url)
    return settings.model_copy(update={"database_url": database_url})


async def create_admin(
    database_url: str, email: str, password: str, display_name: str, *, settings: AuthSettings | None = None
) -> uuid.UUID:
    """Create an admin account, or promote the account that has this email (its password is kept).

    Raises services.auth.errors.InvalidEmail or WeakPassword (AppError subclasses whose ``.detail``
    says why) for a bad address or, when creating, a weak password.
    """
    config = _settings(database_url, settings)
    passwords = Passwords(
        time_cost=config.argon2_time_cost,
        memory_cost_kib=config.argon2_memory_cost_kib,
        parallelism=config.argon2_parallelism,
        concurrency=1,
    )
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with session_factory(engine)() as session, session.begin():
            return await create_or_promote_admin(
                session,
                passwords=passwords,
                settings=config,
                email=email,
                password=password,
                display_name=display_name,
            )
    finally:
        await engine.dispose()


async def rotate_keys(
    database_url: str, *, redis_url: str | None = None, settings: AuthSettings | None = None
) -> str:
    """Rotate the signing keys (next -> current, current -> retired, new next); the new current kid.

    Running auth instances reload their keys at once when Redis is reachable (``redis_url``,
    default REDIS_URL), otherwise within AUTH_SIGNING_KEYS_RELOAD_S.
    """
    config = _settings(database_url, settings)
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        async with session_factory(engine)() as session, session.begin():
            kid = await rotate_signing_keys(
                session,
                passphrase=config.signing_key_passphrase,
                retire_after_s=config.signing_key_retire_after_s,
            )
    finally:
        await engine.dispose()
    redis = Redis.from_url(redis_url or config.redis_url)
    try:
        await announce_rotation(redis)
    except Exception as exc:  # the rotation itself is done; instances catch up on their own
        log.warning("key_rotation_not_announced", error=type(exc).__name__)
    finally:
        await redis.aclose()
    return kid
