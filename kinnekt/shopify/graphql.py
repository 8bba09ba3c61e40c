"""The GraphQL Admin API client: pinned version, timeouts, cost-based throttling, retries, clear errors.

`client_for(shop).query(query, variables)` returns the reply's `data`. The client reads
`extensions.cost.throttleStatus` from every reply and waits before the next call when the shop's bucket is
low; a THROTTLED reply waits the time the missing points take to restore and tries again. 5xx, 429 and
network errors are retried with exponential backoff. A 401 refreshes the shop's token once and retries.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import httpx

from kinnekt import defaults
from kinnekt.shopify import endpoints
from kinnekt.shopify.errors import (  # noqa: F401  (callers catch them here too)
    GraphQLQueryError, ShopifyAuthError, ShopifyError, ShopifyThrottled, ShopifyUnauthorized, ShopifyUnavailable,
    UserErrors)

log = logging.getLogger(__name__)


def raise_user_errors(result: dict | None) -> dict:
    """Return a mutation payload, or raise UserErrors when it lists any."""
    errors = (result or {}).get("userErrors") or []
    if errors:
        raise UserErrors(errors)
    return result or {}


@dataclass
class Bucket:
    """The shop's query-cost bucket as Shopify last reported it (leaky bucket per app and shop)."""

    maximum: float
    available: float
    restore_rate: float
    seen_at: float

    def available_now(self, now: float) -> float:
        """Points available now, counting what has been restored since the report."""
        return min(self.maximum, self.available + max(0.0, now - self.seen_at) * self.restore_rate)

    def wait_for(self, points: float, now: float) -> float:
        """Seconds until `points` are available (0 when they already are)."""
        points = min(points, self.maximum)
        missing = points - self.available_now(now)
        if missing <= 0 or self.restore_rate <= 0:
            return 0.0
        return missing / self.restore_rate


_buckets: dict[str, Bucket] = {}
_buckets_lock = threading.Lock()


def bucket_for(shop_domain: str) -> Bucket | None:
    """The last reported bucket of a shop in this process, if any."""
    with _buckets_lock:
        return _buckets.get(shop_domain)


def _remember_cost(shop_domain: str, cost: dict | None) -> dict | None:
    status = (cost or {}).get("throttleStatus")
    if not status:
        return cost
    try:
        bucket = Bucket(float(status["maximumAvailable"]), float(status["currentlyAvailable"]),
                        float(status["restoreRate"]), time.monotonic())
    except (KeyError, TypeError, ValueError):
        return cost
    with _buckets_lock:
        _buckets[shop_domain] = bucket
    return cost


_http: tuple[int, httpx.Client] | None = None
_http_lock = threading.Lock()


def http_client() -> httpx.Client:
    """The process's pooled HTTP client (made again after a fork, as RQ work horses are forked)."""
    global _http
    with _http_lock:
        if _http is None or _http[0] != os.getpid():
            timeout = httpx.Timeout(defaults.SHOPIFY_READ_TIMEOUT_SECONDS,
                                    connect=defaults.SHOPIFY_CONNECT_TIMEOUT_SECONDS)
            _http = (os.getpid(), httpx.Client(timeout=timeout, headers={"User-Agent": "Kinnekt"}))
        return _http[1]


class AdminClient:
    """GraphQL Admin API calls for one shop; `token()` gives the access token, `refresh(rejected)` a new one."""

    def __init__(self, shop_domain: str, token: Callable[[], str],
                 refresh: Callable[[str], str] | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 max_retries: int | None = None):
        self.shop_domain = endpoints.checked_domain(shop_domain)
        self.url = endpoints.graphql_url(self.shop_domain)
        self._token = token
        self._refresh = refresh
        self._sleep = sleep
        self.max_retries = defaults.SHOPIFY_MAX_RETRIES if max_retries is None else max_retries
        self.last_cost: dict | None = None

    def query(self, query: str, variables: dict | None = None) -> dict:
        """Run a query or mutation and return its `data`; raises a ShopifyError subclass on failure."""
        body = {"query": query, "variables": variables or {}}
        token = self._token()
        refreshed = False
        attempt = 0
        while True:
            self._wait_for_budget()
            try:
                response = http_client().post(self.url, json=body, headers={
                    "X-Shopify-Access-Token": token, "Content-Type": "application/json",
                    "Accept": "application/json"})
            except httpx.TransportError as exc:
                attempt = self._retry_or_raise(attempt, ShopifyUnavailable(
                    f"could not reach Shopify for {self.shop_domain}: {type(exc).__name__}: {exc}"))
                continue
            status = response.status_code
            if status == 401:
                if refreshed or self._refresh is None:
                    raise ShopifyUnauthorized(f"Shopify refused the access token of {self.shop_domain} (401)")
                token = self._refresh(token)
                refreshed = True
                continue
            if status == 403:
                raise ShopifyAuthError(f"Shopify denied access for {self.shop_domain} (403): "
                                       "a scope or protected customer data access is missing")
            if status == 429:
                attempt = self._retry_or_raise(
                    attempt, ShopifyThrottled(f"Shopify kept answering 429 for {self.shop_domain}"),
                    retry_after=response.headers.get("Retry-After"))
                continue
            if status >= 500:
                attempt = self._retry_or_raise(attempt, ShopifyUnavailable(
                    f"Shopify answered HTTP {status} for {self.shop_domain}"))
                continue
            try:
                payload = response.json()
            except ValueError:
                raise ShopifyError(f"Shopify answered HTTP {status} without JSON for {self.shop_domain}") from None
            if status != 200:
                raise GraphQLQueryError(payload.get("errors") if isinstance(payload, dict) else payload)
            self.last_cost = _remember_cost(self.shop_domain, (payload.get("extensions") or {}).get("cost"))
            errors = payload.get("errors")
            if errors:
                if _throttled(errors):
                    attempt = self._retry_or_raise(attempt, ShopifyThrottled(
                        f"Shopify kept throttling queries for {self.shop_domain}"), wait=self._throttle_wait())
                    continue
                raise GraphQLQueryError(errors)
            return payload.get("data") or {}

    def nodes(self, query: str, variables: dict, path: str, *, page_size: int | None = None) -> Iterator[dict]:
        """Yield every node of a paginated connection (`path` is the connection's field, e.g. "customers").

        The query must take `$first: Int!` and `$after: String` and select `nodes` and
        `pageInfo { hasNextPage endCursor }` of that connection.
        """
        after = None
        while True:
            data = self.query(query, {**variables, "first": page_size or defaults.RECONCILE_PAGE_SIZE,
                                      "after": after})
            connection = data
            for key in path.split("."):
                connection = (connection or {}).get(key) or {}
            yield from connection.get("nodes") or []
            info = connection.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            after = info.get("endCursor")

    def reserve(self, points: float) -> float:
        """Wait until the shop's cost bucket (as Shopify last reported it) holds `points`, the expected cost of the
        next request (capped at the bucket's size); returns the seconds waited. Batched mutations call it so that
        a request is not sent only to be THROTTLED."""
        bucket = bucket_for(self.shop_domain)
        if bucket is None:
            return 0.0
        wait = min(bucket.wait_for(points, time.monotonic()), defaults.SHOPIFY_RETRY_MAX_SECONDS)
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    # -- internals --
    def _wait_for_budget(self) -> None:
        bucket = bucket_for(self.shop_domain)
        if bucket is None:
            return
        wait = bucket.wait_for(min(defaults.SHOPIFY_THROTTLE_RESERVE_POINTS, bucket.maximum), time.monotonic())
        if wait > 0:
            self._sleep(min(wait, defaults.SHOPIFY_RETRY_MAX_SECONDS))

    def _throttle_wait(self) -> float:
        cost = self.last_cost or {}
        status = cost.get("throttleStatus") or {}
        try:
            requested = float(cost.get("requestedQueryCost") or 0)
            available = float(status["currentlyAvailable"])
            rate = float(status["restoreRate"])
        except (KeyError, TypeError, ValueError):
            return 0.0
        if rate <= 0:
            return 0.0
        return max(0.0, (requested - available) / rate)

    def _retry_or_raise(self, attempt: int, error: ShopifyError, *, wait: float | None = None,
                        retry_after: str | None = None) -> int:
        if attempt >= self.max_retries:
            raise error
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                wait = None
        if not wait:
            backoff = defaults.SHOPIFY_RETRY_BASE_SECONDS * (2 ** attempt)
            wait = backoff * (0.5 + random.random() / 2)
        log.info("%s; retrying in %.2f s", error, wait)
        self._sleep(min(wait, defaults.SHOPIFY_RETRY_MAX_SECONDS))
        return attempt + 1


def _throttled(errors) -> bool:
    if not isinstance(errors, list):
        return False
    return any(isinstance(e, dict) and (e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors)


def client_for(shop, *, despite_reauth: bool = False) -> AdminClient:
    """A client for a shop row: its stored token (refreshed ahead of expiry) and one refresh on a 401.

    `despite_reauth` uses the stored tokens even when the shop is flagged as needing re-authorisation
    (to ask Shopify whether the app is still installed, kinnekt.shopify.install.still_installed).
    """
    from kinnekt.shopify import tokens
    return AdminClient(shop.domain, token=lambda: tokens.access_token(shop, despite_reauth=despite_reauth),
                       refresh=lambda rejected: tokens.force_refresh(shop, rejected, despite_reauth=despite_reauth))


def client_for_token(shop_domain: str, access_token: str) -> AdminClient:
    """A client with a given token and no refresh (checking a custom app's token before storing it)."""
    return AdminClient(shop_domain, token=lambda: access_token)


def gid_to_id(gid: str | None) -> int | None:
    """`gid://shopify/Product/123` -> 123 (None stays None, and so does a tail that is not an id, such as "²")."""
    from kinnekt.numbers import record_id
    if not gid:
        return None
    return record_id(str(gid).rsplit("/", 1)[-1].split("?", 1)[0])


def gid(kind: str, value) -> str:
    """123, "Product" -> `gid://shopify/Product/123`."""
    return f"gid://shopify/{kind}/{value}"
