"""Ad-platform audience exports (kinnekt.segments.exports): each format's header, normalisation and SHA-256
hashing checked against the platforms' published examples, streaming in chunks, tenancy and formula safety,
through the service and the pages/API, on both databases."""
from __future__ import annotations

import csv
import hashlib
import io
import re

import pytest
from sqlalchemy import event, insert

from kinnekt import db as kdb
from kinnekt.db import utcnow
from kinnekt.models import Subscriber
from kinnekt.segments import exports
from kinnekt.segments.auto import source_definition
from tests.factories import customer, subscriber
from tests.test_segment_membership import NOW, SPENT_OVER_25, segment

pytestmark = pytest.mark.usefixtures("finished_jobs")

EVERY_MANUAL = source_definition("manual")
HEX64 = re.compile(r"[0-9a-f]{64}")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rows_of(chunks) -> list[list[str]]:
    return list(csv.reader(io.StringIO("".join(chunks))))


def export(db, seg, key) -> list[list[str]]:
    return rows_of(exports.export_audience_csv(db, seg, key, now=NOW))


# ---------------------------------------------------------------------------------------------- the published examples

def test_meta_file_matches_metas_published_normalisation_and_hashes(db, shop):
    # Meta's examples (Conversions API customer information parameters): "(650)555-1212" -> "16505551212";
    # "John_Smith@gmail.com" -> "john_smith@gmail.com"; "Mary" -> "mary"; "Valéry" -> "valéry".
    assert sha("16505551212") == "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"
    assert sha("john_smith@gmail.com") == "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
    assert sha("mary") == "6915771be1c5aa0c886870b6951b03d7eafc121fea0e80a5ea83beb7c449f4ec"
    assert sha("valéry") == "08e1996b5dd49e62a4b4c010d44e4345592a863bb9f8e3976219bac29417149c"
    person = customer(db, shop, first_name="Mary", last_name="Valéry", email="  John_Smith@gmail.com ")
    subscriber(db, shop, customer=person, phone="+16505551212")
    subscriber(db, shop, phone="+442079460018")  # no customer: phone only, other cells empty (never sha(""))

    rows = export(db, segment(db, shop, EVERY_MANUAL), "meta")
    assert rows[0] == ["phone", "email", "fn", "ln"]
    assert rows[1] == [sha("16505551212"), sha("john_smith@gmail.com"), sha("mary"), sha("valéry")]
    assert rows[2] == [sha("442079460018"), "", "", ""]
    assert len(rows) == 3


def test_google_file_hashes_e164_with_plus_and_lowercased_email(db, shop):
    # Google: phone in E.164 before hashing ("+12125650000", Google Ads API team); email lowercased and trimmed
    # ("test@gmail.com" in Google's Customer Match template).
    person = customer(db, shop, first_name="John", last_name="Smith", email=" Test@Gmail.com")
    subscriber(db, shop, customer=person, phone="+12125650000")
    rows = export(db, segment(db, shop, EVERY_MANUAL), "google")
    assert rows[0] == ["Phone", "Email"]
    assert rows[1] == [sha("+12125650000"), sha("test@gmail.com")]
    assert len(rows) == 2


def test_tiktok_file_matches_tiktoks_published_hash(db, shop):
    # TikTok's customer-file help page: "374-93-828222" is normalised to "37493828222" and its hashed example
    # is 65b7e6dc...: digits with the country code, no "+".
    assert sha("37493828222") == "65b7e6dcf6f4310f8d7cbfbd78289a753062fb054d6664fb9aaac5df66a422d4"
    subscriber(db, shop, phone="+37493828222")
    subscriber(db, shop, phone="+16577770000")
    rows = export(db, segment(db, shop, EVERY_MANUAL), "tiktok")
    assert rows == [["Phone_SHA256"], [sha("37493828222")], [sha("16577770000")]]


@pytest.mark.parametrize("name, normalised", [
    ("Mary", "mary"), ("  Valéry ", "valéry"), ("O'Brien-Smith", "obriensmith"), ("Mary   Ann", "mary ann"),
    ("정", "정"), ('=HYPERLINK("x")', "hyperlinkx"), ("...", None), ("", None), (None, None)])
def test_meta_names_are_lowercase_without_punctuation(name, normalised):
    assert exports.meta_name(name) == normalised


@pytest.mark.parametrize("phone, e164, digits", [
    ("+16505551212", "+16505551212", "16505551212"), ("+1 (650) 555-1212", "+16505551212", "16505551212"),
    ("16505551212", None, None), ("+0123456789", None, None), ("", None, None), (None, None, None)])
def test_phones_are_e164_or_left_out(phone, e164, digits):
    assert exports.e164(phone) == e164
    assert exports.phone_digits(phone) == digits


@pytest.mark.parametrize("email, normalised", [
    (" John_Smith@Gmail.com ", "john_smith@gmail.com"), ("no-at-sign", None), ("a b@x.com", None), (None, None)])
def test_emails_are_trimmed_lowercased_and_checked(email, normalised):
    assert exports.email_lower(email) == normalised


# ---------------------------------------------------------------------------------------------- who is exported

def test_only_the_segments_subscribed_members_of_the_shop_are_exported(db, shop, other_shop):
    spender = subscriber(db, shop, customer=customer(db, shop, money_spent=30), phone="+12125550101")
    subscriber(db, shop, customer=customer(db, shop, money_spent=5), phone="+12125550102")  # not in the segment
    for n, status in enumerate(("unsubscribed", "pending")):
        subscriber(db, shop, status=status, customer=customer(db, shop, money_spent=99), phone=f"+1212555020{n}")
    subscriber(db, shop, customer=customer(db, shop, money_spent=99), phone="+12125550301", suppressed_at=utcnow())
    subscriber(db, other_shop, customer=customer(db, other_shop, money_spent=99), phone="+12125550401")
    seg = segment(db, shop, SPENT_OVER_25)
    for key in exports.FORMATS:
        rows = export(db, seg, key)
        assert len(rows) == 2, key
    assert export(db, seg, "tiktok")[1] == [sha(spender.phone[1:])]


def test_an_empty_segment_is_the_header_alone_and_an_unknown_format_is_refused(db, shop):
    seg = segment(db, shop, SPENT_OVER_25)
    assert "".join(exports.export_audience_csv(db, seg, "meta", now=NOW)) == "phone,email,fn,ln\r\n"
    with pytest.raises(KeyError):
        next(exports.export_audience_csv(db, seg, "myspace", now=NOW))


def test_formula_characters_never_start_a_cell(db, shop):
    sneaky = customer(db, shop, first_name='=HYPERLINK("http://evil")', last_name="-1+2", email="+cmd@evil.com")
    subscriber(db, shop, customer=sneaky, phone="+12125550101", first_name="@Bob")
    subscriber(db, shop, customer=customer(db, shop, first_name="\tTab", last_name="=1", email="=x@y.io"),
               phone="+12125550102")
    seg = segment(db, shop, EVERY_MANUAL)
    for key in exports.FORMATS:
        for row in export(db, seg, key)[1:]:
            for cell in row:
                assert cell == "" or HEX64.fullmatch(cell), (key, cell)
                assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert export(db, seg, "meta")[1][2] == sha("bob")  # the subscriber's own first name, punctuation removed


@pytest.mark.parametrize("value, guarded", [
    ("=1+1", True), ("+1", True), ("-1", True), ("@SUM(A1)", True), ("\t1", True), ("\r1", True),
    ("|cmd", True), ("\uff1d1+1", True), ("\uff0b1", True), ("\uff0d1", True), ("\uff20x", True), ("\uff5cx", True),
    ("\ufe66x", True), ("\ufeff=1", True), ("\u200b=1", True), ("  =1", True), ("\u00a0=1", True),
    ("Bob", False), ("a=b", False), ("", False), ("   ", False), ("\u00e9", False), ("0123abc", False),
])
def test_spreadsheet_safe_catches_every_way_a_formula_can_start(value, guarded):
    assert exports.spreadsheet_safe(value) == ("'" + value if guarded else value)


# ---------------------------------------------------------------------------------------------- streaming

def test_a_large_segment_streams_in_chunks_from_one_cursor(db, shop, monkeypatch):
    monkeypatch.setattr("kinnekt.defaults.SEGMENT_EXPORT_CHUNK", 500)
    db.execute(insert(Subscriber), [
        {"shop_id": shop.id, "phone": f"+1415555{n:04d}", "status": "subscribed", "source": "manual"}
        for n in range(3000)])
    db.commit()
    seg = segment(db, shop, EVERY_MANUAL)
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "subscribers" in statement and "ORDER BY" in statement:
            statements.append(dict(context.execution_options))

    engine = kdb.engine()
    event.listen(engine, "before_cursor_execute", record)
    try:
        lines = exports.export_audience_csv(db, seg, "tiktok", now=NOW)
        assert next(lines) == "Phone_SHA256\r\n"
        assert statements == []  # the header goes out before the members are queried
        first = next(lines)
        assert len(statements) == 1 and statements[0].get("yield_per") == 500
        assert statements[0].get("stream_results")  # a server-side cursor where the database has one
        assert first.count("\r\n") == 500  # one fetch, not the whole segment
        rest = list(lines)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert len(statements) == 1 and len(rest) == 5
    assert all(chunk.count("\r\n") == 500 for chunk in rest)
    cells = [row[0] for row in rows_of([first, *rest])]
    assert cells[0] == sha("14155550000") and cells[-1] == sha("14155552999") and len(set(cells)) == 3000


# ---------------------------------------------------------------------------------------------- pages and API

def test_the_list_offers_every_format_and_downloads_stream(client, auth, db, shop, other_shop):
    subscriber(db, shop, customer=customer(db, shop, money_spent=30, email="Ada@Example.com"), phone="+12125550101")
    mine = segment(db, shop, SPENT_OVER_25, name="Big spenders!")
    theirs = segment(db, other_shop, SPENT_OVER_25, name="Theirs")
    html = client.get("/segments/", headers=auth).get_data(as_text=True)
    assert f'href="/segments/{mine.id}/members.csv"' in html
    for key, fmt in exports.FORMATS.items():
        assert f'href="/segments/{mine.id}/audiences/{key}.csv"' in html
        for prefix in ("/segments", "/api/segments"):
            response = client.get(f"{prefix}/{mine.id}/audiences/{key}.csv", headers=auth)
            assert response.status_code == 200 and response.is_streamed and response.mimetype == "text/csv"
            assert response.headers["Content-Disposition"] == (
                f'attachment; filename="Big-spenders-{key}-audience.csv"')
            rows = rows_of([response.get_data(as_text=True)])
            assert rows[0] == list(fmt.header) and len(rows) == 2
            assert client.get(f"{prefix}/{theirs.id}/audiences/{key}.csv", headers=auth).status_code == 404
    assert rows_of([client.get(f"/segments/{mine.id}/audiences/google.csv", headers=auth).get_data(as_text=True)])[1] \
        == [sha("+12125550101"), sha("ada@example.com")]
    for prefix in ("/segments", "/api/segments"):
        assert client.get(f"{prefix}/{mine.id}/audiences/myspace.csv", headers=auth).status_code == 404


def test_audience_download_needs_the_session_token(client, db, shop, token_for):
    mine = segment(db, shop, SPENT_OVER_25, name="Spenders")
    assert client.get(f"/segments/{mine.id}/audiences/meta.csv").status_code != 200
    response = client.get(f"/segments/{mine.id}/audiences/meta.csv?id_token={token_for(shop.domain)}")
    assert response.status_code == 200 and response.get_data(as_text=True) == "phone,email,fn,ln\r\n"


@pytest.mark.browser
def test_the_export_menu_downloads_an_audience_with_a_fresh_session_token(open_page, db, shop):
    subscriber(db, shop, customer=customer(db, shop, money_spent=30), phone="+37493828222")
    segment(db, shop, SPENT_OVER_25, name="Recent spenders")
    page = open_page("/segments/")
    page.get_by_role("button", name="Actions for Recent spenders").click()
    with page.expect_download() as caught:
        page.get_by_role("menuitem", name="Export Recent spenders as a TikTok audience (hashed)").click()
    download = caught.value
    assert download.suggested_filename == "Recent-spenders-tiktok-audience.csv"
    assert open(download.path(), encoding="utf-8").read().splitlines() == ["Phone_SHA256", sha("37493828222")]

