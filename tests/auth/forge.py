"""Bad access tokens, each built from a valid one: the ways an attacker (or a bug) gets it wrong.

Shared with the gateway tests: every token here must be refused with 401 wherever it is checked.

    tokens = bad_tokens(valid_access_token, jwks=published_jwks, private_key=real_signing_key,
                        refresh_token=an_opaque_refresh_token)
    for name, token in tokens.items(): ...   # each must get 401

The real signing key of a running auth app is ``(await app.state.auth.keyring.signing_key()).private_key``
(or, from its database, ``services.auth.keys.load_published_keys(session)``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, claims, signature segment) of a compact JWS, without verifying anything."""
    header_b64, payload_b64, signature = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    claims = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    return header, claims, signature


def resign(token: str, private_key: Any, *, claims: dict[str, Any] | None = None, **changes: Any) -> str:
    """The same token re-signed (RS256, same kid) after replacing claims; None values drop a claim."""
    header, original, _ = parts(token)
    body = dict(claims if claims is not None else original)
    for name, value in changes.items():
        if value is None:
            body.pop(name, None)
        else:
            body[name] = value
    return jwt.encode(body, private_key, algorithm="RS256", headers={"kid": header["kid"]})


def expired(token: str, private_key: Any) -> str:
    """Correctly signed, but expired ten minutes ago (beyond any clock leeway)."""
    now = int(time.time())
    return resign(token, private_key, iat=now - 2400, exp=now - 600)


def tampered_payload(token: str) -> str:
    """The original signature over a payload whose role was changed to admin."""
    header, claims, signature = parts(token)
    claims["role"] = "admin"
    return f"{b64url_json(header)}.{b64url_json(claims)}.{signature}"


def alg_none(token: str) -> str:
    """``alg: none`` with an empty signature (the classic "unsigned token" attack)."""
    header, claims, _ = parts(token)
    header = {**header, "alg": "none"}
    claims = {**claims, "role": "admin"}
    return f"{b64url_json(header)}.{b64url_json(claims)}."


def public_key_pem(jwks: dict[str, Any], kid: str) -> bytes:
    jwk = next(key for key in jwks["keys"] if key["kid"] == kid)
    public_key = RSAAlgorithm.from_jwk(jwk)
    assert isinstance(public_key, rsa.RSAPublicKey)
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hs256_with_public_key(token: str, jwks: dict[str, Any]) -> str:
    """HS256 "signed" with the published public key (PEM) as the HMAC secret: algorithm confusion.

    A verifier that takes ``alg`` from the header and hands the RSA key to HMAC would accept it.
    PyJWT refuses to create such a token, so the MAC is computed by hand.
    """
    header, claims, _ = parts(token)
    header = {**header, "alg": "HS256"}
    claims = {**claims, "role": "admin"}
    signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
    secret = public_key_pem(jwks, header["kid"])
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def unknown_kid(token: str) -> str:
    """Signed by a key the platform never published, under a kid nobody knows."""
    _, claims, _ = parts(token)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": f"forged-{uuid.uuid4().hex}"})


def wrong_audience(token: str, private_key: Any) -> str:
    """Genuinely signed, but for another audience."""
    return resign(token, private_key, aud="some-other-api")


def wrong_issuer(token: str, private_key: Any) -> str:
    return resign(token, private_key, iss="https://issuer.example")


def wrong_type(token: str, private_key: Any) -> str:
    """Genuinely signed with every claim right, except ``typ`` says it is a refresh token."""
    return resign(token, private_key, typ="refresh")


def without_jti(token: str, private_key: Any) -> str:
    """No ``jti``: it could never be revoked, so it is refused."""
    return resign(token, private_key, jti=None)


def bad_tokens(
    token: str, *, jwks: dict[str, Any], private_key: Any, refresh_token: str | None = None
) -> dict[str, str]:
    """Every bad variant of ``token`` by name; ``refresh_token`` (opaque) adds "refresh_as_access"."""
    forged = {
        "expired": expired(token, private_key),
        "tampered_payload": tampered_payload(token),
        "alg_none": alg_none(token),
        "hs256_public_key": hs256_with_public_key(token, jwks),
        "unknown_kid": unknown_kid(token),
        "wrong_audience": wrong_audience(token, private_key),
        "wrong_issuer": wrong_issuer(token, private_key),
        "typ_refresh": wrong_type(token, private_key),
        "without_jti": without_jti(token, private_key),
        "garbage": "not.a.jwt",
    }
    if refresh_token is not None:
        forged["refresh_as_access"] = refresh_token
    return forged


BAD_TOKEN_NAMES = (
    "expired",
    "tampered_payload",
    "alg_none",
    "hs256_public_key",
    "unknown_kid",
    "wrong_audience",
    "wrong_issuer",
    "typ_refresh",
    "without_jti",
    "garbage",
    "refresh_as_access",
)
