"""Request and response bodies. Inputs forbid unknown fields, so nobody can set role, email,
email_verified, balance or id by adding them to a body (mass assignment)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, StringConstraints, field_validator

from services.auth.models import Role

# No control characters: these names are shown to other users.
DisplayName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]
ChannelName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=50, pattern=r"^[^\x00-\x1f\x7f]+$")
]
# Lengths are checked by the password rules (with a readable reason); this only bounds the input.
Password = Annotated[str, Field(max_length=1024)]
Email = Annotated[str, Field(max_length=320)]


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(Input):
    email: Email
    password: Password
    display_name: DisplayName


class LoginRequest(Input):
    email: Email
    password: Password


class RefreshRequest(Input):
    """Mobile clients send the token here; browsers may omit it and rely on the HttpOnly cookie."""

    refresh_token: Annotated[str, Field(min_length=1, max_length=512)] | None = None


class LogoutRequest(RefreshRequest):
    pass


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_expires_in: int = Field(description="Seconds until the refresh token expires.")


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    display_name: str
    bio: str | None
    avatar_url: str | None
    role: Role
    email_verified: bool
    channel_id: uuid.UUID | None = None
    created_at: datetime


class UserUpdate(Input):
    """Only these profile fields can change; anything else in the body is refused with 422."""

    display_name: DisplayName | None = None
    bio: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None
    avatar_url: Annotated[HttpUrl, Field(max_length=2048)] | None = None

    @field_validator("display_name")
    @classmethod
    def _display_name_not_null(cls, value: str | None) -> str | None:
        if value is None:
            raise ValueError("display_name cannot be removed")
        return value


class ChannelCreate(Input):
    channel_name: ChannelName
    description: Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)] = ""


class ChannelRead(BaseModel):
    id: uuid.UUID = Field(description="The channel id, which is also its owner's user id.")
    channel_name: str
    description: str
    owner_id: uuid.UUID
    owner_display_name: str
    subscriber_count: int
    created_at: datetime


class ChannelCreated(BaseModel):
    channel: ChannelRead
    role: Role
    token_refresh_required: bool = Field(
        description=(
            "True when the account's role changed: access tokens carry the role, so call "
            "POST /auth/refresh to get one that says 'creator'."
        )
    )


class SubscriptionRead(BaseModel):
    channel_id: uuid.UUID
    subscribed: bool
    subscriber_count: int
    subscribed_at: datetime | None


class SubscriptionItem(BaseModel):
    channel: ChannelRead
    subscribed_at: datetime


class SubscriptionPage(BaseModel):
    items: list[SubscriptionItem]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page.")
