"""Segment members as customer-list files for ad platforms (Meta, Google Ads, TikTok): normalised, SHA-256
hashed, streamed.

Each format follows the platform's published header names and normalisation rules (cited on its row
function below); every identifier is normalised, then hashed with SHA-256 (lowercase hex), so no
readable phone number, email or name leaves the shop in these files. A value that cannot be normalised
(no email, a malformed one, a name that is only punctuation) is left empty rather than hashed: the hash
of an empty string would match nobody and only look like data. A member without any identifier the
format uses is left out.

Who is exported: exactly the members `service.export_members_csv` exports, i.e. the segment's
definition evaluated now by the compiler, which only ever yields the shop's *subscribed, unsuppressed*
subscribers (see docs/segment-rules.md "Who can be a member"). Pending, unsubscribed and suppressed
people are never in an audience file. The plain (unhashed) E.164 list is `service.export_members_csv`.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import Customer, Segment, Shop, Subscriber
from kinnekt.segments.compiler import compile_definition, plan_for_sets
from kinnekt.subscribers.csv_upload import spreadsheet_safe


class Member(NamedTuple):
    """What an audience file may use of one segment member (email and last name come from the linked customer)."""
    phone: str
    first_name: str | None
    last_name: str | None
    email: str | None


# ---------------------------------------------------------------------------------------------- normalising

_E164 = re.compile(r"\+[1-9]\d{6,14}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def sha256_hex(value: str) -> str:
    """The SHA-256 of the UTF-8 bytes of `value`, as 64 lowercase hex digits (what every platform expects)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def e164(phone: str | None) -> str | None:
    """The number in E.164 ("+" country code and number, no spaces), or None when it is not one."""
    if not phone:
        return None
    compact = re.sub(r"[\s().-]", "", phone)
    return compact if _E164.fullmatch(compact) else None


def phone_digits(phone: str | None) -> str | None:
    """The E.164 number as digits only, country code first, no "+" (Meta's and TikTok's normal form)."""
    number = e164(phone)
    return number[1:] if number else None


def email_lower(email: str | None) -> str | None:
    """The email trimmed and lowercased (Meta, Google), or None when there is none or it is not an address."""
    if not email:
        return None
    value = email.strip().lower()
    return value if _EMAIL.fullmatch(value) else None


def meta_name(name: str | None) -> str | None:
    """A first or last name as Meta hashes it: lowercase, trimmed, punctuation removed, accents kept (UTF-8).

    Meta: "Lowercase only with no punctuation. If using special characters, the text must be encoded in
    UTF-8" ("Valéry" -> "valéry"). Inner spaces are collapsed to one, as Meta's SDK keeps them.
    """
    if not name:
        return None
    text = unicodedata.normalize("NFC", name).lower()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith(("P", "S", "C")))
    text = " ".join(text.split())
    return text or None


def _hashed(value: str | None) -> str:
    return sha256_hex(value) if value else ""


# ---------------------------------------------------------------------------------------------- formats

@dataclass(frozen=True)
class AudienceFormat:
    """One platform's customer-list file: its header and how a member becomes a row (None: left out)."""
    key: str
    label: str
    header: tuple[str, ...]
    row: Callable[[Member], tuple[str, ...] | None]
    reference: str


def meta_row(member: Member) -> tuple[str, ...] | None:
    """Meta (Facebook) Custom Audience from a customer list: phone, email, fn, ln, each SHA-256 hashed.

    Headers: https://www.facebook.com/business/help/2082575038703844 ("How to format a customer list when
    creating a custom audience": `phone`, `email`, `fn`, `ln`). Normalisation and hashing:
    https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters
    — ph: "Remove symbols, letters, and any leading zeros. Phone numbers must include a country code"
    ("(650)555-1212" -> "16505551212"); em: "Trim any leading and trailing spaces. Convert all characters to
    lowercase"; fn/ln: "Lowercase only with no punctuation", UTF-8 for special characters.
    """
    phone = phone_digits(member.phone)
    email = email_lower(member.email)
    first, last = meta_name(member.first_name), meta_name(member.last_name)
    if not (phone or email):
        return None
    return _hashed(phone), _hashed(email), _hashed(first), _hashed(last)


def google_row(member: Member) -> tuple[str, ...] | None:
    """Google Ads Customer Match: Phone (E.164 with "+") and Email, SHA-256 hashed.

    https://support.google.com/google-ads/answer/7659867 ("Format your customer data file"; headers
    "Email", "Phone", "First Name", "Last Name", "Country", "Zip", in English) and
    https://support.google.com/adwords/answer/7476159 (hashed data): lowercase, remove extra spaces, phone
    numbers formatted as E.164 before hashing (Google Ads API team: "+12125650000").
    First Name / Last Name are only used for mailing-address matching, which needs "Country" and "Zip"
    too ("If any of the required column header names are missing, your upload will likely result in an
    error"); we hold no postal code, so names are left out of this file rather than risk a refused upload.
    """
    phone = e164(member.phone)
    email = email_lower(member.email)
    if not (phone or email):
        return None
    return _hashed(phone), _hashed(email)


def tiktok_row(member: Member) -> tuple[str, ...] | None:
    """TikTok Custom Audience customer file: the phone, SHA-256 hashed, under "Phone_SHA256".

    https://ads.tiktok.com/help/article/list-of-supported-ids-and-formats-for-a-customer-file (August 2025):
    header "Phone" or "Phone_SHA256"; "Remove symbols, including "+" sign ... Add country code if missing"
    ("(657)777-0000" -> "16577770000", "374-93-828222" -> "37493828222"). The published hashed example
    65b7e6dc…a422d4 is the SHA-256 of "37493828222", digits without "+". An earlier version of the page asked
    for E.164 with "+" while listing "without +" as also supported: digits only satisfies both.
    """
    phone = phone_digits(member.phone)
    return (sha256_hex(phone),) if phone else None


FORMATS: dict[str, AudienceFormat] = {
    f.key: f for f in (
        AudienceFormat("meta", "Meta (Facebook, Instagram)", ("phone", "email", "fn", "ln"), meta_row,
                       "https://www.facebook.com/business/help/2082575038703844"),
        AudienceFormat("google", "Google Ads Customer Match", ("Phone", "Email"), google_row,
                       "https://support.google.com/google-ads/answer/7659867"),
        AudienceFormat("tiktok", "TikTok", ("Phone_SHA256",), tiktok_row,
                       "https://ads.tiktok.com/help/article/list-of-supported-ids-and-formats-for-a-customer-file"),
    )
}
"""The audience formats by key (the key is the URL part and the file name suffix)."""


# ---------------------------------------------------------------------------------------------- export

def _cell(value: str) -> str:
    """An audience cell (hashes are hex, so the guard only protects against bugs)."""
    return spreadsheet_safe(value)


def _csv_lines(rows) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue()


def export_audience_csv(session: OrmSession, segment: Segment, key: str, *,
                        now: dt.datetime | None = None) -> Iterator[str]:
    """The segment's members at `now` in the audience format `key` as CSV text, streamed: the header line,
    then one chunk of lines per `SEGMENT_EXPORT_CHUNK` rows fetched. KeyError for an unknown format."""
    fmt = FORMATS[key]
    yield _csv_lines([fmt.header])
    shop = session.get(Shop, segment.shop_id)
    member_ids = compile_definition(segment.definition, shop=shop, now=now or utcnow(), session=session).subquery()
    plan_for_sets(session)
    query = (select(Subscriber.phone, Subscriber.first_name, Customer.first_name, Customer.last_name, Customer.email)
             .join(member_ids, member_ids.c.id == Subscriber.id)
             .outerjoin(Customer, Customer.id == Subscriber.customer_id)
             .order_by(Subscriber.id)
             .execution_options(yield_per=defaults.SEGMENT_EXPORT_CHUNK))
    for partition in session.execute(query).partitions():
        rows = (fmt.row(Member(phone, sub_first or first, last, email))
                for phone, sub_first, first, last, email in partition)
        lines = _csv_lines(tuple(_cell(v) for v in row) for row in rows if row is not None)
        if lines:
            yield lines


def download_name(segment: Segment, suffix: str) -> str:
    """The file name a download of the segment gets: its name made safe, then `suffix` ("members.csv")."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", segment.name).strip("-") or "segment"
    return f"{stem}-{suffix}"
