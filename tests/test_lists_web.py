"""The static lists page through the Flask test client: upload with its report, bad files refused whole,
tenant isolation, delete refused while a segment uses the list; on both databases."""
from __future__ import annotations

import io
import json
import re

import pytest
from sqlalchemy import func, select

from kinnekt import defaults
from kinnekt.db import Session
from kinnekt.models import Segment, StaticList, StaticListEntry
from kinnekt.segments.lists import uses_list

GOOD_CSV = (
    "Name,Phone\r\n"
    "Ada,+1 (650) 253-0000\r\n"
    "Bob,650-253-0001\r\n"
    "Cy,hello\r\n"
    "Dee,+1650253000\r\n"
).encode()


def upload(client, auth, *, name="VIP", content: bytes | None = GOOD_CSV, filename="vip.csv"):
    data = {"name": name}
    if content is not None:
        data["file"] = (io.BytesIO(content), filename)
    return client.post("/segments/lists/", data=data, headers=auth, content_type="multipart/form-data")


def count(model) -> int:
    """Rows in every shop (requests leave the test's session bound to their shop)."""
    return Session.scalar(select(func.count()).select_from(model).execution_options(all_shops=True))


def nothing_saved() -> bool:
    return count(StaticList) == 0 and count(StaticListEntry) == 0


def text(response) -> str:
    """The response body with tags dropped and whitespace collapsed, as the merchant reads it."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def toast(response) -> dict:
    return json.loads(response.headers["HX-Trigger"])["toast"]


def save_list(shop, name="Newsletter", phones=("+16502530000",)) -> StaticList:
    static_list = StaticList(shop_id=shop.id, name=name, row_count=len(phones))
    Session.add(static_list)
    Session.flush()
    Session.add_all(StaticListEntry(shop_id=shop.id, list_id=static_list.id, phone=p) for p in phones)
    Session.commit()
    return static_list


def test_a_good_csv_becomes_a_list_with_its_entries_and_a_report(client, auth, shop):
    response = upload(client, auth)
    assert response.status_code == 200
    static_list = Session.scalars(select(StaticList).execution_options(all_shops=True)).one()
    assert static_list.shop_id == shop.id and static_list.name == "VIP" and static_list.row_count == 2
    phones = Session.scalars(select(StaticListEntry.phone).where(StaticListEntry.list_id == static_list.id)
                             .order_by(StaticListEntry.phone).execution_options(all_shops=True)).all()
    assert phones == ["+16502530000", "+16502530001"]
    html = response.get_data(as_text=True)
    assert 'id="lists-page"' in html and 'id="list-report"' in html and "<!doctype" not in html.lower()
    page = text(response)
    assert "“VIP” saved with 2 numbers" in page
    assert "2 rows rejected." in page
    assert "Numbers without a country code were read as US numbers." in page
    # Each rejected row: its number as a spreadsheet shows it, the value, and why.
    assert "4 hello not a phone number" in page
    assert "5 +1650253000 too short for US" in page
    assert toast(response) == {"message": "Saved “VIP” with 2 numbers", "isError": False}
    # The new list is in the table.
    assert re.search(r"<td class=\"primary-cell\">VIP</td>\s*<td class=\"numeric\">2</td>", html)


def test_a_clean_file_reports_no_rejected_rows(client, auth, shop):
    response = upload(client, auth, content=b"+16502530000\n+16502530000\n+442079460018\n")
    page = text(response)
    assert "“VIP” saved with 2 numbers" in page and "Every row was a valid phone number." in page
    assert "1 duplicate merged." in page
    assert "Rejected rows" not in page


def test_only_the_first_rejected_rows_are_listed(client, auth, shop, monkeypatch):
    monkeypatch.setattr("kinnekt.web.lists.REJECTED_ROWS_SHOWN", 2)
    content = b"phone\n+16502530000\nx1\nx2\nx3\nx4\n"
    page = text(upload(client, auth, content=content))
    assert "“VIP” saved with 1 number " in page
    assert "4 rows rejected." in page and "4 x2 not a phone number" in page
    assert "x3" not in page and "And 2 more rejected rows." in page


@pytest.mark.parametrize("content, message", [
    ("phone\n+16502530000\nZoë\n".encode("latin-1"), "The file is not UTF-8 text."),
    (b"", "The file is empty."),
    (b" \r\n\r\n", "The file is empty."),
    (b"phone\nhello\nworld\n",
     "The file holds no valid phone number (2 rows rejected, e.g. row 2: not a phone number)."),
    (b"name,email\nAda,ada@example.com\n", "The file holds no valid phone number"),
    (b"PK\x03\x04\x00\x00binary", "The file is not a CSV file."),
])
def test_a_bad_file_is_refused_in_the_form_and_nothing_is_saved(client, auth, shop, content, message):
    response = upload(client, auth, content=content)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'id="list-file-error"' in html and message in text(response)
    assert 'id="list-report"' not in html
    assert 'value="VIP"' in html  # the name the merchant typed stays
    assert nothing_saved()


def test_a_file_over_the_size_limit_is_refused(client, auth, shop, monkeypatch):
    monkeypatch.setattr(defaults, "STATIC_LIST_MAX_BYTES", 2 * 1024 * 1024)
    content = b"phone\n" + b"+16502530000\n" * (2 * 1024 * 1024 // 13 + 1)
    response = upload(client, auth, content=content)
    assert "The file is larger than 2 MB." in text(response) and nothing_saved()


def test_a_file_over_the_row_limit_is_refused(client, auth, shop, monkeypatch):
    monkeypatch.setattr(defaults, "STATIC_LIST_MAX_ROWS", 3)
    content = b"phone\n+16502530000\n+16502530001\n+16502530002\n+16502530003\n"
    response = upload(client, auth, content=content)
    assert "The file has more than 3 rows." in text(response) and nothing_saved()


def test_a_missing_name_and_file_are_both_reported(client, auth, shop):
    response = upload(client, auth, name="   ", content=None)
    page = text(response)
    assert "Enter a name for the list." in page and "Choose a CSV file to upload." in page
    assert 'id="list-name-error"' in response.get_data(as_text=True)
    assert nothing_saved()


def test_a_name_too_long_is_refused(client, auth, shop):
    response = upload(client, auth, name="x" * 256)
    assert "The name can be at most 255 characters." in text(response) and nothing_saved()


def test_a_name_already_used_is_an_error_beside_the_name(client, auth, shop):
    save_list(shop, "VIP")
    response = upload(client, auth, name=" VIP ")
    html = response.get_data(as_text=True)
    assert 'id="list-name-error"' in html and "A list named “VIP” already exists." in text(response)
    assert count(StaticList) == 1 and count(StaticListEntry) == 1


def test_the_page_lists_only_the_shops_own_lists(client, auth, shop, other_shop):
    save_list(shop, "Mine", ("+16502530000", "+16502530001"))
    save_list(other_shop, "Theirs")
    response = client.get("/segments/lists/", headers=auth)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.lstrip().startswith('<section id="lists-page">')
    assert "Mine" in html and "Theirs" not in html
    assert 'hx-encoding="multipart/form-data"' in html and 'type="file"' in html


def test_without_htmx_the_full_page_is_served(client, shop, token_for):
    save_list(shop, "Mine")
    response = client.get(f"/segments/lists/?id_token={token_for(shop.domain)}", headers={"Accept": "text/html"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.startswith("<!doctype html>")
    assert '<section id="lists-page">' in html and "Mine" in html


def test_the_segments_page_links_to_static_lists(client, auth, shop):
    html = client.get("/segments/", headers=auth).get_data(as_text=True)
    assert re.search(r'<a class="button button--secondary" href="/segments/lists/"><span>Static lists</span></a>', html)


def test_without_a_session_token_nothing_is_uploaded(client, shop):
    response = client.post("/segments/lists/", data={"name": "VIP", "file": (io.BytesIO(GOOD_CSV), "vip.csv")},
                           headers={"HX-Request": "true"}, content_type="multipart/form-data")
    assert response.status_code == 401 and nothing_saved()


def test_another_shops_list_cannot_be_deleted(client, auth, shop, other_shop):
    theirs = save_list(other_shop, "Theirs")
    response = client.delete(f"/segments/lists/{theirs.id}", headers=auth)
    assert response.status_code == 404
    assert count(StaticList) == 1 and count(StaticListEntry) == 1


def test_an_unused_list_is_deleted_with_its_numbers(client, auth, shop):
    kept = save_list(shop, "Kept")
    gone = save_list(shop, "Gone", ("+16502530000", "+16502530001"))
    html = client.get("/segments/lists/", headers=auth).get_data(as_text=True)
    assert f'data-dialog-open="list-delete-{gone.id}"' in html  # a confirmation first
    assert re.search(rf'hx-delete="/segments/lists/{gone.id}"(?![^>]*disabled)', html)
    response = client.delete(f"/segments/lists/{gone.id}", headers=auth)
    assert response.status_code == 200 and toast(response)["message"] == "Deleted “Gone”"
    assert "Gone" not in text(response) and "Kept" in text(response)
    assert Session.scalars(select(StaticList.id).execution_options(all_shops=True)).all() == [kept.id]
    assert count(StaticListEntry) == 1


def test_a_list_used_by_a_segment_is_not_deleted(client, auth, shop):
    used = save_list(shop, "Used")
    other = save_list(shop, "Other")
    nested = {"match": "all", "rules": [
        {"field": "subscribed", "op": "within", "value": {"amount": 30, "unit": "days"}},
        {"match": "any", "rules": [{"field": "list", "op": "not_in", "value": used.id},
                                   {"field": "list", "op": "in", "value": other.id}]}]}
    Session.add_all([
        Segment(shop_id=shop.id, name="Winback", definition=nested),
        Segment(shop_id=shop.id, name="Direct", definition={"match": "all", "rules": [
            {"field": "list", "op": "in", "value": str(used.id)}]}),
        Segment(shop_id=shop.id, name="Unrelated", definition={"match": "all", "rules": []}),
    ])
    Session.commit()
    page = client.get("/segments/lists/", headers=auth).get_data(as_text=True)
    assert re.search(rf'hx-delete="/segments/lists/{used.id}"[^>]*disabled', page)  # the dialog cannot confirm
    response = client.delete(f"/segments/lists/{used.id}", headers=auth)
    assert response.status_code == 200
    message = ("“Used” was not deleted: it is used by the segments “Direct”, “Winback”."
               " Remove it from their rules first.")
    assert message in text(response)
    assert toast(response) == {"message": message, "isError": True}
    assert count(StaticList) == 2 and count(StaticListEntry) == 2
    refused = client.delete(f"/segments/lists/{other.id}", headers=auth)
    assert "used by the segment “Winback”." in text(refused) and count(StaticList) == 2


def test_uses_list_looks_through_nested_groups():
    definition = {"match": "all", "rules": [{"match": "any", "rules": [
        {"match": "all", "rules": [{"field": "list", "op": "in", "value": 7}]}]}]}
    assert uses_list(definition, 7) and not uses_list(definition, 70)
    assert not uses_list({"match": "all", "rules": [{"field": "segment", "op": "in", "value": 7}]}, 7)
    assert not uses_list(None, 7)
