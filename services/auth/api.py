"""Auth routes (served without the /api/v1 prefix, which the gateway strips): thin, they parse,
call the service and shape the response."""

from __future__ import annotations

import ipaddress
import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from common.db import SessionDep
from common.errors import problem
from common.identity import CurrentIdentity
from services.auth.errors import InvalidRefreshToken, RefreshTokenReused
from services.auth.models import User
from services.auth.repository import ChannelView
from services.auth.schemas import (
    ChannelCreate,
    ChannelCreated,
    ChannelRead,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    SubscriptionItem,
    SubscriptionPage,
    SubscriptionRead,
    TokenPair,
    UserCreate,
    UserRead,
    UserUpdate,
)
from services.auth.service import AuthService, IssuedTokens, remaining_seconds
from services.auth.settings import AuthSettings


def get_auth(request: Request) -> AuthService:
    service: AuthService = request.app.state.auth
    return service


AuthDep = Annotated[AuthService, Depends(get_auth)]

auth_router = APIRouter(prefix="/auth", tags=["auth"])
users_router = APIRouter(prefix="/users", tags=["users"])
channels_router = APIRouter(prefix="/channels", tags=["channels"])
jwks_router = APIRouter(tags=["auth"])

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def client_ip(request: Request, settings: AuthSettings) -> str:
    """The caller's address: the first X-Forwarded-For entry (set by the gateway), else the peer."""
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",", 1)[0].strip()
        if first:
            try:
                return str(ipaddress.ip_address(first))
            except ValueError:
                pass
    return request.client.host if request.client else "unknown"


def _set_refresh_cookie(response: Response, settings: AuthSettings, issued: IssuedTokens) -> None:
    response.set_cookie(
        settings.refresh_cookie_name,
        issued.refresh_token,
        max_age=remaining_seconds(issued.refresh_expires_at),
        path=settings.refresh_cookie_path,
        secure=settings.refresh_cookie_secure,
        httponly=True,
        samesite="strict",
    )


def _clear_refresh_cookie(response: Response, settings: AuthSettings) -> None:
    response.delete_cookie(
        settings.refresh_cookie_name,
        path=settings.refresh_cookie_path,
        secure=settings.refresh_cookie_secure,
        httponly=True,
        samesite="strict",
    )


def _token_pair(response: Response, auth: AuthService, issued: IssuedTokens) -> TokenPair:
    # Mobile clients read the body; the SPA keeps only the access token in memory and lets the
    # browser hold the refresh token in an HttpOnly cookie that scripts cannot read.
    _set_refresh_cookie(response, auth.settings, issued)
    response.headers.update(NO_STORE)
    return TokenPair(
        access_token=issued.access.token,
        refresh_token=issued.refresh_token,
        # Lifetimes as of issuance (both tokens were issued together), so a slow response does not
        # report a second less than the token's real lifetime.
        expires_in=issued.access.expires_at - issued.access.issued_at,
        refresh_expires_in=max(0, issued.refresh_expires_at - issued.access.issued_at),
    )


def _channel_read(view: ChannelView) -> ChannelRead:
    channel = view.channel
    return ChannelRead(
        id=channel.id,
        channel_name=channel.channel_name,
        description=channel.description,
        owner_id=channel.id,
        owner_display_name=view.owner_display_name,
        subscriber_count=channel.subscriber_count,
        created_at=channel.created_at,
    )


# --- /auth -----------------------------------------------------------------------------------


@auth_router.post("/register", status_code=201, response_model=UserRead)
async def register(body: UserCreate, session: SessionDep, auth: AuthDep) -> UserRead:
    """Create a viewer account (email normalised, password strength checked, argon2id-hashed)."""
    user = await auth.register(
        session, email=body.email, password=body.password, display_name=body.display_name
    )
    return UserRead.model_validate(user)


@auth_router.post("/login", response_model=TokenPair)
async def login(
    body: LoginRequest, request: Request, response: Response, session: SessionDep, auth: AuthDep
) -> TokenPair:
    """Exchange email and password for an access token and a refresh token (also set as a cookie)."""
    issued = await auth.login(
        session, email=body.email, password=body.password, client_ip=client_ip(request, auth.settings)
    )
    return _token_pair(response, auth, issued)


@auth_router.post("/refresh", response_model=TokenPair)
async def refresh(
    request: Request,
    response: Response,
    session: SessionDep,
    auth: AuthDep,
    body: Annotated[RefreshRequest | None, Body()] = None,
) -> TokenPair | JSONResponse:
    """Spend a refresh token (body, or the cookie) for a new pair; a spent one revokes its session."""
    token = (body.refresh_token if body else None) or request.cookies.get(auth.settings.refresh_cookie_name)
    if not token:
        raise InvalidRefreshToken(
            "Send the refresh token in the body or the cookie.", code="refresh_token_missing"
        )
    try:
        issued = await auth.refresh(session, refresh_token=token)
    except RefreshTokenReused as exc:
        # Answered rather than raised, so the request's transaction (the revocation) commits.
        answer = problem(exc.status, exc.code, exc.detail, instance=request.url.path, headers=exc.headers)
        _clear_refresh_cookie(answer, auth.settings)
        return answer
    return _token_pair(response, auth, issued)


@auth_router.post("/logout", status_code=204, response_class=Response)
async def logout(
    identity: CurrentIdentity,
    request: Request,
    session: SessionDep,
    auth: AuthDep,
    body: Annotated[LogoutRequest | None, Body()] = None,
) -> Response:
    """Revoke this access token and the refresh token's session (body or cookie); clears the cookie."""
    token = (body.refresh_token if body else None) or request.cookies.get(auth.settings.refresh_cookie_name)
    await auth.logout(session, identity=identity, refresh_token=token)
    response = Response(status_code=204)
    _clear_refresh_cookie(response, auth.settings)
    return response


@jwks_router.get("/.well-known/jwks.json")
async def jwks(auth: AuthDep) -> JSONResponse:
    """The RS256 public keys (current, next and recently retired) that verify access tokens."""
    return JSONResponse(await auth.keyring.jwks(), headers={"Cache-Control": "public, max-age=60"})


# --- /users ----------------------------------------------------------------------------------


async def _user_read(session: AsyncSession, auth: AuthService, user: User) -> UserRead:
    read = UserRead.model_validate(user)
    if await auth.has_channel(session, read.id):
        read.channel_id = read.id
    return read


@users_router.get("/me", response_model=UserRead)
async def read_me(identity: CurrentIdentity, session: SessionDep, auth: AuthDep) -> UserRead:
    """Your account."""
    return await _user_read(session, auth, await auth.current_user(session, identity.user_id))


@users_router.patch("/me", response_model=UserRead)
async def update_me(
    body: UserUpdate, identity: CurrentIdentity, session: SessionDep, auth: AuthDep
) -> UserRead:
    """Change your display name, bio or avatar URL (any other field is refused with 422)."""
    changes = body.model_dump(exclude_unset=True, mode="json")
    user = await auth.update_profile(session, identity.user_id, changes)
    return await _user_read(session, auth, user)


@users_router.post("/me/channel", status_code=201, response_model=ChannelCreated)
async def create_channel(
    body: ChannelCreate, identity: CurrentIdentity, session: SessionDep, auth: AuthDep
) -> ChannelCreated:
    """Open your channel and become a creator; then refresh your tokens to carry the new role."""
    created = await auth.create_channel(
        session, user_id=identity.user_id, channel_name=body.channel_name, description=body.description
    )
    return ChannelCreated(
        channel=_channel_read(created.channel), role=created.role, token_refresh_required=created.role_changed
    )


@users_router.get("/me/subscriptions", response_model=SubscriptionPage)
async def list_subscriptions(
    identity: CurrentIdentity,
    session: SessionDep,
    auth: AuthDep,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> SubscriptionPage:
    """The channels you subscribe to, newest subscription first (cursor-paginated)."""
    page = await auth.list_subscriptions(session, user_id=identity.user_id, cursor=cursor, limit=limit)
    return SubscriptionPage(
        items=[
            SubscriptionItem(channel=_channel_read(item.channel), subscribed_at=item.subscribed_at)
            for item in page.items
        ],
        next_cursor=page.next_cursor,
    )


# --- /channels -------------------------------------------------------------------------------


@channels_router.get("/{channel_id}", response_model=ChannelRead)
async def read_channel(channel_id: uuid.UUID, session: SessionDep, auth: AuthDep) -> ChannelRead:
    """A channel's public page (the channel id is its owner's user id); no sign-in needed."""
    return _channel_read(await auth.get_channel(session, channel_id))


@channels_router.put("/{channel_id}/subscription", response_model=SubscriptionRead)
async def subscribe(
    channel_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep, auth: AuthDep
) -> SubscriptionRead:
    """Subscribe to a channel (idempotent; not your own)."""
    state = await auth.subscribe(session, user_id=identity.user_id, channel_id=channel_id)
    return SubscriptionRead(
        channel_id=state.channel_id,
        subscribed=state.subscribed,
        subscriber_count=state.subscriber_count,
        subscribed_at=state.subscribed_at,
    )


@channels_router.delete("/{channel_id}/subscription", status_code=204, response_class=Response)
async def unsubscribe(
    channel_id: uuid.UUID, identity: CurrentIdentity, session: SessionDep, auth: AuthDep
) -> Response:
    """Unsubscribe from a channel (idempotent)."""
    await auth.unsubscribe(session, user_id=identity.user_id, channel_id=channel_id)
    return Response(status_code=204)


routers = [auth_router, users_router, channels_router, jwks_router]
