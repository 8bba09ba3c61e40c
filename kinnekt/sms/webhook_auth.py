"""Verifying Vonage's signed Messages API webhooks: the HS256 JWT in `Authorization: Bearer`.

Vonage signs each inbound and status webhook with the account's signature secret (HS256). The token's
`payload_hash` claim is the hex sha256 of the exact request body, so a body changed on the way no longer
matches; its `iat` must lie within `max_age` seconds of now (either side, for clock drift), and its `jti` is
recorded so that the same token is taken only once (a replay within the window is refused). PyJWT checks
the signature; the SDK's own `verify_signature` checks only that, hence this module.
"""
from __future__ import annotations

import hashlib
import hmac
import time

import jwt

MAX_TOKEN_BYTES = 4096
"""A longer Authorization header is refused unread."""


class WebhookAuthError(ValueError):
    """The request is not signed by Vonage with our secret (or is a replay); the message says which check failed."""


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; raises WebhookAuthError when there is none."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise WebhookAuthError("missing bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise WebhookAuthError("token too long")
    return token


def verify(authorization: str | None, body: bytes, secret: str, *, now: float | None = None, max_age: float = 300,
           seen_jti=None) -> dict:
    """The token's claims when `authorization` carries a JWT signed with `secret` (HS256) over this `body`, issued
    within `max_age` seconds of now and not seen before; raises WebhookAuthError otherwise.

    `seen_jti(jti) -> bool` records a token id and answers True when it was already used.
    """
    token = bearer_token(authorization)
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"],
                            options={"verify_iat": False, "verify_exp": False, "verify_nbf": False})
    except jwt.InvalidSignatureError:
        raise WebhookAuthError("signature does not match") from None
    except jwt.PyJWTError as exc:
        raise WebhookAuthError(f"unreadable token ({type(exc).__name__})") from None
    expected = hashlib.sha256(body).hexdigest()
    given = claims.get("payload_hash")
    if not isinstance(given, str) or not hmac.compare_digest(given.lower().encode(), expected.encode()):
        raise WebhookAuthError("payload_hash does not match the body")
    issued = claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, (int, float)):
        raise WebhookAuthError("missing or bad iat")
    now = time.time() if now is None else now
    if not abs(now - issued) <= max_age:
        raise WebhookAuthError("iat outside the allowed window")
    if seen_jti is not None:
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti.strip():
            raise WebhookAuthError("missing jti")
        if seen_jti(jti.strip()):
            raise WebhookAuthError("token already used")
    return claims


def sign(body: bytes, secret: str, *, issued: float | None = None, jti: str | None = None, **claims) -> str:
    """A token as Vonage makes one for `body` (the demo's and the tests' way to post a signed webhook)."""
    import uuid
    payload = {"iat": int(time.time() if issued is None else issued), "jti": jti or str(uuid.uuid4()),
               "iss": "Vonage", "payload_hash": hashlib.sha256(body).hexdigest(), **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def redis_nonce_store(redis, ttl_seconds: int, prefix: str = "kinnekt:sms:nonce:"):
    """A seen_jti function backed by Redis (SET NX with expiry); its `forget(jti)` takes a token id back."""
    def seen(nonce: str) -> bool:
        return not redis.set(prefix + nonce, b"1", nx=True, ex=int(ttl_seconds))

    seen.forget = lambda nonce: redis.delete(prefix + nonce)
    return seen


def db_nonce_store(session):
    """A seen_jti function backed by the signature_nonces table (unique nonce), committed at once; its
    `forget(jti)` takes a token id back."""
    from sqlalchemy import delete
    from sqlalchemy.exc import IntegrityError

    from kinnekt.models import SignatureNonce

    def seen(nonce: str) -> bool:
        try:
            with session.begin_nested():
                session.add(SignatureNonce(nonce=nonce[:128]))
                session.flush()
        except IntegrityError:
            return True
        session.commit()
        return False

    def forget(nonce: str) -> None:
        session.rollback()
        session.execute(delete(SignatureNonce).where(SignatureNonce.nonce == nonce[:128]))
        session.commit()

    seen.forget = forget
    return seen
