"""RS256 signing keys: kept in the auth database, rotated without a 401 spike, published as a JWKS.

Life of a key: ``next`` (published, not signing yet, so every verifier's cached JWKS already holds
it when it starts signing) -> ``current`` (signs new access tokens) -> ``retired`` (still published
until every token it signed has expired) -> deleted. Rotation is one transaction under an advisory
lock; partial unique indexes guarantee one current and one next key even across instances.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from services.auth.models import KeyState, SigningKey

RSA_KEY_BITS = 2048
ALGORITHM = "RS256"
# Bumped on every rotation; instances compare it on each use and reload their keys when it moves.
KEYS_VERSION_KEY = "auth:signing-keys:version"
# Serialises key creation and rotation between instances (pg_advisory_xact_lock takes a bigint).
_KEYS_LOCK_ID = int.from_bytes(
    hashlib.sha256(b"streamify.auth.signing_keys").digest()[:8], "big", signed=True
)
# Default: 30 min access tokens + 5 min margin + 1 min for instances to reload.
DEFAULT_RETIRE_AFTER_S = 1800 + 300 + 60

log = structlog.get_logger("auth.keys")


@dataclass(frozen=True, slots=True)
class LoadedKey:
    kid: str
    state: KeyState
    private_key: rsa.RSAPrivateKey
    created_at: datetime
    retired_at: datetime | None

    def public_jwk(self) -> dict[str, str]:
        return {"kid": self.kid, "use": "sig", "alg": ALGORITHM, **_rsa_public_members(self.private_key)}


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _rsa_public_members(key: rsa.RSAPrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}


def thumbprint_kid(key: rsa.RSAPrivateKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256): a kid derived from the key itself, never reused."""
    members = _rsa_public_members(key)
    canonical = json.dumps({"e": members["e"], "kty": "RSA", "n": members["n"]}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def generate_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def encode_private_key(key: rsa.RSAPrivateKey, passphrase: str) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ).decode()


def decode_private_key(pem: str, passphrase: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(
        pem.encode(), password=passphrase.encode() if passphrase else None
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError("signing keys must be RSA keys")
    return key


async def _lock_keys(session: AsyncSession) -> None:
    await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _KEYS_LOCK_ID})


async def _insert_new_key(session: AsyncSession, *, state: KeyState, passphrase: str) -> str:
    key = await asyncio.to_thread(generate_private_key)
    kid = thumbprint_kid(key)
    await session.execute(
        pg_insert(SigningKey).values(
            kid=kid,
            private_pem=encode_private_key(key, passphrase),
            state=state.value,
            created_at=datetime.now(UTC),
        )
    )
    return kid


async def _kids_by_state(session: AsyncSession) -> dict[str, list[str]]:
    rows = (await session.execute(select(col(SigningKey.kid), col(SigningKey.state)))).all()
    found: dict[str, list[str]] = {}
    for kid, state in rows:
        found.setdefault(state, []).append(kid)
    return found


async def ensure_signing_keys(session: AsyncSession, *, passphrase: str = "") -> list[str]:
    """Create a current and a next key when missing (first start); the kids created."""
    await _lock_keys(session)
    states = await _kids_by_state(session)
    created: list[str] = []
    if not states.get(KeyState.current.value):
        if states.get(KeyState.next.value):
            # A next key exists (e.g. the current one was deleted by hand): promote it.
            await session.execute(
                update(SigningKey)
                .where(col(SigningKey.state) == KeyState.next.value)
                .values(state=KeyState.current.value)
            )
        else:
            created.append(await _insert_new_key(session, state=KeyState.current, passphrase=passphrase))
    if not states.get(KeyState.next.value) or not states.get(KeyState.current.value):
        created.append(await _insert_new_key(session, state=KeyState.next, passphrase=passphrase))
    if created:
        log.info("signing_keys_created", kids=created)
    return created


async def rotate_signing_keys(
    session: AsyncSession, *, passphrase: str = "", retire_after_s: int = DEFAULT_RETIRE_AFTER_S
) -> str:
    """next -> current, current -> retired, a new next; drops keys retired long enough ago.

    Returns the kid that signs from now on. Tokens signed by the retired key keep verifying:
    it stays in the JWKS for ``retire_after_s`` (longer than an access token lives).
    """
    await ensure_signing_keys(session, passphrase=passphrase)
    now = datetime.now(UTC)
    await session.execute(
        update(SigningKey)
        .where(col(SigningKey.state) == KeyState.current.value)
        .values(state=KeyState.retired.value, retired_at=now)
    )
    promoted = (
        await session.execute(
            update(SigningKey)
            .where(col(SigningKey.state) == KeyState.next.value)
            .values(state=KeyState.current.value)
            .returning(col(SigningKey.kid))
        )
    ).scalar_one()
    await _insert_new_key(session, state=KeyState.next, passphrase=passphrase)
    dropped = (
        await session.execute(
            delete(SigningKey)
            .where(
                col(SigningKey.state) == KeyState.retired.value,
                col(SigningKey.retired_at) <= now - timedelta(seconds=retire_after_s),
            )
            .returning(col(SigningKey.kid))
        )
    ).scalars()
    log.info("signing_keys_rotated", current=promoted, dropped=list(dropped))
    return str(promoted)


async def load_published_keys(
    session: AsyncSession, *, passphrase: str = "", retire_after_s: int = DEFAULT_RETIRE_AFTER_S
) -> list[LoadedKey]:
    """Every key a verifier may need: current, next, and those retired less than ``retire_after_s`` ago."""
    cutoff = datetime.now(UTC) - timedelta(seconds=retire_after_s)
    rows = (
        await session.scalars(
            select(SigningKey).where(
                or_(col(SigningKey.state) != KeyState.retired.value, col(SigningKey.retired_at) > cutoff)
            )
        )
    ).all()
    order = {KeyState.current: 0, KeyState.next: 1, KeyState.retired: 2}
    keys = [
        LoadedKey(
            kid=row.kid,
            state=KeyState(row.state),
            private_key=decode_private_key(row.private_pem, passphrase),
            created_at=row.created_at,
            retired_at=row.retired_at,
        )
        for row in rows
    ]
    return sorted(keys, key=lambda key: (order[key.state], -key.created_at.timestamp()))


def jwks_document(keys: Sequence[LoadedKey]) -> dict[str, Any]:
    return {"keys": [key.public_jwk() for key in keys]}


class KeyRing:
    """The published keys, loaded once and cached in memory.

    Reloaded when the rotation counter in Redis moves (checked on every use: one GET) or at the
    latest every ``reload_s`` seconds (which also drops retired keys whose time is up, and covers
    a rotation whose Redis signal was lost).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        redis: Any,
        *,
        passphrase: str,
        retire_after_s: int,
        reload_s: float,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self._passphrase = passphrase
        self._retire_after_s = retire_after_s
        self._reload_s = reload_s
        self._keys: list[LoadedKey] = []
        self._version: bytes | None = None
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Create the first keys if this is the first start, then load them."""
        async with self._sessions() as session, session.begin():
            await ensure_signing_keys(session, passphrase=self._passphrase)
        await self.reload()

    async def reload(self) -> None:
        async with self._lock:
            await self._load(await self._read_version())

    async def signing_key(self) -> LoadedKey:
        await self._refresh_if_stale()
        for key in self._keys:
            if key.state is KeyState.current:
                return key
        # Someone deleted the current key by hand: make a new one rather than fail every login.
        await self.start()
        return next(key for key in self._keys if key.state is KeyState.current)

    async def jwks(self) -> dict[str, Any]:
        await self._refresh_if_stale()
        return jwks_document(self._keys)

    def _fresh(self, version: bytes | None) -> bool:
        return version == self._version and time.monotonic() - self._loaded_at < self._reload_s

    async def _refresh_if_stale(self) -> None:
        version = await self._read_version()
        if self._fresh(version):
            return
        async with self._lock:
            if not self._fresh(version):  # another waiter may have reloaded meanwhile
                await self._load(version)

    async def _load(self, version: bytes | None) -> None:
        # The version is read before the keys: a rotation in between only causes one more reload.
        async with self._sessions() as session:
            keys = await load_published_keys(
                session, passphrase=self._passphrase, retire_after_s=self._retire_after_s
            )
        self._keys = keys
        self._version = version
        self._loaded_at = time.monotonic()

    async def _read_version(self) -> bytes | None:
        try:
            value: bytes | None = await self._redis.get(KEYS_VERSION_KEY)
        except Exception:
            # Redis down: keep the keys we have; the reload interval still picks up rotations.
            log.warning("signing_keys_version_unavailable")
            return self._version
        return value


async def announce_rotation(redis: Any) -> None:
    """Tell every instance to reload its keys now (they also reload on their own within reload_s)."""
    await redis.incr(KEYS_VERSION_KEY)
