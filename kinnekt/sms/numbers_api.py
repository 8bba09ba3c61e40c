"""Vonage's Numbers API (https://rest.nexmo.com): search numbers to buy, buy one, link it to the application, list
the account's numbers, cancel one. Our own small HTTP client over `requests` (no retries: a buy that may have
reached Vonage is never repeated silently).

Authentication is the account's API key and secret (VONAGE_API_KEY, VONAGE_API_SECRET), sent as HTTP Basic
credentials (Vonage accepts them there or as `api_key`/`api_secret` parameters; a header keeps them out of URLs
and logs). VONAGE_NUMBERS_HOST_OVERRIDE (host:port), else VONAGE_HOST_OVERRIDE, sends the calls to another host,
the local fake in the tests.

Requests and answers, as documented:
- `GET /number/search?country=US&type=landline-toll-free&features=SMS&size=10[&pattern=&search_pattern=]` ->
  `{"count": 12, "numbers": [{"country", "msisdn", "type", "cost", "features": ["SMS", ...]}]}` (no `numbers`
  when nothing matches);
- `POST /number/buy`, `/number/cancel` (form: `country`, `msisdn`) and `/number/update` (form: `country`,
  `msisdn`, `app_id`: the application whose inbound and status webhooks the number's texts reach) ->
  `{"error-code": "200", "error-code-label": "success"}`; refused: 401 (bad credentials), 420 ("method failed":
  the number is not available any more, not in the account, or the balance is too low), with the same two fields;
- `GET /account/numbers?pattern=<msisdn>&search_pattern=0` -> `{"count", "numbers": [{"country", "msisdn",
  "type", "features", "app_id", ...}]}`;
- `POST /number/update` with `app_id` and `moHttpUrl` sent empty lets a number go: "set this parameter's value to an
  empty string to remove the webhook" (Vonage's "Update a number" page,
  https://developer.vonage.com/en/numbers/code-snippets/update), so its texts and statuses stop reaching Kinnekt.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from flask import current_app

from kinnekt import defaults

log = logging.getLogger(__name__)

DEFAULT_HOST = "rest.nexmo.com"
"""Where the Numbers API lives."""
TYPES = frozenset({"landline", "mobile-lvn", "landline-toll-free"})
"""Vonage's number types."""


class NumbersError(RuntimeError):
    """Vonage refused or did not answer. `code`: Vonage's error-code ("420"...), "http-<status>", "connection"
    (no answer: the request may have reached Vonage), "unreadable" (an answer that is no JSON object: the same) or
    "not-configured"."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


class NotConfigured(NumbersError):
    """No API key and secret: numbers cannot be searched nor bought."""

    def __init__(self):
        super().__init__("Buying numbers is not set up: set VONAGE_API_KEY and VONAGE_API_SECRET.", "not-configured")


@dataclass(frozen=True)
class Number:
    """A number as Vonage lists it (search result or one of the account's)."""

    country: str
    msisdn: str
    type: str
    features: tuple[str, ...]
    cost: str | None = None
    app_id: str | None = None


class NumbersClient:
    """The Numbers API with one account's credentials."""

    def __init__(self, api_key: str, api_secret: str, host: str | None = None, timeout: float | None = None):
        if not api_key or not api_secret:
            raise NotConfigured()
        self.auth = (api_key, api_secret)
        self.base = f"https://{host or DEFAULT_HOST}"
        self.timeout = float(timeout or defaults.SMS_HTTP_TIMEOUT_SECONDS)

    @classmethod
    def from_config(cls, config=None) -> "NumbersClient":
        """The client of the running app's settings; NotConfigured without a key and secret."""
        config = config if config is not None else current_app.config
        return cls(config.get("VONAGE_API_KEY") or "", config.get("VONAGE_API_SECRET") or "",
                   (config.get("VONAGE_NUMBERS_HOST_OVERRIDE") or config.get("VONAGE_HOST_OVERRIDE") or "").strip()
                   or None)

    def _call(self, method: str, path: str, blank: tuple[str, ...] = (), **params) -> dict:
        import requests
        params = {k: v for k, v in params.items() if v not in (None, "")}
        params.update({name: "" for name in blank})  # sent empty on purpose: "remove it"
        try:
            response = requests.request(method, self.base + path, auth=self.auth, timeout=self.timeout,
                                        allow_redirects=False, headers={"Accept": "application/json",
                                                                        "User-Agent": "kinnekt"},
                                        **({"params": params} if method == "GET" else {"data": params}))
        except requests.RequestException as exc:
            log.warning("Vonage Numbers API %s %s: no answer (%s)", method, path, exc)
            raise NumbersError("Vonage did not answer. Try again in a moment.", "connection") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if response.status_code < 400:  # answered, but unreadable: a buy may or may not have happened
                log.warning("Vonage Numbers API %s %s: HTTP %s, unreadable answer", method, path,
                            response.status_code)
                raise NumbersError("Vonage's answer could not be read.", "unreadable")
            data = {}
        code = str(data.get("error-code") or "").strip()
        if response.status_code >= 400 or (code and code != "200"):
            label = str(data.get("error-code-label") or "").strip()[:200]
            code = code or f"http-{response.status_code}"
            log.warning("Vonage Numbers API %s %s: %s %s", method, path, code, label)
            raise NumbersError(label or f"Vonage answered HTTP {response.status_code}.", code)
        return data

    def search(self, country: str, type_: str, *, pattern: str | None = None, size: int | None = None) -> tuple[
            int, list[Number]]:
        """Numbers of `type_` in `country` that can send SMS, for sale: (how many match, the first `size`). With
        `pattern` (digits), numbers containing it."""
        data = self._call("GET", "/number/search", country=country, type=type_, features="SMS",
                          size=size or defaults.SENDER_SEARCH_SIZE, pattern=pattern,
                          search_pattern=1 if pattern else None)
        return _count(data), _numbers(data)

    def buy(self, country: str, msisdn: str) -> None:
        """Buy the number for the account; NumbersError (420) when it is not available any more."""
        self._call("POST", "/number/buy", country=country, msisdn=msisdn)

    def link(self, country: str, msisdn: str, app_id: str) -> None:
        """Point the number at the application, whose inbound and status webhooks are Kinnekt's."""
        self._call("POST", "/number/update", country=country, msisdn=msisdn, app_id=app_id)

    def unlink(self, country: str, msisdn: str) -> None:
        """Point the number away from Kinnekt without giving it up: its application and inbound webhook are emptied
        (a number the merchant brought stays theirs, in the account)."""
        self._call("POST", "/number/update", blank=("app_id", "moHttpUrl"), country=country, msisdn=msisdn)

    def cancel(self, country: str, msisdn: str) -> None:
        """Give the number back to Vonage (the account stops paying for it)."""
        self._call("POST", "/number/cancel", country=country, msisdn=msisdn)

    def owned(self, msisdn: str) -> Number | None:
        """The account's number `msisdn`, or None when the account has no such number."""
        data = self._call("GET", "/account/numbers", pattern=msisdn, search_pattern=0, size=10)
        return next((n for n in _numbers(data) if n.msisdn == msisdn), None)


def _count(data: dict) -> int:
    try:
        return max(0, int(data.get("count") or 0))
    except (TypeError, ValueError):
        return 0


def _numbers(data: dict) -> list[Number]:
    """The well-formed entries of a `numbers` list (anything else is left out)."""
    found = []
    for item in data.get("numbers") or []:
        if not isinstance(item, dict):
            continue
        msisdn, country = str(item.get("msisdn") or ""), str(item.get("country") or "").upper()
        if not re.fullmatch(r"[0-9]{6,15}", msisdn) or not re.fullmatch(r"[A-Z]{2}", country):
            continue
        features = item.get("features") if isinstance(item.get("features"), list) else []
        cost = item.get("cost")
        found.append(Number(country, msisdn, str(item.get("type") or ""), tuple(str(f).upper() for f in features),
                            str(cost)[:16] if cost not in (None, "") else None,
                            str(item.get("app_id") or "") or None))
    return found
