"""FastAPI dependencies that turn a bearer token into an Identity (every service verifies again)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from common.errors import Forbidden, Unauthorized
from common.tokens import Identity, TokenVerifier


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Use 'Authorization: Bearer <access token>'.", code="invalid_token")
    return token.strip()


async def current_identity(request: Request) -> Identity:
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("Sign in to do this.", code="not_authenticated")
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(token)


async def optional_identity(request: Request) -> Identity | None:
    token = bearer_token(request)
    if token is None:
        return None
    verifier: TokenVerifier = request.app.state.verifier
    return await verifier.verify(token)


def require_role(*roles: str):
    """A dependency that lets through only identities holding one of ``roles``."""

    async def check(identity: Annotated[Identity, Depends(current_identity)]) -> Identity:
        if identity.role not in roles:
            raise Forbidden("Your account may not do this.", code="insufficient_role")
        return identity

    return check


CurrentIdentity = Annotated[Identity, Depends(current_identity)]
OptionalIdentity = Annotated[Identity | None, Depends(optional_identity)]
AdminIdentity = Annotated[Identity, Depends(require_role("admin"))]
