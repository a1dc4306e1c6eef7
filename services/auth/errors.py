"""Auth's expected failures, each with a stable problem code."""

from __future__ import annotations

from common.errors import AppError, Conflict, NotFound, TooManyRequests, Unauthorized, Unprocessable


class EmailTaken(Conflict):
    code = "email_taken"
    title = "An account with this email already exists."


class InvalidEmail(Unprocessable):
    code = "invalid_email"


class WeakPassword(Unprocessable):
    code = "weak_password"


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    title = "The email or password is wrong."


class LoginRateLimited(TooManyRequests):
    title = "Too many sign-in attempts; wait before trying again."


class InvalidRefreshToken(Unauthorized):
    code = "invalid_refresh_token"
    title = "The refresh token is not valid."


class RefreshTokenExpired(Unauthorized):
    code = "refresh_token_expired"
    title = "The refresh token has expired; sign in again."


class RefreshTokenRevoked(Unauthorized):
    code = "refresh_token_revoked"
    title = "This session has been signed out; sign in again."


class RefreshTokenReused(Unauthorized):
    """A spent token came back: someone holds a copy, so the whole session (family) is revoked.

    The revocation must be committed although the request fails; routes answer this error
    instead of raising it, so the request's session still commits.
    """

    code = "refresh_token_reused"
    title = "This refresh token was already used; the session has been revoked. Sign in again."


class UnknownAccount(Unauthorized):
    code = "unknown_account"
    title = "The account behind this token no longer exists."


class ChannelNotFound(NotFound):
    code = "channel_not_found"
    title = "There is no channel with this id."


class ChannelExists(Conflict):
    code = "channel_exists"
    title = "You already have a channel."


class ChannelNameTaken(Conflict):
    code = "channel_name_taken"
    title = "Another channel already uses this name."


class OwnChannel(Unprocessable):
    code = "own_channel"
    title = "You cannot subscribe to your own channel."


class InvalidCursor(Unprocessable):
    code = "invalid_cursor"
    title = "The cursor is not valid; start again from the first page."


__all__ = [
    "AppError",
    "ChannelExists",
    "ChannelNameTaken",
    "ChannelNotFound",
    "EmailTaken",
    "InvalidCredentials",
    "InvalidCursor",
    "InvalidEmail",
    "InvalidRefreshToken",
    "LoginRateLimited",
    "OwnChannel",
    "RefreshTokenExpired",
    "RefreshTokenReused",
    "RefreshTokenRevoked",
    "UnknownAccount",
    "WeakPassword",
]
