"""GSM-7 / UCS-2 detection, segment counting and splitting for SMS, plus GSM-safe look-alike replacement."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

Encoding = Literal["gsm7", "ucs2"]

GSM7_SINGLE = 160
"""Septets in a message that fits one SMS."""
GSM7_PART = 153
"""Septets per part of a concatenated message (7 septets go to the user data header)."""
UCS2_SINGLE = 70
"""UTF-16 code units in a message that fits one SMS."""
UCS2_PART = 67
"""UTF-16 code units per part of a concatenated message."""

# GSM 03.38 default alphabet in code order 0x00-0x7F. 0x1B is ESC (the switch to the extension
# table), not a character a merchant can type, so it is dropped from the set below.
_GSM_TABLE = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑ\u00dc\u00a7"    # Ü §
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
GSM_BASIC = frozenset(_GSM_TABLE) - {"\x1b"}
"""Characters of the GSM 03.38 default alphabet: one septet each."""
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")
"""Characters of the GSM 03.38 basic extension table: ESC + code, two septets each."""
_GSM_ANY = GSM_BASIC | GSM_EXTENSION

# Look-alikes a merchant pastes from a word processor or phone keyboard, mapped to GSM text that
# reads the same. Letters are deliberately absent: changing "ç" to "c" changes the merchant's words.
_LOOK_ALIKES = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",   # ‘ ’ ‚ ‛ ′
    "\u02bc": "'", "\u00b4": "'", "`": "'", "\u2039": "'", "\u203a": "'",       # ʼ ´ ` ‹ ›
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',  # “ ” „ ‟ ″
    "\u00ab": '"', "\u00bb": '"',                                                # « »
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-",  # ‐ ‑ ‒ – —
    "\u2015": "-", "\u2212": "-", "\u2022": "-", "\u2043": "-",                 # ― − • ⁃
    "\u2026": "...",                                                             # …
    "\u00a0": " ", "\u2000": " ", "\u2001": " ", "\u2002": " ", "\u2003": " ",  # no-break, en/em quads and spaces
    "\u2004": " ", "\u2005": " ", "\u2006": " ", "\u2007": " ", "\u2008": " ",
    "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u205f": " ", "\u3000": " ",
    "\t": " ",
    "\u2028": "\n", "\u2029": "\n",                                              # line / paragraph separator
    "\u200b": "", "\ufeff": "", "\u00ad": "",                                    # zero-width space, BOM, soft hyphen
    "\u2044": "/", "\u2215": "/",                                                # ⁄ ∕
}


@dataclass(frozen=True)
class SmsInfo:
    """What a message costs: its encoding, size, segments, room left, parts and the characters forcing UCS-2."""

    encoding: Encoding
    units: int
    segments: int
    per_segment: int
    remaining: int
    parts: list[str]
    unicode_chars: list[tuple[str, int]]


def analyze(text: str) -> SmsInfo:
    """Encoding, size in septets or UTF-16 units, and the parts `text` is sent as.

    An empty text is 0 segments with the whole single-message limit remaining ("0 characters ·
    0 segments"): nothing would be sent. A message that fits one SMS uses the single limit
    (160 / 70); a longer one is packed greedily into parts of 153 septets / 67 units, never
    splitting an escape pair or a surrogate pair, so a part may end one unit short.
    `remaining` is the room left in the last part; `unicode_chars` lists each distinct
    character that forces UCS-2 with the index (into `text`) where it first appears.
    """
    atoms = _atoms(text)
    unicode_chars = _first_non_gsm(atoms)
    if unicode_chars:
        encoding: Encoding = "ucs2"
        cost, single, part = _utf16_units, UCS2_SINGLE, UCS2_PART
    else:
        encoding = "gsm7"
        cost, single, part = _septets, GSM7_SINGLE, GSM7_PART
    units = sum(cost(atom) for _, atom in atoms)
    if units == 0:
        return SmsInfo(encoding, 0, 0, single, single, [], unicode_chars)
    if units <= single:
        return SmsInfo(encoding, units, 1, single, single - units, [text], unicode_chars)
    packed = _pack([atom for _, atom in atoms], cost, part)
    return SmsInfo(encoding, units, len(packed), part, part - packed[-1][1],
                   [chunk for chunk, _ in packed], unicode_chars)


def size(text: str) -> tuple[Encoding, int]:
    """The encoding and segment count of `text`, as `analyze` gives them, without its parts: a text of the
    default alphabet only (the usual campaign text) is counted at once; any other text goes through `analyze`."""
    if GSM_BASIC.issuperset(text):
        units = len(text)
        if units <= GSM7_SINGLE:
            return "gsm7", 1 if units else 0
        return "gsm7", -(-units // GSM7_PART)  # one septet per character: parts split anywhere
    info = analyze(text)
    return info.encoding, info.segments


def is_gsm7(text: str) -> bool:
    """True when every character of `text` is in the GSM 03.38 default alphabet or its extension table."""
    return _GSM_ANY.issuperset(text)


def vonage_type(text: str) -> Literal["text", "unicode"]:
    """The Vonage SMS API `type` for `text`: "text" for GSM-7, "unicode" otherwise (Vonage does not detect it)."""
    return "text" if is_gsm7(text) else "unicode"


def gsm_safe(text: str) -> str:
    """`text` with smart quotes, dashes, ellipses, bullets and unusual spaces replaced by GSM look-alikes.

    Characters with no safe replacement (emoji, accented letters outside GSM, CJK) are left as
    they are, so the result is GSM-7 only if nothing else forces UCS-2.
    """
    return "".join(_LOOK_ALIKES.get(ch, ch) for ch in text)


def suggest_replacements(text: str) -> list[tuple[str, str]]:
    """Each distinct character of `text` that `gsm_safe` would replace, with its replacement, in order of appearance."""
    seen: dict[str, str] = {}
    for ch in text:
        if ch in _LOOK_ALIKES and ch not in seen:
            seen[ch] = _LOOK_ALIKES[ch]
    return list(seen.items())


def _atoms(text: str) -> list[tuple[int, str]]:
    """`text` as (index, unit of splitting): one character, or a surrogate pair that arrived as two code points."""
    atoms: list[tuple[int, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if "\ud800" <= ch <= "\udbff" and i + 1 < len(text) and "\udc00" <= text[i + 1] <= "\udfff":
            atoms.append((i, text[i:i + 2]))
            i += 2
        else:
            atoms.append((i, ch))
            i += 1
    return atoms


def _first_non_gsm(atoms: list[tuple[int, str]]) -> list[tuple[str, int]]:
    """The distinct atoms outside GSM-7, each with the index of its first appearance."""
    found: dict[str, int] = {}
    for index, atom in atoms:
        if atom not in GSM_BASIC and atom not in GSM_EXTENSION and atom not in found:
            found[atom] = index
    return list(found.items())


def _septets(atom: str) -> int:
    """Septets for one GSM character: two for the extension table (ESC + code)."""
    return 2 if atom in GSM_EXTENSION else 1


def _utf16_units(atom: str) -> int:
    """UTF-16 code units for one atom: two for a character outside the BMP."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in atom)


def _pack(atoms: list[str], cost: Callable[[str], int], limit: int) -> list[tuple[str, int]]:
    """Greedy packing of atoms into (part, units) with at most `limit` units each; atoms are never split."""
    parts: list[tuple[str, int]] = []
    current: list[str] = []
    used = 0
    for atom in atoms:
        size = cost(atom)
        if used + size > limit:
            parts.append(("".join(current), used))
            current, used = [], 0
        current.append(atom)
        used += size
    if current:
        parts.append(("".join(current), used))
    return parts
