"""Emails and passwords: normalisation, strength rules and argon2id hashing off the event loop."""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from zxcvbn import zxcvbn

from services.auth.errors import InvalidEmail

MAX_EMAIL_LENGTH = 320
# zxcvbn refuses longer input (its matching is super-linear); the first 72 characters decide.
ZXCVBN_MAX_LENGTH = 72
MIN_LOCAL_PART_IN_PASSWORD = 3


def normalize_email(raw: str) -> str:
    """The one stored spelling of an address: trimmed, syntax-checked (no DNS), lower-cased.

    email-validator lower-cases and IDNA-normalises the domain; the local part is lower-cased
    here too because no mail provider users sign up with treats it case-sensitively, and two
    accounts differing only by case are a support and phishing problem.
    """
    candidate = raw.strip()
    if not candidate or len(candidate) > MAX_EMAIL_LENGTH:
        raise InvalidEmail("This is not a valid email address.")
    try:
        info = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from exc
    return info.normalized.lower()


def password_weakness(
    password: str,
    *,
    email: str,
    display_name: str = "",
    min_length: int = 10,
    max_length: int = 128,
    min_score: int = 2,
) -> str | None:
    """Why ``password`` is refused, in words a user can act on; None when it is acceptable."""
    if len(password) < min_length:
        return f"Use at least {min_length} characters."
    if len(password) > max_length:
        return f"Use at most {max_length} characters."
    local_part = email.rpartition("@")[0].lower()
    if len(local_part) >= MIN_LOCAL_PART_IN_PASSWORD and local_part in password.lower():
        return "Do not use your email address in your password."
    hints = [email, local_part, *display_name.split()]
    result = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=[hint for hint in hints if hint])
    if result["score"] < min_score:
        feedback = result.get("feedback") or {}
        advice = [feedback.get("warning") or "", *feedback.get("suggestions", [])]
        reason = " ".join(part for part in advice if part)
        return f"This password is too easy to guess. {reason}".strip()
    return None


class Passwords:
    """argon2id hashing in worker threads, at most ``concurrency`` at a time (each holds its memory cost)."""

    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int, concurrency: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism, type=Type.ID
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        async with self._slots:
            return await asyncio.to_thread(self._verify, password_hash, password)

    async def verify_dummy(self, password: str) -> None:
        """Spend the time of a real check, so an unknown email cannot be told from a wrong password."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(self._dummy_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than today's (upgraded on next login)."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
