"""Streaming's expected failures, each with a stable problem code."""

from __future__ import annotations

from common.errors import AppError, Conflict, NotFound, ServiceUnavailable, Unauthorized, Unprocessable


class VideoNotFound(NotFound):
    # Also what a viewer gets for someone else's private video: its existence is not revealed.
    code = "video_not_found"
    title = "There is no video with this id."


class VideoNotReady(Conflict):
    code = "video_not_ready"
    title = "The video is not ready to play yet."


class SessionNotFound(NotFound):
    # Also what another user gets for someone's session (never 403: ids are not confirmed).
    code = "session_not_found"
    title = "There is no playback session with this id."


class TooManySessions(Conflict):
    code = "too_many_sessions"


class InsufficientFunds(AppError):
    status, code = 402, "insufficient_funds"
    title = "The wallet cannot pay for the first unit of this video; top up and try again."


class BillingUnavailable(ServiceUnavailable):
    code = "billing_unavailable"
    title = "Billing is not answering right now; paid videos cannot start. Try again shortly."


class CatalogUnavailable(ServiceUnavailable):
    code = "catalog_unavailable"
    title = "The video catalog is not answering right now; try again shortly."


class InvalidIdentity(Unauthorized):
    code = "invalid_token"
    title = "The access token does not name a valid user."


class TokenRevoked(Unauthorized):
    code = "token_revoked"
    title = "The access token has been revoked."


class InvalidCursor(Unprocessable):
    code = "invalid_cursor"
    title = "The cursor is not valid; start again from the first page."
