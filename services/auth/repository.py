"""Every auth query. Writes that race (sign-up, channel creation, subscriptions, refresh rotation)
are single statements decided by a unique index or done under a row lock."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.auth.models import Channel, RefreshFamily, RefreshToken, Role, Subscription, User

# --- users -------------------------------------------------------------------------------------


async def insert_user(
    session: AsyncSession, *, email: str, password_hash: str, display_name: str, role: Role
) -> User | None:
    """The new user, or None when the email is taken (decided by the unique index, so race-safe)."""
    statement = (
        pg_insert(User)
        .values(
            id=uuid.uuid4(),
            email=email,
            password_hash=password_hash,
            display_name=display_name,
            role=role.value,
            email_verified=False,
        )
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(User)
    )
    return (await session.scalars(statement)).one_or_none()


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.scalars(select(User).where(col(User.email) == email))).one_or_none()


async def update_user(session: AsyncSession, user_id: uuid.UUID, values: dict[str, Any]) -> User | None:
    statement = (
        update(User)
        .where(col(User.id) == user_id)
        .values(**values, updated_at=func.now())
        .returning(User)
        .execution_options(populate_existing=True)
    )
    return (await session.scalars(statement)).one_or_none()


async def promote_viewer(session: AsyncSession, user_id: uuid.UUID, role: Role) -> bool:
    """Raise a viewer to ``role``; creators and admins keep theirs. True when the role changed."""
    statement = (
        update(User)
        .where(col(User.id) == user_id, col(User.role) == Role.viewer.value)
        .values(role=role.value, updated_at=func.now())
        .returning(col(User.id))
    )
    return (await session.execute(statement)).first() is not None


# --- channels and subscriptions ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelView:
    channel: Channel
    owner_display_name: str


async def insert_channel(
    session: AsyncSession, *, owner_id: uuid.UUID, channel_name: str, name_key: str, description: str
) -> Channel | None:
    """The new channel, or None when the owner already has one or the name is taken."""
    statement = (
        pg_insert(Channel)
        .values(
            id=owner_id,
            channel_name=channel_name,
            name_key=name_key,
            description=description,
            subscriber_count=0,
        )
        .on_conflict_do_nothing()
        .returning(Channel)
    )
    return (await session.scalars(statement)).one_or_none()


def _channel_views() -> Any:
    return select(Channel, col(User.display_name)).join(User, col(User.id) == col(Channel.id))


async def get_channel_view(session: AsyncSession, channel_id: uuid.UUID) -> ChannelView | None:
    statement = (
        _channel_views().where(col(Channel.id) == channel_id).execution_options(populate_existing=True)
    )
    row = (await session.execute(statement)).first()
    return ChannelView(row[0], row[1]) if row else None


async def channel_exists(session: AsyncSession, channel_id: uuid.UUID) -> bool:
    statement = select(col(Channel.id)).where(col(Channel.id) == channel_id)
    return (await session.execute(statement)).first() is not None


async def insert_subscription(
    session: AsyncSession, *, subscriber_id: uuid.UUID, channel_id: uuid.UUID
) -> datetime | None:
    """When the subscription was created now; None when it already existed."""
    statement = (
        pg_insert(Subscription)
        .values(subscriber_id=subscriber_id, channel_id=channel_id, created_at=func.now())
        .on_conflict_do_nothing()
        .returning(col(Subscription.created_at))
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def delete_subscription(
    session: AsyncSession, *, subscriber_id: uuid.UUID, channel_id: uuid.UUID
) -> datetime | None:
    """When the removed subscription was created; None when there was none."""
    statement = (
        delete(Subscription)
        .where(col(Subscription.subscriber_id) == subscriber_id, col(Subscription.channel_id) == channel_id)
        .returning(col(Subscription.created_at))
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def subscribed_at(
    session: AsyncSession, *, subscriber_id: uuid.UUID, channel_id: uuid.UUID
) -> datetime | None:
    statement = select(col(Subscription.created_at)).where(
        col(Subscription.subscriber_id) == subscriber_id, col(Subscription.channel_id) == channel_id
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def add_subscribers(session: AsyncSession, channel_id: uuid.UUID, delta: int) -> int:
    """Move the denormalised counter; called only when a subscription row really changed."""
    statement = (
        update(Channel)
        .where(col(Channel.id) == channel_id)
        .values(subscriber_count=col(Channel.subscriber_count) + delta)
        .returning(col(Channel.subscriber_count))
    )
    return int((await session.execute(statement)).scalar_one())


async def subscriber_count(session: AsyncSession, channel_id: uuid.UUID) -> int:
    statement = select(col(Channel.subscriber_count)).where(col(Channel.id) == channel_id)
    return int((await session.execute(statement)).scalar_one())


@dataclass(frozen=True, slots=True)
class SubscriptionView:
    channel: ChannelView
    subscribed_at: datetime


async def list_subscriptions(
    session: AsyncSession,
    *,
    subscriber_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[SubscriptionView]:
    """Newest first, keyset-paginated on (created_at, channel_id)."""
    statement = (
        _channel_views()
        .add_columns(col(Subscription.created_at))
        .join(Subscription, col(Subscription.channel_id) == col(Channel.id))
        .where(col(Subscription.subscriber_id) == subscriber_id)
        .order_by(col(Subscription.created_at).desc(), col(Subscription.channel_id).desc())
        .limit(limit)
    )
    if after is not None:
        statement = statement.where(
            tuple_(col(Subscription.created_at), col(Subscription.channel_id)) < tuple_(*after)
        )
    rows = (await session.execute(statement)).all()
    return [SubscriptionView(ChannelView(channel, name), created) for channel, name, created in rows]


# --- refresh tokens ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RefreshTokenState:
    id: uuid.UUID
    user_id: uuid.UUID
    family_id: uuid.UUID
    expires_at: datetime
    spent_at: datetime | None
    revoked_at: datetime | None


async def purge_expired_refresh_tokens(session: AsyncSession, *, expired_before: datetime, limit: int) -> int:
    """Delete up to ``limit`` refresh tokens that expired before ``expired_before``; how many."""
    doomed = select(col(RefreshToken.id)).where(col(RefreshToken.expires_at) < expired_before).limit(limit)
    result = await session.execute(
        delete(RefreshToken).where(col(RefreshToken.id).in_(doomed.scalar_subquery()))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_empty_families(session: AsyncSession, *, created_before: datetime) -> int:
    """Delete the sign-ins older than ``created_before`` that no refresh token belongs to any more."""
    tokens = select(col(RefreshToken.id)).where(col(RefreshToken.family_id) == col(RefreshFamily.id))
    result = await session.execute(
        delete(RefreshFamily).where(col(RefreshFamily.created_at) < created_before, ~tokens.exists())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def insert_family(session: AsyncSession, *, user_id: uuid.UUID) -> uuid.UUID:
    family_id = uuid.uuid4()
    await session.execute(
        pg_insert(RefreshFamily).values(id=family_id, user_id=user_id, created_at=func.now())
    )
    return family_id


async def insert_refresh_token(
    session: AsyncSession,
    *,
    token_hash: bytes,
    family_id: uuid.UUID,
    user_id: uuid.UUID,
    expires_at: datetime,
    access_jti: uuid.UUID,
    access_expires_at: datetime,
) -> None:
    await session.execute(
        pg_insert(RefreshToken).values(
            id=uuid.uuid4(),
            token_hash=token_hash,
            family_id=family_id,
            user_id=user_id,
            created_at=func.now(),
            expires_at=expires_at,
            access_jti=access_jti,
            access_expires_at=access_expires_at,
        )
    )


async def find_refresh_token(session: AsyncSession, token_hash: bytes) -> RefreshTokenState | None:
    """The token's state as last committed (a fresh statement; nothing comes from the identity map)."""
    statement = select(
        col(RefreshToken.id),
        col(RefreshToken.user_id),
        col(RefreshToken.family_id),
        col(RefreshToken.expires_at),
        col(RefreshToken.spent_at),
        col(RefreshToken.revoked_at),
    ).where(col(RefreshToken.token_hash) == token_hash)
    row = (await session.execute(statement)).first()
    return RefreshTokenState(*row) if row else None


async def lock_family(session: AsyncSession, family_id: uuid.UUID) -> datetime | None:
    """Lock the family row (every rotation and revocation of the family queues here); its revoked_at."""
    statement = (
        select(col(RefreshFamily.revoked_at)).where(col(RefreshFamily.id) == family_id).with_for_update()
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def spend_refresh_token(session: AsyncSession, token_id: uuid.UUID) -> bool:
    """Mark the token spent; False when it already was (never true under the family lock)."""
    statement = (
        update(RefreshToken)
        .where(col(RefreshToken.id) == token_id, col(RefreshToken.spent_at).is_(None))
        .values(spent_at=func.now())
        .returning(col(RefreshToken.id))
    )
    return (await session.execute(statement)).first() is not None


async def revoke_family(
    session: AsyncSession, family_id: uuid.UUID, *, reason: str, now: datetime
) -> list[tuple[str, datetime]]:
    """Revoke the family and its tokens; the (jti, expiry) of its access tokens still alive."""
    await session.execute(
        update(RefreshFamily)
        .where(col(RefreshFamily.id) == family_id, col(RefreshFamily.revoked_at).is_(None))
        .values(revoked_at=now, revoked_reason=reason)
    )
    await session.execute(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == family_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    statement = select(col(RefreshToken.access_jti), col(RefreshToken.access_expires_at)).where(
        col(RefreshToken.family_id) == family_id,
        col(RefreshToken.access_jti).is_not(None),
        col(RefreshToken.access_expires_at) > now,
    )
    rows = (await session.execute(statement)).all()
    return [(str(jti), expires) for jti, expires in rows if expires is not None]


async def family_tokens(session: AsyncSession, family_id: uuid.UUID) -> int:
    statement = select(func.count()).select_from(RefreshToken).where(col(RefreshToken.family_id) == family_id)
    return int((await session.execute(statement)).scalar_one())
