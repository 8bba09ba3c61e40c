"""The columns of a subscriber CSV and what each becomes: the mapping a merchant confirms before an import.

A column becomes the phone number (exactly one column), the first or last name, the email, one of the shop's
profile properties, a new property of a chosen type, or is ignored; no two columns become the same thing. The
suggestion (`suggest`) reads the header row: the usual names of the phone, name and email columns, and property
names (case, spaces and underscores aside). `convert` turns one cell into what would be stored, or says why it
does not fit; `preview` shows the first rows so and counts the cells of each column that do not fit. A text a
spreadsheet would run as a formula (`=…`, `@…`, see csv_upload.spreadsheet_safe) does not fit a name,
email or text column: imported data must never become a formula in a merchant's export.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping as MappingType, Sequence

from kinnekt import defaults
from kinnekt.models import Shop
from kinnekt.subscribers.csv_upload import PHONE_HEADERS, CsvFileError, header_key, read_rows, spreadsheet_safe
from kinnekt.subscribers import phones, properties
from kinnekt.subscribers.property_catalogue import TYPE_LABELS, Property, key_of

FIRST_NAME_HEADERS = ("first_name", "firstname", "first", "given_name")
"""Header names (lower-cased, spaces and dashes as underscores) of the first-name column."""
LAST_NAME_HEADERS = ("last_name", "lastname", "last", "surname", "family_name")
EMAIL_HEADERS = ("email", "e_mail", "email_address", "mail")

FIELDS = ("phone", "first_name", "last_name", "email")
"""The subscriber's own fields a column can become."""
FIELD_LABELS = {"phone": "Phone number", "first_name": "First name", "last_name": "Last name", "email": "Email"}
IGNORE = "ignore"
PROPERTY = "property:"
"""Prefix of a target naming an existing property by key: `property:birthday`."""
NEW = "new:"
"""Prefix of a target creating a property of a type, named by the merchant: `new:date`."""
MAX_TEXT = 255
"""Longest first name, last name or email."""
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


class ImportRefused(ValueError):
    """The uploaded file cannot be used at all (nothing was saved); the message says why, for the merchant."""


class MappingInvalid(ValueError):
    """The chosen mapping cannot be imported: `errors` maps a column index (or "mapping", the whole) to why."""

    def __init__(self, errors: MappingType[int | str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(self.errors.values()))


class CellError(ValueError):
    """One value that does not fit its column; the message says why, in the merchant's words."""


@dataclass
class Table:
    """An uploaded CSV file's records and where its header row is (blank rows before it are skipped)."""

    rows: list[list[str]]
    header: int

    @property
    def first(self) -> int:
        """Index of the first record after the header."""
        return self.header + 1

    @property
    def data_rows(self) -> int:
        """How many records follow the header (blank ones included)."""
        return len(self.rows) - self.first

    @property
    def headers(self) -> list[str]:
        """The header row's cells, trimmed."""
        return [cell.strip() for cell in self.rows[self.header]]


def read(file_bytes: bytes) -> Table:
    """The upload as a CSV table; raises ImportRefused saying why it is not one (encoding, size, rows, columns)."""
    try:
        rows = read_rows(file_bytes)
    except CsvFileError as exc:
        raise ImportRefused(str(exc)) from None
    start = next(i for i, row in enumerate(rows) if any(cell.strip() for cell in row))
    width = len(rows[start])
    if width > defaults.SUBSCRIBER_IMPORT_MAX_COLUMNS:
        raise ImportRefused(f"The first row has {width:,} columns; an import reads at most "
                            f"{defaults.SUBSCRIBER_IMPORT_MAX_COLUMNS}. Remove the columns you do not need and "
                            "upload the file again.")
    return Table(rows=rows, header=start)


def _property_key(header: str) -> str:
    """A column header as a property key: trimmed, case-folded, underscores and runs of spaces as one space."""
    return key_of(" ".join(header.replace("_", " ").split()))


def suggest(headers: Sequence[str], catalogue: MappingType[str, Property]) -> list[str]:
    """A target per column from the header names (the first column of each name wins; the others are ignored)."""
    keys = [header_key(cell) for cell in headers]
    targets = [IGNORE] * len(headers)
    for target, names in (("phone", PHONE_HEADERS), ("first_name", FIRST_NAME_HEADERS),
                          ("last_name", LAST_NAME_HEADERS), ("email", EMAIL_HEADERS)):
        column = next((keys.index(name) for name in names if name in keys), None)
        if column is not None and targets[column] == IGNORE:
            targets[column] = target
    by_key = {_property_key(prop.name): key for key, prop in catalogue.items()}
    for i, cell in enumerate(headers):
        key = by_key.get(_property_key(cell))
        if targets[i] == IGNORE and key is not None and PROPERTY + key not in targets:
            targets[i] = PROPERTY + key
    return targets


@dataclass
class Mapping:
    """A checked mapping: one target per column (`phone`, a field, `property:<key>`, `ignore`), and the
    properties it creates (column -> Property without an id yet), already named in `targets`."""

    targets: list[str]
    new: dict[int, Property] = field(default_factory=dict)

    def column(self, target: str) -> int | None:
        """The column of this target, if one has it."""
        return self.targets.index(target) if target in self.targets else None

    @property
    def property_columns(self) -> list[tuple[int, str]]:
        """(column, property key) of the columns read into properties."""
        return [(i, t[len(PROPERTY):]) for i, t in enumerate(self.targets) if t.startswith(PROPERTY)]

    def catalogue(self, known: MappingType[str, Property]) -> dict[str, Property]:
        """The shop's properties and the ones this mapping creates."""
        return {**known, **{prop.key: prop for prop in self.new.values()}}


def resolve(width: int, chosen: Sequence[Any], names: MappingType[int, Any],
            catalogue: MappingType[str, Property]) -> Mapping:
    """The merchant's choices (a target per column, a name per new property) as a Mapping; MappingInvalid
    lists every problem: no phone column, two columns for one target, an unknown target, a bad or taken name."""
    errors: dict[int | str, str] = {}
    targets: list[str] = []
    new: dict[int, Property] = {}
    taken: dict[str, int] = {}
    for i in range(width):
        target = chosen[i] if i < len(chosen) and isinstance(chosen[i], str) else IGNORE
        if target.startswith(NEW):
            kind = target[len(NEW):]
            if kind not in TYPE_LABELS:
                errors[i] = "Choose what this column becomes"
                targets.append(IGNORE)
                continue
            try:
                name = properties.checked_name(names.get(i, ""))
            except properties.PropertyError as exc:
                errors[i] = str(exc)
                targets.append(IGNORE)
                continue
            key = key_of(name)
            if key in catalogue:
                errors[i] = f"There is already a property named “{catalogue[key].label}”: choose it instead"
                targets.append(IGNORE)
                continue
            new[i] = Property(key, name, kind)
            target = PROPERTY + key
        elif target not in FIELDS and target != IGNORE and not (
                target.startswith(PROPERTY) and target[len(PROPERTY):] in catalogue):
            errors[i] = "Choose what this column becomes"
            target = IGNORE
        if target != IGNORE:
            if target in taken:
                errors[i] = f"Column {taken[target] + 1} already becomes {_label(target, new, catalogue)}"
            taken.setdefault(target, i)
        targets.append(target)
    if len(new) + sum(1 for prop in catalogue.values() if not prop.built_in) > properties.MAX_CUSTOM:
        errors.setdefault("mapping", f"A shop has at most {properties.MAX_CUSTOM} custom properties")
    if "phone" not in taken:
        errors["mapping"] = "Choose the column that holds the phone numbers"
    if errors:
        raise MappingInvalid(errors)
    return Mapping(targets=targets, new=new)


def _label(target: str, new: MappingType[int, Property], catalogue: MappingType[str, Property]) -> str:
    if target in FIELD_LABELS:
        return FIELD_LABELS[target]
    key = target[len(PROPERTY):]
    prop = catalogue.get(key) or next((p for p in new.values() if p.key == key), None)
    return prop.label if prop is not None else key


def label_of(target: str, catalogue: MappingType[str, Property]) -> str:
    """A resolved target in the merchant's words."""
    return _label(target, {}, catalogue)


def options(catalogue: MappingType[str, Property]) -> list[tuple[str, str]]:
    """What a column can become, as (value, label) for the select."""
    out = [(IGNORE, "Ignore this column")] + [(name, label) for name, label in FIELD_LABELS.items()]
    out += [(PROPERTY + key, f"Property: {prop.label}") for key, prop in catalogue.items()]
    out += [(NEW + kind, f"New property ({label.lower()})") for kind, label in TYPE_LABELS.items()]
    return out


# ---------------------------------------------------------------------------------------------- values

def _formula_free(label: str, text: str) -> str:
    if spreadsheet_safe(text) != text:
        first = text.lstrip()[:1] or text[:1]
        raise CellError(f"{label} starts with “{first}”, which a spreadsheet would run as a formula")
    return text


def convert(target: str, raw: str, catalogue: MappingType[str, Property], region: str | None,
            zone: str | None) -> Any:
    """What a cell becomes in this column (None: no value), or CellError saying why it does not fit.

    The phone becomes a phones.PhoneInfo; names are trimmed with inner spaces collapsed; properties are parsed by
    their type (properties.parse_value).
    """
    if target == "phone":
        try:
            return phones.normalise(raw.strip(), region, prefer_zone=zone)
        except phones.InvalidPhone as exc:
            raise CellError(str(exc)) from None
    if target in ("first_name", "last_name", "email"):
        text = " ".join(raw.split())
        if not text:
            return None
        label = FIELD_LABELS[target]
        if len(text) > MAX_TEXT:
            raise CellError(f"{label} must be at most {MAX_TEXT} characters")
        if target == "email" and not _EMAIL.fullmatch(text):
            raise CellError(f"“{text[:60]}” is not an email address")
        return _formula_free(label, text)
    prop = catalogue[target[len(PROPERTY):]]
    try:
        value = properties.parse_value(prop.type, raw)
    except properties.PropertyError as exc:
        raise CellError(f"{prop.label} {exc}") from None
    return _formula_free(prop.label, value) if prop.type == "text" and value is not None else value


def shown(target: str, value: Any, catalogue: MappingType[str, Property]) -> str:
    """A converted value as the preview shows it (as it will be stored)."""
    if value is None:
        return ""
    if target == "phone":
        return value.e164
    if target.startswith(PROPERTY):
        return properties.show(catalogue[target[len(PROPERTY):]].type, value)
    return str(value)


# ---------------------------------------------------------------------------------------------- preview

@dataclass
class ColumnCheck:
    """One column in the mapping step: its header, a few raw values, its target, and the cells that do not fit."""

    index: int
    header: str
    samples: list[str]
    target: str
    bad: int = 0
    examples: list[tuple[int, str, str]] = field(default_factory=list)  # (row number, value, why)


@dataclass
class Preview:
    """The mapping step: each column, the first rows as they would be stored, and how many rows were checked."""

    columns: list[ColumnCheck]
    heads: list[str]  # the preview table's column heads: the mapped columns' targets in words
    rows: list[tuple[int, list[tuple[str, str | None]]]]  # (row number, [(stored value, error)])
    checked_rows: int
    data_rows: int

    @property
    def all_checked(self) -> bool:
        """True when every row of the file was checked."""
        return self.checked_rows >= self.data_rows


EXAMPLES_SHOWN = 3


def provisional(chosen: Sequence[Any], names: MappingType[int, Any], catalogue: MappingType[str, Property]
                ) -> tuple[list[str], dict[str, Property]]:
    """The merchant's choices as targets a preview can convert, before they are resolved: a new property's column
    reads as a property of its type (under a key no real property has), an unknown choice as ignored."""
    targets, extended = [], dict(catalogue)
    for i, target in enumerate(chosen):
        target = target if isinstance(target, str) else IGNORE
        if target.startswith(NEW) and target[len(NEW):] in TYPE_LABELS:
            key = f"#new{i}"
            name = " ".join(str(names.get(i) or "").split()) or "new property"
            extended[key] = Property(key, f"{name} (new)", target[len(NEW):])
            target = PROPERTY + key
        elif target not in FIELDS and not (target.startswith(PROPERTY) and target[len(PROPERTY):] in catalogue):
            target = IGNORE
        targets.append(target)
    return targets, extended


def preview(shop: Shop, table: Table, targets: Sequence[str], catalogue: MappingType[str, Property],
            region: str | None) -> Preview:
    """The mapping step for these targets (see `provisional`; unknown ones are ignored): the first rows converted,
    and per column how many of the first defaults.SUBSCRIBER_IMPORT_CHECK_ROWS cells do not fit, with examples."""
    headers = table.headers
    records = [(index + 1, table.rows[index]) for index in range(table.first, len(table.rows))
               if any(cell.strip() for cell in table.rows[index])]
    checked = records[:defaults.SUBSCRIBER_IMPORT_CHECK_ROWS]
    columns = []
    mapped = []
    for i, header in enumerate(headers):
        target = targets[i] if i < len(targets) else IGNORE
        usable = target in FIELDS or (target.startswith(PROPERTY) and target[len(PROPERTY):] in catalogue)
        column = ColumnCheck(index=i, header=header, target=target,
                             samples=[row[i] if i < len(row) else "" for _, row in records[:3]])
        if usable:
            mapped.append(i)
            for number, row in checked:
                raw = row[i] if i < len(row) else ""
                try:
                    convert(target, raw, catalogue, region, shop.timezone)
                except CellError as exc:
                    column.bad += 1
                    if len(column.examples) < EXAMPLES_SHOWN:
                        column.examples.append((number, raw, str(exc)))
        columns.append(column)
    rows = []
    for number, row in records[:defaults.SUBSCRIBER_IMPORT_PREVIEW_ROWS]:
        cells = []
        for i in mapped:
            raw = row[i] if i < len(row) else ""
            try:
                cells.append((shown(targets[i], convert(targets[i], raw, catalogue, region, shop.timezone),
                                    catalogue), None))
            except CellError as exc:
                cells.append((raw, str(exc)))
        rows.append((number, cells))
    heads = [label_of(targets[i], catalogue) for i in mapped]
    return Preview(columns=columns, heads=heads, rows=rows, checked_rows=len(checked), data_rows=len(records))
