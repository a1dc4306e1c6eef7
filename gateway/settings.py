"""Gateway settings: the route table, the upstream instances, per-route classes and edge policies.

Everything is configurable by environment with the ``GATEWAY_`` prefix; the shared names
(REDIS_URL, ENVIRONMENT, JWT_*, UPSTREAM_TIMEOUT_S, ...) are read without it. Structured values
are JSON, e.g.::

    GATEWAY_UPSTREAMS='{"auth": ["http://127.0.0.1:8081", "http://127.0.0.1:9081"]}'
    GATEWAY_ROUTES='{"/api/v1/reports": "analytics", "/api/v1/search": null}'
    GATEWAY_ROUTE_CLASSES='{"auth": {"rate_ip": "5/minute"}}'
    GATEWAY_CORS_ORIGINS='["https://app.example.com"]'

Upstreams, routes and route classes are merged over the defaults (``null`` removes an entry), so
one variable can move a single service without repeating the whole table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from limits import parse
from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from common.settings import CommonSettings

API_PREFIX = "/api/v1"
MIB = 1024 * 1024
GIB = 1024 * MIB

DEFAULT_UPSTREAMS: dict[str, list[str]] = {
    "auth": ["http://127.0.0.1:8081"],
    "catalog": ["http://127.0.0.1:8082"],
    "streaming": ["http://127.0.0.1:8083"],
    "billing": ["http://127.0.0.1:8084"],
    "analytics": ["http://127.0.0.1:8085"],
}

# SPEC §3: public prefix -> upstream. The public /api/v1 prefix is stripped before forwarding;
# longest prefix wins (/api/v1/users/me/history belongs to streaming, the rest of /users to auth).
DEFAULT_ROUTES: dict[str, str] = {
    "/api/v1/auth": "auth",
    "/api/v1/users": "auth",
    "/api/v1/channels": "auth",
    "/api/v1/videos": "catalog",
    "/api/v1/uploads": "catalog",
    "/api/v1/search": "catalog",
    "/api/v1/playback": "streaming",
    "/api/v1/users/me/history": "streaming",
    "/api/v1/wallet": "billing",
    "/api/v1/creator": "billing",
    "/api/v1/admin/refunds": "billing",
    "/api/v1/analytics": "analytics",
    "/.well-known/jwks.json": "auth",
}


class RouteClassConfig(BaseModel):
    """Policies shared by a group of routes: rate limits, body limit, upstream deadline."""

    model_config = {"extra": "forbid"}

    # `limits` rule strings ("20/minute", "100 per second"); None disables that limit.
    rate_ip: str | None = "1200/minute"
    rate_user: str | None = "1200/minute"
    max_body_bytes: int = Field(default=MIB, ge=0)
    # Seconds to wait for the upstream's response head (and between body chunks); None = shared default.
    timeout_s: float | None = Field(default=None, gt=0)

    @field_validator("rate_ip", "rate_user")
    @classmethod
    def _check_rule(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except ValueError as exc:
                raise ValueError(f"not a rate limit rule: {value!r} (e.g. '20/minute')") from exc
        return value


DEFAULT_ROUTE_CLASSES: dict[str, dict[str, Any]] = {
    "default": {},
    # Credential endpoints: strict per-IP limits against guessing (auth also limits per account).
    "auth": {"rate_ip": "30/minute", "rate_user": None, "max_body_bytes": 64 * 1024},
    # Resumable and one-shot uploads stream large bodies and may take a while to finalise.
    "uploads": {
        "rate_ip": "600/minute",
        "rate_user": "600/minute",
        "max_body_bytes": 10 * GIB,
        "timeout_s": 120,
    },
    # HLS playlists and segments: each request carries a playback credential bound to a live
    # session and is authorized against that session by streaming, so no Redis round trip here
    # (a player fetches a segment every few seconds; a rate limit would only add latency).
    "playback_media": {"rate_ip": None, "rate_user": None, "max_body_bytes": 0, "timeout_s": 10},
}


class ClassRule(BaseModel):
    """Requests whose path matches ``pattern`` (and method, when given) belong to ``route_class``.

    ``*`` matches within one path segment, ``**`` matches anything (including nothing).
    """

    model_config = {"extra": "forbid", "populate_by_name": True}

    pattern: str
    route_class: str = Field(alias="class")
    methods: list[str] | None = None


DEFAULT_CLASS_RULES: list[dict[str, Any]] = [
    {"pattern": "/api/v1/auth/login", "class": "auth", "methods": ["POST"]},
    {"pattern": "/api/v1/auth/register", "class": "auth", "methods": ["POST"]},
    {"pattern": "/api/v1/auth/refresh", "class": "auth", "methods": ["POST"]},
    {"pattern": "/api/v1/uploads/**", "class": "uploads"},
    {"pattern": "/api/v1/uploads", "class": "uploads"},
    {"pattern": "/api/v1/videos/*/source", "class": "uploads"},
    # Exactly the delivery paths (master playlist; rendition playlist or segment), not heartbeats.
    {"pattern": "/api/v1/playback/sessions/*/*/*", "class": "playback_media", "methods": ["GET", "HEAD"]},
    {"pattern": "/api/v1/playback/sessions/*/*/*/*", "class": "playback_media", "methods": ["GET", "HEAD"]},
]


def spa_csp(media_origins: list[str] | tuple[str, ...] = ()) -> str:
    """A CSP for the single-page app: same-origin scripts, media from blob: (MSE players) and self,
    plus the origins the player fetches segments and thumbnails from (a plain-http object store,
    say; any https: origin is allowed already)."""
    extra = "".join(f" {origin}" for origin in media_origins)
    return (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob: https:{extra}; media-src 'self' blob: https:{extra}; "
        f"connect-src 'self' https:{extra}; font-src 'self' data:; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )


def _merge(defaults: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    merged = dict(defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class GatewaySettings(CommonSettings):
    """GATEWAY_PORT, GATEWAY_UPSTREAMS, GATEWAY_ROUTES, ...; shared names (REDIS_URL, ...) unprefixed."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080

    upstreams: dict[str, list[str]] = Field(default_factory=dict)
    routes: dict[str, str | None] = Field(default_factory=dict)
    route_classes: dict[str, RouteClassConfig | None] = Field(default_factory=dict)
    class_rules: list[ClassRule] | None = None

    rate_limit_enabled: bool = True
    # A request whose rate-limit and revocation verdicts Redis gave less than this long ago (with
    # room to spare under its limits) goes on without waiting for the next one (gateway.memory);
    # 0: every request waits for Redis.
    edge_memory_s: float = Field(default=1.0, ge=0, le=10)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    # An instance that refuses connections or resets them is skipped for this long, then retried.
    eject_s: float = Field(default=5.0, ge=0)
    # Circuit breaker per upstream: opens after this many consecutive failed requests ...
    breaker_failure_threshold: int = Field(default=5, ge=1)
    # ... and lets one probe request through after this cool-down.
    breaker_reset_s: float = Field(default=10.0, gt=0)
    # Idle keep-alive connections older than this are dropped (uvicorn closes them after 5 s).
    upstream_keepalive_s: float = Field(default=4.0, gt=0)

    cors_origins: list[str] = Field(default_factory=list)
    cors_max_age_s: int = 600
    hsts_max_age_s: int = 31_536_000
    # The whole SPA policy, when given; otherwise the default with ``media_origins`` added.
    content_security_policy: str | None = None
    media_origins: list[str] = Field(default_factory=list)

    static_dir: str | None = None
    openapi_cache_s: float = 60.0
    readiness_timeout_s: float = 2.0
    # One JSON line per proxied request (with the request id); errors are always logged.
    access_log: bool = True

    @field_validator("upstreams")
    @classmethod
    def _check_upstream_urls(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, urls in value.items():
            for url in urls or []:
                if not url.startswith("http://"):
                    raise ValueError(
                        f"upstream {name}: only http:// instance URLs are supported, got {url!r}"
                    )
        return value

    @model_validator(mode="after")
    def _check_routes(self) -> GatewaySettings:
        upstreams = self.upstream_table()
        classes = self.route_class_table()
        for prefix, upstream in self.route_table().items():
            if not prefix.startswith("/") or prefix.endswith("/"):
                raise ValueError(f"route prefix {prefix!r} must start with '/' and not end with it")
            if upstream not in upstreams or not upstreams[upstream]:
                raise ValueError(f"route {prefix!r} names upstream {upstream!r} which has no instances")
        for rule in self.class_rule_list():
            if rule.route_class not in classes:
                raise ValueError(f"class rule {rule.pattern!r} names unknown class {rule.route_class!r}")
        return self

    def secret_fields(self) -> tuple[str, ...]:
        # The gateway holds no secret: it verifies tokens with public keys and never mints the
        # service credential (it should not even be given INTERNAL_SECRET).
        return ()

    def upstream_table(self) -> dict[str, list[str]]:
        return {k: [u.rstrip("/") for u in v] for k, v in _merge(DEFAULT_UPSTREAMS, self.upstreams).items()}

    def route_table(self) -> dict[str, str]:
        return _merge(DEFAULT_ROUTES, self.routes)

    def route_class_table(self) -> dict[str, RouteClassConfig]:
        defaults = {k: RouteClassConfig(**v) for k, v in DEFAULT_ROUTE_CLASSES.items()}
        overrides: dict[str, Any] = {}
        for name, config in self.route_classes.items():
            if config is None:
                overrides[name] = None
            else:
                # Fields not given keep the default class's values.
                base = defaults.get(name, RouteClassConfig()).model_dump()
                overrides[name] = RouteClassConfig(**{**base, **config.model_dump(exclude_unset=True)})
        table = _merge(defaults, overrides)
        table.setdefault("default", RouteClassConfig())
        return table

    def class_rule_list(self) -> list[ClassRule]:
        if self.class_rules is not None:
            return self.class_rules
        return [ClassRule.model_validate(rule) for rule in DEFAULT_CLASS_RULES]

    def jwks_urls(self) -> list[str]:
        """Where to fetch signing keys: JWKS_URL when set explicitly, else every auth instance."""
        if "jwks_url" in self.model_fields_set:
            return [self.jwks_url]
        return [f"{url}/.well-known/jwks.json" for url in self.upstream_table().get("auth", [])]

    def spa_content_security_policy(self) -> str:
        return self.content_security_policy or spa_csp(self.media_origins)

    def static_root(self) -> Path:
        """The SPA build (web/dist) when present, else the placeholder page shipped with the gateway."""
        if self.static_dir:
            return Path(self.static_dir)
        built = Path(__file__).resolve().parent.parent / "web" / "dist"
        if (built / "index.html").exists():
            return built
        return Path(__file__).resolve().parent / "static"
