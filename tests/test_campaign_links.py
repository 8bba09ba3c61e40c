"""Short links: finding URLs in a message and rewriting them to `/r/<code>`, once per message and URL.

The helpers at the top (campaign, recipient, message) are shared by the other campaign link/stat test modules.
"""
from __future__ import annotations

import datetime as dt
from functools import partial

import pytest
from sqlalchemy import func, select

from kinnekt import defaults
from kinnekt.campaigns import links
from kinnekt.models import Campaign, Link, Subscriber
from tests import factories
from tests.factories import message

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 10, 15, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------------- helpers

campaign = partial(factories.campaign, name="Spring sale - VIP", body="Sale! https://alpha.example/sale",
                   status="in_progress", started_at=T0)
"""A campaign of `shop` that started at `started_at` (in progress); committed."""


def recipient(db, shop, *, customer_row=None, **fields) -> Subscriber:
    """A subscribed subscriber of `shop`, optionally linked to a customer; committed."""
    return factories.subscriber(db, shop, customer=customer_row, **fields)


# ---------------------------------------------------------------------------------------------- find_urls

def test_find_urls_leaves_the_sentences_punctuation_out():
    text = ("Shop now: https://alpha.example/sale. Or (see https://alpha.example/faq), "
            "HTTP://Alpha.example/A?x=1&y=2! and https://en.wikipedia.org/wiki/Foo_(bar); done?")
    assert links.find_urls(text) == [
        "https://alpha.example/sale",
        "https://alpha.example/faq",
        "HTTP://Alpha.example/A?x=1&y=2",
        "https://en.wikipedia.org/wiki/Foo_(bar)",
    ]


def test_find_urls_ignores_what_is_not_an_http_link():
    text = "Visit www.alpha.example or ftp://alpha.example/f, javascript:alert(1), mailto:a@b.c, https:// alone"
    assert links.find_urls(text) == []
    assert links.find_urls("") == [] and links.find_urls(None) == []


def test_short_url_length_is_the_length_of_a_real_short_link(app, db, shop):
    camp = campaign(db, shop)
    msg = message(db, camp, recipient(db, shop), status="pending")
    text = links.rewrite(db, shop, msg, "https://alpha.example/a/very/long/path?with=query&and=more")
    assert text.startswith(app.config["SHOPIFY_APP_URL"] + "/r/")
    assert len(text) == links.short_url_length() == len(app.config["SHOPIFY_APP_URL"]) + 3 + defaults.LINK_CODE_LENGTH


# ---------------------------------------------------------------------------------------------- rewrite

def test_rewrite_replaces_every_url_and_keeps_the_rest_of_the_text(app, db, shop):
    camp = campaign(db, shop)
    sub = recipient(db, shop)
    msg = message(db, camp, sub, status="pending")
    body = "Hi! New in: https://alpha.example/new. Sale: https://alpha.example/sale, again https://alpha.example/new!"
    text = links.rewrite(db, shop, msg, body)
    db.commit()
    rows = db.scalars(select(Link).order_by(Link.id)).all()
    assert [r.url for r in rows] == ["https://alpha.example/new", "https://alpha.example/sale"]
    base = app.config["SHOPIFY_APP_URL"]
    new, sale = rows
    assert text == (f"Hi! New in: {base}/r/{new.code}. Sale: {base}/r/{sale.code}, again {base}/r/{new.code}!")
    assert new.code != sale.code
    for row in rows:
        assert len(row.code) == defaults.LINK_CODE_LENGTH and row.code.isalnum()
        assert (row.shop_id, row.campaign_id, row.subscriber_id, row.message_id) == (shop.id, camp.id, sub.id, msg.id)


def test_a_retried_send_reuses_the_same_codes(db, shop):
    camp = campaign(db, shop)
    msg = message(db, camp, recipient(db, shop), status="pending")
    body = "Go https://alpha.example/a and https://alpha.example/b"
    first = links.rewrite(db, shop, msg, body)
    db.commit()
    second = links.rewrite(db, shop, msg, body)
    db.commit()
    assert first == second
    assert db.scalar(select(func.count()).select_from(Link)) == 2
    # Rewriting the rewritten text changes nothing and makes no links for our own short links.
    assert links.rewrite(db, shop, msg, first) == first
    assert db.scalar(select(func.count()).select_from(Link)) == 2


def test_each_recipient_gets_their_own_code(db, shop):
    camp = campaign(db, shop)
    a = message(db, camp, recipient(db, shop), status="pending")
    b = message(db, camp, recipient(db, shop), status="pending")
    text_a = links.rewrite(db, shop, a, "https://alpha.example/sale")
    text_b = links.rewrite(db, shop, b, "https://alpha.example/sale")
    db.commit()
    assert text_a != text_b
    assert db.scalar(select(func.count()).select_from(Link)) == 2


def test_text_without_links_is_returned_unchanged(db, shop):
    camp = campaign(db, shop, body="No links here")
    msg = message(db, camp, recipient(db, shop), status="pending")
    assert links.rewrite(db, shop, msg, "No links here, www.alpha.example.") == "No links here, www.alpha.example."
    assert db.scalar(select(func.count()).select_from(Link)) == 0


def test_a_non_http_target_is_refused_at_rewrite_time_and_nothing_is_saved(db, shop):
    camp = campaign(db, shop)
    msg = message(db, camp, recipient(db, shop), status="pending")
    for target in ("javascript:alert(1)", "ftp://alpha.example/file", "https://", "data:text/html,hi"):
        with pytest.raises(ValueError):
            links.link_for(db, shop, msg, target)
    db.commit()
    assert db.scalar(select(func.count()).select_from(Link)) == 0


def test_a_colliding_code_is_replaced_by_a_fresh_one(db, shop, monkeypatch):
    camp = campaign(db, shop)
    first = message(db, camp, recipient(db, shop), status="pending")
    second = message(db, camp, recipient(db, shop), status="pending")
    codes = iter(["Taken001", "Taken001", "Fresh002"])
    monkeypatch.setattr(links, "new_code", lambda: next(codes))
    links.rewrite(db, shop, first, "https://alpha.example/x")
    text = links.rewrite(db, shop, second, "https://alpha.example/x")
    db.commit()
    assert text.endswith("/r/Fresh002")
    assert sorted(db.scalars(select(Link.code))) == ["Fresh002", "Taken001"]


def test_a_batch_gets_its_links_in_a_few_statements_whatever_its_size(db, shop):
    from sqlalchemy import event
    camp = campaign(db, shop)
    batch = [message(db, camp, recipient(db, shop), status="claimed") for _ in range(40)]
    body = "Sale https://alpha.example/sale and https://alpha.example/faq, or https://alpha.example/sale again"
    statements = []
    bind = db.connection().engine

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(bind, "before_cursor_execute", count)
    try:
        texts = links.rewrite_many(db, shop, [(msg, body) for msg in batch])
    finally:
        event.remove(bind, "before_cursor_execute", count)
    db.commit()
    assert len(statements) == 3  # the links they have, one insert of the missing ones, the links they have now
    made = {(link.message_id, link.url): link.code for link in db.scalars(select(Link))}
    assert len(made) == 80 and len(set(made.values())) == 80
    for msg, text in zip(batch, texts):
        sale, faq = made[msg.id, "https://alpha.example/sale"], made[msg.id, "https://alpha.example/faq"]
        assert text == f"Sale {links.short_url(sale)} and {links.short_url(faq)}, or {links.short_url(sale)} again"
    assert links.rewrite_many(db, shop, [(msg, body) for msg in batch]) == texts  # a retried batch: same codes


def test_a_large_batch_is_inserted_in_chunks(db, shop, monkeypatch):
    monkeypatch.setattr(links, "INSERT_CHUNK", 7)
    camp = campaign(db, shop)
    batch = [message(db, camp, recipient(db, shop), status="claimed") for _ in range(10)]
    texts = links.rewrite_many(db, shop, [(msg, "https://alpha.example/a https://alpha.example/b") for msg in batch])
    db.commit()
    assert db.scalar(select(func.count()).select_from(Link)) == 20
    assert len({text for text in texts}) == 10


def test_a_batch_mixing_new_and_linked_messages_makes_only_the_missing_links(db, shop):
    camp = campaign(db, shop)
    old, new, plain = (message(db, camp, recipient(db, shop), status="claimed") for _ in range(3))
    first = links.rewrite(db, shop, old, "See https://alpha.example/x")
    db.commit()
    texts = links.rewrite_many(db, shop, [(old, "See https://alpha.example/x"), (new, "See https://alpha.example/x"),
                                          (plain, "No link today")])
    db.commit()
    assert texts[0] == first and texts[1] != first and texts[2] == "No link today"
    assert db.scalar(select(func.count()).select_from(Link)) == 2


def test_codes_colliding_inside_a_batch_or_with_an_older_link_are_replaced(db, shop, monkeypatch):
    camp = campaign(db, shop)
    older, a, b = (message(db, camp, recipient(db, shop), status="claimed") for _ in range(3))
    codes = iter(["Taken001", "Dup00002", "Dup00002", "Fresh003"])
    monkeypatch.setattr(links, "new_code", lambda: next(codes))
    links.rewrite(db, shop, older, "https://alpha.example/x")  # Taken001
    texts = links.rewrite_many(db, shop, [(a, "https://alpha.example/x"), (b, "https://alpha.example/x")])
    db.commit()
    assert texts == [links.short_url("Dup00002"), links.short_url("Fresh003")]
    assert sorted(db.scalars(select(Link.code))) == ["Dup00002", "Fresh003", "Taken001"]


def test_a_batch_that_finds_no_free_code_raises_and_saves_no_link(db, shop, monkeypatch):
    camp = campaign(db, shop)
    older, msg = (message(db, camp, recipient(db, shop), status="claimed") for _ in range(2))
    links.rewrite(db, shop, older, "https://alpha.example/x")
    db.commit()
    taken = db.scalar(select(Link.code))
    monkeypatch.setattr(links, "new_code", lambda: taken)
    with pytest.raises(RuntimeError, match="unused short link code"):
        links.rewrite_many(db, shop, [(msg, "https://alpha.example/x")])
    db.rollback()
    assert db.scalar(select(func.count()).select_from(Link)) == 1


def test_the_ref_code_is_read_back_from_a_landing_site():
    assert links.ref_code("/products/hat?utm_source=sms&kn=AbC123xy&x=1") == "AbC123xy"
    assert links.ref_code("https://alpha.example/?kn=Zz9") == "Zz9"
    assert links.ref_code("/products/hat?utm_source=sms") is None
    assert links.ref_code(None) is None


def test_campaign_slug_is_the_name_in_lower_case_words():
    assert links.campaign_slug(Campaign(id=7, name="Spring Sale - VIP (20%)")) == "spring-sale-vip-20"
    assert links.campaign_slug(Campaign(id=7, name="¡¡!!")) == "campaign-7"
    assert links.campaign_slug(None) == "test-message"
