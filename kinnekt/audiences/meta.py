"""Meta (Facebook, Instagram) custom audiences through the Graph API: Facebook Login, ad accounts, audiences and
their users.

What each call follows (Graph API v25.0, META_API_VERSION):

- Login: "Manually Build a Login Flow" (https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow):
  the dialog `https://www.facebook.com/{version}/dialog/oauth?client_id&redirect_uri&state&scope&response_type=code`,
  then `GET /{version}/oauth/access_token?client_id&redirect_uri&client_secret&code` ->
  `{"access_token", "token_type", "expires_in"}`; then the long-lived token
  (https://developers.facebook.com/docs/facebook-login/guides/access-tokens/get-long-lived):
  `GET /oauth/access_token?grant_type=fb_exchange_token&client_id&client_secret&fb_exchange_token` (about 60 days).
- Every call carries `appsecret_proof`, the HMAC-SHA256 of the token under the app secret
  (https://developers.facebook.com/docs/graph-api/securing-requests), so a leaked token is useless without it.
- Ad accounts: `GET /me/adaccounts?fields=account_id,name` (paged, `paging.next`).
- Audience: `POST /act_{ad_account_id}/customaudiences` with `name`, `subtype=CUSTOM`, `description`,
  `customer_file_source=USER_PROVIDED_ONLY` (collected from the customers themselves) -> `{"id"}`
  (https://developers.facebook.com/docs/marketing-api/reference/ad-account/customaudiences).
- Users: `POST` / `DELETE /{custom_audience_id}/users` with `payload={"schema": [...], "data": [[...], ...]}`, at
  most 10,000 rows a request; the answer is `{"audience_id", "session_id", "num_received", "num_invalid_entries",
  "invalid_entry_samples"}` (https://developers.facebook.com/docs/marketing-api/reference/custom-audience/users).
  Schema keys `PHONE` and `EMAIL` with SHA-256 hex values; a multi-key row leaves a missing key as "".
  Normalisation (kinnekt.segments.exports): phone as digits with country code, no "+"; email trimmed, lowercase.
- Errors: `{"error": {"message", "type", "code", "error_subcode", "error_user_msg", "fbtrace_id"}}`; throttling is
  code 4 (app), 17 (user), 613, 80003 (custom audience calls of an ad account)
  (https://developers.facebook.com/docs/graph-api/overview/rate-limiting), with the wait in minutes in the
  `X-Business-Use-Case-Usage` header's `estimated_time_to_regain_access`; code 190 is a refused token.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
from flask import current_app

from kinnekt.audiences.platform import BatchResult, Grant, PlatformError, grant_from, send_json
from kinnekt.segments.exports import email_lower, phone_digits, sha256_hex

SCOPE = "ads_management"
"""The permission custom audiences need (create them, add and remove users)."""
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80003, 80004})
AUTH_CODES = frozenset({102, 190})
TRANSIENT_CODES = frozenset({1, 2})
MAX_ACCOUNT_PAGES = 10


@dataclass(frozen=True)
class Settings:
    """The app's Meta settings (META_* in the environment)."""

    app_id: str
    app_secret: str
    version: str
    graph_url: str
    dialog_url: str

    @classmethod
    def from_app(cls) -> "Settings":
        """The running app's settings."""
        config = current_app.config
        return cls(config.get("META_APP_ID", ""), config.get("META_APP_SECRET", ""),
                   config.get("META_API_VERSION", "v25.0"), config.get("META_GRAPH_URL", "").rstrip("/"),
                   config.get("META_DIALOG_URL", "").rstrip("/"))

    @property
    def configured(self) -> bool:
        """True when the app has a Meta app to log in with."""
        return bool(self.app_id and self.app_secret)


def dialog_url(settings: Settings, *, redirect_uri: str, state: str) -> str:
    """Facebook Login's dialog for this app, asking for ads_management, coming back to `redirect_uri`."""
    query = urlencode({"client_id": settings.app_id, "redirect_uri": redirect_uri, "state": state,
                       "scope": SCOPE, "response_type": "code"})
    return f"{settings.dialog_url}/{settings.version}/dialog/oauth?{query}"


def _error(response: httpx.Response) -> PlatformError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    code = error.get("code")
    message = str(error.get("error_user_msg") or error.get("message") or f"HTTP {response.status_code}")[:500]
    if code in RATE_LIMIT_CODES or response.status_code == 429:
        return PlatformError("rate_limited", f"Meta asks to slow down: {message}",
                             retry_after=_regain_seconds(response))
    if code in AUTH_CODES or response.status_code == 401:
        return PlatformError("auth", f"Meta refused the access token: {message}")
    if code in TRANSIENT_CODES or error.get("is_transient") or response.status_code >= 500:
        return PlatformError("transient", f"Meta had a temporary problem: {message}")
    return PlatformError("permanent", f"Meta refused the request: {message}")


def _regain_seconds(response: httpx.Response) -> float | None:
    """The longest `estimated_time_to_regain_access` (minutes) of the X-Business-Use-Case-Usage header, in s."""
    try:
        usage = json.loads(response.headers.get("X-Business-Use-Case-Usage") or "{}")
        minutes = [int(entry.get("estimated_time_to_regain_access") or 0)
                   for entries in usage.values() for entry in entries]
    except (ValueError, TypeError, AttributeError):
        return None
    return max(minutes) * 60.0 if minutes and max(minutes) > 0 else None


def exchange_code(settings: Settings, code: str, *, redirect_uri: str) -> Grant:
    """The short-lived user token for a login dialog's code."""
    return grant_from("Meta", _send("GET", f"{settings.graph_url}/{settings.version}/oauth/access_token", params={
        "client_id": settings.app_id, "redirect_uri": redirect_uri, "client_secret": settings.app_secret,
        "code": code}))


def long_lived(settings: Settings, token: str) -> Grant:
    """A long-lived (about 60 days) user token for a short-lived one."""
    return grant_from("Meta", _send("GET", f"{settings.graph_url}/{settings.version}/oauth/access_token", params={
        "grant_type": "fb_exchange_token", "client_id": settings.app_id, "client_secret": settings.app_secret,
        "fb_exchange_token": token}))


def appsecret_proof(settings: Settings, token: str) -> str:
    """HMAC-SHA256 of the access token under the app secret (hex), sent with every call."""
    return hmac.new(settings.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def ad_accounts(settings: Settings, token: str) -> list[dict]:
    """The ad accounts the user may manage: [{"id": digits (no "act_"), "name"}], sorted by name."""
    url = f"{settings.graph_url}/{settings.version}/me/adaccounts"
    params = {"fields": "account_id,name", "limit": 100, "access_token": token,
              "appsecret_proof": appsecret_proof(settings, token)}
    found: dict[str, str] = {}
    for _page in range(MAX_ACCOUNT_PAGES):
        body = _send("GET", url, params=params)
        for node in body.get("data") or []:
            if isinstance(node, dict) and str(node.get("account_id") or "").isdigit():
                found[str(node["account_id"])] = str(node.get("name") or node["account_id"])[:255]
        following = (body.get("paging") or {}).get("next") if isinstance(body.get("paging"), dict) else None
        if not following or not str(following).startswith(settings.graph_url + "/"):
            break
        url, params = str(following), None  # the next page's URL carries its own parameters
    return sorted(({"id": key, "name": name} for key, name in found.items()), key=lambda a: (a["name"], a["id"]))


class MetaAudiences:
    """One ad account's custom audiences (an AudienceClient)."""

    def __init__(self, settings: Settings, token: str, account_id: str):
        self.settings, self.token, self.account_id = settings, token, account_id
        self.requests = 0

    def identifiers(self, phone: str | None, email: str | None, allow_emails: bool) -> tuple[str | None, str | None]:
        """Meta's normal forms, SHA-256: phone digits with country code, email trimmed and lowercase."""
        digits = phone_digits(phone)
        address = email_lower(email) if allow_emails else None
        return (sha256_hex(digits) if digits else None, sha256_hex(address) if address else None)

    def _auth(self) -> dict:
        return {"access_token": self.token, "appsecret_proof": appsecret_proof(self.settings, self.token)}

    def _call(self, method: str, path: str, data: dict) -> dict:
        self.requests += 1
        return _send(method, f"{self.settings.graph_url}/{self.settings.version}/{path}",
                     data={**data, **self._auth()})

    def create_audience(self, name: str, description: str) -> str:
        """A customer-list custom audience (subtype CUSTOM, USER_PROVIDED_ONLY) in the ad account; its id."""
        body = self._call("POST", f"act_{self.account_id}/customaudiences", {
            "name": name[:255], "subtype": "CUSTOM", "description": description[:255],
            "customer_file_source": "USER_PROVIDED_ONLY"})
        audience_id = str(body.get("id") or "")
        if not audience_id.isdigit():
            raise PlatformError("permanent", "Meta created no audience id")
        return audience_id

    @staticmethod
    def payload(rows: list[tuple[str | None, str | None]]) -> str:
        """The `payload` parameter: PHONE alone, or PHONE and EMAIL when any row has an email."""
        if any(email for _phone, email in rows):
            return json.dumps({"schema": ["PHONE", "EMAIL"],
                               "data": [[phone or "", email or ""] for phone, email in rows]},
                              separators=(",", ":"))
        return json.dumps({"schema": ["PHONE"], "data": [[phone or ""] for phone, _email in rows]},
                          separators=(",", ":"))

    def _users(self, method: str, audience_id: str, rows) -> BatchResult:
        body = self._call(method, f"{audience_id}/users", {"payload": self.payload(rows)})
        samples = body.get("invalid_entry_samples")
        return BatchResult(received=_int(body.get("num_received"), len(rows)),
                           invalid=_int(body.get("num_invalid_entries"), 0),
                           samples=[str(key)[:80] for key in samples][:5] if isinstance(samples, dict) else [])

    def add(self, audience_id: str, rows) -> BatchResult:
        """POST /{audience_id}/users."""
        return self._users("POST", audience_id, rows)

    def remove(self, audience_id: str, rows) -> BatchResult:
        """DELETE /{audience_id}/users."""
        return self._users("DELETE", audience_id, rows)


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _send(method: str, url: str, **kwargs) -> dict:
    return send_json("Meta", _error, method, url, **kwargs)
