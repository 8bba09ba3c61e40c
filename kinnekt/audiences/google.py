"""Google Ads Customer Match through the Google Ads API's REST interface: OAuth 2, the customers the login reaches,
a CRM-based user list, and offline user data jobs.

What each call follows (Google Ads API v26, GOOGLE_ADS_API_VERSION; https://developers.google.com/google-ads/api/rest/):

- OAuth 2 for web server apps (https://developers.google.com/identity/protocols/oauth2/web-server): the
  authorization endpoint with `scope=https://www.googleapis.com/auth/adwords`, `access_type=offline`,
  `prompt=consent` (so a refresh token comes back), then `POST` the token endpoint (`grant_type=authorization_code`,
  later `grant_type=refresh_token`) -> `{"access_token", "expires_in", "refresh_token", "token_type"}`; a refused
  refresh is `{"error": "invalid_grant"}`.
- Every API call carries `Authorization: Bearer …` and the `developer-token` header.
- Customers: `GET /{v}/customers:listAccessibleCustomers` -> `{"resourceNames": ["customers/1234567890"]}`.
- User list: `POST /{v}/customers/{id}/userLists:mutate` with a `create` of `crmBasedUserList.uploadKeyType
  CONTACT_INFO` -> `{"results": [{"resourceName"}]}`
  (https://developers.google.com/google-ads/api/docs/remarketing/audience-segments/customer-match/get-started).
- Offline user data job (OfflineUserDataJobService): `…/offlineUserDataJobs:create` with `type
  CUSTOMER_MATCH_USER_LIST` and `customerMatchUserListMetadata` (the list and the consent: GRANTED, the people
  having agreed to marketing) -> `{"resourceName"}`; `…/{job}:addOperations` with `enablePartialFailure` and
  `operations` of `create` or `remove` `{"userIdentifiers": [{"hashedPhoneNumber"}, {"hashedEmail"}]}` ->
  `{"partialFailureError"?: {"code", "message", "details": [{"errors": [{"location": {"fieldPathElements": [{
  "fieldName": "operations", "index"}]}}]}]}}`; `…/{job}:run` -> a long-running operation; the job's status is read
  with `POST /{v}/customers/{id}/googleAds:search` (`offline_user_data_job.status`: PENDING, RUNNING, SUCCESS,
  FAILED, with `failure_reason`).
- Normalisation (kinnekt.segments.exports, Google's "Format your data"): phone in E.164 with "+", email trimmed
  and lowercase, both SHA-256 hex.
- Errors: `{"error": {"code", "message", "status", "details": [GoogleAdsFailure…]}}`; `RESOURCE_EXHAUSTED` (429) is
  the rate limit, with a `retryDelay` ("30s") in its RetryInfo detail when Google names the wait;
  `UNAUTHENTICATED` (401) a refused token.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
from flask import current_app

from kinnekt import defaults
from kinnekt.audiences.platform import BatchResult, Grant, PlatformError, grant_from, send_json
from kinnekt.segments.exports import e164, email_lower, sha256_hex

SCOPE = "https://www.googleapis.com/auth/adwords"
MAX_POLLS = 12
"""Polls of a job's status before the sync moves on: a job still running then is left to finish at Google
(its operations are in), so a slow Customer Match job never holds a worker for hours."""


@dataclass(frozen=True)
class Settings:
    """The app's Google Ads settings (GOOGLE_ADS_* and GOOGLE_OAUTH_* in the environment)."""

    client_id: str
    client_secret: str
    developer_token: str
    version: str
    api_url: str
    authorize_endpoint: str
    token_endpoint: str

    @classmethod
    def from_app(cls) -> "Settings":
        """The running app's settings."""
        config = current_app.config
        return cls(config.get("GOOGLE_ADS_CLIENT_ID", ""), config.get("GOOGLE_ADS_CLIENT_SECRET", ""),
                   config.get("GOOGLE_ADS_DEVELOPER_TOKEN", ""), config.get("GOOGLE_ADS_API_VERSION", ""),
                   config.get("GOOGLE_ADS_API_URL", "").rstrip("/"), config.get("GOOGLE_OAUTH_AUTHORIZE_URL", ""),
                   config.get("GOOGLE_OAUTH_TOKEN_URL", ""))

    @property
    def configured(self) -> bool:
        """True when the app has an OAuth client and a developer token."""
        return bool(self.client_id and self.client_secret and self.developer_token)


def authorize_url(settings: Settings, *, redirect_uri: str, state: str) -> str:
    """Google's consent page for the adwords scope, offline (a refresh token), coming back to `redirect_uri`."""
    query = urlencode({"client_id": settings.client_id, "redirect_uri": redirect_uri, "response_type": "code",
                       "scope": SCOPE, "access_type": "offline", "prompt": "consent", "state": state,
                       "include_granted_scopes": "true"})
    return f"{settings.authorize_endpoint}?{query}"


def _retry_delay(error: dict) -> float | None:
    for detail in error.get("details") or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        match = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(delay or ""))
        if match:
            return float(match.group(1))
    return None


def _error(response: httpx.Response) -> PlatformError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, str):  # the token endpoint: {"error": "invalid_grant", "error_description": …}
        description = str(body.get("error_description") or error)[:300]
        if error in ("invalid_grant", "invalid_client", "unauthorized_client"):
            return PlatformError("auth", f"Google refused the authorization: {description}")
        return PlatformError("transient" if response.status_code >= 500 else "permanent",
                             f"Google's token endpoint refused: {description}")
    error = error if isinstance(error, dict) else {}
    status = str(error.get("status") or "")
    message = str(error.get("message") or f"HTTP {response.status_code}")[:500]
    if status == "RESOURCE_EXHAUSTED" or response.status_code == 429:
        return PlatformError("rate_limited", f"Google Ads asks to slow down: {message}",
                             retry_after=_retry_delay(error))
    if status == "UNAUTHENTICATED" or response.status_code == 401:
        return PlatformError("auth", f"Google Ads refused the access token: {message}")
    if status in ("UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED") or response.status_code >= 500:
        return PlatformError("transient", f"Google Ads had a temporary problem: {message}")
    return PlatformError("permanent", f"Google Ads refused the request: {message}")


def exchange_code(settings: Settings, code: str, *, redirect_uri: str) -> Grant:
    """Tokens (with a refresh token) for the consent page's code."""
    return grant_from("Google", _send("POST", settings.token_endpoint, data={
        "grant_type": "authorization_code", "code": code, "client_id": settings.client_id,
        "client_secret": settings.client_secret, "redirect_uri": redirect_uri}))


def refresh(settings: Settings, refresh_token: str) -> Grant:
    """A fresh access token for the stored refresh token."""
    return grant_from("Google", _send("POST", settings.token_endpoint, data={
        "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": settings.client_id,
        "client_secret": settings.client_secret}))


def _headers(settings: Settings, token: str) -> dict:
    return {"Authorization": f"Bearer {token}", "developer-token": settings.developer_token}


def accessible_customers(settings: Settings, token: str) -> list[dict]:
    """The Google Ads customers the login reaches: [{"id": digits, "name": "123-456-7890"}]."""
    body = _send("GET", f"{settings.api_url}/{settings.version}/customers:listAccessibleCustomers",
                 headers=_headers(settings, token))
    ids = sorted({name.rpartition("/")[2] for name in body.get("resourceNames") or ()
                  if isinstance(name, str) and re.fullmatch(r"customers/\d{1,20}", name)})
    return [{"id": cid, "name": f"{cid[:3]}-{cid[3:6]}-{cid[6:]}" if len(cid) == 10 else cid} for cid in ids]


class GoogleAudiences:
    """One Google Ads customer's Customer Match lists (an AudienceClient)."""

    def __init__(self, settings: Settings, token: str, customer_id: str):
        self.settings, self.token, self.customer_id = settings, token, customer_id
        self.requests = 0

    def identifiers(self, phone: str | None, email: str | None, allow_emails: bool) -> tuple[str | None, str | None]:
        """Google's normal forms, SHA-256: phone in E.164 with "+", email trimmed and lowercase."""
        number = e164(phone)
        address = email_lower(email) if allow_emails else None
        return (sha256_hex(number) if number else None, sha256_hex(address) if address else None)

    def _call(self, path: str, body: dict) -> dict:
        self.requests += 1
        return _send("POST", f"{self.settings.api_url}/{self.settings.version}/{path}", json=body,
                     headers=_headers(self.settings, self.token))

    def create_audience(self, name: str, description: str) -> str:
        """A CRM-based user list (contact info) in the customer; its resource name."""
        body = self._call(f"customers/{self.customer_id}/userLists:mutate", {"operations": [{"create": {
            "name": name[:255], "description": description[:255], "membershipLifeSpan": 10000,
            "crmBasedUserList": {"uploadKeyType": "CONTACT_INFO"}}}]})
        results = body.get("results") or [{}]
        resource = str(results[0].get("resourceName") or "") if isinstance(results[0], dict) else ""
        if not re.fullmatch(rf"customers/{self.customer_id}/userLists/\d+", resource):
            raise PlatformError("permanent", "Google Ads created no user list")
        return resource

    @staticmethod
    def _user(phone: str | None, email: str | None) -> dict:
        identifiers = [{"hashedPhoneNumber": phone}] if phone else []
        if email:
            identifiers.append({"hashedEmail": email})
        return {"userIdentifiers": identifiers}

    def _job(self, user_list: str, kind: str, rows) -> BatchResult:
        created = self._call(f"customers/{self.customer_id}/offlineUserDataJobs:create", {"job": {
            "type": "CUSTOMER_MATCH_USER_LIST", "customerMatchUserListMetadata": {
                "userList": user_list, "consent": {"adUserData": "GRANTED", "adPersonalization": "GRANTED"}}}})
        job = str(created.get("resourceName") or "")
        if not re.fullmatch(rf"customers/{self.customer_id}/offlineUserDataJobs/\d+", job):
            raise PlatformError("permanent", "Google Ads created no offline user data job")
        added = self._call(f"{job}:addOperations", {"enablePartialFailure": True, "operations": [
            {kind: self._user(phone, email)} for phone, email in rows]})
        invalid = _failed_operations(added.get("partialFailureError"))
        self._call(f"{job}:run", {})
        self._wait(job)
        return BatchResult(received=len(rows), invalid=len(invalid),
                           samples=[f"operation {index}" for index in sorted(invalid)[:5]])

    def _wait(self, job: str) -> None:
        query = ("SELECT offline_user_data_job.status, offline_user_data_job.failure_reason "
                 f"FROM offline_user_data_job WHERE offline_user_data_job.resource_name = '{job}'")
        for _poll in range(MAX_POLLS):
            body = self._call(f"customers/{self.customer_id}/googleAds:search", {"query": query})
            found = (body.get("results") or [{}])[0].get("offlineUserDataJob") or {}
            status = found.get("status")
            if status == "SUCCESS":
                return
            if status == "FAILED":
                raise PlatformError("permanent", f"Google Ads could not process the upload: "
                                                 f"{found.get('failureReason') or 'no reason given'}")
            time.sleep(defaults.AUDIENCE_POLL_SECONDS)

    def add(self, audience_id: str, rows) -> BatchResult:
        """A job of `create` operations, run."""
        return self._job(audience_id, "create", rows)

    def remove(self, audience_id: str, rows) -> BatchResult:
        """A job of `remove` operations, run."""
        return self._job(audience_id, "remove", rows)


def _failed_operations(failure) -> set[int]:
    """The operation indexes a partialFailureError names."""
    found: set[int] = set()
    if not isinstance(failure, dict):
        return found
    for detail in failure.get("details") or ():
        for error in (detail.get("errors") or ()) if isinstance(detail, dict) else ():
            for element in ((error.get("location") or {}).get("fieldPathElements") or ()):
                if element.get("fieldName") == "operations" and isinstance(element.get("index"), int):
                    found.add(element["index"])
    return found


def _send(method: str, url: str, **kwargs) -> dict:
    return send_json("Google", _error, method, url, **kwargs)
