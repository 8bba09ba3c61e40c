"""Shop scoping: once a session is bound to a shop, every ORM query on tenant tables is filtered by it."""
from __future__ import annotations

from typing import TypeVar

from flask import abort
from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession, with_loader_criteria

from kinnekt.db import Session
from kinnekt.models.base import TenantMixin
from kinnekt.numbers import record_id

T = TypeVar("T")
SHOP_KEY = "kinnekt_shop_id"


def bind_shop(shop_id: int | None, session: OrmSession | None = None) -> None:
    """Scope the (request's) session to one shop; None removes the scope."""
    session = session if session is not None else Session()
    if shop_id is None:
        session.info.pop(SHOP_KEY, None)
    else:
        session.info[SHOP_KEY] = shop_id


def current_shop_id(session: OrmSession | None = None) -> int | None:
    """The shop the session is bound to, if any."""
    session = session if session is not None else Session()
    return session.info.get(SHOP_KEY)


@event.listens_for(OrmSession, "do_orm_execute")
def _scope_to_shop(state) -> None:
    """Add `shop_id = :bound` to every ORM SELECT/UPDATE/DELETE touching a tenant table."""
    shop_id = state.session.info.get(SHOP_KEY)
    if shop_id is None or state.is_column_load:
        return
    if state.execution_options.get("all_shops"):
        return
    if state.is_select or state.is_update or state.is_delete:
        state.statement = state.statement.options(
            with_loader_criteria(TenantMixin, lambda cls: cls.shop_id == shop_id, include_aliases=True))


def get_or_404(model: type[T], obj_id, session: OrmSession | None = None) -> T:
    """Load a tenant row by id for the bound shop; a row of another shop is a 404, never a 403."""
    session = session if session is not None else Session()
    shop_id = session.info.get(SHOP_KEY)
    if shop_id is None:
        raise RuntimeError("get_or_404 needs a session bound to a shop")
    obj_id = record_id(obj_id)
    if obj_id is None:  # not an id, or past what the database holds: no row has it
        abort(404)
    obj = session.get(model, obj_id)
    if obj is None or getattr(obj, "shop_id", None) != shop_id:
        abort(404)
    return obj
