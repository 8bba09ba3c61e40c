"""Shop access tokens: token exchange for expiring offline tokens, refresh with rotation, static custom-app tokens.

Tokens are stored encrypted (kinnekt.crypto). Reading and writing them uses a short transaction of its own
(never the caller's unit of work), so a rotated refresh token is saved even when the caller rolls back, and
each new pair (access + refresh + both expiries) is written in one UPDATE. Refreshes of one shop are
serialised by a per-shop lock: a Redis lock when REDIS_URL is set (web and workers share it), else a
process lock. Refresh tokens rotate on every use, so two unserialised refreshes would race.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import httpx
from flask import current_app
from sqlalchemy import select, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm.attributes import set_committed_value

from kinnekt import db, defaults
from kinnekt.crypto import TokenCipher
from kinnekt.db import utcnow
from kinnekt.models import Shop
from kinnekt.shopify import endpoints
from kinnekt.shopify.errors import ShopifyError

log = logging.getLogger(__name__)

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
OFFLINE_TOKEN_TYPE = "urn:shopify:params:oauth:token-type:offline-access-token"

EXPIRING = "expiring"
"""token_kind of a Shopify-issued offline token (expiring and refreshable, or legacy non-expiring)."""
STATIC = "static"
"""token_kind of a custom app's Admin API access token, given by the merchant; it never expires."""

TOKEN_COLUMNS = ("token_kind", "access_token_enc", "access_token_expires_at", "refresh_token_enc",
                 "refresh_token_expires_at", "scopes", "needs_reauth")


class TokenError(ShopifyError):
    """A token could not be obtained (a ShopifyError, so callers can catch every Shopify failure at once)."""


class InvalidSessionToken(TokenError):
    """Shopify refused the session (ID) token in a token exchange (`invalid_subject_token`): get a fresh one."""


class GrantRejected(TokenError):
    """The token endpoint refused the grant (revoked or used refresh token, bad code, wrong client)."""

    def __init__(self, error: str, description: str = "", status: int = 400):
        super().__init__(f"{error}: {description}" if description else error)
        self.error, self.description, self.status = error, description, status


class TokenEndpointUnavailable(TokenError):
    """The token endpoint could not be reached or failed on its side; trying again later may work."""


class NotConnected(TokenError):
    """The shop has no usable token: the merchant must open the app (token exchange) or reinstall it."""


class AccessRevoked(NotConnected):
    """Shopify refused the shop's tokens just now: the refresh token (`invalid_grant`), or an access token
    that cannot be refreshed. After an uninstall Shopify answers so; the merchant must install again."""


@dataclass(frozen=True)
class TokenSet:
    """What the token endpoint granted; expiries are None for a token that does not expire."""

    access_token: str
    scope: str = ""
    expires_at: dt.datetime | None = None
    refresh_token: str | None = None
    refresh_token_expires_at: dt.datetime | None = None


# --------------------------------------------------------------------------------------------------------------
# The token endpoint

def _post_token(shop_domain: str, body: dict, *, attempts: int = 3) -> TokenSet:
    """POST to the shop's token endpoint (JSON in, JSON out) and parse the grant; retries 5xx/network errors."""
    url = endpoints.token_url(shop_domain)
    config = current_app.config
    payload = {"client_id": config["SHOPIFY_API_KEY"], "client_secret": config["SHOPIFY_API_SECRET"], **body}
    timeout = httpx.Timeout(defaults.TOKEN_ENDPOINT_TIMEOUT_SECONDS, connect=defaults.SHOPIFY_CONNECT_TIMEOUT_SECONDS)
    last_problem = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(defaults.SHOPIFY_RETRY_BASE_SECONDS * 2 ** attempt, defaults.SHOPIFY_RETRY_MAX_SECONDS))
        sent_at = utcnow()
        try:
            response = httpx.post(url, json=payload, timeout=timeout,
                                  headers={"Accept": "application/json", "Content-Type": "application/json"})
        except httpx.TransportError as exc:
            last_problem = f"{type(exc).__name__}: {exc}"
            continue
        if response.status_code >= 500 or response.status_code == 429:
            last_problem = f"HTTP {response.status_code}"
            continue
        data = _json(response)
        if response.status_code != 200:
            error = str(data.get("error") or f"http_{response.status_code}")
            description = str(data.get("error_description") or "")
            if error == "invalid_subject_token":
                raise InvalidSessionToken(description or "the session token was refused")
            raise GrantRejected(error, description, response.status_code)
        if not data.get("access_token"):
            raise GrantRejected("invalid_response", "no access_token in the token endpoint's reply", 200)
        return TokenSet(
            access_token=str(data["access_token"]),
            scope=str(data.get("scope") or ""),
            expires_at=_after(sent_at, data.get("expires_in")),
            refresh_token=data.get("refresh_token") or None,
            refresh_token_expires_at=_after(sent_at, data.get("refresh_token_expires_in")),
        )
    raise TokenEndpointUnavailable(f"Shopify's token endpoint for {shop_domain} failed: {last_problem}")


def _json(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _after(start: dt.datetime, seconds) -> dt.datetime | None:
    # Counted from when the request left, so a slow reply errs towards refreshing early.
    if seconds in (None, ""):
        return None
    return start + dt.timedelta(seconds=int(seconds))


def exchange_session_token(shop_domain: str, id_token: str) -> TokenSet:
    """Exchange an App Bridge session (ID) token for an expiring offline access token and its refresh token.

    Runs inside a page load, so it tries twice at most; the next page load tries again.
    """
    return _post_token(shop_domain, {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": id_token,
        "subject_token_type": ID_TOKEN_TYPE,
        "requested_token_type": OFFLINE_TOKEN_TYPE,
        "expiring": "1",
    }, attempts=2)


def exchange_authorization_code(shop_domain: str, code: str) -> TokenSet:
    """Exchange an authorization code (the non-embedded install fallback) for an expiring offline token."""
    return _post_token(shop_domain, {"code": code, "expiring": "1"})


def refresh_tokens(shop_domain: str, refresh_token: str) -> TokenSet:
    """Use a refresh token; Shopify answers with a new access token AND a new refresh token (rotation)."""
    return _post_token(shop_domain, {"grant_type": "refresh_token", "refresh_token": refresh_token})


# --------------------------------------------------------------------------------------------------------------
# Storage

def cipher() -> TokenCipher:
    """The cipher for tokens at rest, keyed by TOKEN_ENCRYPTION_KEY."""
    return TokenCipher(current_app.config["TOKEN_ENCRYPTION_KEY"])


@contextmanager
def _token_session() -> Iterator[OrmSession]:
    """A session of its own: token reads see other processes' commits, token writes commit on their own."""
    session = OrmSession(bind=db.engine(), expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()


def _write(shop: Shop, values: dict) -> None:
    with _token_session() as session:
        session.execute(update(Shop).where(Shop.id == shop.id).values(**values))
        session.commit()
    for key, value in values.items():
        # Mirror on the caller's object without marking it dirty (the row is already written).
        set_committed_value(shop, key, value)


def save_tokens(shop: Shop, tokens: TokenSet, *, kind: str = EXPIRING) -> None:
    """Store a granted pair (encrypted) in one UPDATE, and clear needs_reauth."""
    box = cipher()
    _write(shop, {
        "token_kind": kind,
        "access_token_enc": box.encrypt(tokens.access_token),
        "access_token_expires_at": tokens.expires_at,
        "refresh_token_enc": box.encrypt(tokens.refresh_token),
        "refresh_token_expires_at": tokens.refresh_token_expires_at,
        "scopes": tokens.scope or "",
        "needs_reauth": False,
    })


def save_static_token(shop: Shop, access_token: str, scope: str = "") -> None:
    """Store a custom app's Admin API access token (it never expires and cannot be refreshed)."""
    save_tokens(shop, TokenSet(access_token=access_token, scope=scope), kind=STATIC)


def drop_tokens(shop: Shop) -> None:
    """Forget the shop's tokens (uninstall: Shopify has already revoked them)."""
    _write(shop, {"access_token_enc": None, "access_token_expires_at": None, "refresh_token_enc": None,
                  "refresh_token_expires_at": None})


def mark_needs_reauth(shop: Shop, reason: str = "") -> None:
    """Flag the shop: no background call until the merchant's next page load exchanges a new token."""
    log.warning("shop %s needs re-authorisation: %s", shop.domain, reason or "token refused")
    _write(shop, {"needs_reauth": True})


@dataclass
class _Stored:
    kind: str
    access_token: str | None
    expires_at: dt.datetime | None
    refresh_token: str | None
    refresh_expires_at: dt.datetime | None
    needs_reauth: bool
    uninstalled: bool


def _read(shop: Shop) -> _Stored:
    with _token_session() as session:
        row = session.execute(
            select(Shop.token_kind, Shop.access_token_enc, Shop.access_token_expires_at, Shop.refresh_token_enc,
                   Shop.refresh_token_expires_at, Shop.needs_reauth, Shop.uninstalled_at)
            .where(Shop.id == shop.id)).one_or_none()
    if row is None:
        raise NotConnected(f"shop {shop.domain} is not registered")
    box = cipher()
    try:
        access, refresh = box.decrypt(row.access_token_enc), box.decrypt(row.refresh_token_enc)
    except ValueError:
        # TOKEN_ENCRYPTION_KEY changed: the stored tokens are unreadable; the next page load exchanges anew.
        mark_needs_reauth(shop, "stored tokens cannot be decrypted with TOKEN_ENCRYPTION_KEY")
        raise NotConnected(f"tokens of {shop.domain} cannot be decrypted") from None
    return _Stored(row.token_kind, access, row.access_token_expires_at, refresh, row.refresh_token_expires_at,
                   row.needs_reauth, row.uninstalled_at is not None)


# --------------------------------------------------------------------------------------------------------------
# Locks

_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()
_redis_clients: dict[tuple[int, str], object] = {}


def _redis(url: str):
    from redis import Redis
    key = (os.getpid(), url)
    if key not in _redis_clients:
        _redis_clients[key] = Redis.from_url(url)
    return _redis_clients[key]


@contextmanager
def shop_lock(shop_domain: str) -> Iterator[None]:
    """Hold the per-shop token lock (Redis when REDIS_URL is set, else this process's lock)."""
    url = current_app.config.get("REDIS_URL")
    wait = defaults.TOKEN_LOCK_TIMEOUT_SECONDS
    if url:
        from redis.exceptions import LockError
        lock = _redis(url).lock(f"kinnekt:shop-token:{shop_domain}", timeout=wait, blocking_timeout=wait)
        if not lock.acquire():
            raise TokenEndpointUnavailable(f"timed out waiting for the token lock of {shop_domain}")
        try:
            yield
        finally:
            try:
                lock.release()
            except LockError:  # held past its timeout and taken over: nothing left to release
                pass
    else:
        with _process_locks_guard:
            lock = _process_locks.setdefault(shop_domain, threading.Lock())
        if not lock.acquire(timeout=wait):
            raise TokenEndpointUnavailable(f"timed out waiting for the token lock of {shop_domain}")
        try:
            yield
        finally:
            lock.release()


# --------------------------------------------------------------------------------------------------------------
# Getting a usable token

def _usable(stored: _Stored, now: dt.datetime, ahead: float) -> bool:
    if not stored.access_token:
        return False
    if stored.expires_at is None:
        return True
    return (stored.expires_at - now).total_seconds() > ahead


def _check_connected(shop: Shop, stored: _Stored, despite_reauth: bool = False) -> None:
    if stored.uninstalled:
        raise NotConnected(f"Kinnekt is not installed on {shop.domain}")
    if stored.needs_reauth and not despite_reauth:
        raise NotConnected(f"{shop.domain} needs the merchant to open Kinnekt again (token refused)")
    if not stored.access_token:
        raise NotConnected(f"no access token for {shop.domain} yet")


def access_token(shop: Shop, *, despite_reauth: bool = False) -> str:
    """A valid Admin API token for the shop, refreshed (under the shop's lock) when it expires soon.

    `despite_reauth` tries the stored tokens of a shop flagged needs_reauth as well.
    """
    ahead = defaults.TOKEN_REFRESH_AHEAD_SECONDS
    stored = _read(shop)
    _check_connected(shop, stored, despite_reauth)
    if _usable(stored, utcnow(), ahead):
        return stored.access_token
    with shop_lock(shop.domain):
        stored = _read(shop)  # another process may have refreshed while we waited
        _check_connected(shop, stored, despite_reauth)
        if _usable(stored, utcnow(), ahead):
            return stored.access_token
        return _refresh_locked(shop, stored, still_valid_ok=True)


def force_refresh(shop: Shop, rejected_token: str, *, despite_reauth: bool = False) -> str:
    """After Shopify answered 401 to `rejected_token`: refresh once (unless another caller already did)."""
    with shop_lock(shop.domain):
        stored = _read(shop)
        _check_connected(shop, stored, despite_reauth)
        if stored.access_token != rejected_token and _usable(stored, utcnow(), 0):
            return stored.access_token
        return _refresh_locked(shop, stored, still_valid_ok=False)


def _refresh_locked(shop: Shop, stored: _Stored, *, still_valid_ok: bool) -> str:
    now = utcnow()
    if stored.kind == STATIC or not stored.refresh_token:
        mark_needs_reauth(shop, "the token was refused and cannot be refreshed")
        # After a 401 Shopify refused the token itself; ahead of expiry it is only our records that say so.
        refused = NotConnected if still_valid_ok else AccessRevoked
        raise refused(f"the access token of {shop.domain} was refused and cannot be refreshed")
    if stored.refresh_expires_at is not None and stored.refresh_expires_at <= now:
        mark_needs_reauth(shop, "the refresh token expired")
        raise NotConnected(f"the refresh token of {shop.domain} expired")
    try:
        granted = refresh_tokens(shop.domain, stored.refresh_token)
    except GrantRejected as exc:
        mark_needs_reauth(shop, f"refresh refused: {exc}")
        refused = AccessRevoked if exc.error == "invalid_grant" else NotConnected
        raise refused(f"Shopify refused to refresh the token of {shop.domain}: {exc.error}") from exc
    except TokenEndpointUnavailable:
        # A refresh ahead of expiry may fail without harm while the current token still works.
        if still_valid_ok and _usable(stored, now, 0):
            log.warning("token refresh for %s failed; the current token is still valid", shop.domain)
            return stored.access_token
        raise
    save_tokens(shop, granted)
    log.info("refreshed the access token of %s", shop.domain)
    return granted.access_token
