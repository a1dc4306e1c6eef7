"""Live session state in Redis: authoritative while a session lives, one atomic script per step.

Layout (all under ``streaming:``)::

    hash  streaming:session:{id}             the session (fields in STATE_FIELDS, plus the charge
                                             lease: lease_until_ms, lease_epoch, and
                                             billing_down_since_ms); expires retention after the
                                             session's own expiry
    zset  streaming:viewer:{viewer}:sessions the viewer's live sessions, scored by expires_at_ms
                                             (the concurrent-session limit counts these)
    zset  streaming:expiring                 every session whose durable record is not yet ended,
                                             scored by expires_at_ms (0 once ended here but not
                                             yet recorded): the sweeper's work list

The delivery router reads ``status``, ``video_id``, ``viewer_id`` and ``expires_at_ms`` of the
hash. Every step that reads and writes a session is one Lua script (atomic per session): 50
concurrent duplicate heartbeats see one another's writes in order, so the first that enters a
new unit takes the charge lease and the rest neither accrue nor charge again.

Times are the service's clock in milliseconds, passed in (so tests control it). Numbers written
from Lua go through ``%d``: Lua numbers are doubles, and ``tostring`` would write 1.7e+12.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from redis.asyncio import Redis

from common.events import DEFAULT_MAX_LEN, EVENT_STREAM
from common.outbox import EVENTS_PUBLISHED
from common.tokens import REVOKED_JTI_PREFIX
from services.streaming.models import EndReason, SessionStatus

PREFIX = "streaming:"
EXPIRING_KEY = f"{PREFIX}expiring"
_HEARTBEATS_PUBLISHED = EVENTS_PUBLISHED.labels("streaming")


def iso_utc_ms(ms: int) -> str:
    """``2026-11-22T10:00:00.123Z`` for a time in milliseconds (an event's occurred_at)."""
    seconds, millis = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z"


def session_key(session_id: uuid.UUID | str) -> str:
    return f"{PREFIX}session:{session_id}"


def viewer_sessions_key(viewer_id: uuid.UUID | str) -> str:
    return f"{PREFIX}viewer:{viewer_id}:sessions"


# The fields every script returns, in this order, after its writes.
STATE_FIELDS = (
    "viewer_id",
    "video_id",
    "creator_id",
    "status",
    "paid",
    "price",
    "currency",
    "unit_ms",
    "duration_ms",
    "started_ms",
    "last_hb_ms",
    "last_position_ms",
    "watched_ms",
    "billed_units",
    "expires_at_ms",
    "balance",
    "end_reason",
    "ended_at_ms",
)

_COMMON_LUA = """
local function int(x) return string.format('%d', x) end
local STATE = {FIELDS}
local function reply(key, code, a, b)
  local out = {code, a or '', b or ''}
  local values = redis.call('HMGET', key, unpack(STATE))
  for i = 1, #STATE do out[#out + 1] = values[i] or '' end
  return out
end
-- Key lifetimes are relative (PEXPIRE): the service's clock (injectable) need not be Redis's.
-- Extend a key's life to at least `at` (PEXPIRE ... GT needs Redis 7; embedded Redis is 6.2).
local function keep_until(key, at, now)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 or now + ttl < at then redis.call('PEXPIRE', key, int(at - now)) end
end
-- Mark ended; the session stays in the expiring set (score 0) until its durable record is written.
local function finish(key, viewer_set, expiring, sid, reason, ended_at, retention_ms, now)
  redis.call('HSET', key, 'status', 'ended', 'end_reason', reason, 'ended_at_ms', int(ended_at),
    'lease_until_ms', '0')
  if viewer_set then redis.call('ZREM', viewer_set, sid) end
  redis.call('ZADD', expiring, 0, sid)
  redis.call('PEXPIRE', key, int(retention_ms))
end
""".replace("{FIELDS}", "{" + ", ".join(f"'{name}'" for name in STATE_FIELDS) + "}")

# KEYS: viewer's live set. ARGV: now, max sessions, session id, hold until.
_RESERVE_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
local ttl = redis.call('PTTL', KEYS[1])
local hold = tonumber(ARGV[4]) - tonumber(ARGV[1])
if ttl < 0 or ttl < hold then redis.call('PEXPIRE', KEYS[1], string.format('%d', hold)) end
return 1
"""

# KEYS: session hash, viewer's live set, expiring set. ARGV: now, session id, expires at,
# retention ms, then field/value pairs.
_OPEN_LUA = (
    _COMMON_LUA
    + """
local now, sid, expires_at, retention = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], int(expires_at - now + retention))
redis.call('ZADD', KEYS[2], int(expires_at), sid)
keep_until(KEYS[2], expires_at, now)
redis.call('ZADD', KEYS[3], int(expires_at), sid)
return reply(KEYS[1], 'ok')
"""
)

# KEYS: session hash, revoked-token key, viewer's live set, expiring set, event stream.
# ARGV: now, viewer id, position ms, playing (1|0), ttl ms, retention ms, lease ms, session id,
# event id, event time (ISO 8601), stream max length.
# Codes: revoked | missing | not_found | ok | expired (ended just now, record it) | charge (this
# caller holds the charge lease for units billed_units .. due-1).
# An accepted heartbeat (ok or charge on a live session) adds its playback.heartbeat event to the
# stream in the same script, so the summary exists exactly when the state changed.
_HEARTBEAT_LUA = (
    _COMMON_LUA
    + """
if redis.call('EXISTS', KEYS[2]) == 1 then return {'revoked'} end
local h = redis.call('HMGET', KEYS[1], 'viewer_id', 'status', 'expires_at_ms', 'last_hb_ms',
  'last_position_ms', 'watched_ms', 'billed_units', 'paid', 'unit_ms', 'lease_until_ms', 'video_id',
  'creator_id', 'duration_ms')
if not h[1] then return {'missing'} end
if h[1] ~= ARGV[2] then return {'not_found'} end
local now = tonumber(ARGV[1])
local sid = ARGV[8]
if h[2] == 'ended' then return reply(KEYS[1], 'ok') end
local last_hb = tonumber(h[4])
if now >= tonumber(h[3]) then
  -- No heartbeat for too long: the session ended at its last sign of life.
  finish(KEYS[1], KEYS[3], KEYS[4], sid, 'expired', last_hb, tonumber(ARGV[6]), now)
  return reply(KEYS[1], 'expired')
end
local position = tonumber(ARGV[3])
local watched, billed, unit = tonumber(h[6]), tonumber(h[7]), tonumber(h[9])
local paid = h[8] == '1'
-- SPEC 4: watch time accrues only while playing, never faster than wall-clock time between
-- heartbeats; a duplicate (advance 0) or a stale/backward report (advance < 0) accrues nothing.
local wall = now - last_hb
if wall < 0 then wall = 0 end
local advance = position - tonumber(h[5])
if ARGV[4] == '1' and advance > 0 then watched = watched + math.min(wall, advance) end
-- Unpaid: nothing past the paid units counts as watched.
if paid and h[2] == 'payment_required' then watched = math.min(watched, billed * unit) end
if now > last_hb then last_hb = now end
local expires_at = now + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'last_hb_ms', int(last_hb), 'last_position_ms', int(position),
  'watched_ms', int(watched), 'expires_at_ms', int(expires_at))
redis.call('PEXPIRE', KEYS[1], int(tonumber(ARGV[5]) + tonumber(ARGV[6])))
redis.call('ZADD', KEYS[3], int(expires_at), sid)
keep_until(KEYS[3], expires_at, now)
redis.call('ZADD', KEYS[4], int(expires_at), sid)
local duration = cjson.null
if h[13] and h[13] ~= '' then duration = tonumber(h[13]) / 1000 end
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[11], '*', 'event', cjson.encode({
  id = ARGV[9], type = 'playback.heartbeat', version = 1, occurred_at = ARGV[10], producer = 'streaming',
  payload = {session_id = sid, viewer_id = h[1], video_id = h[11], creator_id = h[12],
    position_s = position / 1000, watched_s = watched / 1000, duration_s = duration,
    playing = ARGV[4] == '1', billed_units = billed, status = h[2]}}))
if paid then
  local due = math.floor(watched / unit) + 1
  if due > billed and tonumber(h[10] or '0') <= now then
    local epoch = redis.call('HINCRBY', KEYS[1], 'lease_epoch', 1)
    redis.call('HSET', KEYS[1], 'lease_until_ms', int(now + tonumber(ARGV[7])))
    return reply(KEYS[1], 'charge', tostring(epoch), int(due))
  end
end
return reply(KEYS[1], 'ok')
"""
)

# KEYS: session hash. ARGV: now, lease epoch, billed through (units paid), outcome
# (charged|insufficient|unavailable), balance ('' when unknown), grace ms.
# Codes: missing | changed (billed units or status moved) | same.
_SETTLE_LUA = (
    _COMMON_LUA
    + """
local h = redis.call('HMGET', KEYS[1], 'status', 'billed_units', 'lease_epoch', 'unit_ms', 'watched_ms',
  'billing_down_since_ms')
if not h[1] then return {'missing'} end
local now = tonumber(ARGV[1])
local before = tonumber(h[2])
-- A charge that went through always counts, even for a session that ended meanwhile.
local billed = math.max(before, tonumber(ARGV[3]))
local changed = billed ~= before
redis.call('HSET', KEYS[1], 'billed_units', int(billed))
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'balance', ARGV[5]) end
-- Only the lease holder decides the status (a charger that outlived its lease only adds units).
if h[1] ~= 'ended' and h[3] == ARGV[2] then
  local status, outcome = h[1], ARGV[4]
  local down = tonumber(h[6] or '0')
  if outcome == 'charged' then
    down = 0
    status = 'active'
  elseif outcome == 'insufficient' then
    down = 0
    status = 'payment_required'
  else
    if down == 0 then down = now end
    if now - down >= tonumber(ARGV[6]) then status = 'payment_required' end
  end
  local watched = tonumber(h[5])
  if status == 'payment_required' then watched = math.min(watched, billed * tonumber(h[4])) end
  redis.call('HSET', KEYS[1], 'status', status, 'billing_down_since_ms', int(down), 'watched_ms',
    int(watched), 'lease_until_ms', '0')
  changed = changed or status ~= h[1]
end
if changed then return reply(KEYS[1], 'changed') end
return reply(KEYS[1], 'same')
"""
)

# KEYS: session hash, [viewer's live set,] expiring set.
# ARGV: now, viewer id ('' = any), reason, force (1|0), retention ms, session id.
# Codes: missing | not_found | alive (not expired, not forced) | already | ended.
_END_LUA = (
    _COMMON_LUA
    + """
local h = redis.call('HMGET', KEYS[1], 'viewer_id', 'status', 'expires_at_ms', 'last_hb_ms')
if not h[1] then return {'missing'} end
if ARGV[2] ~= '' and h[1] ~= ARGV[2] then return {'not_found'} end
if h[2] == 'ended' then return reply(KEYS[1], 'already') end
local now = tonumber(ARGV[1])
local viewer_set = nil
if #KEYS == 3 then viewer_set = KEYS[2] end
if ARGV[4] == '1' then
  finish(KEYS[1], viewer_set, KEYS[#KEYS], ARGV[6], ARGV[3], now, tonumber(ARGV[5]), now)
  return reply(KEYS[1], 'ended')
end
if now < tonumber(h[3]) then return {'alive'} end
finish(KEYS[1], viewer_set, KEYS[#KEYS], ARGV[6], 'expired', tonumber(h[4]), tonumber(ARGV[5]), now)
return reply(KEYS[1], 'ended')
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int | None:
    text = _text(value)
    return int(text) if text else None


class ChargeOutcome(StrEnum):
    charged = "charged"
    insufficient = "insufficient"
    unavailable = "unavailable"


@dataclass(frozen=True, slots=True)
class LiveSession:
    """One session as the live state holds it."""

    session_id: uuid.UUID
    viewer_id: uuid.UUID
    video_id: uuid.UUID
    creator_id: uuid.UUID
    status: SessionStatus
    paid: bool
    price_per_minute: int
    currency: str
    unit_ms: int
    duration_ms: int | None
    started_ms: int
    last_heartbeat_ms: int
    position_ms: int
    watched_ms: int
    billed_units: int
    expires_at_ms: int
    balance: int | None
    end_reason: EndReason | None
    ended_at_ms: int | None

    @classmethod
    def parse(cls, session_id: uuid.UUID, values: Sequence[Any]) -> LiveSession:
        v = dict(zip(STATE_FIELDS, (_text(value) for value in values), strict=True))
        return cls(
            session_id=session_id,
            viewer_id=uuid.UUID(v["viewer_id"]),
            video_id=uuid.UUID(v["video_id"]),
            creator_id=uuid.UUID(v["creator_id"]),
            status=SessionStatus(v["status"]),
            paid=v["paid"] == "1",
            price_per_minute=int(v["price"]),
            currency=v["currency"],
            unit_ms=int(v["unit_ms"]),
            duration_ms=_int(v["duration_ms"]),
            started_ms=int(v["started_ms"]),
            last_heartbeat_ms=int(v["last_hb_ms"]),
            position_ms=int(v["last_position_ms"]),
            watched_ms=int(v["watched_ms"]),
            billed_units=int(v["billed_units"]),
            expires_at_ms=int(v["expires_at_ms"]),
            balance=_int(v["balance"]),
            end_reason=EndReason(v["end_reason"]) if v["end_reason"] else None,
            ended_at_ms=_int(v["ended_at_ms"]),
        )


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """A script's code, and the session after it (None for codes that carry no state)."""

    code: str
    state: LiveSession | None = None
    lease_epoch: str = ""
    due_units: int = 0


@dataclass(frozen=True, slots=True)
class NewSession:
    session_id: uuid.UUID
    viewer_id: uuid.UUID
    video_id: uuid.UUID
    creator_id: uuid.UUID
    paid: bool
    price_per_minute: int
    currency: str
    unit_ms: int
    duration_ms: int | None
    billed_units: int
    balance: int | None


class LiveSessions:
    """The scripts over one Redis client; every public method is one round trip."""

    def __init__(
        self,
        redis: Redis,
        *,
        ttl_ms: int,
        retention_ms: int,
        lease_ms: int,
        event_stream: str = EVENT_STREAM,
        event_max_len: int = DEFAULT_MAX_LEN,
    ) -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.retention_ms = retention_ms
        self.lease_ms = lease_ms
        self.event_stream = event_stream
        self.event_max_len = event_max_len
        self._reserve = redis.register_script(_RESERVE_LUA)
        self._open = redis.register_script(_OPEN_LUA)
        self._heartbeat = redis.register_script(_HEARTBEAT_LUA)
        self._settle = redis.register_script(_SETTLE_LUA)
        self._end = redis.register_script(_END_LUA)

    @staticmethod
    def _result(session_id: uuid.UUID, raw: Sequence[Any]) -> ScriptResult:
        code = _text(raw[0])
        if len(raw) == 1:
            return ScriptResult(code)
        due = _text(raw[2])
        return ScriptResult(
            code,
            LiveSession.parse(session_id, raw[3:]),
            lease_epoch=_text(raw[1]),
            due_units=int(due) if due else 0,
        )

    async def reserve(
        self, *, viewer_id: uuid.UUID, session_id: uuid.UUID, now_ms: int, limit: int, hold_ms: int
    ) -> bool:
        """Take one of the viewer's ``limit`` live-session slots (False when all are taken)."""
        keys = [viewer_sessions_key(viewer_id)]
        taken = await self._reserve(keys=keys, args=[now_ms, limit, str(session_id), now_ms + hold_ms])
        return bool(taken)

    async def release(self, *, viewer_id: uuid.UUID, session_id: uuid.UUID) -> None:
        await self.redis.zrem(viewer_sessions_key(viewer_id), str(session_id))

    async def open(self, new: NewSession, *, now_ms: int) -> LiveSession:
        fields: dict[str, str | int] = {
            "viewer_id": str(new.viewer_id),
            "video_id": str(new.video_id),
            "creator_id": str(new.creator_id),
            "status": SessionStatus.active.value,
            "paid": "1" if new.paid else "0",
            "price": new.price_per_minute,
            "currency": new.currency,
            "unit_ms": new.unit_ms,
            "duration_ms": "" if new.duration_ms is None else new.duration_ms,
            "started_ms": now_ms,
            "last_hb_ms": now_ms,
            "last_position_ms": 0,
            "watched_ms": 0,
            "billed_units": new.billed_units,
            "expires_at_ms": now_ms + self.ttl_ms,
            "balance": "" if new.balance is None else new.balance,
            "end_reason": "",
            "ended_at_ms": "",
            "billing_down_since_ms": 0,
            "lease_until_ms": 0,
            "lease_epoch": 0,
        }
        keys = [session_key(new.session_id), viewer_sessions_key(new.viewer_id), EXPIRING_KEY]
        args: list[str | int] = [now_ms, str(new.session_id), now_ms + self.ttl_ms, self.retention_ms]
        for name, value in fields.items():
            args += [name, value]
        result = self._result(new.session_id, await self._open(keys=keys, args=args))
        assert result.state is not None
        return result.state

    async def heartbeat(
        self,
        session_id: uuid.UUID,
        *,
        viewer_id: uuid.UUID,
        token_id: str,
        now_ms: int,
        position_ms: int,
        playing: bool,
    ) -> ScriptResult:
        """Accrue one heartbeat and publish its summary; the token's revocation is checked in the
        same round trip."""
        keys = [
            session_key(session_id),
            REVOKED_JTI_PREFIX + token_id,
            viewer_sessions_key(viewer_id),
            EXPIRING_KEY,
            self.event_stream,
        ]
        args: list[str | int] = [
            now_ms,
            str(viewer_id),
            position_ms,
            1 if playing else 0,
            self.ttl_ms,
            self.retention_ms,
            self.lease_ms,
            str(session_id),
            str(uuid.uuid4()),
            iso_utc_ms(now_ms),
            self.event_max_len,
        ]
        result = self._result(session_id, await self._heartbeat(keys=keys, args=args))
        # Accepted (the script published its summary): not refused, not on an ended session.
        state = result.state
        if state is not None and result.code in ("ok", "charge") and state.status is not SessionStatus.ended:
            _HEARTBEATS_PUBLISHED.inc()
        return result

    async def settle(
        self,
        session_id: uuid.UUID,
        *,
        lease_epoch: str,
        now_ms: int,
        billed_units: int,
        outcome: ChargeOutcome,
        balance: int | None,
        grace_ms: int,
    ) -> ScriptResult:
        """Record what a charge attempt achieved and release the lease."""
        keys = [session_key(session_id)]
        args: list[str | int] = [
            now_ms,
            lease_epoch,
            billed_units,
            outcome.value,
            "" if balance is None else balance,
            grace_ms,
        ]
        return self._result(session_id, await self._settle(keys=keys, args=args))

    async def end(
        self,
        session_id: uuid.UUID,
        *,
        now_ms: int,
        viewer_id: uuid.UUID | None = None,
        reason: EndReason = EndReason.expired,
        force: bool = False,
    ) -> ScriptResult:
        """End a session: ``force`` (the viewer ends it) or only when it has expired."""
        keys = [session_key(session_id)]
        if viewer_id is not None:
            keys.append(viewer_sessions_key(viewer_id))
        keys.append(EXPIRING_KEY)
        args: list[str | int] = [
            now_ms,
            "" if viewer_id is None else str(viewer_id),
            reason.value,
            1 if force else 0,
            self.retention_ms,
            str(session_id),
        ]
        return self._result(session_id, await self._end(keys=keys, args=args))

    async def read(self, session_id: uuid.UUID) -> LiveSession | None:
        # (redis-py types its commands for both clients; the asyncio one always returns awaitables.)
        values = await cast(
            Awaitable[list[Any]], self.redis.hmget(session_key(session_id), list(STATE_FIELDS))
        )
        if values[0] is None:
            return None
        return LiveSession.parse(session_id, [b"" if value is None else value for value in values])

    async def expired(self, *, now_ms: int, limit: int) -> list[uuid.UUID]:
        """Sessions past their expiry (or ended here but not yet recorded), oldest first."""
        members = await self.redis.zrangebyscore(EXPIRING_KEY, "-inf", now_ms, start=0, num=limit)
        return [uuid.UUID(_text(member)) for member in members]

    async def recorded(self, session_id: uuid.UUID) -> None:
        """The durable record says ended: the sweeper has nothing more to do for this session."""
        await self.redis.zrem(EXPIRING_KEY, str(session_id))
