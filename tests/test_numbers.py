"""Numbers are read in ASCII digits only: "²" or "١٢" where a number is read is a field error (never a 500 and
never a number), an id is at most the largest BIGINT, and a huge amount is refused before any arithmetic."""
from __future__ import annotations

import pytest

from kinnekt import shop_settings
from kinnekt.campaigns import composer
from kinnekt.db import Session, utcnow
from kinnekt.numbers import MAX_ID, record_id, whole_number
from kinnekt.sms import receipts
from kinnekt.subscribers import phones

NOT_NUMBERS = ["²", "³²", "١٢", "𝟙", "１", "1_000", "1.5", "-1", "+1", "1e3", "0x1f", "", " ", "NaN", "9" * 5000]


@pytest.mark.parametrize("text", NOT_NUMBERS)
def test_only_ascii_digits_are_whole_numbers(text):
    assert whole_number(text, MAX_ID) is None
    assert record_id(text) is None


def test_whole_numbers_within_their_maximum():
    assert whole_number(" 42 ", 100) == 42
    assert whole_number("0", 100) == 0
    assert whole_number("000000000000000000000000000000100", 100) == 100
    assert whole_number("101", 100) is None
    assert whole_number(7, 100) == 7 and whole_number(True, 100) is None and whole_number(None, 100) is None


def test_record_ids_run_from_one_to_the_largest_bigint():
    assert record_id(str(MAX_ID)) == MAX_ID == 2**63 - 1
    assert record_id(str(MAX_ID + 1)) is None
    assert record_id("0") is None
    assert record_id(12) == 12 and record_id(2**63) is None


# ---------------------------------------------------------------------------------------------- where numbers are read

def test_a_whole_number_setting_in_other_scripts_digits_is_refused():
    with pytest.raises(shop_settings.SettingError, match="as a whole number"):
        shop_settings.clean_whole_number("١٢", 1, 72, "the hours")  # int() would read it as 12


@pytest.mark.parametrize("sendable", ["²", "9" * 40])
def test_the_composer_counter_ignores_a_sendable_count_that_is_no_number(client, auth, shop, sendable):
    response = client.post("/campaigns/compose/message", headers=auth, data={"body": "Hi {first_name}",
                                                                              "sendable": sendable})
    assert response.status_code == 200


@pytest.mark.parametrize("value", ["9" * 40, "1e400", "123456789012345678901234567890.5"])
def test_a_huge_discount_is_a_field_error(db, shop, value):
    form = {"name": "Sale", "body": "Hi {discount_code}", "discount_mode": "shared", "discount_code": "SALE",
            "discount_kind": "amount", "discount_value": value}
    _, errors = composer.validate(form, session=Session, shop=shop, now=utcnow(), draft=True)
    assert errors["discount_value"] == "That discount is too large."


@pytest.mark.parametrize("msisdn", ["²²²²²²²", "٤٤٧٤٠٠١٢٣٤٥٦"])
def test_a_vonage_msisdn_in_other_digits_is_no_phone_number(msisdn):
    with pytest.raises(phones.InvalidPhone):
        phones.from_msisdn(msisdn)


def test_a_receipt_error_code_in_other_digits_is_malformed():
    with pytest.raises(receipts.ReceiptError, match="error code"):
        receipts.parse({"message_uuid": "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab", "status": "failed",
                        "error": {"title": "²"}})
