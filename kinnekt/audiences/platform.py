"""What the sync needs of an ad platform's client, whichever platform it is: its errors, a batch's result, and
the shared HTTP client."""
from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol

import httpx

from kinnekt import defaults
from kinnekt.db import utcnow


class PlatformError(Exception):
    """A platform refused or failed a request. `kind` says what the sync does about it:

    - `rate_limited`: the platform asks us to slow down (Meta codes 4, 17, 613, 80003; Google RESOURCE_EXHAUSTED):
      retry later, after `retry_after` seconds when the platform said;
    - `transient`: unreachable, a 5xx, a temporary error: retry later;
    - `auth`: the token is refused (expired, revoked): the merchant must connect again; no retry;
    - `permanent`: the request itself is wrong (the audience was deleted at the platform…): shown, no retry.
    """

    KINDS = ("rate_limited", "transient", "auth", "permanent")

    def __init__(self, kind: str, message: str, *, retry_after: float | None = None):
        if kind not in self.KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        super().__init__(message)
        self.kind, self.message, self.retry_after = kind, message, retry_after

    @property
    def retryable(self) -> bool:
        """True when trying again later may work."""
        return self.kind in ("rate_limited", "transient")


@dataclass
class BatchResult:
    """What a platform said of one add or remove batch: how many it received and how many it refused."""

    received: int
    invalid: int = 0
    samples: list[str] = field(default_factory=list)


class AudienceClient(Protocol):
    """One ad account's audiences at one platform, as the sync uses them."""

    requests: int
    """Requests made so far (for the link's figures and the benchmark)."""

    def identifiers(self, phone: str | None, email: str | None, allow_emails: bool) -> tuple[str | None, str | None]:
        """The person's hashed (phone, email) as this platform wants them; (None, None) when there is nothing."""

    def create_audience(self, name: str, description: str) -> str:
        """Create an empty customer-list audience in the account; its id."""

    def add(self, audience_id: str, rows: list[tuple[str | None, str | None]]) -> BatchResult:
        """Add these people (hashed phone, hashed email) to the audience."""

    def remove(self, audience_id: str, rows: list[tuple[str | None, str | None]]) -> BatchResult:
        """Remove these people (the hashes sent when they were added) from the audience."""


_local = threading.local()


def http_client() -> httpx.Client:
    """This process's (and thread's) HTTP client for ad platforms: kept alive between requests of a sync."""
    client = getattr(_local, "client", None)
    if client is None or getattr(_local, "pid", None) != os.getpid():
        client = httpx.Client(timeout=httpx.Timeout(defaults.AUDIENCE_HTTP_TIMEOUT_SECONDS),
                              headers={"User-Agent": "Kinnekt"})
        _local.client, _local.pid = client, os.getpid()
    return client


@dataclass(frozen=True)
class Grant:
    """What a platform's token endpoint granted: the access token, when it expires (None: not said), and a
    refresh token (Google's first grant; Meta's long-lived tokens have none)."""

    access_token: str
    expires_at: dt.datetime | None
    refresh_token: str | None = None


def send_json(platform: str, error_of: Callable[[httpx.Response], PlatformError], method: str, url: str,
              **kwargs) -> dict:
    """One request to `platform`'s API, its JSON object answer returned; an unreachable platform or an answer that
    is no JSON object is a transient PlatformError, an error status the one `error_of` reads from it."""
    try:
        response = http_client().request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise PlatformError("transient", f"{platform} could not be reached: {exc.__class__.__name__}") from exc
    if response.status_code >= 400:
        raise error_of(response)
    try:
        body = response.json()
    except ValueError:
        raise PlatformError("transient", f"{platform} answered something that is not JSON") from None
    if not isinstance(body, dict):
        raise PlatformError("transient", f"{platform} answered an unexpected shape")
    return body


def grant_from(platform: str, body: dict) -> Grant:
    """The Grant of a token endpoint's answer (`access_token`, `expires_in` seconds, `refresh_token`)."""
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise PlatformError("permanent", f"{platform} granted no access token")
    expires_in = body.get("expires_in")
    expires_at = utcnow() + dt.timedelta(seconds=int(expires_in)) if isinstance(expires_in, int) else None
    refresh = body.get("refresh_token") if isinstance(body.get("refresh_token"), str) else None
    return Grant(token, expires_at, refresh)
