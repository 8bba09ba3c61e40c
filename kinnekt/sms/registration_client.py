"""Vonage's US registration APIs: toll-free number (TFN) registration and 10DLC brands and campaigns.

Both authenticate with the account's API key and secret (HTTP Basic, `VONAGE_API_KEY` / `VONAGE_API_SECRET`).

- TFN Registration API (`https://api.nexmo.com/tfn`): `POST /v1/registrations` (the business, its contact and the
  messaging use case), `GET /v1/registrations/{id}` (its `status`: DRAFT, IN_REVIEW, UPDATES_REQUIRED,
  CARRIER_REVIEW, REGISTERED, REJECTED, BLOCKED), `PATCH /v1/registrations/{id}` (update and resubmit).
- 10DLC API (`https://api-eu.vonage.com/v1/10dlc`): `POST /brands` (the business: `entity_type`, `display_name`,
  `company_name`, `ein`, address, `email`, `website`, `vertical`; answers its `brand_id`), `POST
  /brands/{brand_id}/campaigns` (`account_id`, `usecase`, `description`, `sample_one`, `sample_two`,
  `message_flow_details`, the `subscriber_opt_in`/`_opt_out`/`_help` flags, …; answers its `campaign_id`),
  `GET`/`PATCH /brands/{brand_id}/campaigns/{campaign_id}` (its `status`, `traffic_enabled` and
  `last_status_changes`), and `POST /brands/{brand_id}/campaigns/{campaign_id}/numbers` (`{"country", "number"}`)
  to link a number.

Which of these shapes Vonage's public pages confirm, and from where, is in docs/us-registration.md ("What is
confirmed and what is not"); the TFN request's use-case fields and the field a TFN rejection's reason comes in are
not confirmed. `VONAGE_HOST_OVERRIDE` sends every call to another host (the tests' fake).
"""
from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from kinnekt import defaults

TFN_BASE = "https://api.nexmo.com/tfn"
TEN_DLC_BASE = "https://api-eu.vonage.com/v1/10dlc"


class RegistrationApiError(Exception):
    """Vonage refused a registration call (`status` is the HTTP status; 0: no answer); the message says why."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status

    @property
    def unavailable(self) -> bool:
        """True when Vonage could not be asked (no answer, a server error, throttled): try again later."""
        return self.status == 0 or self.status >= 500 or self.status == 429


@dataclass(frozen=True)
class RegistrationClient:
    """Calls of the TFN and 10DLC APIs with the account's key and secret; `host` replaces both hosts when set."""

    api_key: str
    api_secret: str
    host: str = ""

    @classmethod
    def from_config(cls, config) -> "RegistrationClient":
        """The client for an app's config; RegistrationApiError when the account's key or secret is missing."""
        key, secret = (config.get("VONAGE_API_KEY") or "").strip(), (config.get("VONAGE_API_SECRET") or "").strip()
        if not key or not secret:
            raise RegistrationApiError("Vonage's API key and secret are not configured (VONAGE_API_KEY, "
                                       "VONAGE_API_SECRET).")
        return cls(key, secret, (config.get("VONAGE_HOST_OVERRIDE") or "").strip())

    def _url(self, base: str, path: str) -> str:
        if self.host:  # keep the base's path (/tfn, /v1/10dlc), on the other host
            base = f"https://{self.host}{urlsplit(base).path}"
        return base + path

    def _call(self, method: str, url: str, body: dict | None = None) -> dict:
        try:
            with httpx.Client(timeout=defaults.REGISTRATION_TIMEOUT_SECONDS, verify=_tls(),
                              auth=(self.api_key, self.api_secret), headers={"User-Agent": "Kinnekt"}) as http:
                response = http.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise RegistrationApiError(f"Vonage could not be reached ({exc.__class__.__name__}).") from exc
        try:
            payload = response.json() if response.content else {}
        except ValueError:
            payload = {}
        if response.status_code >= 400:
            raise RegistrationApiError(_problem_text(payload, response.status_code), response.status_code)
        return payload if isinstance(payload, dict) else {}

    # -- toll-free number registration
    def create_tfn_registration(self, body: dict) -> dict:
        """Create (and submit) a toll-free number registration; Vonage's answer (its `id`, `status`)."""
        return self._call("POST", self._url(TFN_BASE, "/v1/registrations"), body)

    def get_tfn_registration(self, registration_id: str) -> dict:
        """A toll-free registration as Vonage has it now (its `status`)."""
        return self._call("GET", self._url(TFN_BASE, f"/v1/registrations/{_segment(registration_id)}"))

    def update_tfn_registration(self, registration_id: str, body: dict) -> dict:
        """Update a registration (after changes were asked for, or a rejection): submitted again."""
        return self._call("PATCH", self._url(TFN_BASE, f"/v1/registrations/{_segment(registration_id)}"), body)

    # -- 10DLC
    def create_brand(self, body: dict) -> dict:
        """Register the business as a 10DLC brand; Vonage's answer (its `brand_id`)."""
        return self._call("POST", self._url(TEN_DLC_BASE, "/brands"), body)

    def create_campaign(self, brand_id: str, body: dict) -> dict:
        """Register a 10DLC campaign of the brand; Vonage's answer (its `campaign_id`, `status`)."""
        return self._call("POST", self._url(TEN_DLC_BASE, f"/brands/{_segment(brand_id)}/campaigns"), body)

    def get_campaign(self, brand_id: str, campaign_id: str) -> dict:
        """A 10DLC campaign as Vonage has it now (its `status`)."""
        return self._call("GET", self._url(TEN_DLC_BASE,
                                           f"/brands/{_segment(brand_id)}/campaigns/{_segment(campaign_id)}"))

    def update_campaign(self, brand_id: str, campaign_id: str, body: dict) -> dict:
        """Change a 10DLC campaign (after a rejection): reviewed again."""
        return self._call("PATCH", self._url(TEN_DLC_BASE,
                                             f"/brands/{_segment(brand_id)}/campaigns/{_segment(campaign_id)}"), body)

    def link_number(self, brand_id: str, campaign_id: str, number: str, country: str = "US") -> dict:
        """Link a long code to the campaign (its texts then count as the campaign's): `{"country", "number"}`, the
        number in E.164 digits without "+"; Vonage answers the link with its `status` (PENDING until the carriers
        take it, minutes to hours)."""
        path = f"/brands/{_segment(brand_id)}/campaigns/{_segment(campaign_id)}/numbers"
        return self._call("POST", self._url(TEN_DLC_BASE, path), {"country": country, "number": number.lstrip("+")})


def _segment(value: str) -> str:
    """An id as one path segment (Vonage's ids are letters, digits and dashes; anything else is refused)."""
    text = str(value or "")
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise RegistrationApiError(f"Not a Vonage id: {text[:40]!r}.", 400)
    return text


def _tls():
    """Verify Vonage's certificate with REQUESTS_CA_BUNDLE when set (a local fake's CA in tests), else certifi's."""
    bundle = (os.environ.get("REQUESTS_CA_BUNDLE") or "").strip()
    return ssl.create_default_context(cafile=bundle) if bundle else True


def _problem_text(payload, status: int) -> str:
    """Vonage's error answer in one line: RFC 7807 `title` and `detail`, and each invalid parameter's reason."""
    if not isinstance(payload, dict):
        return f"Vonage answered HTTP {status}."
    parts = [str(payload.get(key)) for key in ("title", "detail") if payload.get(key)]
    for problem in payload.get("invalid_parameters") or payload.get("errors") or ():
        if isinstance(problem, dict):
            parts.append(f"{problem.get('name') or problem.get('field') or ''}: "
                         f"{problem.get('reason') or problem.get('message') or ''}".strip(": "))
    return " ".join(parts) if parts else f"Vonage answered HTTP {status}."
