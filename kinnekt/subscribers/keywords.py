"""Keywords: the words customers text in to subscribe; create, edit, deactivate and delete them."""
from __future__ import annotations

import re

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import signals
from kinnekt.models import Keyword, Shop

WORD_PATTERN = re.compile(r"^[A-Z0-9]{2,20}$")
MAX_REPLY_LENGTH = 918
"""Six concatenated GSM-7 parts: longer replies cost more than any welcome text needs."""

RESERVED_WORDS = frozenset({
    # opt-out words carriers and regulators require us to honour
    "STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT",
    # help and opt-in words with a fixed meaning
    "HELP", "INFO", "START", "UNSTOP", "YES", "Y", "NO",
})
"""Words a keyword may not be: texting them must always mean what the carrier rules say."""


class KeywordError(ValueError):
    """Bad keyword input; `field` names the form field the message belongs to."""

    def __init__(self, message: str, field: str = "word"):
        super().__init__(message)
        self.field = field


def normalise_word(raw: str) -> str:
    """The keyword as stored (trimmed, upper-case); raises KeywordError when it is not 2-20 letters or digits."""
    word = (raw or "").strip().upper()
    if not word:
        raise KeywordError("Enter a keyword.")
    if not WORD_PATTERN.match(word):
        raise KeywordError(f"{word[:30]} can't be a keyword: use 2 to 20 letters or digits, no spaces or symbols.")
    if word in RESERVED_WORDS:
        raise KeywordError(f"{word} is reserved for opt-out, help and confirmation replies; choose another word.")
    return word


def create_keyword(session: OrmSession, shop: Shop, *, word: str, reply_text: str = "", active: bool = True
                   ) -> Keyword:
    """Add a keyword (unique per shop) and its "Keyword: <WORD>" auto segment; raises KeywordError and saves
    nothing on bad input."""
    keyword = Keyword(shop_id=shop.id, word=normalise_word(word), reply_text=_reply(reply_text), active=active)
    try:
        with session.begin_nested():
            session.add(keyword)
            session.flush()
    except IntegrityError:
        session.rollback()
        raise KeywordError(f"You already have the keyword {keyword.word}.") from None
    signals.announce(signals.keyword_created, session, keyword=keyword)  # its segment (kinnekt.segments.auto)
    session.commit()
    return keyword


def update_keyword(session: OrmSession, keyword: Keyword, *, word: str | None = None,
                   reply_text: str | None = None, active: bool | None = None) -> Keyword:
    """Change a keyword's reply text or active flag. The word itself cannot change: subscribers and the
    keyword's segment belong to the word they texted, so a new word is a new keyword."""
    if word is not None and normalise_word(word) != keyword.word:
        raise KeywordError(f"The word {keyword.word} can't be changed: create a new keyword instead "
                           f"(subscribers who texted {keyword.word} stay in its segment).")
    new_reply = _reply(reply_text) if reply_text is not None else keyword.reply_text
    keyword.reply_text = new_reply
    if active is not None:
        keyword.active = bool(active)
    session.commit()
    return keyword


def set_active(session: OrmSession, keyword: Keyword, active: bool) -> Keyword:
    """Turn a keyword on or off; an inactive keyword texted in is kept in the inbox and subscribes nobody."""
    keyword.active = bool(active)
    session.commit()
    return keyword


def deactivate(session: OrmSession, keyword: Keyword) -> Keyword:
    """Turn a keyword off."""
    return set_active(session, keyword, False)


def delete_keyword(session: OrmSession, keyword: Keyword, *, confirmed: bool = False) -> list:
    """Delete a keyword and its auto segment; subscribers stay, keeping the word they texted.

    When a campaign (or another segment) uses the keyword's segment and `confirmed` is false, nothing is
    deleted and those usages (segments.service.Usage) are returned for the merchant to confirm.
    """
    usages = signals.gathered(signals.announce(signals.keyword_deleting, session, keyword=keyword,
                                               confirmed=confirmed))  # its segment (kinnekt.segments.auto)
    if usages and not confirmed:
        return usages
    session.delete(keyword)
    session.commit()
    return usages


def _reply(text: str | None) -> str:
    reply = (text or "").strip()
    if len(reply) > MAX_REPLY_LENGTH:
        raise KeywordError(f"The reply is {len(reply)} characters; keep it to {MAX_REPLY_LENGTH}.", "reply_text")
    return reply
