"""Inbound SMS: which shop a text is for, what it means (STOP, HELP, START, a keyword, other), and acting on it.

What counts as an opt-out (`classify`):
- the whole text is opt-out words and polite filler: STOP, STOPALL, STOP ALL, UNSUBSCRIBE, CANCEL, END,
  QUIT, REVOKE, OPT OUT, OPTOUT, OPT-OUT, alone or with words such as "please", "now", "me", "texts"
  ("Stop please", "STOP!!", "unsubscribe me", "stop texting me", "please stop");
- or the text contains a clear opt-out phrase that is not negated just before it: "stop texting /
  messaging / sending / contacting", "remove me", "take me off", "unsubscribe", "opt me out",
  "opt out", "don't text me", "no more texts", "leave me alone", "wrong number".
So "when does the sale stop?", "cancel my order" or "don't stop texting me" are not opt-outs: the
command words there are part of a sentence about something else, and are kept for the inbox.
HELP / INFO and START / UNSTOP / YES / Y count only as whole-text commands, the same way.

Which shop a text is for (`resolve_shop`): the shop whose own number (bought or brought in Settings, an active
`sender_numbers` row) is the number texted; a number no shop owns is routed as before shops had numbers: the
shops whose Sender setting is the number texted (shops without one use VONAGE_SENDER). With one, that shop.
With several: the one whose active keyword is the text's first word, if exactly one; else the shop where this
phone is a subscriber, most recently texted first; else the shop installed first. An opt-out is applied in every shop
sharing that number, since the person cannot tell them apart; one confirmation is sent.

When (`take_in_request`): an opt-out is handled inside the webhook's request, before Vonage gets its answer
(a long text once its last part is in and the whole text is one), so that it is committed before any
further send of a campaign or flow re-checks the number; a campaign's send jobs can hold every worker for
a minute, and a job queued behind them would come too late. A one-part text that asks for nothing ("other":
"Thanks!", "Love it") is filed there too, by the same `process`: it only records its intent and subscriber,
fewer statements than a job's own bookkeeping, and the replies a campaign brings in by the hundred then take
no worker from webhooks and sends. Everything else (HELP, START, keywords, long texts that are not opt-outs)
is handled by a worker, since it sends a text. If the
handling in the request fails, what it claimed is given back and a worker handles the text as usual; a
handling that stopped after the opt-out and before the confirmation still gets its one confirmation when it
is handled again (`_confirmation_missing`).
"""
from __future__ import annotations

import datetime as dt
import logging
import re

from flask import current_app
from sqlalchemy import exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from kinnekt import defaults
from kinnekt.db import utcnow
from kinnekt.models import InboundMessage, Keyword, Message, SenderNumber, Shop, Subscriber
from kinnekt.models.sender import SenderKind, SenderStatus
from kinnekt.models.subscriber import SubscriberStatus
from kinnekt.sms.outgoing import queue_message
from kinnekt.subscribers import optin, phones, share, tasks

log = logging.getLogger(__name__)

MAX_TEXT_LENGTH = 1600
"""Vonage delivers a long text in parts; one webhook never carries more than this (nor may the demo's form)."""

INTENTS = ("stop", "help", "start", "keyword", "other", "part", "merged", "handling")
"""InboundMessage.intent values: the five meanings, a part of a long text awaiting the rest (or merged into
its first part), and "handling" while a worker (or, for an opt-out, the webhook's request) acts on it."""

OPT_OUT_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_OUT_PAIRS = frozenset({("OPT", "OUT"), ("STOP", "ALL")})
HELP_WORDS = frozenset({"HELP", "INFO"})
START_WORDS = frozenset({"START", "UNSTOP", "YES", "Y"})
FILLER_WORDS = frozenset({
    "PLEASE", "PLS", "PLZ", "NOW", "ME", "IT", "THANKS", "THANK", "YOU", "THX", "TY", "OK", "OKAY", "ALL",
    "TEXT", "TEXTS", "TEXTING", "MESSAGE", "MESSAGES", "MESSAGING", "MSG", "MSGS", "SMS", "SENDING",
    "SUBSCRIPTION", "IMMEDIATELY", "ASAP", "JUST",
})
OPT_OUT_PHRASES = tuple(re.compile(p) for p in (
    r"\bstop (texting|txting|messaging|sending|contacting|spamming)\b",
    r"\bremove me\b",
    r"\btake me off\b",
    r"\bunsubscribe\b",
    r"\b(opt|sign) me out\b",
    r"\bopt out\b",
    r"\b(dont|do not|never) (text|txt|message|sms|contact) me\b",
    r"\bno more (texts|text messages|messages|sms|texting)\b",
    r"\bleave me alone\b",
    r"\bwrong number\b",
))
NEGATIONS = ("dont", "do not", "never", "not", "didnt", "did not", "wont", "cant", "cannot")


def _tokens(text: str) -> list[str]:
    """Upper-case words, apostrophes dropped ("don't" -> DONT), every other symbol a separator."""
    cleaned = re.sub(r"['\u2019`]", "", (text or "").upper())
    return re.findall(r"[A-Z0-9]+", cleaned)


def _plain(text: str) -> str:
    return " ".join(_tokens(text)).lower()


def _is_command(tokens: list[str], words: frozenset, pairs: frozenset = frozenset()) -> bool:
    """True when `tokens` are command words (at least one) and filler only."""
    found, i = False, 0
    while i < len(tokens):
        if i + 1 < len(tokens) and (tokens[i], tokens[i + 1]) in pairs:
            found, i = True, i + 2
        elif tokens[i] in words:
            found, i = True, i + 1
        elif tokens[i] in FILLER_WORDS:
            i += 1
        else:
            return False
    return found


def _has_opt_out_phrase(plain: str) -> bool:
    for pattern in OPT_OUT_PHRASES:
        for match in pattern.finditer(plain):
            before = plain[:match.start()].split()[-2:]
            if not any(" ".join(before[j:]) in NEGATIONS for j in range(len(before))):
                return True
    return False


def is_opt_out(text: str) -> bool:
    """True when `text` asks to stop receiving texts (the rule in this module's docstring)."""
    return _is_command(_tokens(text), OPT_OUT_WORDS, OPT_OUT_PAIRS) or _has_opt_out_phrase(_plain(text))


def classify(text: str, keywords: set[str] | frozenset = frozenset()) -> str:
    """The intent of an inbound text: stop, help, start, keyword (first word is an active keyword) or other."""
    tokens = _tokens(text)
    if not tokens:
        return "other"
    if is_opt_out(text):
        return "stop"
    if _is_command(tokens, HELP_WORDS):
        return "help"
    if _is_command(tokens, START_WORDS):
        return "start"
    if tokens[0] in keywords:
        return "keyword"
    return "other"


def first_word(text: str) -> str | None:
    """The text's first word, upper-case (what Vonage calls the keyword)."""
    tokens = _tokens(text)
    return tokens[0] if tokens else None


# --- which shop -------------------------------------------------------------------------------------

def _digits(number: str | None) -> str:
    return re.sub(r"\D", "", number or "")


def shops_for_number(session: OrmSession, to_number: str) -> list[Shop]:
    """Installed shops that send from `to_number`: the one shop whose own active number it is
    (`sender_numbers`, kinnekt/sms/numbers.py); else, as before shops had numbers of their own, the shops whose
    Sender setting it is, or that have none while it is the app's VONAGE_SENDER."""
    wanted = _digits(to_number)
    if not wanted:
        return []
    live = [Shop.installed_at.is_not(None), Shop.uninstalled_at.is_(None)]
    owner = session.scalar(
        select(Shop).join(SenderNumber, SenderNumber.shop_id == Shop.id)
        .where(SenderNumber.msisdn == wanted, SenderNumber.status == SenderStatus.ACTIVE,
               SenderNumber.kind != SenderKind.ALPHANUMERIC, *live))
    if owner is not None:
        return [owner]
    default = _digits(current_app.config.get("VONAGE_SENDER"))
    shops = session.scalars(select(Shop).where(*live).order_by(Shop.installed_at, Shop.id)).all()
    return [s for s in shops if (_digits(s.sender) or default) == wanted]


def resolve_shop(session: OrmSession, to_number: str, from_e164: str, text: str) -> Shop | None:
    """The shop an inbound text is for, by the rule in this module's docstring (None: not our number)."""
    candidates = shops_for_number(session, to_number)
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    by_id = {s.id: s for s in candidates}
    word = first_word(text)
    if word:
        owners = session.scalars(select(Keyword.shop_id).where(
            Keyword.shop_id.in_(by_id), Keyword.word == word, Keyword.active.is_(True))).all()
        if len(owners) == 1:
            return by_id[owners[0]]
    known = session.scalars(
        select(Subscriber.shop_id).where(Subscriber.shop_id.in_(by_id), Subscriber.phone == from_e164)
        .order_by(Subscriber.last_received_at.desc().nulls_last(), Subscriber.updated_at.desc())).first()
    if known is not None:
        return by_id[known]
    return candidates[0]


# --- receiving --------------------------------------------------------------------------------------

def receive(session: OrmSession, fields: dict) -> InboundMessage | None:
    """Take in one inbound text as a phone sent it: find its shop, store it once per provider id, apply an opt-out
    or a text asking for nothing now, and queue anything else for a worker. `fields` are InboundMessage columns
    (provider_id, from_phone in E.164, to_number, text, and a long text's concat_* ones). Returns the stored row;
    None when no shop sends from the number texted, or when the provider id is stored already (a resend: nothing
    happens twice).

    Vonage's /sms/inbound webhook calls this, and so does the demo's "Text the store" form (kinnekt/web/outbox.py),
    so that a text typed in the demo goes exactly where a real one goes."""
    shop = resolve_shop(session, fields["to_number"], fields["from_phone"], fields["text"])
    if shop is None:
        log.warning("inbound SMS %s to %s: no shop sends from that number; ignored",
                    fields["provider_id"], fields["to_number"])
        return None
    row = InboundMessage(shop_id=shop.id, **fields)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # the provider resent a message we already have
        session.rollback()
        return None
    session.commit()
    for inbound_id in take_in_request(session, row.id):
        queue_handling(inbound_id)
    return row


def queue_handling(inbound_id: int) -> None:
    """Queue a worker's handling of a stored text; if the queue is down, the recovery finds the text later."""
    try:
        tasks.enqueue_process_inbound(inbound_id)
    except Exception:  # the text is stored: failing the caller would only make Vonage resend what we have
        log.exception("inbound SMS %s stored but not queued; the recovery will handle it", inbound_id)


# --- handling ---------------------------------------------------------------------------------------

def process(session: OrmSession, inbound_id: int) -> str:
    """Handle one stored inbound text once (long texts once all parts are in); returns the intent or a state."""
    inbound = session.get(InboundMessage, inbound_id)
    if inbound is None:
        return "missing"
    now = utcnow()
    multipart = (inbound.concat_total or 0) > 1 and inbound.concat_ref
    claimed = session.execute(
        update(InboundMessage).where(InboundMessage.id == inbound_id, InboundMessage.processed_at.is_(None))
        .values(processed_at=now, intent="part" if multipart else "handling")
        .execution_options(synchronize_session=False)).rowcount
    session.commit()
    if not claimed:
        return "already processed"
    session.refresh(inbound)
    if multipart:
        return assemble(session, inbound.shop_id, inbound.from_phone, inbound.concat_ref)
    return handle(session, inbound, inbound.text)


def take_in_request(session: OrmSession, inbound_id: int) -> list[int]:
    """Handle a stored text now if it is an opt-out (a long text: once its last part is in and the whole is one)
    or a one-part text that asks for nothing; returns the ids of the stored texts a worker must still handle
    ([] when handled here or by a concurrent request). A failure is logged, not raised: what was claimed is
    given back and its ids returned."""
    try:
        return [] if _handled_now(session, inbound_id) else [inbound_id]
    except Exception:  # the text is stored: a worker (or the recovery) handles it, as it would have anyway
        log.exception("inbound %s: the text could not be handled in the request; a worker will", inbound_id)
        return _give_back(session, inbound_id)


def _group(inbound: InboundMessage) -> list:
    """The conditions selecting every stored part of a long text."""
    return [InboundMessage.shop_id == inbound.shop_id, InboundMessage.from_phone == inbound.from_phone,
            InboundMessage.concat_ref == inbound.concat_ref]


def _handled_now(session: OrmSession, inbound_id: int) -> bool:
    """True when the text was an opt-out or a one-part text asking for nothing, and is handled now (here, or by
    whoever claimed it first)."""
    inbound = session.get(InboundMessage, inbound_id)
    if inbound is None:
        return False
    if not ((inbound.concat_total or 0) > 1 and inbound.concat_ref):
        if not (is_opt_out(inbound.text) or _asks_nothing(session, inbound)):
            session.commit()  # end the read's transaction
            return False
        process(session, inbound_id)  # claims it first: a concurrent handling of the same row does nothing
        return True
    parts = session.execute(
        select(InboundMessage.concat_part, InboundMessage.concat_total, InboundMessage.text, InboundMessage.intent)
        .where(*_group(inbound)).order_by(InboundMessage.concat_part, InboundMessage.id)).all()
    texts: dict[int, str] = {}
    for part in parts:
        texts.setdefault(part.concat_part or 0, part.text)
    complete = len(texts) >= max(part.concat_total or 0 for part in parts)
    # A text handled already (this is a late or repeated part) is left to the worker, which files the part.
    if any(part.intent not in (None, "part") for part in parts) or not complete or \
            not is_opt_out("".join(texts[n] for n in sorted(texts))):
        session.commit()
        return False
    # Claim the parts whose jobs have not run yet (those jobs then find them processed), then assemble.
    session.execute(update(InboundMessage).where(*_group(inbound), InboundMessage.processed_at.is_(None))
                    .values(processed_at=utcnow(), intent="part").execution_options(synchronize_session=False))
    session.commit()
    return assemble(session, inbound.shop_id, inbound.from_phone, inbound.concat_ref) != "waiting for parts"


def _asks_nothing(session: OrmSession, inbound: InboundMessage) -> bool:
    """Whether handling this text sends nothing: its intent is "other" among the shop's active keywords."""
    return classify(inbound.text, _active_keywords(session, inbound.shop_id)) == "other"


def _active_keywords(session: OrmSession, shop_id: int) -> frozenset[str]:
    return frozenset(session.scalars(select(Keyword.word).where(Keyword.shop_id == shop_id,
                                                                 Keyword.active.is_(True))))


def _give_back(session: OrmSession, inbound_id: int) -> list[int]:
    """After a failed handling in the request: the texts it claimed are unclaimed again, for a worker; their ids.

    A long text's parts all go back (none is handled yet), so that each one's job claims it again as usual.
    """
    try:
        session.rollback()
        inbound = session.get(InboundMessage, inbound_id, populate_existing=True)
        if inbound is None:
            return []
        if not ((inbound.concat_total or 0) > 1 and inbound.concat_ref):
            session.execute(update(InboundMessage).where(InboundMessage.id == inbound_id,
                                                         InboundMessage.intent == "handling")
                            .values(processed_at=None, intent=None).execution_options(synchronize_session=False))
            session.commit()
            return [inbound_id]
        claimed = ("part", "handling", "merged")
        ids = list(session.scalars(select(InboundMessage.id).where(*_group(inbound)).order_by(InboundMessage.id)))
        handled = session.scalar(select(exists().where(*_group(inbound), InboundMessage.intent.is_not(None),
                                                       InboundMessage.intent.not_in(claimed))))
        if not handled:
            session.execute(update(InboundMessage).where(*_group(inbound), InboundMessage.intent.in_(claimed))
                            .values(processed_at=None, intent=None).execution_options(synchronize_session=False))
        session.commit()
        return ids
    except Exception:  # the database itself failed: the recovery finds the text (stale "handling" or unclaimed)
        log.exception("inbound %s: could not give the text back to the workers", inbound_id)
        session.rollback()
        return [inbound_id]


def assemble(session: OrmSession, shop_id: int, from_phone: str, concat_ref: str, *, force: bool = False) -> str:
    """Handle a long text once every part is in (or, with `force`, with the parts that came).

    The lowest claimed part becomes the text's row (holding the whole text); the others become "merged".
    """
    parts = session.scalars(
        select(InboundMessage).where(InboundMessage.shop_id == shop_id, InboundMessage.from_phone == from_phone,
                                     InboundMessage.concat_ref == concat_ref)
        .order_by(InboundMessage.concat_part, InboundMessage.id)
        .execution_options(populate_existing=True)).all()
    group = [InboundMessage.shop_id == shop_id, InboundMessage.from_phone == from_phone,
             InboundMessage.concat_ref == concat_ref, InboundMessage.intent == "part"]
    if any(p.intent not in (None, "part") for p in parts):  # handled already: a late or repeated part
        session.execute(update(InboundMessage).where(*group).values(intent="merged")
                        .execution_options(synchronize_session=False))
        session.commit()
        return "already processed"
    claimed = {}
    for part in parts:
        if part.intent == "part":
            claimed.setdefault(part.concat_part or 0, part)
    total = max((p.concat_total or 0) for p in parts) if parts else 0
    if not claimed or (len(claimed) < total and not force):
        return "waiting for parts"
    primary = claimed[min(claimed)]
    # Several last parts can arrive together: whoever turns the first part from "part" to "handling" handles it.
    won = session.execute(
        update(InboundMessage).where(InboundMessage.id == primary.id, InboundMessage.intent == "part")
        .values(intent="handling").execution_options(synchronize_session=False)).rowcount
    if not won:
        session.rollback()
        return "already processed"
    session.execute(update(InboundMessage).where(*group, InboundMessage.id != primary.id).values(intent="merged")
                    .execution_options(synchronize_session=False))
    text = "".join(claimed[n].text for n in sorted(claimed))
    primary = session.get(InboundMessage, primary.id, populate_existing=True)
    primary.text = text
    session.commit()
    return handle(session, primary, text)


def handle(session: OrmSession, inbound: InboundMessage, text: str) -> str:
    """Act on a claimed inbound text and record its intent; returns the intent."""
    shop = session.get(Shop, inbound.shop_id)
    keywords = {k.word: k for k in session.scalars(
        select(Keyword).where(Keyword.shop_id == shop.id, Keyword.active.is_(True))).all()}
    intent = classify(text, frozenset(keywords))
    subscriber = _subscriber(session, shop.id, inbound.from_phone)
    if intent == "stop":
        _opt_out(session, shop, inbound, text)
    elif intent == "help":
        queue_message(session, shop, subscriber, f"{shop.name}: {shop.help_text}", kind="help",
                      to_phone=inbound.from_phone)
    elif intent == "start" and subscriber is not None:
        _start(session, shop, subscriber, keywords)
    elif intent == "keyword":
        subscriber = _keyword(session, shop, inbound, text, keywords[first_word(text)]) or subscriber
    inbound = session.get(InboundMessage, inbound.id, populate_existing=True)
    inbound.intent = intent
    if inbound.subscriber_id is None and subscriber is not None:
        inbound.subscriber_id = subscriber.id
    session.commit()
    return intent


def _subscriber(session: OrmSession, shop_id: int, phone: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.shop_id == shop_id, Subscriber.phone == phone)
                          .execution_options(populate_existing=True))


def _opt_out(session: OrmSession, shop: Shop, inbound: InboundMessage, text: str) -> None:
    """Unsubscribe the number in every shop texting from this number; one confirmation if anything changed."""
    shops = shops_for_number(session, inbound.to_number or "") or [shop]
    if shop.id not in {s.id for s in shops}:
        shops.append(shop)
    changed = False
    reason = f'Texted "{text.strip()[:120]}"'
    people = []
    for each in shops:
        subscriber = _subscriber(session, each.id, inbound.from_phone)
        if subscriber is not None and subscriber.status != SubscriberStatus.UNSUBSCRIBED:
            optin.unsubscribe(session, subscriber, reason=reason, source="sms")
            changed = True
        if subscriber is not None:
            people.append(subscriber)
    if changed or _confirmation_missing(session, shop, inbound, people):
        queue_message(session, shop, _subscriber(session, shop.id, inbound.from_phone),
                      f"{shop.name}: You are unsubscribed and will get no more messages. Reply START to resubscribe.",
                      kind="stop_confirm", to_phone=inbound.from_phone)


def _confirmation_missing(session: OrmSession, shop: Shop, inbound: InboundMessage, people: list[Subscriber]) -> bool:
    """True when an earlier handling of this text stopped between the opt-out and its confirmation (a failed
    handling in the request, given back; a worker that died): the number was unsubscribed since this text
    came in, and no confirmation has been queued to it since."""
    since = [p.unsubscribed_at for p in people
             if p.status == SubscriberStatus.UNSUBSCRIBED and p.unsubscribed_at is not None
             and p.unsubscribed_at >= inbound.received_at]
    if not since:
        return False
    return not session.scalar(select(exists().where(
        Message.shop_id == shop.id, Message.to_phone == inbound.from_phone, Message.kind == "stop_confirm",
        Message.created_at >= min(since))))


def _start(session: OrmSession, shop: Shop, subscriber: Subscriber, keywords: dict[str, Keyword]) -> None:
    """START / YES: confirm a pending double opt-in, or resubscribe an unsubscribed number, and say so."""
    if subscriber.status == SubscriberStatus.PENDING:
        optin.confirm(session, subscriber)
        keyword = next((k for k in keywords.values() if k.id == subscriber.keyword_id), None)
        text = keyword.reply_text if keyword is not None and keyword.reply_text else (
            f"{shop.name}: Thanks, you are subscribed. Reply HELP for help, STOP to unsubscribe.")
        queue_message(session, shop, subscriber, text, kind="reply")
    elif subscriber.status == SubscriberStatus.UNSUBSCRIBED:
        optin.resubscribe(session, subscriber, source="sms", detail="texted START")
        queue_message(session, shop, subscriber,
                      f"{shop.name}: You are subscribed again. Reply HELP for help, STOP to unsubscribe.",
                      kind="reply")


def _keyword(session: OrmSession, shop: Shop, inbound: InboundMessage, text: str, keyword: Keyword
             ) -> Subscriber | None:
    """Subscribe by keyword (double opt-in per the shop), then reply with the keyword's text once subscribed."""
    try:
        subscriber = optin.subscribe(
            session, shop, inbound.from_phone, source=share.source_for_keyword(shop, keyword), keyword=keyword,
            consent_text=f'Texted "{text.strip()[:160]}" to {inbound.to_number}',
            consent_message_id=inbound.provider_id)
    except phones.InvalidPhone as exc:
        log.warning("inbound %s: %s", inbound.id, exc)
        return None
    if subscriber.status == SubscriberStatus.SUBSCRIBED and keyword.reply_text:
        queue_message(session, shop, subscriber, keyword.reply_text, kind="reply")
    return subscriber


# --- recovery ---------------------------------------------------------------------------------------

def due_for_recovery(session: OrmSession, now: dt.datetime | None = None) -> list[int]:
    """Inbound texts never claimed, or whose handling died half-way (claimed long ago, still "handling")."""
    now = now or utcnow()
    grace = now - dt.timedelta(seconds=defaults.SMS_INBOUND_RECOVERY_GRACE_SECONDS)
    stale = now - dt.timedelta(seconds=defaults.SMS_SENDING_STALE_SECONDS)
    session.execute(
        update(InboundMessage).where(InboundMessage.intent == "handling", InboundMessage.processed_at <= stale)
        .values(processed_at=None, intent=None).execution_options(synchronize_session=False))
    session.commit()
    return session.scalars(select(InboundMessage.id).where(InboundMessage.processed_at.is_(None),
                                                            InboundMessage.received_at <= grace)
                           .order_by(InboundMessage.id)).all()


def assemble_overdue(session: OrmSession, now: dt.datetime | None = None) -> int:
    """Handle long texts whose missing parts never came, with the parts that did; returns how many."""
    cutoff = (now or utcnow()) - dt.timedelta(seconds=defaults.SMS_CONCAT_WAIT_SECONDS)
    groups = session.execute(
        select(InboundMessage.shop_id, InboundMessage.from_phone, InboundMessage.concat_ref)
        .where(InboundMessage.intent == "part", InboundMessage.received_at <= cutoff)
        .distinct()).all()
    handled = 0
    for shop_id, from_phone, concat_ref in groups:
        if assemble(session, shop_id, from_phone, concat_ref, force=True) not in ("already processed", "missing"):
            handled += 1
    return handled
