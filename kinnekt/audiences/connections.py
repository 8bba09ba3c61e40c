"""Connecting a shop's ad accounts: the OAuth round trip, the account chosen, the email setting, the segments
linked to audiences, and disconnecting.

The OAuth flow leaves the embedded admin (the platforms' login pages refuse to be framed), so it is bound three
ways before a token is saved for a shop:

1. the Settings card (behind the session token) hands out a *start link* signed for its shop and platform, good
   for AUDIENCE_OAUTH_MAX_AGE_SECONDS;
2. the start page, opened top-level, sets an HttpOnly, SameSite=Lax cookie holding a fresh nonce (signed) and
   sends the merchant to the platform with `state` = the shop, platform and nonce, signed;
3. the callback accepts only a state whose signature, age and platform hold *and* whose nonce is the cookie's:
   a state made up, altered, too old, for another platform or shop, or replayed from another browser is refused,
   and nothing is saved.

Tokens are stored encrypted with TOKEN_ENCRYPTION_KEY (kinnekt.crypto), as shop tokens are.
"""
from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.audiences import meta
from kinnekt.crypto import TokenCipher
from kinnekt.db import utcnow
from kinnekt.models import AdConnection, AudienceLink, Segment
from kinnekt.models.audience import AdPlatform, LinkStatus

PLATFORM_LABELS = {AdPlatform.META: "Meta (Facebook, Instagram)", AdPlatform.GOOGLE: "Google Ads"}


class OAuthRefused(ValueError):
    """An OAuth start or callback failed a check; the message says which, for the merchant."""


class AudienceInputError(ValueError):
    """A merchant's choice cannot be saved (unknown account, segment already linked…); the message says why."""


@dataclass(frozen=True)
class Granted:
    """What a finished OAuth flow gave: tokens and the ad accounts the merchant may choose from."""

    access_token: str
    expires_at: dt.datetime | None
    refresh_token: str | None
    accounts: list[dict]


# ---------------------------------------------------------------------------------------------- platforms

def configured(platform: str) -> bool:
    """True when the app has credentials for this platform (its environment variables are set)."""
    if platform == AdPlatform.META:
        return meta.Settings.from_app().configured
    if platform == AdPlatform.GOOGLE:
        from kinnekt.audiences import google
        return google.Settings.from_app().configured
    return False


def authorize_url(platform: str, *, redirect_uri: str, state: str) -> str:
    """The platform's login and consent page, coming back to `redirect_uri` with `state`."""
    if platform == AdPlatform.META:
        return meta.dialog_url(meta.Settings.from_app(), redirect_uri=redirect_uri, state=state)
    from kinnekt.audiences import google
    return google.authorize_url(google.Settings.from_app(), redirect_uri=redirect_uri, state=state)


def finish_oauth(platform: str, code: str, *, redirect_uri: str) -> Granted:
    """Exchange the callback's code for tokens and list the ad accounts (raises PlatformError)."""
    if platform == AdPlatform.META:
        settings = meta.Settings.from_app()
        short = meta.exchange_code(settings, code, redirect_uri=redirect_uri)
        grant = meta.long_lived(settings, short.access_token)
        return Granted(grant.access_token, grant.expires_at, None, meta.ad_accounts(settings, grant.access_token))
    from kinnekt.audiences import google
    settings = google.Settings.from_app()
    grant = google.exchange_code(settings, code, redirect_uri=redirect_uri)
    return Granted(grant.access_token, grant.expires_at, grant.refresh_token,
                   google.accessible_customers(settings, grant.access_token))


# ---------------------------------------------------------------------------------------------- OAuth state

def _serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=salt)


def start_token(shop_id: int, platform: str) -> str:
    """The signed start link parameter for this shop and platform (handed out behind the session token)."""
    return _serializer("kinnekt-ads-start").dumps({"s": int(shop_id), "p": str(platform)})


def _loads(salt: str, value) -> dict:
    try:
        found = _serializer(salt).loads(str(value or ""), max_age=defaults.AUDIENCE_OAUTH_MAX_AGE_SECONDS)
    except BadSignature:  # also SignatureExpired
        found = None
    if not isinstance(found, dict) or not isinstance(found.get("s"), int) or not isinstance(found.get("p"), str):
        raise OAuthRefused("This connect link is not valid or has expired: start again from Kinnekt's Settings.")
    return found


def read_start_token(value, platform: str) -> int:
    """The shop a start link was made for (OAuthRefused when altered, expired, or for another platform)."""
    found = _loads("kinnekt-ads-start", value)
    if found["p"] != platform:
        raise OAuthRefused("This connect link is for another platform: start again from Kinnekt's Settings.")
    return found["s"]


def new_state(shop_id: int, platform: str) -> tuple[str, str]:
    """A fresh (state, cookie) pair for one login: the same nonce, signed for the platform and for the cookie."""
    claims = {"s": int(shop_id), "p": str(platform), "n": secrets.token_urlsafe(24)}
    return _serializer("kinnekt-ads-state").dumps(claims), _serializer("kinnekt-ads-cookie").dumps(claims)


def check_state(state, cookie, platform: str) -> int:
    """The shop a callback is for, once its state is genuine, fresh, for this platform and this browser's."""
    claims = _loads("kinnekt-ads-state", state)
    try:
        remembered = _loads("kinnekt-ads-cookie", cookie)
    except OAuthRefused:
        raise OAuthRefused("This login was not started in this browser (or too long ago): "
                           "start again from Kinnekt's Settings.") from None
    if claims["p"] != platform or remembered != claims or not secrets.compare_digest(
            str(claims.get("n") or ""), str(remembered.get("n") or "")):
        raise OAuthRefused("This login does not match the one started in this browser: "
                           "start again from Kinnekt's Settings.")
    return claims["s"]


# ---------------------------------------------------------------------------------------------- tokens

def cipher() -> TokenCipher:
    """The cipher of tokens at rest (TOKEN_ENCRYPTION_KEY), as for shop tokens."""
    return TokenCipher(current_app.config["TOKEN_ENCRYPTION_KEY"])


def access_token(connection: AdConnection) -> str | None:
    """The connection's access token, decrypted."""
    return cipher().decrypt(connection.access_token_enc)


def refresh_token(connection: AdConnection) -> str | None:
    """The connection's refresh token (Google), decrypted."""
    return cipher().decrypt(connection.refresh_token_enc)


def save_grant(session: OrmSession, shop_id: int, platform: str, granted: Granted) -> AdConnection:
    """Store what an OAuth flow granted for the shop (a new connection, or the same one reconnected); commits.

    The account chosen before stays chosen while the new grant still reaches it."""
    connection = session.scalar(select(AdConnection).where(AdConnection.shop_id == shop_id,
                                                           AdConnection.platform == platform))
    if connection is None:
        connection = AdConnection(shop_id=shop_id, platform=platform)
        session.add(connection)
    box = cipher()
    connection.access_token_enc = box.encrypt(granted.access_token)
    connection.access_token_expires_at = granted.expires_at
    if granted.refresh_token or connection.refresh_token_enc is None:
        connection.refresh_token_enc = box.encrypt(granted.refresh_token)
    connection.accounts = granted.accounts
    if connection.account_id and connection.account_id not in {a["id"] for a in granted.accounts}:
        connection.account_id = connection.account_name = None
    if not connection.account_id and len(granted.accounts) == 1:
        connection.account_id, connection.account_name = granted.accounts[0]["id"], granted.accounts[0]["name"]
    connection.error = None
    connection.connected_at = utcnow()
    session.commit()
    return connection


def links_to_resume(session: OrmSession, connection: AdConnection) -> list[int]:
    """The connection's links that failed (a refused token, most likely): synced again once it is reconnected."""
    return list(session.scalars(select(AudienceLink.id).where(AudienceLink.connection_id == connection.id,
                                                             AudienceLink.status == LinkStatus.FAILED)))


# ---------------------------------------------------------------------------------------------- choices

def choose_account(session: OrmSession, connection: AdConnection, account_id) -> None:
    """Use this ad account (one the grant listed) for the connection's audiences; commits.

    Changing the account while segments are linked is refused: their audiences live in the old account."""
    chosen = next((a for a in connection.accounts or () if a.get("id") == str(account_id or "").strip()), None)
    if chosen is None:
        raise AudienceInputError("Choose one of the ad accounts listed.")
    if connection.account_id and connection.account_id != chosen["id"] and session.scalar(
            select(AudienceLink.id).where(AudienceLink.connection_id == connection.id).limit(1)):
        raise AudienceInputError("Remove the synced segments first: their audiences live in the current account.")
    connection.account_id, connection.account_name = chosen["id"], chosen["name"]
    session.commit()


def set_allow_emails(session: OrmSession, connection: AdConnection, allow: bool) -> None:
    """Whether emails are sent too (else phones only); the next sync resends who changed; commits."""
    connection.allow_emails = bool(allow)
    session.commit()


def add_link(session: OrmSession, connection: AdConnection, segment: Segment) -> AudienceLink:
    """Keep this segment in sync with a new audience of the connection's account; commits. The audience itself is
    created by the first sync (a job), never inside a request."""
    if segment.shop_id != connection.shop_id:
        raise AudienceInputError("No such segment.")
    if not connection.account_id:
        raise AudienceInputError("Choose an ad account first.")
    link = AudienceLink(shop_id=connection.shop_id, connection_id=connection.id, segment_id=segment.id,
                        segment_name=segment.name[:255], audience_name=f"Kinnekt: {segment.name}"[:255],
                        status=LinkStatus.ACTIVE)
    session.add(link)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise AudienceInputError("This segment is already synced with this account.") from None
    return link


def remove_link(session: OrmSession, link: AudienceLink) -> None:
    """Stop syncing this segment: the link and its record of what was sent go (the audience stays at the
    platform, as it was); commits. A sync of it still queued finds nothing and ends."""
    session.delete(link)
    session.commit()


def disconnect(session: OrmSession, connection: AdConnection) -> None:
    """Forget the connection: tokens, links and what they sent (by cascade); commits. Queued syncs end cleanly."""
    session.delete(connection)
    session.commit()
