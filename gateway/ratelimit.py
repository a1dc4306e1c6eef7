"""Redis-backed rate limits per IP and per user, and the access token's revocation check.

Both questions are answered by one Lua call per request, and the calls of the requests that
arrive while a round trip is in flight leave together in the next one (auto-pipelining), so
under load one Redis round trip serves many requests and at low load a call goes out at once.
Measured on this machine: one redis-py call per request cost ~190 µs of gateway CPU; redis-py
pipelines ~80 µs per request (most of it in redis-py's pure-Python command packing); hiredis
packing on one dedicated redis-py connection, as below, a few µs.

The limits are the `limits` library's sliding-window counter (the strategy behind
``common.ratelimit.RateLimiter``): the script is its ``acquire_sliding_window`` extended to
several windows at once (a request counts against all of them or none) plus limits'
``get_window_stats`` arithmetic, with the same key layout, so ``RateLimiter`` reads, tests and
resets what the gateway counts.

When Redis cannot answer, requests are let through (and counted in a metric): every service
checks the token and its revocation again, and an outage of the limiter must not become an
outage of the site.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hiredis
import structlog
from limits import RateLimitItem
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.ratelimit import parse_rule
from common.tokens import REVOKED_JTI_PREFIX, Identity
from gateway.memory import FRESH_S, LimitMemory, TokenMemory
from gateway.metrics import REDIS_ERRORS
from gateway.problems import send_problem
from gateway.routes import Match, RouteClass

log = structlog.get_logger("gateway.ratelimit")

KEY_PREFIX = "ratelimit"  # common.ratelimit.RateLimiter's default prefix
MAX_BATCH = 512
_KEY_CACHE_SIZE = 50_000

EDGE_SCRIPT = """
-- KEYS[1]: the token's revoked-jti key, checked when ARGV[1] == '1'
-- KEYS[k + 1]: the current window of limit k (its previous window is the same key + '/-1');
-- ARGV[2]: how many requests to count; ARGV[3] == '1': count them whatever the verdict (they
-- were let through already, by gateway.memory), else only when allowed and not revoked;
-- ARGV[2k + 2], ARGV[2k + 3]: the limit's amount and window in seconds.
-- Returns {revoked, allowed, limit, remaining, reset ms} of the most restrictive window, then
-- {remaining, reset ms} of each window in KEYS order (gateway.memory remembers them).
local revoked = 0
if ARGV[1] == '1' and redis.call('exists', KEYS[1]) == 1 then
    revoked = 1
end
local cost = tonumber(ARGV[2])
local record = ARGV[3] == '1'
local n = #KEYS - 1
local windows = {}
local allowed = 1
for k = 1, n do
    local current_key = KEYS[k + 1]
    local previous_key = current_key .. '/-1'
    local limit = tonumber(ARGV[2 * k + 2])
    local expiry = tonumber(ARGV[2 * k + 3]) * 1000
    local current_ttl = tonumber(redis.call('pttl', current_key))
    if current_ttl > 0 and current_ttl < expiry then
        -- The current window has ended: it becomes the previous one.
        redis.call('rename', current_key, previous_key)
        redis.call('set', current_key, 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', previous_key)) or 0
    local previous_ttl = tonumber(redis.call('pttl', previous_key))
    local current_count = tonumber(redis.call('get', current_key)) or 0
    current_ttl = tonumber(redis.call('pttl', current_key))
    if previous_ttl < 0 then previous_ttl = 0 end
    if current_ttl < 0 then current_ttl = 0 end
    if math.floor(previous_count * previous_ttl / expiry) + current_count + cost > limit then
        allowed = 0
    end
    windows[k] = {current_key, limit, expiry, previous_count, previous_ttl, current_count, current_ttl}
end
if record or (revoked == 0 and allowed == 1) then
    for k = 1, n do
        local w = windows[k]
        if redis.call('exists', w[1]) == 1 then
            redis.call('incrby', w[1], cost)
        else
            redis.call('set', w[1], cost, 'PX', w[3] * 2)
            w[7] = w[3] * 2
        end
        w[6] = w[6] + cost
    end
end
local best = nil
local per_window = {}
for k = 1, n do
    local w = windows[k]
    local limit, expiry = w[2], w[3]
    local previous_count, previous_ttl, current_count, current_ttl = w[4], w[5], w[6], w[7]
    local remaining = limit - math.floor(previous_count * previous_ttl / expiry + current_count)
    if remaining < 0 then remaining = 0 end
    -- When the oldest counted request stops counting (limits' get_window_stats).
    local reset = -1
    if previous_count > 0 then
        reset = previous_ttl % (expiry / previous_count)
    end
    if current_count > 0 then
        local r = current_ttl % expiry
        if reset < 0 or r < reset then reset = r end
    end
    if reset < 0 then reset = 0 end
    reset = math.ceil(reset)
    per_window[2 * k - 1] = remaining
    per_window[2 * k] = reset
    if best == nil or remaining < best[2] then
        best = {limit, remaining, reset}
    end
end
if best == nil then
    return {revoked, allowed}
end
local reply = {revoked, allowed, best[1], best[2], best[3]}
for i = 1, #per_window do
    reply[5 + i] = per_window[i]
end
return reply
"""
EDGE_SCRIPT_SHA = hashlib.sha1(EDGE_SCRIPT.encode(), usedforsecurity=False).hexdigest().encode()
_NO_TOKEN_KEY = b"gateway:no-token"
_CHECK_TOKEN, _NO_TOKEN = b"1", b"0"
_RECORD, _VERDICT = b"1", b"0"
# Requests let through on memory are counted in Redis at most this much later, together.
RECORD_LINGER_S = 0.005


@dataclass(eq=False)
class LimitRule:
    """One parsed rule (``"20/minute"``) of one route class for one kind of caller (ip/user)."""

    route_class: str
    kind: str
    item: RateLimitItem

    def __post_init__(self) -> None:
        self.amount = int(self.item.amount)
        self.args = (str(self.amount).encode(), str(int(self.item.get_expiry())).encode())
        self._keys: dict[str, bytes] = {}

    @classmethod
    def parse(cls, route_class: str, kind: str, rule: str) -> LimitRule:
        return cls(route_class, kind, parse_rule(rule))

    def key(self, identifier: str) -> bytes:
        """The current window's key, exactly as limits' RedisStorage names it (cached)."""
        key = self._keys.get(identifier)
        if key is None:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            name = self.item.key_for("gateway", self.route_class, self.kind, identifier)
            key = self._keys[identifier] = f"{KEY_PREFIX}:{{{name}}}".encode()
        return key


@dataclass(frozen=True, slots=True)
class Verdict:
    revoked: bool
    allowed: bool
    # The most restrictive window (fewest requests left); 0/0/0 when no limit applied.
    limit: int = 0
    remaining: int = 0
    reset_s: int = 0

    def headers(self) -> list[tuple[bytes, bytes]]:
        """``RateLimit-*`` headers (and ``Retry-After`` when refused)."""
        if not self.limit:
            return []
        values = [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_s).encode()),
        ]
        if not self.allowed:
            values.append((b"retry-after", str(max(1, self.reset_s)).encode()))
        return values


def verdict_from(reply: list[Any]) -> Verdict:
    if len(reply) == 2:
        return Verdict(bool(reply[0]), bool(reply[1]))
    reset_ms = int(reply[4])
    return Verdict(bool(reply[0]), bool(reply[1]), int(reply[2]), int(reply[3]), -(-reset_ms // 1000))


_Pending = tuple[bytes, asyncio.Future[list[Any]]]


@dataclass(eq=False, slots=True)
class _Record:
    """Requests let through for one token and set of windows, counted together."""

    jti: str | None
    limits: list[tuple[LimitRule, str]]
    future: asyncio.Future[list[Any]]
    count: int = 0


def _pack(jti: str | None, limits: list[tuple[LimitRule, str]], cost: int, *, record: bool) -> bytes:
    command: list[bytes] = [b"EVALSHA", EDGE_SCRIPT_SHA, str(1 + len(limits)).encode()]
    command.append(REVOKED_JTI_PREFIX.encode() + jti.encode() if jti else _NO_TOKEN_KEY)
    command += [rule.key(identifier) for rule, identifier in limits]
    command += [_CHECK_TOKEN if jti else _NO_TOKEN, str(cost).encode(), _RECORD if record else _VERDICT]
    for rule, _ in limits:
        command += rule.args
    # (hiredis types its argument as a one-element tuple; any length is accepted.)
    return hiredis.pack_command(tuple(command))  # type: ignore[arg-type]


class EdgeStore:
    """Runs EDGE_SCRIPT for many concurrent requests per round trip on one Redis connection.

    The connection is redis-py's (connect, AUTH, SELECT, TLS, timeouts, hiredis parsing); the
    commands are packed with hiredis and written together, the replies read in order.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: AbstractConnection | None = None
        self._pending: list[_Pending] = []
        self._records: dict[tuple[str | None, tuple[bytes, ...]], _Record] = {}
        self._records_timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._in_flight = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self) -> None:
        await self._redis.script_load(EDGE_SCRIPT)

    async def close(self, *, drain_s: float = 1.0) -> None:
        """Count what is still waiting to be counted (for up to ``drain_s``), then disconnect."""
        self._flush_records()
        deadline = time.monotonic() + drain_s
        while (self._pending or self._tasks) and time.monotonic() < deadline:
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
            else:
                await asyncio.sleep(0)  # the scheduled flush runs
        for task in list(self._tasks):
            task.cancel()
        if self._conn is not None:
            await self._conn.disconnect()
            self._conn = None

    def check(self, jti: str | None, limits: list[tuple[LimitRule, str]]) -> asyncio.Future[list[Any]]:
        """A future of the script's verdict on one request (see ``verdict_from``), counted if allowed."""
        # Requests let through earlier are counted first, so this verdict sees them.
        self._flush_records()
        # The loop is looked up once: asyncio.get_running_loop() costs a getpid() system call.
        loop = self._loop or self._bind_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._enqueue(loop, _pack(jti, limits, 1, record=False), future)
        return future

    def record(self, jti: str | None, limits: list[tuple[LimitRule, str]]) -> asyncio.Future[list[Any]]:
        """Count a request already let through (``gateway.memory``); a future of the script's reply.

        Such requests for the same token and windows are counted together, in one call, at most
        ``RECORD_LINGER_S`` later (or at once when a verdict is asked for); they share the future.
        """
        key = (jti, tuple(rule.key(identifier) for rule, identifier in limits))
        entry = self._records.get(key)
        if entry is None:
            loop = self._loop or self._bind_loop()
            entry = self._records[key] = _Record(jti, limits, loop.create_future())
            if self._records_timer is None:
                self._records_timer = loop.call_later(RECORD_LINGER_S, self._flush_records)
        entry.count += 1
        return entry.future

    def _flush_records(self) -> None:
        if self._records_timer is not None:
            self._records_timer.cancel()
            self._records_timer = None
        if not self._records:
            return
        records, self._records = self._records, {}
        loop = self._loop or self._bind_loop()
        for entry in records.values():
            self._enqueue(loop, _pack(entry.jti, entry.limits, entry.count, record=True), entry.future)

    def _enqueue(
        self, loop: asyncio.AbstractEventLoop, packed: bytes, future: asyncio.Future[list[Any]]
    ) -> None:
        self._pending.append((packed, future))
        if not self._scheduled and not self._in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._in_flight = True
        task = asyncio.ensure_future(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._in_flight = False
        if self._pending and not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    async def _run(self, batch: list[_Pending]) -> None:
        try:
            replies = await self._round_trip([packed for packed, _ in batch])
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # Redis restarted or flushed its scripts: load once and replay the batch
                # (a call refused with NOSCRIPT did not run, so nothing is counted twice).
                await self.load()
                retry = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
                for i, reply in zip(retry, await self._round_trip([batch[i][0] for i in retry]), strict=True):
                    replies[i] = reply
            for (_, future), reply in zip(batch, replies, strict=True):
                if not future.done():
                    if isinstance(reply, BaseException):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            if not isinstance(exc, Exception):
                raise

    async def _round_trip(self, commands: list[bytes]) -> list[Any]:
        conn = self._conn
        if conn is None:
            conn = self._conn = self._redis.connection_pool.make_connection()
        try:
            await conn.send_packed_command(b"".join(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # an error reply; the stream is still in step
                    replies.append(exc)
            return replies
        except BaseException:
            # Out of step or broken: start over on a fresh connection next time.
            self._conn = None
            await conn.disconnect(nowait=True)
            raise


class RatePolicy:
    """The parsed limits of every route class."""

    def __init__(self, classes: dict[str, RouteClass]) -> None:
        self.ip: dict[str, LimitRule | None] = {}
        self.user: dict[str, LimitRule | None] = {}
        for name, route_class in classes.items():
            self.ip[name] = LimitRule.parse(name, "ip", route_class.rate_ip) if route_class.rate_ip else None
            self.user[name] = (
                LimitRule.parse(name, "user", route_class.rate_user) if route_class.rate_user else None
            )


class RateLimitMiddleware:
    """429 with Retry-After when a limit is spent, 401 when the token was revoked, and
    RateLimit-* headers on every answer that passed a limit.

    A request whose verdict is already known (``gateway.memory``) goes on at once, its edge
    script call still made and its answer remembered; the others wait for the verdict.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: Callable[[], EdgeStore | None],
        policy: RatePolicy,
        tokens: Callable[[], TokenMemory | None] = lambda: None,
        memory_s: float = FRESH_S,
        enabled: bool = True,
    ) -> None:
        self.app = app
        self._store = store
        self._tokens = tokens
        self._limits = LimitMemory(fresh_s=memory_s)
        self._policy = policy
        self._enabled = enabled
        self._last_error_log = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match: Match = scope["gateway.match"]
        identity: Identity | None = scope.get("gateway.identity")
        limits: list[tuple[LimitRule, str]] = []
        if self._enabled:
            class_name = match.route_class.name
            ip_rule = self._policy.ip[class_name]
            if ip_rule is not None:
                client = scope.get("client")
                limits.append((ip_rule, client[0] if client else "unknown"))
            user_rule = self._policy.user[class_name]
            if user_rule is not None and identity is not None:
                limits.append((user_rule, identity.user_id))
        store = self._store()
        if store is None or (not limits and identity is None):
            await self.app(scope, receive, send)
            return
        jti = identity.jti if identity else None
        windows = [(rule.key(identifier), rule.amount) for rule, identifier in limits]
        now = time.monotonic()
        tokens = self._tokens()
        known = (
            self._limits.admit(windows, now)
            if jti is None or (tokens is not None and tokens.good(jti, now))
            else None
        )
        if known is not None:
            # Known to pass: counted all the same, without waiting for the answer.
            store.record(jti, limits).add_done_callback(
                lambda answer: self._heard(answer, windows, jti, admitted=True)
            )
            await self._forward(scope, receive, send, known)
            return
        answer = store.check(jti, limits)
        try:
            reply = await answer
        except Exception as exc:
            self._heard(answer, windows, jti, admitted=False)
            self._unavailable(exc)
            await self.app(scope, receive, send)
            return
        self._heard(answer, windows, jti, admitted=False)
        verdict = verdict_from(reply)
        if verdict.revoked:
            await send_problem(
                scope,
                receive,
                send,
                401,
                "token_revoked",
                "The access token has been revoked.",
                headers={"WWW-Authenticate": 'Bearer realm="streamify", error="invalid_token"'},
            )
            return
        extra = verdict.headers()
        if not verdict.allowed:
            headers = {name.decode(): value.decode() for name, value in extra}
            await send_problem(
                scope, receive, send, 429, "rate_limited", "Too many requests; slow down.", headers=headers
            )
            return
        await self._forward(scope, receive, send, extra)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, extra: list[tuple[bytes, bytes]]
    ) -> None:
        if not extra:
            await self.app(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_limits)

    def _heard(
        self,
        answer: asyncio.Future[list[Any]],
        windows: list[tuple[bytes, int]],
        jti: str | None,
        *,
        admitted: bool,
    ) -> None:
        """Remember what Redis answered (or forget what it could not confirm)."""
        now = time.monotonic()
        tokens = self._tokens()
        failure = answer.cancelled() or answer.exception() is not None
        if failure:
            self._limits.forget([key for key, _ in windows])
            if jti is not None and tokens is not None:
                tokens.forget(jti)
            if admitted:
                self._unavailable(
                    ConnectionError("edge script call failed") if answer.cancelled() else answer.exception()
                )
            return
        reply = answer.result()
        if jti is not None and tokens is not None:
            tokens.learn(jti, bool(reply[0]), now)
        if windows and len(reply) > 5:
            self._limits.learn(windows, reply, now, admitted=admitted)

    def _unavailable(self, exc: BaseException | None) -> None:
        REDIS_ERRORS.inc()
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.warning("edge_store_unavailable", error=repr(exc))
