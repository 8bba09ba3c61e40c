"""A CSV file of phone numbers as a merchant uploads it (a subscriber import, a static list): its records, checked
whole before anything is read from them, and its header cells as keys."""
from __future__ import annotations

import csv
import io
import unicodedata

from kinnekt import defaults

PHONE_HEADERS = ("phone", "phone_number", "phone_numbers", "mobile", "mobile_number", "mobile_phone", "cell",
                 "cell_phone")
"""Header names (lower-cased, spaces and dashes as underscores) of the column that holds the numbers."""


class CsvFileError(ValueError):
    """The file cannot be used at all; the message says why, for the merchant."""


def read_rows(file_bytes: bytes) -> list[list[str]]:
    """The CSV records of an uploaded file, or CsvFileError saying why it is not a usable CSV file (empty, over
    defaults.STATIC_LIST_MAX_BYTES or STATIC_LIST_MAX_ROWS, not UTF-8, not CSV)."""
    if not file_bytes or not file_bytes.strip():
        raise CsvFileError("The file is empty.")
    if len(file_bytes) > defaults.STATIC_LIST_MAX_BYTES:
        raise CsvFileError(f"The file is larger than {defaults.STATIC_LIST_MAX_BYTES // (1024 * 1024)} MB.")
    try:
        content = file_bytes.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CsvFileError("The file is not UTF-8 text. Save it as “CSV UTF-8” and upload it again.") from None
    if "\x00" in content:
        raise CsvFileError("The file is not a CSV file.")
    sample = content[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel  # one column has no delimiter to find
    try:
        rows = [row for row in csv.reader(io.StringIO(content, newline=""), dialect, strict=True)]
    except csv.Error as exc:
        raise CsvFileError(f"The file is not a valid CSV file ({exc}).") from None
    if not any(cell.strip() for row in rows for cell in row):
        raise CsvFileError("The file is empty.")
    if len(rows) > defaults.STATIC_LIST_MAX_ROWS + 1:  # one more for a header
        raise CsvFileError(f"The file has more than {defaults.STATIC_LIST_MAX_ROWS:,} rows.")
    return rows


def header_key(cell: str) -> str:
    """A header cell as a key: lower-cased, trimmed, spaces and dashes as single underscores."""
    return "_".join(cell.strip().lower().replace("-", " ").split())


_FORMULA_CHARACTERS = frozenset("=+-@|")
"""What makes a spreadsheet read a cell as a formula (`|` starts a DDE call in some), once folded by NFKC:
the full-width `＝＋－＠｜` and the small `﹦﹢﹣﹫` fold into these, and some spreadsheets fold them too."""


def spreadsheet_safe(value: str) -> str:
    """`value` as a CSV cell a spreadsheet will never run as a formula: prefixed with `'` when it could start one.

    It could when it starts with a tab or carriage return, or when its first character that is not a space
    or an invisible format character (a byte order mark, a zero-width space) is a formula character in any
    width (see _FORMULA_CHARACTERS).
    """
    if value.startswith(("\t", "\r")):
        return "'" + value
    for char in value:
        if char.isspace() or unicodedata.category(char) == "Cf":
            continue
        return "'" + value if unicodedata.normalize("NFKC", char)[:1] in _FORMULA_CHARACTERS else value
    return value
