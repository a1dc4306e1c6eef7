"""The route table: public path -> (upstream, path to forward, route class); /internal never routes.

Matching is by whole path segments and the longest prefix wins. Paths are checked after the
server's percent-decoding and again after further decoding rounds, so ``/internal`` cannot be
smuggled in as ``%2569nternal``, ``..``, ``;params`` or backslashes; any dot segment is refused
outright because upstreams do not normalise them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from gateway.settings import API_PREFIX, ClassRule, RouteClassConfig

# Characters that may stay literal in a forwarded path (RFC 3986 pchar plus '/').
_PATH_SAFE = "/:@!$&'()*+,;=~"
_SEGMENT_SPLIT = re.compile(r"[/\\]")
FORBIDDEN_SEGMENT = "internal"


@dataclass(frozen=True, slots=True)
class RouteClass:
    """A route class with its rules parsed once."""

    name: str
    rate_ip: str | None
    rate_user: str | None
    max_body_bytes: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the table; ``template`` labels metrics and logs (never the raw path)."""

    prefix: str
    upstream: str
    strip: str
    template: str

    # Starlette-style attribute so common.metrics.route_template() picks the label up.
    @property
    def path(self) -> str:
        return self.template


@dataclass(frozen=True, slots=True)
class Match:
    route: Route
    route_class: RouteClass
    # The path the upstream sees, percent-encoded, as bytes for the request line.
    target: bytes


class PathRefused(Exception):
    """The path may never be forwarded (internal endpoints, dot segments, malformed encoding)."""


class NoRoute(Exception):
    """No route owns the path."""


def _glob_to_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("/**", i):
            out.append("(?:/.*)?")
            i += 3
        elif pattern[i] == "*":
            out.append("[^/]+")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _segments_forbidden(path: str) -> bool:
    for raw in _SEGMENT_SPLIT.split(path):
        segment = raw.split(";", 1)[0].strip().lower()
        if segment in (".", "..") or segment == FORBIDDEN_SEGMENT:
            return True
    return False


def check_path(path: str) -> None:
    """Raise PathRefused for anything that is or may decode into an internal or dot-segment path."""
    lowered = path.lower()
    # Fast path for the common case: nothing encoded, no dots, no backslash, no "internal".
    if "internal" not in lowered and "%" not in path and "\\" not in path and "/." not in path:
        return
    seen = path
    for _ in range(4):
        if _segments_forbidden(seen) or "\x00" in seen:
            raise PathRefused(path)
        decoded = unquote(seen)
        if decoded == seen:
            return
        seen = decoded
    # Still changing after several decoding rounds: nobody sends that in good faith.
    raise PathRefused(path)


class RouteTable:
    def __init__(
        self,
        routes: dict[str, str],
        *,
        classes: dict[str, RouteClassConfig],
        class_rules: list[ClassRule],
        default_timeout_s: float,
    ) -> None:
        self._routes: dict[str, Route] = {}
        for prefix, upstream in routes.items():
            strip = API_PREFIX if prefix.startswith(API_PREFIX + "/") else ""
            self._routes[prefix] = Route(prefix, upstream, strip, prefix)
        self._max_depth = max((p.count("/") for p in self._routes), default=0)
        self.classes = {
            name: RouteClass(
                name,
                config.rate_ip,
                config.rate_user,
                config.max_body_bytes,
                config.timeout_s or default_timeout_s,
            )
            for name, config in classes.items()
        }
        self._default_class = self.classes["default"]
        self._rules = [
            (
                rule.pattern.split("*", 1)[0],
                _glob_to_regex(rule.pattern),
                frozenset(m.upper() for m in rule.methods) if rule.methods else None,
                self.classes[rule.route_class],
            )
            for rule in class_rules
        ]

    @property
    def routes(self) -> list[Route]:
        return list(self._routes.values())

    def route_for(self, path: str) -> Route | None:
        """Longest whole-segment prefix match."""
        candidate = path
        # Walk up the path one segment at a time: /a/b/c, /a/b, /a.
        while candidate:
            if candidate.count("/") <= self._max_depth:
                route = self._routes.get(candidate)
                if route is not None:
                    return route
            cut = candidate.rfind("/")
            if cut <= 0:
                return None
            candidate = candidate[:cut]
        return None

    def class_for(self, method: str, path: str) -> RouteClass:
        for literal, pattern, methods, route_class in self._rules:
            if path.startswith(literal) and (methods is None or method in methods) and pattern.match(path):
                return route_class
        return self._default_class

    def resolve(self, method: str, path: str, raw_path: bytes | None = None) -> Match:
        """Route ``path`` (already percent-decoded once by the server) or raise PathRefused/NoRoute."""
        check_path(path)
        route = self.route_for(path)
        if route is None:
            raise NoRoute(path)
        forwarded = path[len(route.strip) :] or "/"
        if raw_path is not None and b"%" not in raw_path and raw_path.decode("latin-1") == path:
            target = raw_path[len(route.strip) :] or b"/"
        else:
            # Re-encode the decoded path so the upstream decodes exactly what was checked here.
            target = quote(forwarded, safe=_PATH_SAFE).encode("ascii")
        return Match(route, self.class_for(method, path), target)
