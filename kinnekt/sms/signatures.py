"""Our own verifier of Vonage's signed webhooks: md5hash and the HMAC modes, timestamp window, nonce reuse.

Vonage signs the request's parameters: every one except `sig`, sorted by name, each value with "&"
and "=" replaced by "_", joined as "&name=value". "md5hash" (the dashboard default) is
md5(joined + secret); the HMAC modes are HMAC(secret, joined) with md5, sha1, sha256 or sha512.
Hex digests are compared without regard to case (some of Vonage's SDKs upper-case them).
The SDK's own check_signature cannot do md5hash, mutates its input and ignores the timestamp,
hence this module.
"""
from __future__ import annotations

import hashlib
import hmac
import time
from typing import Mapping

METHODS = ("md5hash", "md5", "sha1", "sha256", "sha512")


class SignatureError(ValueError):
    """The request is not signed by Vonage with our secret (or is a replay); `reason` says which check failed."""


def signing_string(params: Mapping[str, object]) -> str:
    """The text Vonage signs: sorted "&name=value" pairs without `sig`, "&" and "=" in values made "_"."""
    parts = []
    for name in sorted(k for k in params if k != "sig"):
        value = "" if params[name] is None else str(params[name])
        parts.append(f"&{name}={value.replace('&', '_').replace('=', '_')}")
    return "".join(parts)


def sign(params: Mapping[str, object], secret: str, method: str = "md5hash") -> str:
    """The hex signature of `params` by `method` (lower case)."""
    if method not in METHODS:
        raise ValueError(f"unknown signature method {method!r}; use one of {', '.join(METHODS)}")
    text = signing_string(params).encode("utf-8")
    if method == "md5hash":
        return hashlib.md5(text + secret.encode("utf-8")).hexdigest()
    return hmac.new(secret.encode("utf-8"), text, getattr(hashlib, method)).hexdigest()


def verify(params: Mapping[str, object], secret: str, method: str = "md5hash", *, now: float | None = None,
           max_age: float = 300, seen_nonce=None) -> None:
    """Raise SignatureError unless `params` carry a valid `sig`, a fresh `timestamp` and an unused `nonce`.

    `seen_nonce(nonce) -> bool` records a nonce and answers True when it was already used.
    """
    given = str(params.get("sig") or "").strip().lower()
    if not given:
        raise SignatureError("missing sig")
    expected = sign(params, secret, method)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise SignatureError("signature does not match")
    try:
        stamp = float(str(params.get("timestamp")))
    except ValueError:
        raise SignatureError("missing or bad timestamp") from None
    now = time.time() if now is None else now
    if not abs(now - stamp) <= max_age:
        raise SignatureError("timestamp outside the allowed window")
    nonce = str(params.get("nonce") or "").strip()
    if seen_nonce is not None:
        if not nonce:
            raise SignatureError("missing nonce")
        if seen_nonce(nonce):
            raise SignatureError("nonce already used")


def redis_nonce_store(redis, ttl_seconds: int, prefix: str = "kinnekt:sms:nonce:"):
    """A seen_nonce function backed by Redis (SET NX with expiry)."""
    def seen(nonce: str) -> bool:
        return not redis.set(prefix + nonce, b"1", nx=True, ex=int(ttl_seconds))
    return seen


def db_nonce_store(session):
    """A seen_nonce function backed by the signature_nonces table (unique nonce), committed at once."""
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
    return seen
