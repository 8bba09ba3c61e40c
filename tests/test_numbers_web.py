"""A number per shop, through the Settings routes and the fake Vonage's Numbers API: search, buy (once, even on a
double click or two shops at once), bring, sender names, default per country, release; bad input never a 500 and
nothing saved; another shop's numbers are out of reach."""
from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import func, select

from kinnekt.db import Session, utcnow
from kinnekt.models import SenderNumber
from kinnekt.sms import numbers
from kinnekt.tenancy import bind_shop
from tests.fake_vonage import APPLICATION_ID, numbers_env

pytestmark = pytest.mark.usefixtures("settled_jobs")

TOLL_FREE = "18885550101"
OTHER_TOLL_FREE = "18885550102"


@pytest.fixture
def fake(app, vonage_config, monkeypatch):
    """The fake Vonage with the Numbers API's credentials configured, two toll-free numbers on sale."""
    for key, value in numbers_env(vonage_config).items():
        monkeypatch.setitem(app.config, key, value)
    vonage_config.offer(TOLL_FREE)
    vonage_config.offer(OTHER_TOLL_FREE)
    vonage_config.offer("447700900123", country="GB", type_="mobile-lvn", cost="1.00")
    return vonage_config


def rows(shop_id: int | None = None) -> list[SenderNumber]:
    bind_shop(None)
    Session.expire_all()
    query = select(SenderNumber).order_by(SenderNumber.id)
    if shop_id is not None:
        query = query.where(SenderNumber.shop_id == shop_id)
    return list(Session.scalars(query))


def count() -> int:
    bind_shop(None)
    return Session.scalar(select(func.count()).select_from(SenderNumber))


def buy(client, auth, msisdn=TOLL_FREE, country="US", kind="toll_free"):
    return client.post("/settings/numbers/buy", data={"country": country, "msisdn": msisdn, "kind": kind},
                       headers=auth)


# --- the card and the search --------------------------------------------------------------------------------------

def test_the_settings_page_loads_the_card(client, auth, fake):
    page = client.get("/settings/", headers={"Authorization": auth["Authorization"]}).get_data(as_text=True)
    assert 'id="settings-numbers"' in page and "/settings/numbers/" in page
    card = client.get("/settings/numbers/", headers=auth).get_data(as_text=True)
    assert "Buy a number" in card and "No numbers of your own yet: texts come from 15550100200" in card


def test_search_lists_numbers_for_sale_in_vonages_documented_request(client, auth, fake):
    response = client.get("/settings/numbers/search?country=US&kind=toll_free", headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert f"+{TOLL_FREE}" in html and f"+{OTHER_TOLL_FREE}" in html and "447700900123" not in html
    call = fake.numbers_calls("/number/search")[-1]
    assert call["method"] == "GET"
    assert call["params"] == {"country": "US", "type": "landline-toll-free", "features": "SMS", "size": "10"}
    assert call["headers"]["Authorization"].startswith("Basic ")  # the key and secret stay out of the URL
    narrowed = client.get("/settings/numbers/search?country=US&kind=toll_free&pattern=0102", headers=auth)
    assert f"+{OTHER_TOLL_FREE}" in narrowed.get_data(as_text=True)
    assert TOLL_FREE not in narrowed.get_data(as_text=True)
    assert fake.numbers_calls("/number/search")[-1]["params"]["search_pattern"] == "1"
    empty = client.get("/settings/numbers/search?country=CA&kind=long_code", headers=auth).get_data(as_text=True)
    assert 'id="numbers-no-results"' in empty


@pytest.mark.parametrize("query, words", [
    ("country=ZZ&kind=toll_free", "Choose a country"),
    ("country=GB&kind=toll_free", "Choose a kind of number offered in United Kingdom"),
    ("country=US&kind=alphanumeric", "does not allow alphanumeric"),
    ("country=GB&kind=alphanumeric", "not bought"),
    ("country=u%C3%9F&kind=%E2%9C%93", "Choose a country"),
])
def test_a_bad_search_says_why_and_asks_vonage_nothing(client, auth, fake, query, words):
    response = client.get(f"/settings/numbers/search?{query}", headers=auth)
    assert response.status_code == 200 and words in response.get_data(as_text=True)
    assert fake.numbers_calls("/number/search") == []
    assert client.get(f"/settings/numbers/search?{query}",
                      headers={"Authorization": auth["Authorization"]}).status_code == 400


def test_without_api_credentials_nothing_is_bought_and_the_card_says_what_is_missing(client, auth, app, fake,
                                                                                      monkeypatch):
    monkeypatch.setitem(app.config, "VONAGE_API_KEY", "")
    card = client.get("/settings/numbers/", headers=auth).get_data(as_text=True)
    assert "VONAGE_API_KEY and VONAGE_API_SECRET" in card and "Buy a number" in card
    assert "set VONAGE_API_KEY" in client.get("/settings/numbers/search?country=US&kind=toll_free",
                                              headers=auth).get_data(as_text=True)
    response = buy(client, auth)
    assert response.status_code == 200 and "Nothing was changed" in response.get_data(as_text=True)
    assert count() == 0 and fake.numbers_calls() == []


def test_wrong_credentials_are_vonages_401_and_save_nothing(client, auth, app, fake, monkeypatch):
    monkeypatch.setitem(app.config, "VONAGE_API_SECRET", "WrongSecret000")
    response = buy(client, auth)
    assert "authentication failed" in response.get_data(as_text=True)
    assert count() == 0 and TOLL_FREE in fake.available


# --- buying -------------------------------------------------------------------------------------------------------

def test_buying_links_the_number_and_makes_it_the_countrys_default(client, auth, shop, fake):
    response = buy(client, auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and f"+{TOLL_FREE}" in html and "Default" in html
    assert "is yours" in response.headers["HX-Trigger"]
    [row] = rows(shop.id)
    assert (row.msisdn, row.country, row.kind, row.origin, row.status, row.is_default) == \
        (TOLL_FREE, "US", "toll_free", "bought", "active", True)
    assert row.linked_at is not None
    assert fake.owned[TOLL_FREE]["app_id"] == APPLICATION_ID  # its inbound and status webhooks reach Kinnekt
    [bought] = fake.numbers_calls("/number/buy")
    assert bought["method"] == "POST" and bought["params"] == {"country": "US", "msisdn": TOLL_FREE}
    assert fake.numbers_calls("/number/update")[0]["params"] == {"country": "US", "msisdn": TOLL_FREE,
                                                                 "app_id": APPLICATION_ID}
    buy(client, auth, OTHER_TOLL_FREE)
    second = [r for r in rows(shop.id) if r.msisdn == OTHER_TOLL_FREE][0]
    assert second.is_default is False and second.linked_at is not None  # the US has its default already


def test_changing_the_senders_tells_the_registration_card_to_reload(client, auth, shop, fake):
    from kinnekt.web.numbers import SENDERS_CHANGED
    registration_card = client.get("/settings/registration/", headers=auth).get_data(as_text=True)
    assert f'hx-trigger="{SENDERS_CHANGED} from:body"' in registration_card  # it listens, and reloads itself
    assert 'hx-get="/settings/registration/"' in registration_card
    bought = buy(client, auth)
    assert SENDERS_CHANGED in json.loads(bought.headers["HX-Trigger"])
    [row] = rows(shop.id)
    released = client.post(f"/settings/numbers/{row.id}/release", headers=auth)
    assert SENDERS_CHANGED in json.loads(released.headers["HX-Trigger"])
    refused = client.post("/settings/numbers/999999/release", headers=auth)  # nothing changed: no reload
    assert SENDERS_CHANGED not in json.loads(refused.headers["HX-Trigger"])


def test_a_double_click_buys_once(client, auth, shop, fake):
    first, again = buy(client, auth), buy(client, auth)
    assert first.status_code == again.status_code == 200
    assert len(rows(shop.id)) == 1 and len(fake.numbers_calls("/number/buy")) == 1


def test_a_number_gone_meanwhile_is_vonages_420_and_nothing_is_kept(client, auth, shop, fake):
    del fake.available[TOLL_FREE]
    response = buy(client, auth)
    assert response.status_code == 200
    assert "no longer available" in response.get_data(as_text=True)
    assert count() == 0


def test_no_answer_to_a_buy_keeps_nothing_and_says_to_check(client, auth, shop, fake):
    fake.then_numbers("drop")  # the buy is Vonage's first request: read, then no answer
    response = buy(client, auth)
    assert "Bring a number" in response.get_data(as_text=True)
    assert count() == 0


@pytest.mark.parametrize("answer, words", [
    (("answer", 500, "<html>Internal error</html>"), "Vonage answered HTTP 500"),
    (("answer", 200, {"error-code": "429", "error-code-label": "throttled"}), "throttled"),
    (("answer", 200, ["not", "an", "object"]), "Bring a number"),  # unreadable: maybe bought, so check
])
def test_odd_answers_from_vonage_are_refusals_not_errors(client, auth, shop, fake, answer, words):
    fake.then_numbers(answer)
    response = buy(client, auth)
    assert response.status_code == 200 and words in response.get_data(as_text=True)
    assert count() == 0
    fake.then_numbers(("answer", 200, "{broken json"))
    found = client.get("/settings/numbers/search?country=US&kind=toll_free", headers=auth)
    assert found.status_code == 200 and "answer could not be read" in found.get_data(as_text=True)


def test_a_failed_link_leaves_the_number_unlinked_until_link_again(client, auth, shop, fake):
    fake.then_numbers("ok", "drop")  # bought, then the link gets no answer
    response = buy(client, auth)
    assert "Link again" in response.get_data(as_text=True)
    [row] = rows(shop.id)
    assert row.linked_at is None and row.is_default is False
    again = client.post(f"/settings/numbers/{row.id}/link", headers=auth)
    assert again.status_code == 200
    [row] = rows(shop.id)
    assert row.linked_at is not None and row.is_default is True


def test_two_shops_buying_one_number_at_once_one_wins(app, db, shop, other_shop, fake):
    start = threading.Barrier(2)
    outcome: dict[int, object] = {}

    def attempt(shop_id: int):
        with app.app_context():
            from kinnekt.models import Shop
            me = Session.get(Shop, shop_id)
            start.wait()
            try:
                outcome[shop_id] = numbers.buy(Session, me, "US", TOLL_FREE, "toll_free").shop_id
            except numbers.NumberError as exc:
                outcome[shop_id] = str(exc)
            finally:
                Session.remove()

    threads = [threading.Thread(target=attempt, args=(s.id,)) for s in (shop, other_shop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [shop_id for shop_id, result in outcome.items() if result == shop_id]
    assert len(winners) == 1, outcome
    loser = ({shop.id, other_shop.id} - set(winners)).pop()
    assert "taken" in outcome[loser] or "no longer available" in outcome[loser]
    live = [r for r in rows() if r.status == "active"]
    assert [(r.shop_id, r.msisdn) for r in live] == [(winners[0], TOLL_FREE)]
    assert len(fake.numbers_calls("/number/buy")) == 1


# --- bad input and other shops ------------------------------------------------------------------------------------

BAD_POSTS = [
    ("/settings/numbers/buy", {"country": "US", "msisdn": "not a number", "kind": "toll_free"}),
    ("/settings/numbers/buy", {"country": "XX", "msisdn": TOLL_FREE, "kind": "toll_free"}),
    ("/settings/numbers/buy", {"country": "US", "msisdn": TOLL_FREE, "kind": "mobile"}),
    ("/settings/numbers/buy", {"country": "US", "msisdn": TOLL_FREE, "kind": "alphanumeric"}),
    ("/settings/numbers/buy", {"country": "US", "msisdn": "1" * 40, "kind": "toll_free"}),
    ("/settings/numbers/buy", {}),
    ("/settings/numbers/buy", {"country": ["US", "CA"], "msisdn": "+1 888 555 01O1", "kind": "toll_free"}),
    ("/settings/numbers/bring", {"msisdn": ""}),
    ("/settings/numbers/bring", {"msisdn": "+1 (888) 555-0177"}),  # not in the account
    ("/settings/numbers/alphanumeric", {"country": "US", "sender_id": "ACME"}),
    ("/settings/numbers/alphanumeric", {"country": "GB", "sender_id": "123456"}),
    ("/settings/numbers/alphanumeric", {"country": "GB", "sender_id": "TOO LONG A NAME"}),
    ("/settings/numbers/alphanumeric", {"country": "GB", "sender_id": "Ünïcödé"}),
    ("/settings/numbers/999999/default", {}),
    ("/settings/numbers/999999/release", {}),
    ("/settings/numbers/999999/link", {}),
]


@pytest.mark.parametrize("path, data", BAD_POSTS)
def test_bad_input_is_refused_with_a_reason_and_saves_nothing(client, auth, shop, fake, path, data):
    response = client.post(path, data=data, headers=auth)
    assert response.status_code == 200
    assert "Nothing was changed" in response.get_data(as_text=True)
    assert '"isError": true' in response.headers["HX-Trigger"]
    assert count() == 0 and fake.numbers_calls("/number/buy") == []
    plain = client.post(path, data=data, headers={"Authorization": auth["Authorization"]})
    assert plain.status_code == 400 and count() == 0


def test_another_shops_number_and_senders_are_out_of_reach(client, auth, token_for, shop, other_shop, fake):
    theirs = {"Authorization": f"Bearer {token_for(other_shop.domain)}", "HX-Request": "true"}
    assert buy(client, theirs).status_code == 200
    [row] = rows(other_shop.id)
    response = buy(client, auth)  # the same number, already another shop's
    assert "taken" in response.get_data(as_text=True) and rows(shop.id) == []
    fake.own(TOLL_FREE, app_id=APPLICATION_ID)
    assert "taken" in client.post("/settings/numbers/bring", data={"msisdn": TOLL_FREE},
                                  headers=auth).get_data(as_text=True)
    for action in ("default", "release", "link"):
        refused = client.post(f"/settings/numbers/{row.id}/{action}", headers=auth)
        assert "No such sender" in refused.get_data(as_text=True)
    card = client.get("/settings/numbers/", headers=auth).get_data(as_text=True)
    assert TOLL_FREE not in card
    [row] = rows(other_shop.id)
    assert row.status == "active" and row.is_default and fake.numbers_calls("/number/cancel") == []


def test_an_id_beyond_any_row_is_404(client, auth, shop, fake):
    for action in ("release", "default", "link"):
        assert client.post(f"/settings/numbers/{10 ** 25}/{action}", headers=auth).status_code == 404
    assert count() == 0 and fake.numbers_calls() == []
    with pytest.raises(numbers.NumberError, match="No such sender"):
        numbers.release(Session, shop, 2 ** 63)


def test_text_no_database_stores_is_refused_by_the_guard(client, auth, fake):
    response = client.post("/settings/numbers/buy", data={"country": "US", "msisdn": "1888\x00555",
                                                          "kind": "toll_free"}, headers=auth)
    assert response.status_code == 400 and count() == 0 and fake.numbers_calls() == []


def test_no_session_token_is_401(client, fake):
    assert client.post("/settings/numbers/buy", data={"country": "US", "msisdn": TOLL_FREE,
                                                      "kind": "toll_free"}).status_code == 401
    assert count() == 0


# --- bring, names, default, release -------------------------------------------------------------------------------

def test_bringing_a_number_checks_the_account_and_links_it(client, auth, shop, fake):
    fake.own("15550100333", type_="mobile-lvn")
    response = client.post("/settings/numbers/bring", data={"msisdn": "+1 555 010 0333"}, headers=auth)
    assert response.status_code == 200 and "added" in response.headers["HX-Trigger"]
    [row] = rows(shop.id)
    assert (row.msisdn, row.country, row.kind, row.origin, row.is_default) == \
        ("15550100333", "US", "long_code", "brought", True)
    assert fake.owned["15550100333"]["app_id"] == APPLICATION_ID
    assert fake.numbers_calls("/account/numbers")[0]["params"]["pattern"] == "15550100333"
    fake.own("15550100444", features=("VOICE",))
    voice_only = client.post("/settings/numbers/bring", data={"msisdn": "15550100444"}, headers=auth)
    assert "cannot send SMS" in voice_only.get_data(as_text=True) and len(rows(shop.id)) == 1


def test_a_sender_name_where_the_country_allows_it(client, auth, shop, fake):
    response = client.post("/settings/numbers/alphanumeric", data={"country": "GB", "sender_id": " North  Wind "},
                           headers=auth)
    assert response.status_code == 200 and "North Wind" in response.get_data(as_text=True)
    [row] = rows(shop.id)
    assert (row.msisdn, row.kind, row.country, row.is_default) == ("North Wind", "alphanumeric", "GB", True)
    client.post("/settings/numbers/alphanumeric", data={"country": "GB", "sender_id": "North Wind"}, headers=auth)
    assert len(rows(shop.id)) == 1
    assert fake.numbers_calls() == []  # a name is not bought


def test_make_default_moves_the_default_within_the_country(client, auth, shop, fake):
    buy(client, auth)
    buy(client, auth, OTHER_TOLL_FREE)
    second = [r for r in rows(shop.id) if r.msisdn == OTHER_TOLL_FREE][0]
    response = client.post(f"/settings/numbers/{second.id}/default", headers=auth)
    assert response.status_code == 200
    assert {r.msisdn: r.is_default for r in rows(shop.id)} == {TOLL_FREE: False, OTHER_TOLL_FREE: True}


def test_one_default_per_shop_and_country_in_the_database(db, shop, fake):
    from sqlalchemy.exc import IntegrityError
    now = utcnow()
    for msisdn in (TOLL_FREE, OTHER_TOLL_FREE):
        db.add(SenderNumber(shop_id=shop.id, msisdn=msisdn, country="US", kind="toll_free", is_default=True,
                            linked_at=now))
    with pytest.raises(IntegrityError):
        db.commit()
    db.rollback()


def test_releasing_cancels_a_bought_number_and_passes_the_default_on(client, auth, shop, fake):
    buy(client, auth)
    buy(client, auth, OTHER_TOLL_FREE)
    first = [r for r in rows(shop.id) if r.msisdn == TOLL_FREE][0]
    response = client.post(f"/settings/numbers/{first.id}/release", headers=auth)
    assert response.status_code == 200 and "released" in response.headers["HX-Trigger"]
    assert fake.numbers_calls("/number/cancel")[0]["params"] == {"country": "US", "msisdn": TOLL_FREE}
    assert TOLL_FREE not in fake.owned
    state = {r.msisdn: (r.status, r.is_default) for r in rows(shop.id)}
    assert state == {TOLL_FREE: ("released", False), OTHER_TOLL_FREE: ("active", True)}
    assert TOLL_FREE not in client.get("/settings/numbers/", headers=auth).get_data(as_text=True)
    # Released, the number can be bought again (by anyone): the live-number index covers active rows only.
    fake.offer(TOLL_FREE)
    assert buy(client, auth).status_code == 200
    assert sorted(r.status for r in rows(shop.id) if r.msisdn == TOLL_FREE) == ["active", "released"]


def test_a_refused_cancel_keeps_the_number(client, auth, shop, fake):
    buy(client, auth)
    [row] = rows(shop.id)
    fake.then_numbers("drop")
    response = client.post(f"/settings/numbers/{row.id}/release", headers=auth)
    assert "kept" in response.get_data(as_text=True)
    [row] = rows(shop.id)
    assert row.status == "active" and row.is_default


def test_releasing_a_brought_number_points_it_away_and_leaves_it_in_the_account(client, auth, shop, fake):
    fake.own("15550100333", type_="mobile-lvn")
    client.post("/settings/numbers/bring", data={"msisdn": "15550100333"}, headers=auth)
    [row] = rows(shop.id)
    assert fake.owned["15550100333"]["app_id"] == APPLICATION_ID
    response = client.post(f"/settings/numbers/{row.id}/release", headers=auth)
    assert response.status_code == 200 and "released" in response.headers["HX-Trigger"]
    assert rows(shop.id)[0].status == "released" and "15550100333" in fake.owned
    assert fake.numbers_calls("/number/cancel") == []
    # The documented way: the application and the inbound webhook sent empty, so nothing reaches Kinnekt any more.
    unlink = fake.numbers_calls("/number/update")[-1]["params"]
    assert unlink == {"country": "US", "msisdn": "15550100333", "app_id": "", "moHttpUrl": ""}
    assert "app_id" not in fake.owned["15550100333"] and "moHttpUrl" not in fake.owned["15550100333"]


@pytest.mark.parametrize("answer", ["drop", ("answer", 401, {"error-code": "401",
                                                             "error-code-label": "authentication failed"})])
def test_a_brought_number_vonage_does_not_unlink_is_kept(client, auth, shop, fake, answer):
    fake.own("15550100333", type_="mobile-lvn")
    client.post("/settings/numbers/bring", data={"msisdn": "15550100333"}, headers=auth)
    [row] = rows(shop.id)
    fake.then_numbers(answer)
    response = client.post(f"/settings/numbers/{row.id}/release", headers=auth)
    assert response.status_code == 200
    assert "did not unlink the number, so it is kept" in response.get_data(as_text=True)
    [row] = rows(shop.id)
    assert (row.status, row.is_default, row.released_at) == ("active", True, None)
    assert fake.owned["15550100333"]["app_id"] == APPLICATION_ID
    assert fake.numbers_calls("/number/cancel") == []


def test_a_brought_number_gone_from_the_account_is_released_all_the_same(client, auth, shop, fake):
    fake.own("15550100333", type_="mobile-lvn")
    client.post("/settings/numbers/bring", data={"msisdn": "15550100333"}, headers=auth)
    [row] = rows(shop.id)
    del fake.owned["15550100333"]  # the merchant gave it up at Vonage meanwhile: 420, nothing to point away
    client.post(f"/settings/numbers/{row.id}/release", headers=auth)
    assert rows(shop.id)[0].status == "released"


def test_releasing_a_sender_name_asks_vonage_nothing(client, auth, shop, fake):
    client.post("/settings/numbers/alphanumeric", data={"country": "GB", "sender_id": "North Wind"}, headers=auth)
    [row] = rows(shop.id)
    client.post(f"/settings/numbers/{row.id}/release", headers=auth)
    assert rows(shop.id)[0].status == "released" and fake.numbers_calls() == []
