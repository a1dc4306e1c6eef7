"""Streaming's calls to its peers: video facts and view counts from catalog, charges from billing.

Catalog is called through ``common.internal.ServiceClient`` (service credential, deadlines,
retries when safe). A charge is a POST, but its key ``{session_id}:{unit}`` makes it idempotent on
billing's side, so it is sent with an ``Idempotency-Key`` header equal to the key and retried on
connection errors and 502/503/504: a retried charge can never be a second charge.

Charges go through a ``ChargePoster``: ``AiohttpPoster`` in production (the same contract as
ServiceClient at a tenth of its CPU per call; charges are the one call made at heartbeat rates),
``ServiceClientPoster`` when an httpx transport is given (tests run billing in-process over ASGI).

Group commit: ``BillingClient`` sends the units that come due together as one
``POST /internal/charges/batch`` (one request, one database transaction and one commit on billing's
side, each charge answered as if alone). Nothing waits to fill a batch: the first unit goes at
once, and units that come due while batches are in flight go in the next one, so batches grow
with the load and cost no latency when it is light. Against a billing without the batch route
(404, e.g. mid-upgrade) it falls back to one call per unit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx
import orjson
import stamina
import structlog
from pydantic import ValidationError

from common import tracing
from common.internal import (
    RETRY_STATUSES,
    SERVICE_TOKEN_HEADER,
    SERVICE_TOKEN_TTL_S,
    ServiceClient,
    mint_service_token,
)
from services.streaming import metrics
from services.streaming.errors import CatalogUnavailable
from services.streaming.live import ChargeOutcome
from services.streaming.schemas import CatalogVideo

log = structlog.get_logger("streaming.peers")


def charge_key(session_id: uuid.UUID, unit: int) -> str:
    """SPEC §4: the idempotency key of one unit of one session."""
    return f"{session_id}:{unit}"


class CatalogClient:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def get_video(self, video_id: uuid.UUID) -> CatalogVideo | None:
        """The video as catalog knows it, None when there is no such video."""
        try:
            response = await self.client.get(f"/internal/videos/{video_id}")
        except httpx.HTTPError as exc:
            log.warning("catalog_unreachable", error=type(exc).__name__)
            raise CatalogUnavailable() from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            log.warning("catalog_error", status=response.status_code)
            raise CatalogUnavailable()
        try:
            return CatalogVideo.model_validate_json(response.content)
        except ValidationError as exc:
            log.error("catalog_answer_invalid", error=str(exc))
            raise CatalogUnavailable() from exc

    async def count_view(self, video_id: uuid.UUID) -> None:
        """One more view of the video (best effort: a lost view count is not worth a failed start)."""
        try:
            response = await self.client.post(f"/internal/videos/{video_id}/views", json={"count": 1})
        except httpx.HTTPError as exc:
            log.warning("view_not_counted", video_id=str(video_id), error=type(exc).__name__)
            return
        if response.status_code != 200:
            log.warning("view_not_counted", video_id=str(video_id), status=response.status_code)

    async def aclose(self) -> None:
        await self.client.aclose()


@dataclass(frozen=True, slots=True)
class ChargeResult:
    outcome: ChargeOutcome
    # The viewer's balance billing reported (after the charge, or the one that was too low).
    balance: int | None = None


@dataclass(frozen=True, slots=True)
class UnitCharge:
    """What billing needs to charge one unit of one session."""

    session_id: uuid.UUID
    unit: int
    viewer_id: uuid.UUID
    creator_id: uuid.UUID
    video_id: uuid.UUID
    amount: int
    currency: str

    @property
    def key(self) -> str:
        return charge_key(self.session_id, self.unit)


class BillingUnreachable(Exception):
    """No answer from billing (after the retries that are safe): connection, timeout, 502-504."""


class ChargePoster(Protocol):
    """Sends charges (a POST, with the charge's key as ``Idempotency-Key`` when it is one charge):
    (status, body)."""

    async def post(self, path: str, body: dict[str, Any], *, key: str | None) -> tuple[int, bytes]: ...

    async def aclose(self) -> None: ...


class ServiceClientPoster:
    """Over ``common.internal.ServiceClient`` (httpx): the reference, and what tests plug their
    in-process billing app into (``httpx.ASGITransport``)."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def post(self, path: str, body: dict[str, Any], *, key: str | None) -> tuple[int, bytes]:
        try:
            response = await self.client.post(path, json=body, headers=_key_header(key))
        except httpx.HTTPError as exc:
            raise BillingUnreachable(type(exc).__name__) from exc
        if response.status_code in RETRY_STATUSES:
            raise BillingUnreachable(f"status {response.status_code}")
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self.client.aclose()


class AiohttpPoster:
    """The same contract as ServiceClient (service credential, deadline per attempt, retries on
    connection errors, timeouts and 502/503/504 with stamina's jittered back-off, the same key
    every time), on aiohttp. Charges are the one call streaming makes at heartbeat rates (a unit
    per second per session with short units); measured on the 2-core machine, client CPU per
    charge: ServiceClient (httpx) ~3,000-4,000 µs, bare aiohttp ~350 µs."""

    def __init__(
        self,
        base_url: str,
        *,
        service: str,
        secret: str,
        timeout_s: float,
        attempts: int,
        max_connections: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.service = service
        self.secret = secret
        self.attempts = attempts
        self.max_connections = max_connections
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(2.0, timeout_s), sock_read=timeout_s
        )
        self._session: aiohttp.ClientSession | None = None
        self._token = ""
        self._token_expires = 0.0

    def _credential(self) -> str:
        if time.time() > self._token_expires - 30:
            self._token = mint_service_token(self.secret, self.service)
            self._token_expires = time.time() + SERVICE_TOKEN_TTL_S
        return self._token

    def _open(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (aiohttp binds a session to its loop).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.max_connections),
            timeout=self.timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )
        return self._session

    async def _attempt(self, path: str, body: dict[str, Any], key: str | None) -> tuple[int, bytes]:
        session = self._session or self._open()
        headers = {**tracing.outgoing_headers(), SERVICE_TOKEN_HEADER: self._credential(), **_key_header(key)}
        try:
            async with session.post(self.base_url + path, json=body, headers=headers) as response:
                content = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BillingUnreachable(type(exc).__name__) from exc
        if response.status in RETRY_STATUSES:
            raise BillingUnreachable(f"status {response.status}")
        return response.status, content

    async def post(self, path: str, body: dict[str, Any], *, key: str | None) -> tuple[int, bytes]:
        try:
            return await self._attempt(path, body, key)
        except BillingUnreachable:
            if self.attempts <= 1:
                raise
        # The same key again: billing answers a repeated charge with the first one's result.
        async for retry in stamina.retry_context(
            on=BillingUnreachable, attempts=self.attempts - 1, wait_initial=0.05
        ):
            with retry:
                return await self._attempt(path, body, key)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _key_header(key: str | None) -> dict[str, str]:
    return {"Idempotency-Key": key} if key is not None else {}


# Billing's bound on one batch (CHARGE_BATCH_MAX there), and how many batches may be in flight.
CHARGE_BATCH_MAX = 50
BATCHES_IN_FLIGHT = 2
_Waiting = tuple[UnitCharge, "asyncio.Future[ChargeResult]"]


class BillingClient:
    def __init__(self, poster: ChargePoster) -> None:
        self.poster = poster
        self._waiting: list[_Waiting] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._batches = True  # False once billing answered that it has no batch route

    async def charge_unit(self, charge: UnitCharge) -> ChargeResult:
        """Charge one unit: charged (also when billing already had this key), insufficient funds,
        or unavailable (unreachable, 5xx, or an answer we cannot use: retried later, same key)."""
        future: asyncio.Future[ChargeResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((charge, future))
        if len(self._senders) < BATCHES_IN_FLIGHT:
            sender = asyncio.create_task(self._send_waiting())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        result = await future
        metrics.count_charge(result.outcome)
        return result

    async def _send_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[:CHARGE_BATCH_MAX]
            del self._waiting[:CHARGE_BATCH_MAX]
            try:
                results = await self._charge([charge for charge, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:  # a bug: each caller gets it (the lease is handed back there)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)

    async def _charge(self, charges: list[UnitCharge]) -> list[ChargeResult]:
        if len(charges) == 1 or not self._batches:
            return [await self._charge_one(charge) for charge in charges]
        body = {"charges": [_charge_body(charge) for charge in charges]}
        try:
            status, content = await self.poster.post("/internal/charges/batch", body, key=None)
        except BillingUnreachable as exc:
            log.warning("billing_unreachable", charges=len(charges), error=str(exc))
            return [ChargeResult(ChargeOutcome.unavailable)] * len(charges)
        if status == 404:
            log.warning("billing_without_charge_batches")
            self._batches = False
            return [await self._charge_one(charge) for charge in charges]
        answers = _batch_answers(content, len(charges)) if status == 200 else None
        if answers is None:
            log.error("charge_batch_failed", status=status, body=content[:500].decode("utf-8", "replace"))
            return [ChargeResult(ChargeOutcome.unavailable)] * len(charges)
        return [
            _result(charge.key, answer.get("status"), answer.get("balance"), answer)
            for charge, answer in zip(charges, answers, strict=True)
        ]

    async def _charge_one(self, charge: UnitCharge) -> ChargeResult:
        key = charge.key
        try:
            status, content = await self.poster.post("/internal/charges", _charge_body(charge), key=key)
        except BillingUnreachable as exc:
            log.warning("billing_unreachable", key=key, error=str(exc))
            return ChargeResult(ChargeOutcome.unavailable)
        document = _document(content)
        return _result(key, status, document.get("balance") if document else None, document or content)

    async def aclose(self) -> None:
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)
        await self.poster.aclose()


def _charge_body(charge: UnitCharge) -> dict[str, Any]:
    return {
        "key": charge.key,
        "session_id": str(charge.session_id),
        "unit": charge.unit,
        "viewer_id": str(charge.viewer_id),
        "creator_id": str(charge.creator_id),
        "video_id": str(charge.video_id),
        "amount": charge.amount,
        "currency": charge.currency,
    }


def _result(key: str, status: object, balance: object, answer: object) -> ChargeResult:
    """One charge's outcome from billing's status for it (and the balance it reported)."""
    reported = balance if isinstance(balance, int) and not isinstance(balance, bool) else None
    if status in (200, 201):
        return ChargeResult(ChargeOutcome.charged, reported)
    if status == 402:
        return ChargeResult(ChargeOutcome.insufficient, reported)
    # 422 idempotency_key_reused would mean this key was used with other terms: never by this
    # service (the terms are fixed at start). Like a 5xx, it is logged and retried later, and the
    # grace period fails the session closed if it persists.
    shown = answer[:500].decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)[:500]
    log.error("charge_failed", key=key, status=status, body=shown)
    return ChargeResult(ChargeOutcome.unavailable)


def _document(content: bytes) -> dict[str, Any] | None:
    try:
        document = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _batch_answers(content: bytes, count: int) -> list[dict[str, Any]] | None:
    """The per-charge answers of a batch, or None when the reply is not one answer per charge."""
    document = _document(content)
    answers = document.get("results") if document else None
    if not isinstance(answers, list) or len(answers) != count:
        return None
    if not all(isinstance(answer, dict) for answer in answers):
        return None
    return answers
