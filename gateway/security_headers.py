"""Security headers on every answer: nosniff, no framing, referrer policy, CSP, HSTS over HTTPS.

API answers get a CSP that allows nothing (they are data, never documents); the SPA gets its own
policy; the Swagger UI page gets the one it needs for its CDN assets. Headers an upstream set
itself are kept.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    "connect-src 'self'; frame-ancestors 'none'; object-src 'none'; base-uri 'self'"
)
DOCS_PATH = "/api/docs"


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, spa_csp: str, hsts_max_age_s: int) -> None:
        self.app = app
        common = {
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
        }
        self._api = _encode({**common, "Content-Security-Policy": API_CSP})
        self._spa = _encode({**common, "Content-Security-Policy": spa_csp})
        self._docs = _encode({**common, "Content-Security-Policy": DOCS_CSP})
        self._hsts = _encode({"Strict-Transport-Security": f"max-age={hsts_max_age_s}; includeSubDomains"})

    def _headers_for(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        path: str = scope["path"]
        if (
            path.startswith("/api/")
            or path.startswith("/.well-known/")
            or path in ("/healthz", "/readyz", "/metrics")
        ):
            chosen = self._docs if path == DOCS_PATH else self._api
        else:
            chosen = self._spa
        if scope.get("scheme") == "https":
            return chosen + self._hsts
        return chosen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers_for(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
