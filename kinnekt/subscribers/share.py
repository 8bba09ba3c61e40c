"""The shareable link: a public page per shop (/j/<handle>) with an `sms:` link pre-filled with a keyword, and its QR.

How a join counts as Shareable Link: the merchant picks one of their active keywords for the link
(Shop.share_keyword). Texting that keyword in subscribes through the usual keyword path (double opt-in,
the keyword's reply, its auto segment) but with source Shareable Link. So the keyword should be one
used only for the link; the settings say so.
"""
from __future__ import annotations

import re
from urllib.parse import quote

import segno
from flask import current_app, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Keyword, Shop

SHOP_SUFFIX = ".myshopify.com"
HANDLE_RE = re.compile(r"[a-z0-9][a-z0-9-]*")


class ShareError(ValueError):
    """The chosen keyword cannot be used for the link."""


def handle(shop: Shop) -> str:
    """The shop's handle in the link: its myshopify name without the suffix."""
    return shop.domain.removesuffix(SHOP_SUFFIX)


def shop_for_handle(session: OrmSession, value: str) -> Shop | None:
    """The installed shop whose link this is, with a working link keyword; None otherwise."""
    value = (value or "").lower()
    if not HANDLE_RE.fullmatch(value):
        return None
    shop = session.scalar(select(Shop).where(Shop.domain == value + SHOP_SUFFIX))
    if shop is None or not shop.installed or link_keyword(session, shop) is None:
        return None
    return shop


def link_keyword(session: OrmSession, shop: Shop) -> Keyword | None:
    """The active keyword the link pre-fills, or None (link off, or the keyword was removed or deactivated)."""
    if not shop.share_keyword:
        return None
    return session.scalar(select(Keyword).where(Keyword.shop_id == shop.id, Keyword.word == shop.share_keyword,
                                                Keyword.active.is_(True)))


def set_keyword(session: OrmSession, shop: Shop, word: str | None) -> str | None:
    """Choose the link's keyword (an active keyword of the shop; empty turns the link off) and commit."""
    word = (word or "").strip().upper() or None
    if word is not None:
        keyword = session.scalar(select(Keyword).where(Keyword.shop_id == shop.id, Keyword.word == word))
        if keyword is None:
            raise ShareError(f"{word} is not one of your keywords. Create it on the Keywords page first.")
        if not keyword.active:
            raise ShareError(f"{word} is deactivated. Activate it on the Keywords page first.")
    shop.share_keyword = word
    session.commit()
    return word


def source_for_keyword(shop: Shop, keyword: Keyword) -> str:
    """The subscription source of a join by texting `keyword`: shareable_link for the link's keyword."""
    return "shareable_link" if shop.share_keyword and keyword.word == shop.share_keyword else "keyword"


def sender_number(shop: Shop, session: OrmSession | None = None) -> str | None:
    """The number people text, as inbound texts are routed: the shop's own default number, else its sender
    setting, else the app's default (kinnekt.sms.senders.inbound_number)."""
    from kinnekt.db import Session
    from kinnekt.sms import senders
    return senders.inbound_number(session if session is not None else Session(), shop)


def sms_uri(number: str, keyword: str) -> str:
    """An `sms:` link to `number` with `keyword` as the body (`?&body=` works on both iOS and Android)."""
    return f"sms:{number}?&body={quote(keyword)}"


def page_url(shop: Shop) -> str:
    """The public URL of the shop's link page."""
    base = current_app.config.get("SHOPIFY_APP_URL", "").rstrip("/")
    return base + url_for("storefront.share_page", handle=handle(shop))


def qr_svg(data: str, *, title: str) -> str:
    """A QR code of `data` as inline SVG markup (no external image)."""
    return segno.make(data, error="m").svg_inline(scale=6, border=2, title=title, omitsize=True, dark="#000",
                                                 light="#fff", svgclass="qr")
