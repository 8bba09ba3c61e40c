"""Tracked short links: finding URLs in a message, replacing each with `/r/<code>`, and where a click goes.

A message's URLs are the http(s) URLs in its text: `https?://` up to the next space, with trailing punctuation
that closes the sentence (".", ",", "!", "?", ":", ";", quotes, an unbalanced ")" or "]") left out. Anything
else (`www.example.com` without a scheme, `javascript:`, `ftp://`) is not a link and is sent as written.
"""
from __future__ import annotations

import re
import secrets
import string
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from sqlalchemy import select

from kinnekt import defaults
from kinnekt.config import public_base  # noqa: F401 (callers also name it links.public_base)
from kinnekt.db import insert_ignoring_duplicates, utcnow
from kinnekt.models import Campaign, Link, Message, Shop

URL_PATTERN = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
TRAILING = ".,;:!?*"
CLOSERS = {")": "(", "]": "[", "}": "{"}
CODE_ALPHABET = string.ascii_letters + string.digits
MAX_URL_LENGTH = 2048
UTM_SOURCE = "sms"
UTM_MEDIUM = "kinnekt"
INSERT_CHUNK = 100
"""Links per INSERT statement when a batch's links are made."""


def find_urls(text: str | None) -> list[str]:
    """The http(s) URLs in `text`, in order (repeats included), without the sentence's trailing punctuation."""
    found = []
    for match in URL_PATTERN.finditer(text or ""):
        url = _trim(match.group(0))
        if is_trackable(url):
            found.append(url)
    return found


def _trim(url: str) -> str:
    while url:
        last = url[-1]
        if last in TRAILING:
            url = url[:-1]
        elif last in CLOSERS and url.count(CLOSERS[last]) < url.count(last):
            url = url[:-1]  # "(see https://x.com/a)": the ")" closes the sentence's parenthesis
        else:
            break
    return url


def is_trackable(url: str) -> bool:
    """True for an absolute http(s) URL with a host: the only targets a short link may redirect to."""
    if not url or len(url) > MAX_URL_LENGTH:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def short_url(code: str) -> str:
    """The short link for a code: `{public base}/r/{code}`."""
    return f"{public_base()}/r/{code}"


def short_url_length() -> int:
    """Characters every short link takes in a message (what the composer counts for each URL)."""
    return len(public_base()) + len("/r/") + defaults.LINK_CODE_LENGTH


def new_code() -> str:
    """A fresh random code (letters and digits from `secrets`)."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(defaults.LINK_CODE_LENGTH))


def rewrite(session, shop: Shop, message: Message, text: str) -> str:
    """Replace every URL in `text` by the message's short link for it; a retried send gets the same codes.

    One Link per (message, url), made on first use; URLs that already are our short links are left alone, so
    rewriting a rewritten text changes nothing. Writes the new links in the caller's transaction (which commits).
    """
    return rewrite_many(session, shop, [(message, text)])[0]


def rewrite_many(session, shop: Shop, items: list[tuple[Message, str]]) -> list[str]:
    """`rewrite` for many messages at once (a send batch): each (message, text)'s text with its short links.

    A few statements for the whole list instead of several per link: one select of the links the messages
    already have, one insert of the missing ones (a row whose code or (message, url) is taken is left out),
    one select of what is there now; a code taken meanwhile gets a fresh one in another round, up to
    LINK_CODE_ATTEMPTS. Not committed (the caller's transaction commits the links).
    """
    wanted = [[url for url in dict.fromkeys(find_urls(text)) if not _is_ours(url)] for _, text in items]
    if not any(wanted):
        return [text for _, text in items]
    if any(message.id is None for message, _ in items):
        session.flush()
    codes = _ensure(session, shop, {message.id: message for message, _ in items},
                    {(message.id, url) for (message, _), urls in zip(items, wanted) for url in urls})
    return [_substitute(text, {url: codes[message.id, url] for url in urls}) if urls else text
            for (message, text), urls in zip(items, wanted)]


def _ensure(session, shop: Shop, messages: dict[int, Message],
            pairs: set[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """The code of each (message id, url) pair, making the links that do not exist yet (see `rewrite_many`)."""
    codes = _codes(session, pairs)
    for _ in range(defaults.LINK_CODE_ATTEMPTS):
        missing = sorted(pairs - codes.keys())
        if not missing:
            return codes
        now = utcnow()
        rows = [{"shop_id": shop.id, "code": new_code(), "url": url, "campaign_id": messages[message_id].campaign_id,
                 "subscriber_id": messages[message_id].subscriber_id, "message_id": message_id, "created_at": now}
                for message_id, url in missing]
        for start in range(0, len(rows), INSERT_CHUNK):  # bound the statement's parameters (7 per row)
            session.execute(insert_ignoring_duplicates(session, Link, rows[start:start + INSERT_CHUNK]))
        codes.update(_codes(session, set(missing)))
    if pairs - codes.keys():
        raise RuntimeError("could not find an unused short link code")
    return codes


def _codes(session, pairs: set[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """The codes of the links that exist for these (message id, url) pairs."""
    rows = session.execute(
        select(Link.message_id, Link.url, Link.code)
        .where(Link.message_id.in_(sorted({message_id for message_id, _ in pairs})),
               Link.url.in_(sorted({url for _, url in pairs})))
        .execution_options(all_shops=True)).all()
    return {(message_id, url): code for message_id, url, code in rows if (message_id, url) in pairs}


def _substitute(text: str, codes: dict[str, str]) -> str:
    return URL_PATTERN.sub(lambda match: _replace(match.group(0), codes), text)


def _replace(raw: str, codes: dict[str, str]) -> str:
    url = _trim(raw)
    code = codes.get(url)
    if code is None:
        return raw
    return short_url(code) + raw[len(url):]


def _is_ours(url: str) -> bool:
    return url.startswith(public_base() + "/r/")


def link_for(session, shop: Shop, message: Message, url: str) -> Link:
    """The message's Link for `url`, created with a fresh code when there is none yet."""
    if not is_trackable(url):
        raise ValueError(f"not an http(s) URL: {url!r}")
    if message.id is None:
        session.flush()
    code = _ensure(session, shop, {message.id: message}, {(message.id, url)})[message.id, url]
    return session.scalar(select(Link).where(Link.code == code).execution_options(all_shops=True))


def find(session, code: str) -> Link | None:
    """The link with this code in any shop (a code is global), or None."""
    if not code or len(code) > 16 or any(ch not in CODE_ALPHABET for ch in code):
        return None
    return session.scalar(select(Link).where(Link.code == code).execution_options(all_shops=True))


def campaign_slug(campaign: Campaign | None) -> str:
    """`utm_campaign` for a campaign: its name in lower-case words joined by "-", else `campaign-<id>`."""
    if campaign is None:
        return "test-message"
    slug = re.sub(r"[^a-z0-9]+", "-", (campaign.name or "").lower()).strip("-")[:80].strip("-")
    return slug or f"campaign-{campaign.id}"


def target_url(link: Link, campaign: Campaign | None) -> str:
    """Where a click goes: the link's URL with our UTM parameters and the ref (`kn=<code>`) merged in.

    The target's other parameters and fragment are kept byte for byte; a utm_source/medium/campaign or `kn`
    already in the URL is replaced by ours (the issue asks that clicks arrive tagged as ours).
    """
    parts = urlsplit(link.url)
    ours = {"utm_source": UTM_SOURCE, "utm_medium": UTM_MEDIUM, "utm_campaign": campaign_slug(campaign),
            defaults.LINK_REF_PARAM: link.code}
    kept = [piece for piece in parts.query.split("&")
            if piece and unquote_plus(piece.split("=", 1)[0]) not in ours]
    added = [f"{key}={quote(value, safe='')}" for key, value in ours.items()]
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "&".join(kept + added), parts.fragment))


def ref_code(landing_site: str | None) -> str | None:
    """The short link code an order's landing site carries (`?kn=<code>`), if any."""
    if not landing_site or defaults.LINK_REF_PARAM + "=" not in landing_site:
        return None
    try:
        query = urlsplit(landing_site).query
    except ValueError:
        return None
    for piece in query.split("&"):
        key, _, value = piece.partition("=")
        if unquote_plus(key) == defaults.LINK_REF_PARAM and value:
            return unquote_plus(value)
    return None


def is_preview_agent(user_agent: str | None) -> bool:
    """True for a link-preview fetcher or crawler (not a person tapping the link)."""
    agent = (user_agent or "").lower()
    return any(fragment in agent for fragment in defaults.LINK_PREVIEW_AGENTS)
