"""Why a text was not delivered, in the merchant's words.

A failed message keeps the provider's error code and text (`Message.error_code`, `error_reason`: "dlr-3",
"failed: Absent subscriber (permanent)", Vonage status "7", "http-500", ...) for support and the API; screens
show the sentence `describe` makes of them, with the code as a detail (a tooltip), never the code alone.
"""
from __future__ import annotations

RECEIPT_SENTENCES = {
    "1": "The carrier did not say why the text was not delivered.",
    "2": "The phone was off or out of reach until the carrier gave up.",
    "3": "This number no longer works.",
    "4": "The recipient blocks texts like this one.",
    "5": "The number moved to another carrier and could not be reached.",
    "6": "The carrier's spam filter stopped the text.",
    "7": "The phone was busy.",
    "8": "A network problem stopped the text.",
    "9": "The recipient opted out of texts at their carrier.",
    "10": "The carrier refused the message.",
    "11": "The carrier could not route the text to this number.",
    "12": "The number could not be reached.",
    "13": "The carrier blocks this message for the recipient's age.",
    "14": "The carrier blocks this number.",
    "15": "The recipient's prepaid credit has run out.",
    "99": "The carrier reported an error.",
    "expired": "The phone could not be reached before the text expired.",
    "rejected": "The carrier rejected the text.",
    "failed": "The carrier could not deliver the text.",
}
"""Delivery receipt error codes (and receipt statuses without a code) as sentences: error code "dlr-<key>"."""

PROVIDER_SENTENCES = {
    "1": "Vonage was too busy to take the text.",
    "2": "Vonage refused the text as incomplete.",
    "3": "Vonage refused the text: the number or the sender is not valid.",
    "4": "Vonage refused the account's credentials: check the SMS settings.",
    "5": "Vonage had an internal error.",
    "6": "Vonage refused the message.",
    "7": "This number is barred from receiving texts.",
    "8": "The Vonage account is barred: contact Vonage.",
    "9": "The Vonage account is out of credit.",
    "12": "The message is too long.",
    "15": "The sender (the number or name texts come from) is not allowed for this number.",
    "29": "The Vonage account may only text its own test numbers.",
    "33": "This number has been switched off.",
    "connect": "Kinnekt could not reach Vonage.",
    "connection": "The connection to Vonage broke: the text may or may not have been sent.",
    "invalid-request": "The text could not be sent: its details were not valid.",
    "not-configured": "Texting is not set up yet: check the SMS settings.",
    "rate-limit": "Too many texts at once: it was not sent.",
    "unexpected": "Something unexpected stopped the text.",
    "unreadable": "Vonage's answer could not be read: the text may or may not have been sent.",
    "worker-lost": "Sending stopped part way: the text may or may not have been sent.",
}
"""Codes of a send the provider refused or that could not be made, as sentences."""

FALLBACK = "The text could not be delivered."


def describe(error_code: str | None, error_reason: str | None = None) -> str:
    """The sentence a merchant reads for a failed text (`error_reason` only helps when the code is unknown)."""
    code = (error_code or "").strip()
    if code.startswith("dlr-"):
        return RECEIPT_SENTENCES.get(code[4:], RECEIPT_SENTENCES["failed"])
    if code in PROVIDER_SENTENCES:
        return PROVIDER_SENTENCES[code]
    if code.startswith("http-"):
        return "Vonage could not take the text just then."
    return FALLBACK


def detail(error_code: str | None, error_reason: str | None) -> str:
    """The provider's own words and code, for a tooltip: "Absent subscriber (permanent) · code dlr-3"."""
    parts = [part for part in ((error_reason or "").strip(), f"code {error_code}" if error_code else "") if part]
    return " · ".join(parts)
