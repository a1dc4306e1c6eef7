"""Auth business rules: accounts, sign-in, token rotation and revocation, channels, subscriptions.

No HTTP here: callers pass plain values and get models or small result objects back.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.events import Event, new_event
from common.outbox import stage
from common.periodic import every
from common.ratelimit import RateLimiter
from common.tokens import Identity, revoke_access_tokens
from services.auth import repository as repo
from services.auth.credentials import Passwords, normalize_email, password_weakness
from services.auth.errors import (
    ChannelExists,
    ChannelNameTaken,
    ChannelNotFound,
    EmailTaken,
    InvalidCredentials,
    InvalidEmail,
    InvalidRefreshToken,
    LoginRateLimited,
    OwnChannel,
    RefreshTokenExpired,
    RefreshTokenReused,
    RefreshTokenRevoked,
    UnknownAccount,
    WeakPassword,
)
from services.auth.keys import KeyRing
from services.auth.models import Role, User
from services.auth.pagination import decode_cursor, encode_cursor
from services.auth.settings import AuthSettings
from services.auth.tokens import AccessToken, hash_refresh_token, mint_access_token, new_refresh_token

log = structlog.get_logger("auth")
SOURCE = "auth"


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access: AccessToken
    refresh_token: str
    refresh_expires_at: int


@dataclass(frozen=True, slots=True)
class ChannelCreation:
    channel: repo.ChannelView
    role: Role
    role_changed: bool


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    channel_id: uuid.UUID
    subscribed: bool
    subscriber_count: int
    subscribed_at: datetime | None


@dataclass(frozen=True, slots=True)
class SubscriptionPage:
    items: list[repo.SubscriptionView]
    next_cursor: str | None


def channel_name_key(name: str) -> str:
    """What makes two channel names "the same": case and runs of whitespace do not count."""
    return " ".join(name.casefold().split())


def check_password(password: str, *, settings: AuthSettings, email: str, display_name: str = "") -> None:
    reason = password_weakness(
        password,
        email=email,
        display_name=display_name,
        min_length=settings.password_min_length,
        max_length=settings.password_max_length,
        min_score=settings.password_min_score,
    )
    if reason:
        raise WeakPassword(reason)


async def register_user(
    session: AsyncSession,
    *,
    passwords: Passwords,
    settings: AuthSettings,
    email: str,
    password: str,
    display_name: str,
    role: Role = Role.viewer,
) -> User:
    normalized = normalize_email(email)
    check_password(password, settings=settings, email=normalized, display_name=display_name)
    # Cheap pre-check so a taken email does not cost a hash; the unique index decides races.
    if await repo.get_user_by_email(session, normalized) is not None:
        raise EmailTaken()
    password_hash = await passwords.hash(password)
    user = await repo.insert_user(
        session, email=normalized, password_hash=password_hash, display_name=display_name, role=role
    )
    if user is None:
        raise EmailTaken()
    await stage(
        session,
        new_event(
            "auth.user_registered",
            {"user_id": str(user.id), "role": user.role},
            producer=SOURCE,
            key=str(user.id),
            occurred_at=user.created_at,
        ),
    )
    log.info("user_registered", user_id=str(user.id), role=user.role)
    return user


async def create_or_promote_admin(
    session: AsyncSession,
    *,
    passwords: Passwords,
    settings: AuthSettings,
    email: str,
    password: str,
    display_name: str,
) -> uuid.UUID:
    """Create an admin account, or promote the existing account with this email (its password stays)."""
    normalized = normalize_email(email)
    existing = await repo.get_user_by_email(session, normalized)
    if existing is None:
        try:
            user = await register_user(
                session,
                passwords=passwords,
                settings=settings,
                email=normalized,
                password=password,
                display_name=display_name,
                role=Role.admin,
            )
            return user.id
        except EmailTaken:  # registered meanwhile by someone else: promote that account
            existing = await repo.get_user_by_email(session, normalized)
            assert existing is not None
    await repo.update_user(session, existing.id, {"role": Role.admin.value})
    log.info("user_promoted_to_admin", user_id=str(existing.id))
    return existing.id


# Refresh tokens are deleted a day after they expire: presented later, a spent or revoked one is
# refused as unknown, which is what its expiry alone would have done.
PURGE_GRACE = timedelta(days=1)
PURGE_BATCH = 5_000


async def purge_refresh_tokens(
    sessions: async_sessionmaker[AsyncSession], *, now: datetime | None = None
) -> tuple[int, int]:
    """Delete the refresh tokens expired for over a day, then the sign-ins (families) older than
    that which no token belongs to any more; (tokens, families) deleted. Tokens go in batches of
    ``PURGE_BATCH``, each its own short transaction, so sign-ins are never held up for long."""
    before = (now or datetime.now(UTC)) - PURGE_GRACE
    tokens = 0
    while True:
        async with sessions() as session, session.begin():
            deleted = await repo.purge_expired_refresh_tokens(
                session, expired_before=before, limit=PURGE_BATCH
            )
        tokens += deleted
        if deleted < PURGE_BATCH:
            break
    async with sessions() as session, session.begin():
        families = await repo.purge_empty_families(session, created_before=before)
    return tokens, families


async def run_purges(sessions: async_sessionmaker[AsyncSession], interval_s: float) -> None:
    """``purge_refresh_tokens`` every ``interval_s`` until cancelled (each replica: a purge that
    overlaps another's deletes what is left, nothing twice)."""

    async def purge() -> None:
        tokens, families = await purge_refresh_tokens(sessions)
        if tokens or families:
            log.info("refresh_tokens_purged", tokens=tokens, families=families)

    await every(interval_s, purge, failure="refresh_purge_failed")


class AuthService:
    def __init__(
        self,
        *,
        settings: AuthSettings,
        keyring: KeyRing,
        passwords: Passwords,
        limiter: RateLimiter,
        redis: Any,
    ) -> None:
        self.settings = settings
        self.keyring = keyring
        self.passwords = passwords
        self.limiter = limiter
        self.redis = redis

    # --- accounts --------------------------------------------------------------------------

    async def register(self, session: AsyncSession, *, email: str, password: str, display_name: str) -> User:
        return await register_user(
            session,
            passwords=self.passwords,
            settings=self.settings,
            email=email,
            password=password,
            display_name=display_name,
        )

    async def current_user(self, session: AsyncSession, user_id: str | uuid.UUID) -> User:
        user = await repo.get_user(session, uuid.UUID(str(user_id)))
        if user is None:
            raise UnknownAccount()
        return user

    async def has_channel(self, session: AsyncSession, user_id: uuid.UUID) -> bool:
        return await repo.channel_exists(session, user_id)

    async def update_profile(self, session: AsyncSession, user_id: str, changes: dict[str, Any]) -> User:
        user = await self.current_user(session, user_id)
        if not changes:
            return user
        updated = await repo.update_user(session, user.id, changes)
        assert updated is not None
        return updated

    # --- sign-in and tokens ----------------------------------------------------------------

    async def login(
        self, session: AsyncSession, *, email: str, password: str, client_ip: str
    ) -> IssuedTokens:
        try:
            normalized = normalize_email(email)
        except InvalidEmail:
            normalized = None
        account_key = hashlib.sha256((normalized or email.strip().lower()).encode()).hexdigest()
        # Per IP first (one address guessing many accounts), then per account (many addresses, one account).
        for rule, kind, identifier in (
            (self.settings.login_rate_per_ip, "login-ip", client_ip),
            (self.settings.login_rate_per_account, "login-account", account_key),
        ):
            result = await self.limiter.hit(rule, kind, identifier)
            if not result.allowed:
                log.warning("login_rate_limited", limit=kind, client_ip=client_ip)
                raise LoginRateLimited(headers=result.headers())

        user = await repo.get_user_by_email(session, normalized) if normalized else None
        if user is None:
            await self.passwords.verify_dummy(password)
            raise InvalidCredentials()
        if not await self.passwords.verify(user.password_hash, password):
            log.info("login_failed", user_id=str(user.id), client_ip=client_ip)
            raise InvalidCredentials()
        if self.passwords.needs_rehash(user.password_hash):
            new_hash = await self.passwords.hash(password)
            await repo.update_user(session, user.id, {"password_hash": new_hash})
            log.info("password_rehashed", user_id=str(user.id))
        issued = await self._issue(
            session, user_id=user.id, role=user.role, name=user.display_name, family_id=None
        )
        log.info("login_succeeded", user_id=str(user.id), client_ip=client_ip)
        return issued

    async def refresh(self, session: AsyncSession, *, refresh_token: str) -> IssuedTokens:
        """Spend ``refresh_token`` and issue a new pair in its family.

        Raises RefreshTokenReused after revoking the family when the token was already spent;
        the caller must still commit (see errors.RefreshTokenReused).
        """
        token_hash = hash_refresh_token(refresh_token)
        found = await repo.find_refresh_token(session, token_hash)
        if found is None:
            raise InvalidRefreshToken()
        # Everything that changes a family holds its row lock, so two refreshes of one token
        # run one after the other and the second sees the first one's spent_at.
        family_revoked_at = await repo.lock_family(session, found.family_id)
        token = await repo.find_refresh_token(session, token_hash)
        assert token is not None
        if family_revoked_at is not None or token.revoked_at is not None:
            raise RefreshTokenRevoked()
        if token.spent_at is not None:
            await self._revoke_family(session, token.family_id, reason="reuse")
            log.warning("refresh_token_reused", user_id=str(token.user_id), family_id=str(token.family_id))
            raise RefreshTokenReused()
        if token.expires_at <= datetime.now(UTC):
            raise RefreshTokenExpired()
        user = await repo.get_user(session, token.user_id)
        if user is None:
            raise UnknownAccount()
        spent = await repo.spend_refresh_token(session, token.id)
        assert spent, "a token is only spent under its family's lock"
        return await self._issue(
            session, user_id=user.id, role=user.role, name=user.display_name, family_id=token.family_id
        )

    async def logout(self, session: AsyncSession, *, identity: Identity, refresh_token: str | None) -> None:
        """Revoke the presented access token and, when given, the refresh token's whole family."""
        await self._revoke_access_tokens([(identity.jti, identity.expires_at)])
        if refresh_token:
            found = await repo.find_refresh_token(session, hash_refresh_token(refresh_token))
            # Someone else's refresh token is ignored, not revoked: logout acts on your own session only.
            if found is not None and str(found.user_id) == identity.user_id:
                await repo.lock_family(session, found.family_id)
                await self._revoke_family(session, found.family_id, reason="logout")
        log.info("logged_out", user_id=identity.user_id)

    async def _issue(
        self,
        session: AsyncSession,
        *,
        user_id: uuid.UUID,
        role: str,
        name: str,
        family_id: uuid.UUID | None,
    ) -> IssuedTokens:
        s = self.settings
        now = int(time.time())
        if family_id is None:
            family_id = await repo.insert_family(session, user_id=user_id)
        key = await self.keyring.signing_key()
        access = mint_access_token(
            key,
            user_id=user_id,
            role=role,
            name=name,
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            ttl_s=s.access_token_ttl_s,
            now=now,
        )
        refresh = new_refresh_token()
        refresh_expires_at = now + s.refresh_token_ttl_s
        await repo.insert_refresh_token(
            session,
            token_hash=hash_refresh_token(refresh),
            family_id=family_id,
            user_id=user_id,
            expires_at=datetime.fromtimestamp(refresh_expires_at, UTC),
            access_jti=uuid.UUID(access.jti),
            access_expires_at=datetime.fromtimestamp(access.expires_at, UTC),
        )
        return IssuedTokens(access=access, refresh_token=refresh, refresh_expires_at=refresh_expires_at)

    async def _revoke_family(self, session: AsyncSession, family_id: uuid.UUID, *, reason: str) -> None:
        alive = await repo.revoke_family(session, family_id, reason=reason, now=datetime.now(UTC))
        await self._revoke_access_tokens([(jti, int(expires.timestamp())) for jti, expires in alive])

    async def _revoke_access_tokens(self, tokens: list[tuple[str, int]]) -> None:
        """Put each jti on the deny-list until its token expires (gateway and services check it)."""
        await revoke_access_tokens(self.redis, tokens)

    # --- channels and subscriptions ---------------------------------------------------------

    async def create_channel(
        self, session: AsyncSession, *, user_id: str, channel_name: str, description: str
    ) -> ChannelCreation:
        user = await self.current_user(session, user_id)
        channel = await repo.insert_channel(
            session,
            owner_id=user.id,
            channel_name=channel_name,
            name_key=channel_name_key(channel_name),
            description=description,
        )
        if channel is None:
            if await repo.channel_exists(session, user.id):
                raise ChannelExists()
            raise ChannelNameTaken()
        role_changed = await repo.promote_viewer(session, user.id, Role.creator)
        role = Role.creator if role_changed else Role(user.role)
        # Opening a channel is becoming a creator (an admin's role stays admin, but they now
        # publish too); one channel per user, so the user id is the fact's key.
        await stage(
            session,
            new_event(
                "auth.became_creator",
                {"user_id": str(user.id), "channel_handle": channel.channel_name},
                producer=SOURCE,
                key=str(user.id),
                occurred_at=channel.created_at,
            ),
        )
        log.info("channel_created", channel_id=str(channel.id), role=role.value)
        return ChannelCreation(repo.ChannelView(channel, user.display_name), role, role_changed)

    async def get_channel(self, session: AsyncSession, channel_id: uuid.UUID) -> repo.ChannelView:
        view = await repo.get_channel_view(session, channel_id)
        if view is None:
            raise ChannelNotFound()
        return view

    async def subscribe(
        self, session: AsyncSession, *, user_id: str, channel_id: uuid.UUID
    ) -> SubscriptionState:
        subscriber = await self.current_user(session, user_id)
        if subscriber.id == channel_id:
            raise OwnChannel()
        if not await repo.channel_exists(session, channel_id):
            raise ChannelNotFound()
        created = await repo.insert_subscription(session, subscriber_id=subscriber.id, channel_id=channel_id)
        if created is not None:
            count = await repo.add_subscribers(session, channel_id, +1)
            await stage(session, _subscription_event("auth.subscribed", subscriber.id, channel_id, created))
            return SubscriptionState(channel_id, True, count, created)
        # Already subscribed: nothing changes (PUT is idempotent).
        since = await repo.subscribed_at(session, subscriber_id=subscriber.id, channel_id=channel_id)
        return SubscriptionState(channel_id, True, await repo.subscriber_count(session, channel_id), since)

    async def unsubscribe(self, session: AsyncSession, *, user_id: str, channel_id: uuid.UUID) -> None:
        subscriber_id = uuid.UUID(user_id)
        since = await repo.delete_subscription(session, subscriber_id=subscriber_id, channel_id=channel_id)
        if since is not None:
            await repo.add_subscribers(session, channel_id, -1)
            await stage(session, _subscription_event("auth.unsubscribed", subscriber_id, channel_id, since))
        elif not await repo.channel_exists(session, channel_id):
            raise ChannelNotFound()

    async def list_subscriptions(
        self, session: AsyncSession, *, user_id: str, cursor: str | None, limit: int
    ) -> SubscriptionPage:
        after = decode_cursor(cursor) if cursor else None
        # One extra row tells whether another page exists.
        rows = await repo.list_subscriptions(
            session, subscriber_id=uuid.UUID(user_id), after=after, limit=limit + 1
        )
        items = rows[:limit]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(last.subscribed_at, last.channel.channel.id)
        return SubscriptionPage(items, next_cursor)


def _subscription_event(
    type_: str, subscriber_id: uuid.UUID, channel_id: uuid.UUID, subscribed_at: datetime
) -> Event:
    """A channel's id is its owner's user id, so the channel is the creator. The key is the
    subscription itself (who, to whom, since when): subscribing again later is a new fact."""
    return new_event(
        type_,
        {"subscriber_id": str(subscriber_id), "creator_id": str(channel_id)},
        producer=SOURCE,
        key=f"{subscriber_id}:{channel_id}:{subscribed_at.isoformat()}",
        occurred_at=subscribed_at if type_ == "auth.subscribed" else None,
    )


def remaining_seconds(expires_at: int) -> int:
    return max(0, expires_at - int(time.time()))
