"""Tests for kinnekt.sms.encoding: edge cases by example, and properties against a reference packer."""
from __future__ import annotations

import string

import pytest
from hypothesis import given, settings, strategies as st

from kinnekt.sms import encoding
from kinnekt.sms.encoding import analyze, gsm_safe, is_gsm7, suggest_replacements, vonage_type

# --- An independent reference -------------------------------------------------------------
# The GSM sets are written out by kind rather than copied from the module's code-order table,
# and the packer works the other way round: it encodes the whole text into units (septets with
# an explicit ESC, or UTF-16 code units), cuts every 153/67 units and steps back one unit when
# the cut would land right after an ESC or a high surrogate.

REF_GSM = set(string.ascii_letters + string.digits + " \n\r" + "!\"#%&'()*+,-./:;<=>?@$_")
REF_GSM |= set("£ ¥ ¤ § ¡ ¿ è é ù ì ò à Ç É Ø ø Å å Æ æ ß Ä Ö Ñ Ü ä ö ñ ü".split())
REF_GSM |= set("Δ Φ Γ Λ Ω Π Ψ Σ Θ Ξ".split())
REF_EXT = set("\f^{}\\[~]|€")
ESC = object()


def ref_is_gsm(text: str) -> bool:
    return all(ch in REF_GSM or ch in REF_EXT for ch in text)


def ref_septets(text: str) -> int:
    return sum(2 if ch in REF_EXT else 1 for ch in text)


def ref_utf16(text: str) -> list[bytes]:
    raw = text.encode("utf-16-be", "surrogatepass")
    return [raw[i:i + 2] for i in range(0, len(raw), 2)]


def ref_split(text: str) -> tuple[str, int, list[str]]:
    """(encoding, units, parts), by cutting the encoded unit stream."""
    if ref_is_gsm(text):
        kind, single, per_part = "gsm7", 160, 153
        units: list = []
        for ch in text:
            units += [ESC, ch] if ch in REF_EXT else [ch]

        def cut_is_bad(chunk):
            return chunk[-1] is ESC

        def decode(chunk):
            return "".join(u for u in chunk if u is not ESC)
    else:
        kind, single, per_part = "ucs2", 70, 67
        units = ref_utf16(text)

        def cut_is_bad(chunk):
            return 0xD8 <= chunk[-1][0] <= 0xDB

        def decode(chunk):
            return b"".join(chunk).decode("utf-16-be", "surrogatepass")
    if not units:
        return kind, 0, []
    if len(units) <= single:
        return kind, len(units), [text]
    parts, rest = [], units
    while rest:
        cut = min(per_part, len(rest))
        if cut < len(rest) and cut_is_bad(rest[:cut]):
            cut -= 1
        parts.append(decode(rest[:cut]))
        rest = rest[cut:]
    return kind, len(units), parts


def ref_units(kind: str, text: str) -> int:
    return ref_septets(text) if kind == "gsm7" else len(ref_utf16(text))


# --- Strategies ---------------------------------------------------------------------------

GSM_CHARS = st.sampled_from(sorted(REF_GSM))
EXT_CHARS = st.sampled_from(sorted(REF_EXT))
LATIN1_NON_GSM = st.sampled_from([chr(c) for c in range(0xA0, 0x100) if chr(c) not in REF_GSM])
CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
EMOJI = st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF)

GSM_ALPHABET = st.one_of(GSM_CHARS, GSM_CHARS, GSM_CHARS, EXT_CHARS)
MIXED_ALPHABET = st.one_of(GSM_CHARS, EXT_CHARS, LATIN1_NON_GSM, CJK, EMOJI)
UCS2_HEAVY = st.one_of(GSM_CHARS, CJK, EMOJI, EMOJI)


@st.composite
def gsm_with_one_intruder(draw):
    """A long GSM text with one character that forces UCS-2 somewhere inside."""
    text = draw(st.text(GSM_ALPHABET, min_size=60, max_size=300))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.one_of(LATIN1_NON_GSM, CJK, EMOJI)) + text[at:]


TEXTS = st.one_of(
    st.text(MIXED_ALPHABET, max_size=40),
    st.text(GSM_ALPHABET, min_size=140, max_size=480),
    st.text(MIXED_ALPHABET, min_size=60, max_size=250),
    st.text(UCS2_HEAVY, min_size=30, max_size=220),
    gsm_with_one_intruder(),
)


# --- Properties ---------------------------------------------------------------------------

@settings(max_examples=400)
@given(TEXTS)
def test_agrees_with_reference_packer(text):
    kind, units, parts = ref_split(text)
    info = analyze(text)
    assert (info.encoding, info.units, info.parts) == (kind, units, parts)
    assert info.segments == len(parts)


@settings(max_examples=300)
@given(TEXTS)
def test_parts_rejoin_fit_and_never_split_a_pair(text):
    info = analyze(text)
    assert "".join(info.parts) == text
    single, per_part = (160, 153) if info.encoding == "gsm7" else (70, 67)
    if info.segments == 1:
        assert info.units <= single and info.per_segment == single
    elif info.segments > 1:
        assert info.units > single and info.per_segment == per_part
    for part in info.parts:
        assert part
        assert ref_units(info.encoding, part) <= info.per_segment
        if info.encoding == "ucs2":
            last = ref_utf16(part)[-1]
            assert not 0xD8 <= last[0] <= 0xDB, "part ends with a lone high surrogate"
    assert sum(ref_units(info.encoding, p) for p in info.parts) == info.units


@settings(max_examples=300)
@given(TEXTS)
def test_packing_is_greedy(text):
    info = analyze(text)
    for part, following in zip(info.parts, info.parts[1:]):
        next_char = following[0]
        assert ref_units(info.encoding, part) + ref_units(info.encoding, next_char) > info.per_segment


@given(TEXTS)
def test_remaining_is_room_left_in_the_last_part(text):
    info = analyze(text)
    used = ref_units(info.encoding, info.parts[-1]) if info.parts else 0
    assert info.remaining == info.per_segment - used
    assert 0 <= info.remaining <= info.per_segment


@given(TEXTS)
def test_unicode_chars_are_the_distinct_non_gsm_characters_at_their_first_index(text):
    info = analyze(text)
    expected = {ch: text.index(ch) for ch in text if ch not in REF_GSM and ch not in REF_EXT}
    assert dict(info.unicode_chars) == expected
    assert [i for _, i in info.unicode_chars] == sorted(expected.values())
    assert is_gsm7(text) == (info.encoding == "gsm7") == (not expected)
    assert vonage_type(text) == ("text" if info.encoding == "gsm7" else "unicode")


LOOK_ALIKE_ALPHABET = st.one_of(GSM_CHARS, EXT_CHARS, st.sampled_from(sorted(encoding._LOOK_ALIKES)))


@given(st.text(LOOK_ALIKE_ALPHABET, max_size=200))
def test_gsm_safe_makes_look_alike_text_gsm7(text):
    safe = gsm_safe(text)
    assert is_gsm7(safe)
    assert gsm_safe(safe) == safe


@given(st.text(MIXED_ALPHABET.filter(lambda ch: ch not in encoding._LOOK_ALIKES), max_size=100))
def test_gsm_safe_keeps_gsm_and_unreplaceable_characters(text):
    assert gsm_safe(text) == text
    assert suggest_replacements(text) == []


@given(st.text(st.one_of(MIXED_ALPHABET, LOOK_ALIKE_ALPHABET), max_size=100))
def test_suggestions_applied_give_gsm_safe(text):
    suggestions = suggest_replacements(text)
    assert len({ch for ch, _ in suggestions}) == len(suggestions)
    applied = "".join(dict(suggestions).get(ch, ch) for ch in text)
    assert applied == gsm_safe(text)


# --- Examples -----------------------------------------------------------------------------

def test_gsm_tables():
    assert encoding.GSM_BASIC == REF_GSM
    assert len(encoding.GSM_BASIC) == 127  # 128 codes less ESC
    assert encoding.GSM_EXTENSION == REF_EXT
    assert not is_gsm7("\x1b")


def test_empty_text_is_zero_segments():
    info = analyze("")
    assert (info.encoding, info.units, info.segments, info.parts) == ("gsm7", 0, 0, [])
    assert (info.per_segment, info.remaining) == (160, 160)


@pytest.mark.parametrize("text, segments, part_lengths", [
    ("a" * 160, 1, [160]),
    ("a" * 161, 2, [153, 8]),
    ("a" * 306, 2, [153, 153]),
    ("a" * 307, 3, [153, 153, 1]),
    ("a" * 158 + "€", 1, [159]),
    ("a" * 159 + "€", 2, [153, 7]),
])
def test_gsm7_single_and_multipart_limits(text, segments, part_lengths):
    info = analyze(text)
    assert info.encoding == "gsm7"
    assert info.segments == segments
    assert [len(p) for p in info.parts] == part_lengths


def test_gsm7_exactly_160_leaves_no_room():
    info = analyze("a" * 160)
    assert (info.units, info.per_segment, info.remaining) == (160, 160, 0)
    assert analyze("a" * 161).remaining == 153 - 8


def test_escape_straddling_153_moves_whole_pair_to_next_part():
    text = "a" * 152 + "€" + "a" * 152  # 306 septets, but the € cannot start at septet 153
    info = analyze(text)
    assert info.units == 306
    assert info.parts == ["a" * 152, "€" + "a" * 151, "a"]
    assert info.segments == 3


def test_escape_ending_exactly_at_153():
    text = "a" * 151 + "{" + "b" * 10
    info = analyze(text)
    assert info.parts == ["a" * 151 + "{", "b" * 10]
    assert info.remaining == 143


def test_single_euro_keeps_gsm7_and_costs_two_septets():
    text = "Only €5 off today"
    info = analyze(text)
    assert info.encoding == "gsm7" and vonage_type(text) == "text"
    assert info.units == len(text) + 1
    assert info.unicode_chars == []


def test_form_feed_and_brackets_cost_two_septets():
    assert analyze("\f[]{}").units == 10


@pytest.mark.parametrize("text, segments", [
    ("ł" * 70, 1), ("ł" * 71, 2), ("ł" * 134, 2), ("ł" * 135, 3), ("中" * 70, 1), ("中" * 71, 2),
])
def test_ucs2_single_and_multipart_limits(text, segments):
    info = analyze(text)
    assert info.encoding == "ucs2"
    assert info.segments == segments
    assert info.per_segment == (70 if segments == 1 else 67)


def test_emoji_counts_two_units():
    assert analyze("😀" * 35).segments == 1
    assert analyze("😀" * 35).remaining == 0
    assert analyze("😀" * 36).segments == 2


def test_67_emoji_take_three_parts():
    info = analyze("😀" * 67)  # 134 units, but only 33 whole emoji fit in 67 units
    assert info.units == 134
    assert [len(p) for p in info.parts] == [33, 33, 1]


def test_emoji_straddling_67_moves_to_next_part():
    text = "a" * 66 + "😀" + "b" * 10
    info = analyze(text)
    assert info.parts == ["a" * 66, "😀" + "b" * 10]
    assert info.remaining == 67 - 12


def test_surrogate_pair_given_as_two_code_points_is_kept_whole():
    pair = "\ud83d\ude00"
    info = analyze("a" * 66 + pair + "b")
    assert info.encoding == "ucs2" and info.units == 69 and info.segments == 1
    info = analyze("a" * 66 + pair + "b" * 10)
    assert info.parts == ["a" * 66, pair + "b" * 10]
    assert info.unicode_chars == [(pair, 66)]


def test_single_emoji_forces_ucs2_and_is_pointed_at():
    text = "Sale starts now 🎉 see you"
    info = analyze(text)
    assert info.encoding == "ucs2" and vonage_type(text) == "unicode" and not is_gsm7(text)
    assert info.unicode_chars == [("🎉", 16)]
    assert info.units == len(text) + 1


def test_lower_case_c_cedilla_is_not_gsm():
    info = analyze("façade Ça")
    assert info.encoding == "ucs2"
    assert info.unicode_chars == [("ç", 2)]


def test_gsm_safe_turns_smart_punctuation_into_gsm():
    text = "“Hello” \u2013 it\u2019s here\u2026\u00a0\u2022 50% off"
    assert not is_gsm7(text)
    safe = gsm_safe(text)
    assert safe == "\"Hello\" - it's here... - 50% off"
    assert is_gsm7(safe)
    assert analyze(safe).encoding == "gsm7"


def test_gsm_safe_leaves_what_it_cannot_replace():
    text = "Łódź 😀 “x”"
    assert gsm_safe(text) == "Łódź 😀 \"x\""
    assert not is_gsm7(gsm_safe(text))


def test_suggest_replacements_lists_distinct_characters_in_order():
    text = "it\u2019s \u201cnew\u201d \u2014 it\u2019s\u2026"
    assert suggest_replacements(text) == [
        ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"'), ("\u2014", "-"), ("\u2026", "..."),
    ]
    assert suggest_replacements("plain GSM text") == []


def test_every_replacement_is_gsm7():
    for original, replacement in encoding._LOOK_ALIKES.items():
        assert not is_gsm7(original), original
        assert is_gsm7(replacement), original


def test_size_agrees_with_analyze_on_every_kind_of_text():
    """`size` (the sender's quick count) gives what `analyze` gives: default alphabet only (its quick path),
    extension characters, UCS-2 and surrogate pairs, at every length around the part boundaries."""
    import random
    from kinnekt.sms.encoding import size
    rng = random.Random(7)
    pools = ["abc XYZ 0123 .,!?@£", "abc{}[]€^~|\\", "abcé😀", "Привет", "abc\u2019"]
    checked = set()
    for pool in pools:
        for length in [0, 1, 69, 70, 71, 152, 153, 154, 159, 160, 161, 305, 306, 307, 459, 460, 461, 900]:
            text = "".join(rng.choice(pool) for _ in range(length))
            info = analyze(text)
            assert size(text) == (info.encoding, info.segments), (pool, length)
            checked.add((info.encoding, info.segments))
    assert {("gsm7", 0), ("gsm7", 1), ("gsm7", 2), ("gsm7", 3), ("ucs2", 1), ("ucs2", 2)} <= checked
