"""Static lists: phone numbers uploaded from CSV, normalised to E.164, usable in `list in` segment rules.

An upload is checked whole before anything is saved: a file that is not UTF-8 CSV, is empty, or is
over the size or row limit is refused with the reason; otherwise every row is normalised, duplicates
are collapsed, and the rows that are not phone numbers come back in the report with why.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Segment, Shop, StaticList, StaticListEntry
from kinnekt.subscribers.csv_upload import PHONE_HEADERS, CsvFileError, header_key, read_rows
from kinnekt.subscribers.phones import shop_region

MAX_NAME_LENGTH = 255


class ListImportError(ValueError):
    """The upload cannot be used at all (nothing was saved); the message says why, for the merchant."""


class ListNameTaken(ListImportError):
    """Another static list of the shop already has this name."""


@dataclass
class ImportReport:
    """The outcome of an upload: the saved list, how many numbers it holds, and each rejected row with why."""

    list: StaticList
    accepted: int
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (row number, value, reason)
    duplicates: int = 0  # rows whose number was already on the list (collapsed into one entry)
    region: str | None = None  # the country assumed for numbers written without +country code


# ---------------------------------------------------------------------------------------------- phones

def normalise_phone(raw: str, region: str | None) -> str:
    """A phone number in E.164, or ValueError saying what is wrong with it."""
    value = raw.strip()
    if not value:
        raise ValueError("no phone number")
    try:
        number = phonenumbers.parse(value, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE:
            if region is None and not value.startswith("+"):
                raise ValueError("no country code: write the number with + and the country code") from None
            raise ValueError("unknown country code") from None
        if exc.error_type == NumberParseException.NOT_A_NUMBER:
            raise ValueError("not a phone number") from None
        if exc.error_type == NumberParseException.TOO_LONG:
            raise ValueError("too long for a phone number") from None
        raise ValueError("too short for a phone number") from None
    if not phonenumbers.is_valid_number(number):
        reason = phonenumbers.is_possible_number_with_reason(number)
        country = phonenumbers.region_code_for_country_code(number.country_code)
        where = f" for {country}" if country and country != "ZZ" else ""
        if reason == ValidationResult.TOO_SHORT:
            raise ValueError(f"too short{where}")
        if reason == ValidationResult.TOO_LONG:
            raise ValueError(f"too long{where}")
        if reason == ValidationResult.INVALID_COUNTRY_CODE:
            raise ValueError("unknown country code")
        raise ValueError(f"not a valid phone number{where}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# ---------------------------------------------------------------------------------------------- the file

def _rows(file_bytes: bytes) -> list[list[str]]:
    """The CSV records of the file, or ListImportError when it is not a usable CSV file."""
    try:
        return read_rows(file_bytes)
    except CsvFileError as exc:
        raise ListImportError(str(exc)) from None


def _phone_column(first_row: list[str]) -> tuple[int, bool]:
    """(column holding the numbers, whether the first row is a header)."""
    keys = [header_key(cell) for cell in first_row]
    for wanted in PHONE_HEADERS:
        if wanted in keys:
            return keys.index(wanted), True
    # A first row without any digit in its first cell is a header naming the columns otherwise.
    first = first_row[0] if first_row else ""
    return 0, not any(ch.isdigit() for ch in first)


def import_list_csv(session: OrmSession, shop: Shop, *, name: str, file_bytes: bytes,
                    default_region: str | None = None) -> ImportReport:
    """Save a static list from an uploaded CSV of phone numbers and report the rows rejected and why; commits.

    The numbers are in the column named phone / phone_number / mobile (or the first column); the header
    is optional. Numbers without +country code are read in `default_region`, else the shop's country
    (from its time zone), else rejected. Raises ListImportError (ListNameTaken for a used name) and saves
    nothing when the file cannot be used or holds no valid number.
    """
    if not isinstance(name, str) or not name.strip():
        raise ListImportError("Enter a name for the list.")
    name = " ".join(name.split())
    if len(name) > MAX_NAME_LENGTH:
        raise ListImportError(f"The name can be at most {MAX_NAME_LENGTH} characters.")
    rows = _rows(file_bytes)
    region = default_region.upper() if default_region else shop_region(shop)

    start = next(i for i, row in enumerate(rows) if any(cell.strip() for cell in row))
    column, has_header = _phone_column(rows[start])
    phones: dict[str, int] = {}  # E.164 -> first row number, in file order
    rejected: list[tuple[int, str, str]] = []
    duplicates = 0
    for index in range(start + (1 if has_header else 0), len(rows)):
        row, number = rows[index], index + 1  # row numbers as a spreadsheet shows them
        if not any(cell.strip() for cell in row):
            continue
        value = row[column].strip() if column < len(row) else ""
        try:
            e164 = normalise_phone(value, region)
        except ValueError as exc:
            rejected.append((number, value, str(exc)))
            continue
        if e164 in phones:
            duplicates += 1
        else:
            phones[e164] = number
    if not phones:
        raise ListImportError("The file holds no valid phone number"
                              + (f" ({len(rejected)} rows rejected, e.g. row {rejected[0][0]}: {rejected[0][2]})."
                                 if rejected else "."))

    static_list = StaticList(shop_id=shop.id, name=name, row_count=len(phones))
    try:
        with session.begin_nested():
            session.add(static_list)
    except IntegrityError:
        raise ListNameTaken(f"A list named “{name}” already exists. Choose another name.") from None
    session.execute(insert(StaticListEntry),
                    [{"shop_id": shop.id, "list_id": static_list.id, "phone": phone} for phone in phones])
    session.commit()
    return ImportReport(list=static_list, accepted=len(phones), rejected=rejected, duplicates=duplicates,
                        region=region)


def uses_list(definition: Any, list_id: int) -> bool:
    """True when a segment definition has a `list` rule on this list, at any depth of its groups."""
    if isinstance(definition, dict):
        if definition.get("field") == "list" and str(definition.get("value")) == str(list_id):
            return True
        return any(uses_list(value, list_id) for value in definition.values())
    if isinstance(definition, list):
        return any(uses_list(item, list_id) for item in definition)
    return False


def segments_using(session: OrmSession, shop_id: int, lists: list[StaticList]) -> dict[int, list[str]]:
    """For each list, the names of the shop's segments whose rules use it (a list in use is not deleted)."""
    segments = session.execute(
        select(Segment.name, Segment.definition).where(Segment.shop_id == shop_id).order_by(Segment.name)).all()
    return {static_list.id: [name for name, definition in segments if uses_list(definition, static_list.id)]
            for static_list in lists}
