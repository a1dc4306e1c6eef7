"""Auth tables: users, channels, subscriptions, refresh tokens (by family) and signing keys."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, text
from sqlmodel import Field, SQLModel

from common.columns import timestamp_field
from common.db import table_registry
from common.outbox import outbox_table


class AuthTable(SQLModel, registry=table_registry()):
    """Base of every auth table: its own registry, so its metadata holds only auth's tables."""


metadata = AuthTable.metadata


class Role(StrEnum):
    viewer = "viewer"
    creator = "creator"
    admin = "admin"


class KeyState(StrEnum):
    next = "next"  # published, not yet signing: verifiers learn it before it is used
    current = "current"  # signs every new access token
    retired = "retired"  # published until every token it signed has expired


def _user_fk(*, primary_key: bool = False, index: bool = False) -> Any:
    return Field(
        sa_column=Column(
            ForeignKey("users.id", ondelete="CASCADE"),
            primary_key=primary_key,
            nullable=False,
            index=index,
        )
    )


class User(AuthTable, table=True):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'creator', 'admin')", name="role"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # Normalised (trimmed, lower-cased, IDNA domain); the unique index makes registration race-safe.
    email: str = Field(unique=True)
    password_hash: str
    display_name: str
    bio: str | None = None
    avatar_url: str | None = None
    role: str = Field(default=Role.viewer.value)
    email_verified: bool = False
    created_at: datetime = timestamp_field()
    updated_at: datetime = timestamp_field()


class Channel(AuthTable, table=True):
    """A creator's public page. Its id is its owner's user id: one channel per user, and any service
    holding a creator's user id (a video's owner, say) can link to the channel without asking auth."""

    __tablename__ = "channels"
    __table_args__ = (CheckConstraint("subscriber_count >= 0", name="subscriber_count_non_negative"),)

    id: uuid.UUID = _user_fk(primary_key=True)
    channel_name: str
    # casefolded, whitespace-collapsed channel_name: two channels may not differ only by case or spacing
    name_key: str = Field(unique=True)
    description: str = ""
    # Denormalised; changed only in the transaction that inserted or deleted a subscription row.
    subscriber_count: int = 0
    created_at: datetime = timestamp_field()


class Subscription(AuthTable, table=True):
    __tablename__ = "subscriptions"
    __table_args__ = (
        # The subscriber's list, newest first, is read by keyset pagination on this index.
        Index("ix_subscriptions_subscriber_created", "subscriber_id", "created_at", "channel_id"),
    )

    subscriber_id: uuid.UUID = _user_fk(primary_key=True)
    channel_id: uuid.UUID = Field(
        sa_column=Column(
            ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True, nullable=False, index=True
        )
    )
    created_at: datetime = timestamp_field()


class RefreshFamily(AuthTable, table=True):
    """One sign-in: every refresh token rotated from it shares the family, and dies with it."""

    __tablename__ = "refresh_families"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    user_id: uuid.UUID = _user_fk(index=True)
    created_at: datetime = timestamp_field()
    revoked_at: datetime | None = timestamp_field(nullable=True)
    revoked_reason: str | None = None


class RefreshToken(AuthTable, table=True):
    """Only the SHA-256 of the opaque token is stored: a database leak yields no usable token."""

    __tablename__ = "refresh_tokens"
    # The hourly purge finds expired tokens by this (migration 0003).
    __table_args__ = (Index("ix_refresh_tokens_expires_at", "expires_at"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    token_hash: bytes = Field(unique=True)
    family_id: uuid.UUID = Field(
        sa_column=Column(ForeignKey("refresh_families.id", ondelete="CASCADE"), nullable=False, index=True)
    )
    user_id: uuid.UUID = _user_fk(index=True)
    created_at: datetime = timestamp_field()
    expires_at: datetime = timestamp_field(server_now=False)
    spent_at: datetime | None = timestamp_field(nullable=True)
    revoked_at: datetime | None = timestamp_field(nullable=True)
    # The access token issued alongside, so revoking the family also revokes the access tokens.
    access_jti: uuid.UUID | None = None
    access_expires_at: datetime | None = timestamp_field(nullable=True)


class SigningKey(AuthTable, table=True):
    __tablename__ = "signing_keys"
    __table_args__ = (
        CheckConstraint("state IN ('next', 'current', 'retired')", name="state"),
        # At most one key signs and one waits, even when two instances start or rotate at once.
        Index("uq_signing_keys_current", "state", unique=True, postgresql_where=text("state = 'current'")),
        Index("uq_signing_keys_next", "state", unique=True, postgresql_where=text("state = 'next'")),
    )

    kid: str = Field(primary_key=True)
    # PKCS#8 PEM, encrypted with AUTH_SIGNING_KEY_PASSPHRASE when one is set.
    private_pem: str
    state: str
    created_at: datetime = timestamp_field()
    retired_at: datetime | None = timestamp_field(nullable=True)


# Events written with the changes they report, until the relay has put them on the stream.
event_outbox = outbox_table(metadata)
