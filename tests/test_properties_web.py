"""Profile properties through the Flask test client: the shop's properties page (add, rename, remove with its
confirmation) and a subscriber's values card, with session tokens, shop scoping and inline errors; both databases."""
from __future__ import annotations

import datetime as dt
import html as html_lib
import json
import re

from sqlalchemy import func, select

from kinnekt.db import Session
from kinnekt.models import ProfileProperty, Segment, Subscriber, SubscriberProperty
from kinnekt.subscribers import properties
from tests.conftest import make_shop

BASE = "/subscribers/properties"


def text(response) -> str:
    return html_lib.unescape(" ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split()))


def toast(response) -> str:
    return json.loads(response.headers["HX-Trigger"])["toast"]["message"]


def person(shop, phone="+12125550101") -> Subscriber:
    row = Subscriber(shop_id=shop.id, phone=phone, status="subscribed", source="manual")
    Session.add(row)
    Session.commit()
    return row


def stored(shop) -> dict:
    Session.expire_all()
    return {p.key: p.type for p in properties.catalogue(Session, shop.id).values()}


def test_every_route_wants_a_session_token(client, shop):
    someone = person(shop)
    for method, url in (("get", f"{BASE}/"), ("post", f"{BASE}/"), ("post", f"{BASE}/1/rename"),
                        ("post", f"{BASE}/1/delete"), ("post", f"/subscribers/{someone.id}/properties")):
        assert getattr(client, method)(url, headers={"HX-Request": "true"}).status_code == 401


def test_the_page_lists_built_ins_and_adds_a_custom_property(client, shop, auth):
    page = client.get(f"{BASE}/", headers={k: v for k, v in auth.items() if k != "HX-Request"})
    assert page.status_code == 200 and "<html" in page.get_data(as_text=True)
    assert "Birthday Built in" in text(page) and "Language Built in" in text(page)
    added = client.post(f"{BASE}/", data={"name": " Shoe  size ", "type": "number"}, headers=auth)
    assert added.status_code == 200 and toast(added) == "Added “Shoe size”"
    assert stored(shop)["shoe size"] == "number"
    refused = client.post(f"{BASE}/", data={"name": "shoe SIZE", "type": "text"}, headers=auth)
    assert "There is already a property named “shoe SIZE”" in text(refused)
    assert 'aria-invalid="true"' in refused.get_data(as_text=True) and 'value="shoe SIZE"' in refused.get_data(
        as_text=True)
    assert "Choose a type" in text(client.post(f"{BASE}/", data={"name": "Hat", "type": "colour"}, headers=auth))
    assert "is a built-in property" in text(client.post(f"{BASE}/", data={"name": "Birthday", "type": "date"},
                                                        headers=auth))
    assert set(stored(shop)) == {"birthday", "language", "shoe size"}


def test_rename_and_remove_with_a_confirmation(client, shop, auth):
    size = properties.add(Session, shop.id, "Size", "text")
    Session.commit()
    renamed = client.post(f"{BASE}/{size.id}/rename", data={"name": "Shirt size"}, headers=auth)
    assert toast(renamed) == "Renamed to “Shirt size”"
    refused = client.post(f"{BASE}/{size.id}/rename", data={"name": ""}, headers=auth)
    assert "Enter a name" in text(refused)
    asked = client.post(f"{BASE}/{size.id}/delete", headers=auth)
    assert "Remove “Shirt size” and every subscriber's value of it?" in text(asked)
    assert "shirt size" in stored(shop)
    removed = client.post(f"{BASE}/{size.id}/delete", data={"confirmed": "yes"}, headers=auth)
    assert toast(removed) == "Removed “Shirt size”" and "shirt size" not in stored(shop)


def test_removal_is_refused_while_a_segment_uses_the_property(client, shop, auth):
    size = properties.add(Session, shop.id, "Size", "text")
    Session.add(Segment(shop_id=shop.id, name="Mediums", kind="manual", definition={
        "match": "all", "rules": [{"field": "property", "attribute": "size", "op": "eq", "value": "m"}]}))
    Session.commit()
    refused = client.post(f"{BASE}/{size.id}/delete", data={"confirmed": "yes"}, headers=auth)
    assert "“Size” is used by the segment “Mediums”: remove those rules first" in text(refused)
    assert "size" in stored(shop)


def test_another_shops_property_is_a_404(client, shop, auth):
    other = make_shop("beta.myshopify.com")
    theirs = properties.add(Session, other.id, "Size", "text")
    Session.commit()
    assert client.post(f"{BASE}/{theirs.id}/rename", data={"name": "Mine"}, headers=auth).status_code == 404
    assert client.post(f"{BASE}/{theirs.id}/delete", data={"confirmed": "yes"},
                       headers=auth).status_code == 404
    Session.expire_all()
    assert Session.scalars(select(ProfileProperty.name).execution_options(all_shops=True)).all() == ["Size"]


def test_a_subscribers_values_are_edited_on_its_page(client, shop, auth, segment_rechecks):
    properties.add(Session, shop.id, "Points", "number")
    Session.commit()
    someone = person(shop)
    page = client.get(f"/subscribers/{someone.id}", headers=auth)
    assert 'id="subscriber-properties"' in page.get_data(as_text=True)
    assert "Birthday" in text(page) and "Points" in text(page)
    saved = client.post(f"/subscribers/{someone.id}/properties",
                        data={"property-birthday": "1990-07-04", "property-language": "Deutsch",
                              "property-points": "12.5"}, headers=auth)
    assert saved.status_code == 200 and toast(saved) == "Properties saved"
    assert saved.get_data(as_text=True).lstrip().startswith('<section class="card" id="subscriber-properties">')
    assert 'value="1990-07-04"' in saved.get_data(as_text=True) and 'value="12.5"' in saved.get_data(as_text=True)
    assert segment_rechecks == [(shop.id, [someone.id])]
    Session.expire_all()
    assert properties.values(Session, shop.id, someone.id) == {
        "birthday": dt.date(1990, 7, 4), "language": "Deutsch", "points": 12.5}
    again = client.post(f"/subscribers/{someone.id}/properties",
                        data={"property-birthday": "1990-07-04", "property-language": "Deutsch",
                              "property-points": "12.5"}, headers=auth)
    assert toast(again) == "Nothing changed" and len(segment_rechecks) == 1


def test_bad_values_are_shown_inline_and_nothing_is_saved(client, shop, auth, segment_rechecks):
    properties.add(Session, shop.id, "Points", "number")
    Session.commit()
    someone = person(shop)
    refused = client.post(f"/subscribers/{someone.id}/properties",
                          data={"property-birthday": "1990-02-30", "property-language": "fr",
                                "property-points": "lots"}, headers=auth)
    assert refused.status_code == 200
    body = refused.get_data(as_text=True)
    assert body.count('aria-invalid="true"') == 2
    assert "1990-02-30 is not a calendar date" in text(refused) and "must be a number" in text(refused)
    assert 'value="fr"' in body and 'value="lots"' in body
    assert Session.scalar(select(func.count()).select_from(SubscriberProperty)
                          .execution_options(all_shops=True)) == 0
    assert segment_rechecks == []


def test_another_shops_subscriber_is_a_404(client, shop, auth):
    other = make_shop("beta.myshopify.com")
    theirs = person(other, "+12125550199")
    assert client.post(f"/subscribers/{theirs.id}/properties", data={"property-language": "en"},
                       headers=auth).status_code == 404
    assert Session.scalar(select(func.count()).select_from(SubscriberProperty)
                          .execution_options(all_shops=True)) == 0


def test_the_import_report_says_which_columns_became_properties_and_which_rows_did_not_fit(client, shop, auth):
    content = b"phone,Birthday,language\n+12125550101,1990-07-04,de\n+12125550102,July 4,fr\n"
    from tests.helpers import upload_csv
    page = text(upload_csv(client, auth, content))
    assert "Imported 1 subscriber" in page
    assert "1 row not imported: 1 with a value that does not fit its property" in page
    assert "Read into profile properties: Birthday → Birthday, language → Language." in page
    assert "Birthday must be a date written YYYY-MM-DD" in page


def test_a_property_the_form_did_not_show_keeps_its_value(client, shop, auth):
    someone = person(shop)
    properties.set_values(Session, someone, {"language": "de"})
    Session.commit()
    saved = client.post(f"/subscribers/{someone.id}/properties", data={"property-birthday": "1990-07-04"},
                        headers=auth)
    assert toast(saved) == "Properties saved"
    Session.expire_all()
    assert properties.values(Session, shop.id, someone.id) == {"birthday": dt.date(1990, 7, 4), "language": "de"}
