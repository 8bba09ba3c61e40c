"""Request input no view can use, refused at the edge, one place per kind: route ids past what a BIGINT holds
(404), NUL characters in the path, query or form (400), and JSON bodies nested too deeply or holding text no
database stores (NUL characters, lone surrogates), which the JSON endpoints refuse before any other work.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, abort, jsonify, request
from werkzeug.exceptions import NotFound
from werkzeug.routing import BaseConverter

from kinnekt.numbers import MAX_ID, whole_number

MAX_JSON_DEPTH = 64
"""How deep a JSON body may nest. Shopify's payloads, Vonage's and segment definitions stay under 10 levels;
Python's parser runs out of stack long before 100,000, so deeper bodies are refused unparsed."""

FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})

RAW_BODY_BLUEPRINTS = frozenset({"webhooks"})
"""Blueprints that read their body raw (Shopify signs the bytes) and limit its size themselves: their body is
never parsed as a form here."""

# A JSON string (skipped whole, escapes and all) or a bracket: enough to measure nesting without parsing.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")


class IdConverter(BaseConverter):
    """`<int:...>` in routes: an id written in ASCII digits. One past MAX_ID is no row's id: 404 at once (refusing
    the match instead would let the router answer 405 when the same path has routes for other methods)."""

    regex = r"[0-9]+"
    weight = 50  # as werkzeug's own int converter, so routes keep their order

    def to_python(self, value: str) -> int:
        number = whole_number(value, MAX_ID)
        if number is None:
            raise NotFound()
        return number

    def to_url(self, value) -> str:
        return str(int(value))


class BadJson(ValueError):
    """A body that is not JSON at all."""


class NestedTooDeep(BadJson):
    """A JSON body nested deeper than MAX_JSON_DEPTH (refused unparsed)."""


def init_app(app: Flask) -> None:
    """Route ids through IdConverter (before any blueprint adds a rule) and refuse NUL characters in every request."""
    app.url_map.converters["int"] = IdConverter
    app.before_request(refuse_nul_characters)


def refuse_nul_characters() -> None:
    """400 for a NUL character in the path, a query argument, a form field or an uploaded file's name:
    PostgreSQL's text columns cannot hold one, and no person types one."""
    where = _nul_in_request()
    if where is not None:
        abort(400, description=f"The request contains a NUL character ({where}). Remove it and try again.")


def _nul_in_request() -> str | None:
    if "\x00" in request.path:
        return "in the address"
    found = _nul_in(request.args)
    if found is not None:
        return f"in the query argument “{found}”"
    if request.mimetype in FORM_TYPES and request.blueprint not in RAW_BODY_BLUEPRINTS:
        found = _nul_in(request.form)
        if found is not None:
            return f"in the form field “{found}”"
        for key, upload in request.files.items(multi=True):
            if "\x00" in key or "\x00" in (upload.filename or ""):
                return f"in the name of the file sent as “{key.replace(chr(0), '')}”"
    return None


def _nul_in(values) -> str | None:
    """The printable name of the first argument whose name or value holds a NUL character."""
    for key, value in values.items(multi=True):
        if "\x00" in key or "\x00" in value:
            return key.replace("\x00", "") or "(unnamed)"
    return None


# ---------------------------------------------------------------------------------------------- JSON bodies

def nested_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when JSON text nests arrays and objects deeper than `limit` (strings are skipped; it need not be
    valid JSON). Stops at the first bracket past the limit, so 100,000 levels cost no more than `limit`."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # fewer opening brackets than the limit, in strings or not: nothing to walk
    depth = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def parse_json(body: bytes) -> Any:
    """The JSON document in `body`; NestedTooDeep past MAX_JSON_DEPTH (unparsed), BadJson when it is not JSON."""
    if nested_too_deep(body):
        raise NestedTooDeep(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body)
    except ValueError:  # also a body that is not UTF-8, and a number of more than 4,300 digits
        raise BadJson("not valid JSON") from None


@dataclass(frozen=True)
class BadText:
    """Where a JSON document holds text no column can store (its path, as segment rule paths read: `rules[0].value`),
    and whether it is a NUL character or a lone surrogate (half of a UTF-16 pair, which a `\\ud800` escape can
    produce and no UTF-8 text holds)."""

    path: str
    nul: bool

    @property
    def why(self) -> str:
        """What is wrong, for a message."""
        return "contains a NUL character" if self.nul else "contains a lone surrogate (half of a UTF-16 pair)"

    @property
    def where(self) -> str:
        """The path, printable (without the characters it is refused for)."""
        return _SURROGATE.sub("\ufffd", self.path.replace("\x00", "\\0"))


def may_hold_unstorable_text(body: bytes) -> bool:
    """False when the JSON text `body` cannot parse to a NUL character or a lone surrogate, so unstorable_text need
    not walk it. In UTF-8 JSON a NUL can only come from a `\\u` escape (the parser refuses raw control characters
    in strings), and a lone surrogate from a `\\u` escape or its UTF-8 bytes (0xED 0xA0-0xBF …, which json.loads
    lets through: it decodes with "surrogatepass"); any 0xED byte has the body walked. A body in UTF-16 or UTF-32
    (which json.loads also reads) has NUL bytes, and is walked too."""
    return b"\\u" in body or b"\x00" in body or b"\xed" in body


def unstorable_text(document: Any, path: str = "") -> BadText | None:
    """The first key or string of a parsed JSON document that no text column can store, if any."""
    if isinstance(document, str):
        if "\x00" in document:
            return BadText(path, nul=True)
        if _SURROGATE.search(document):
            return BadText(path, nul=False)
        return None
    if isinstance(document, dict):
        for key, value in document.items():
            inner = f"{path}.{key}" if path else str(key)
            found = unstorable_text(key, inner) or unstorable_text(value, inner)
            if found is not None:
                return found
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found = unstorable_text(value, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def webhook_json() -> Any:
    """The JSON body of a public webhook (None when it is not JSON, for the caller to refuse as it does). A body
    nested too deeply, or holding text no database stores, is answered 400 here, before any other work."""
    try:
        document = parse_json(request.get_data())
    except NestedTooDeep as exc:
        abort(_malformed(f"the body is {exc}"))
    except BadJson:
        return None
    found = unstorable_text(document)
    if found is not None:
        abort(_malformed(f"{found.where or 'the body'} {found.why}"))
    return document


def refuse_deep_json(body: bytes) -> None:
    """Answer 400 (plain text) for a raw webhook body nested deeper than MAX_JSON_DEPTH, before it is parsed."""
    if nested_too_deep(body):
        abort(Response(f"body nested deeper than {MAX_JSON_DEPTH} levels", status=400, mimetype="text/plain"))


def _malformed(message: str) -> Response:
    response = jsonify({"error": "malformed", "message": message})
    response.status_code = 400
    return response
