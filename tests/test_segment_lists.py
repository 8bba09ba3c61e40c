"""Static lists from CSV: numbers normalised to E.164, bad rows reported with why, bad files refused whole."""
from __future__ import annotations

import io
import zipfile
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from kinnekt.models import StaticList, StaticListEntry
from kinnekt.segments.compiler import members
from kinnekt.segments.lists import ListImportError, ListNameTaken, import_list_csv, normalise_phone, shop_region
from kinnekt.segments.rules import DefinitionError, validate
from tests.conftest import make_shop
from tests.factories import rule, subscriber, where
from tests.test_segment_membership import NOW

pytestmark = pytest.mark.usefixtures("finished_jobs")


def entries(db, static_list) -> list[str]:
    return sorted(db.scalars(select(StaticListEntry.phone).where(StaticListEntry.list_id == static_list.id)))


def nothing_saved(db) -> bool:
    return (db.scalar(select(func.count()).select_from(StaticList)) == 0
            and db.scalar(select(func.count()).select_from(StaticListEntry)) == 0)


def test_a_csv_with_a_phone_column_is_normalised_deduplicated_and_reported(db, shop):
    content = (
        "Name,Phone Number,Note\r\n"
        "Ada,+1 (650) 253-0000,first\r\n"
        "Bob,650-253-0001,no country code: the shop is in New York\r\n"
        "Cy,+16502530000,same as Ada\r\n"
        "Dee,hello,\r\n"
        ",,\r\n"
        "Eve,+1650253000,\r\n"
        "Fay,+44 20 7946 0018,\r\n"
        "Gus,,\r\n"
        "Hal,+999123456,\r\n"
    ).encode()
    report = import_list_csv(db, shop, name="  VIP   list ", file_bytes=content)
    assert report.list.name == "VIP list" and report.region == "US"
    assert entries(db, report.list) == ["+16502530000", "+16502530001", "+442079460018"]
    assert report.accepted == report.list.row_count == 3
    assert report.duplicates == 1
    assert report.rejected == [(5, "hello", "not a phone number"), (7, "+1650253000", "too short for US"),
                               (9, "", "no phone number"), (10, "+999123456", "unknown country code")]


def test_a_list_without_a_header_uses_the_first_column(db, shop):
    report = import_list_csv(db, shop, name="Plain", file_bytes=b"+16502530000\n+16502530001,extra\n")
    assert entries(db, report.list) == ["+16502530000", "+16502530001"] and report.rejected == []


def test_a_header_without_a_known_name_is_skipped_and_the_first_column_read(db, shop):
    content = "Contacts;Comment\n+1 650 253 0000;a\n+16502530001;b\n".encode()  # semicolons, as Excel in Europe
    report = import_list_csv(db, shop, name="Semicolons", file_bytes=content)
    assert entries(db, report.list) == ["+16502530000", "+16502530001"]


def test_the_utf8_byte_order_mark_and_a_mobile_column_are_understood(db, shop):
    content = "\ufeffid,mobile\n1,+16502530000\n".encode()
    report = import_list_csv(db, shop, name="Excel", file_bytes=content)
    assert entries(db, report.list) == ["+16502530000"]


def test_without_a_shop_country_numbers_need_their_country_code(db):
    shop = make_shop("utc.myshopify.com", timezone="UTC")
    assert shop_region(shop) is None
    report = import_list_csv(db, shop, name="List", file_bytes=b"phone\n6502530000\n+16502530001\n")
    assert entries(db, report.list) == ["+16502530001"]
    assert report.rejected == [(2, "6502530000", "no country code: write the number with + and the country code")]
    # The merchant may name the country of the file.
    report = import_list_csv(db, shop, name="UK", file_bytes=b"phone\n020 7946 0018\n", default_region="gb")
    assert entries(db, report.list) == ["+442079460018"]


def test_the_shop_country_comes_from_its_time_zone():
    assert shop_region(SimpleNamespace(timezone="Europe/Berlin")) == "DE"
    assert shop_region(SimpleNamespace(timezone="America/New_York")) == "US"
    assert shop_region(SimpleNamespace(timezone="Mars/Olympus")) is None


@pytest.mark.parametrize("raw, reason", [
    ("", "no phone number"), ("call me", "not a phone number"), ("+1650253000", "too short for US"),
    ("+165025300001", "too long for US"), ("+999123456", "unknown country code"),
])
def test_each_rejected_number_says_why(raw, reason):
    with pytest.raises(ValueError, match=f"^{reason}$"):
        normalise_phone(raw, "US")


def _xlsx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>" * 50)
    return buffer.getvalue()


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"  \n\n ,, \n", "empty"),
    ("phone\n+16502530000\nJos\xe9\n".encode("latin-1"), "not UTF-8"),
    (_xlsx(), "not UTF-8"),
    (b"phone\x00\n+16502530000\n", "not a CSV file"),
    (b'phone,name\n+16502530000,"unterminated\n', "not a valid CSV file"),
    (b"phone\nnope\nnothing\n", "no valid phone number"),
])
def test_a_file_that_cannot_be_used_saves_nothing(db, shop, content, message):
    with pytest.raises(ListImportError, match=message):
        import_list_csv(db, shop, name="Bad", file_bytes=content)
    assert nothing_saved(db)


def test_files_over_the_size_or_row_limit_are_refused(db, shop, monkeypatch):
    monkeypatch.setattr("kinnekt.defaults.STATIC_LIST_MAX_BYTES", 1024 * 1024)
    big = b"phone\n" + b"+16502530000\n" * 90_000  # 1.1 MB
    with pytest.raises(ListImportError, match="larger than 1 MB"):
        import_list_csv(db, shop, name="Big", file_bytes=big)
    monkeypatch.setattr("kinnekt.defaults.STATIC_LIST_MAX_ROWS", 3)
    with pytest.raises(ListImportError, match="more than 3 rows"):
        import_list_csv(db, shop, name="Long", file_bytes=b"phone\n" + b"+16502530000\n" * 4)
    import_list_csv(db, shop, name="Fits", file_bytes=b"phone\n" + b"+16502530000\n" * 3)  # the header is extra


def test_a_name_is_required_and_unique_per_shop(db, shop, other_shop):
    with pytest.raises(ListImportError, match="name"):
        import_list_csv(db, shop, name=" ", file_bytes=b"+16502530000\n")
    first = import_list_csv(db, shop, name="Friends", file_bytes=b"+16502530000\n")
    with pytest.raises(ListNameTaken):
        import_list_csv(db, shop, name="Friends", file_bytes=b"+16502530001\n")
    assert entries(db, first.list) == ["+16502530000"]
    assert db.scalar(select(func.count()).select_from(StaticListEntry)) == 1
    import_list_csv(db, other_shop, name="Friends", file_bytes=b"+16502530001\n")


def test_a_list_is_usable_in_rules_of_its_own_shop_only(db, shop, other_shop):
    on_list = subscriber(db, shop, phone="+16502530000")
    subscriber(db, shop, phone="+16502530005")
    report = import_list_csv(db, shop, name="Friends", file_bytes=b"phone\n650 253 0000\n")
    definition = validate(where(rule("list", "in", report.list.id)), shop_id=shop.id, session=db)
    assert members(db, definition, shop=shop, now=NOW) == [on_list.id]
    with pytest.raises(DefinitionError):
        validate(where(rule("list", "in", report.list.id)), shop_id=other_shop.id, session=db)
