"""Why a text was not delivered, in the merchant's words.

A failed message keeps the provider's error code and text (`Message.error_code`, `error_reason`: "dlr-1190",
"undeliverable: Absent subscriber (permanent)", the Messages API's "1050", "http-500", ...) for support and the
API; screens show the sentence `describe` makes of them, with the code as a detail (a tooltip), never the code alone.
"""
from __future__ import annotations

RECEIPT_SENTENCES = {
    # Messages API status webhook error codes (https://developer.vonage.com/api-errors/messages)
    "1020": "Vonage refused the text: the number or the sender is not valid.",
    "1040": "The carrier could not process the text for this number.",
    "1050": "This number is barred from receiving texts.",
    "1120": "The sender (the number or name texts come from) is not allowed in the recipient's country.",
    "1160": "The Vonage account may only text its own test numbers.",
    "1170": "This is not a number that can receive texts.",
    "1180": "The phone was off or out of reach until the carrier gave up.",
    "1190": "This number no longer works.",
    "1200": "The recipient blocks texts like this one.",
    "1210": "The carrier's spam filter stopped the text.",
    "1220": "The phone was busy.",
    "1230": "A network problem stopped the text.",
    "1240": "The recipient opted out of texts at their carrier.",
    "1250": "The carrier could not route the text to this number.",
    "1260": "The number could not be reached.",
    "1270": "The carrier blocks this message for the recipient's age.",
    "1280": "The carrier blocks this number.",
    "1290": "The recipient's prepaid credit has run out.",
    "1330": "The carrier reported an error.",
    # statuses without a code
    "rejected": "Vonage rejected the text.",
    "undeliverable": "The carrier could not deliver the text.",
    "failed": "The carrier could not deliver the text.",
    # codes of the SMS API's receipts (messages sent before the move to the Messages API)
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
}
"""Status webhook error codes (and failed statuses without a code) as sentences: error code "dlr-<key>"."""

PROVIDER_SENTENCES = {
    # Messages API error codes of a refused request (the `#code` of its problem+json `type`)
    "1000": "Vonage was too busy to take the text.",
    "1010": "Vonage refused the text as incomplete.",
    "1020": "Vonage refused the text: the number or the sender is not valid.",
    "1030": "Vonage had an internal error.",
    "1040": "Vonage refused the message.",
    "1050": "This number is barred from receiving texts.",
    "1060": "The Vonage account is barred: contact Vonage.",
    "1070": "The Vonage account is out of credit.",
    "1080": "The Vonage account cannot send through the Messages API: contact Vonage.",
    "1090": "The message is too long.",
    "1100": "Vonage could not pass the text on.",
    "1120": "The sender (the number or name texts come from) is not allowed for this number.",
    "1160": "The Vonage account may only text its own test numbers.",
    "1170": "This is not a number that can receive texts.",
    "1300": "Vonage's sending quota was reached.",
    "unauthorized": "Vonage refused the application's credentials: check the SMS settings.",
    "forbidden": "The Vonage account may not send these texts: check the SMS settings.",
    "low-balance": "The Vonage account is out of credit.",
    # the SMS API's status codes (messages sent before the move to the Messages API)
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
    # our own
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
