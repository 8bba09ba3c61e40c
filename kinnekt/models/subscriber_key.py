"""The messages -> subscribers key: a message names a subscriber of its own shop, or none.

A message's `subscriber_id` names a row of `subscribers` whose `shop_id` is the message's, and deleting the
subscriber leaves the message with no subscriber (its status and price stay for the statistics). The same rule
holds on both databases, enforced differently:

- SQLite: the declared key (models/message.py) checks that the subscriber exists and nulls the messages of a
  deleted one; triggers here add that it belongs to the message's shop, and refuse moving a subscriber named by
  messages to another shop.
- PostgreSQL: a declared key checks each inserted row on its own, and locks the subscriber's row (FOR KEY SHARE)
  so a concurrent deletion waits. In a 100,000-row audience snapshot that is 100,000 probes and 100,000 row locks,
  each a write to a subscriber's page and the WAL: about a third of the statement (docs/benchmarks.md). So
  PostgreSQL checks a whole statement at once, and a concurrent deletion is held off with a lock per shop
  instead of a lock per subscriber:

  - after an INSERT into messages: take the shop lock shared, for each shop the new rows name (in shop order),
    then refuse the statement (SQLSTATE 23503, foreign_key_violation) if any row names a subscriber that is not
    in the row's shop, in one anti-join. The trigger is named to fire before `messages_campaign_key` (a table's
    triggers for one event fire in name order): an insert waiting for the shop lock must not hold its campaign's
    row lock, which a shop's erasure deleting the campaign would wait for;
  - after an UPDATE of a message's subscriber_id or shop_id to a subscriber: the same for that row;
  - before a DELETE of a subscriber (the merchant's, a customers/redact, a shop's erasure cascading from shops),
    or an UPDATE of its id or shop_id: take its shop's lock exclusively, so the deletion waits for every open
    transaction that inserted messages of that shop, and every later insert waits for the deletion; an update
    is refused while messages name the old (id, shop);
  - after a DELETE from subscribers: null the subscriber of their messages, in the same transaction; its UPDATE
    sees what an insert committed while the deletion waited (READ COMMITTED, the app's level everywhere);
  - after a TRUNCATE of subscribers: null the subscriber of every message.

  The app's transactions that insert messages after locking other rows (the automation fire) take the shop lock
  first (`before_inserting_messages`; a campaign's snapshot runs in a transaction of its own that locks nothing
  before its insert), and erasures take it exclusively before touching any row
  (`before_deleting_subscribers`): the lock is the first each of them takes, so it cannot close a cycle. While
  an erasure waits for it, later inserts of that shop's messages queue behind the erasure (the snapshot of a
  100k audience holds it about 2.5 s; an erasure takes milliseconds).

  The lock is a transaction-level advisory lock: (hash of "kinnekt subscriber key" and the schema, shop id), so
  schemas sharing a database (tests, benches) do not wait for each other. Shared holders never wait for one
  another; only deleting a subscriber takes it exclusively, which is rare (compliance erasures). Nothing else in
  the app takes advisory locks.

The functions keep the search_path they were created with. The statements are created with the tables
(`create_all`); migration 0009 installs a frozen copy.
"""
from __future__ import annotations

from sqlalchemy import DDL, event, text

from kinnekt.db import on_postgresql
from kinnekt.models.message import Message
from kinnekt.models.subscriber import Subscriber

_LOCK = "hashtext('kinnekt subscriber key ' || current_schema()), mod({shop}, 2147483647)::int"
"""The arguments of the advisory lock guarding the subscribers of the shop `{shop}` names."""


def _lock(session, shop_id: int, function: str) -> None:
    if on_postgresql(session):
        session.execute(text(f"SELECT {function}({_LOCK.format(shop=':shop')})"), {"shop": int(shop_id)})


def before_inserting_messages(session, shop_id: int) -> None:
    """Take the shop's subscriber-key lock shared until the transaction ends (PostgreSQL; nothing on SQLite).

    The insert's trigger takes it anyway, but only once the rows are written. A transaction that locks other
    rows first (a campaign it updates, an automation it claims) and only then inserts messages would hold those
    rows while it waits for a deletion that needs them: a deadlock, which PostgreSQL breaks by failing one side.
    Such a transaction calls this before its first lock.
    """
    _lock(session, shop_id, "pg_advisory_xact_lock_shared")


def before_deleting_subscribers(session, shop_id: int) -> None:
    """Take the shop's subscriber-key lock exclusively until the transaction ends (PostgreSQL; nothing on SQLite).

    Deleting a subscriber takes it anyway, in a row trigger, while it already holds the row it deletes and
    whatever the transaction locked before. An erasure calls this first, before it touches any row, so it
    simply waits for the open inserts of the shop to end.
    """
    _lock(session, shop_id, "pg_advisory_xact_lock")


_REFUSE = """RAISE foreign_key_violation USING
          MESSAGE = '{what} violates the subscriber key: no such subscriber in this shop',
          CONSTRAINT = 'fk_messages_subscriber_id_subscribers'"""

POSTGRESQL_MESSAGES_DDL = (
    f"""
    CREATE OR REPLACE FUNCTION messages_subscriber_key() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
      shops bigint[];
      shop bigint;
      missing bigint;
    BEGIN
      SELECT array_agg(DISTINCT n.shop_id ORDER BY n.shop_id) INTO shops FROM new_rows n
       WHERE n.subscriber_id IS NOT NULL;
      IF shops IS NULL THEN
        RETURN NULL;
      END IF;
      FOREACH shop IN ARRAY shops LOOP
        PERFORM pg_advisory_xact_lock_shared({_LOCK.format(shop="shop")});
      END LOOP;
      -- One anti-join (a hash join for a big insert; the planner knows the new rows' count) after the locks:
      -- this statement's snapshot sees a deletion that committed while the lock was awaited.
      SELECT count(*) INTO missing FROM new_rows n
        LEFT JOIN (SELECT s.id, s.shop_id FROM subscribers s WHERE s.shop_id = ANY (shops)) s
          ON s.id = n.subscriber_id AND s.shop_id = n.shop_id
       WHERE n.subscriber_id IS NOT NULL AND s.id IS NULL;
      IF missing > 0 THEN
        {_REFUSE.format(what='insert on table "messages"')};
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER messages_1_subscriber_key AFTER INSERT ON messages
      REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION messages_subscriber_key()
    """,
    f"""
    CREATE OR REPLACE FUNCTION messages_subscriber_key_row() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      PERFORM pg_advisory_xact_lock_shared({_LOCK.format(shop="NEW.shop_id")});
      IF NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.id = NEW.subscriber_id AND s.shop_id = NEW.shop_id) THEN
        {_REFUSE.format(what='update on table "messages"')};
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER messages_subscriber_key_update AFTER UPDATE OF subscriber_id, shop_id ON messages FOR EACH ROW
      WHEN (NEW.subscriber_id IS NOT NULL AND (NEW.subscriber_id IS DISTINCT FROM OLD.subscriber_id
                                              OR NEW.shop_id IS DISTINCT FROM OLD.shop_id))
      EXECUTE FUNCTION messages_subscriber_key_row()
    """,
)
"""PostgreSQL, the messages side: created after the messages table."""

POSTGRESQL_SUBSCRIBERS_DDL = (
    f"""
    CREATE OR REPLACE FUNCTION subscribers_key_lock() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      PERFORM pg_advisory_xact_lock({_LOCK.format(shop="OLD.shop_id")});
      IF TG_OP = 'DELETE' THEN
        RETURN OLD;
      END IF;
      IF EXISTS (SELECT 1 FROM messages m WHERE m.subscriber_id = OLD.id AND m.shop_id = OLD.shop_id) THEN
        RAISE foreign_key_violation USING
          MESSAGE = 'update on table "subscribers" violates the subscriber key: messages still name it',
          CONSTRAINT = 'fk_messages_subscriber_id_subscribers';
      END IF;
      RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER subscribers_key_delete BEFORE DELETE ON subscribers FOR EACH ROW
      EXECUTE FUNCTION subscribers_key_lock()
    """,
    """
    CREATE TRIGGER subscribers_key_update BEFORE UPDATE OF id, shop_id ON subscribers FOR EACH ROW
      WHEN (NEW.id IS DISTINCT FROM OLD.id OR NEW.shop_id IS DISTINCT FROM OLD.shop_id)
      EXECUTE FUNCTION subscribers_key_lock()
    """,
    """
    CREATE OR REPLACE FUNCTION subscribers_release_messages() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      UPDATE messages m SET subscriber_id = NULL FROM old_rows o WHERE m.subscriber_id = o.id;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER subscribers_release_messages AFTER DELETE ON subscribers
      REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION subscribers_release_messages()
    """,
    """
    CREATE OR REPLACE FUNCTION subscribers_truncate_messages() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      UPDATE messages SET subscriber_id = NULL WHERE subscriber_id IS NOT NULL;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER subscribers_truncate_messages AFTER TRUNCATE ON subscribers
      FOR EACH STATEMENT EXECUTE FUNCTION subscribers_truncate_messages()
    """,
)
"""PostgreSQL, the subscribers side: created after the subscribers table."""

POSTGRESQL_DROP_DDL = (
    "DROP TRIGGER IF EXISTS messages_1_subscriber_key ON messages",
    "DROP TRIGGER IF EXISTS messages_subscriber_key_update ON messages",
    "DROP TRIGGER IF EXISTS subscribers_key_delete ON subscribers",
    "DROP TRIGGER IF EXISTS subscribers_key_update ON subscribers",
    "DROP TRIGGER IF EXISTS subscribers_release_messages ON subscribers",
    "DROP TRIGGER IF EXISTS subscribers_truncate_messages ON subscribers",
    "DROP FUNCTION IF EXISTS messages_subscriber_key()",
    "DROP FUNCTION IF EXISTS messages_subscriber_key_row()",
    "DROP FUNCTION IF EXISTS subscribers_key_lock()",
    "DROP FUNCTION IF EXISTS subscribers_release_messages()",
    "DROP FUNCTION IF EXISTS subscribers_truncate_messages()",
)
"""Everything PostgreSQL's side creates, removed (migration 0009's downgrade)."""

_SQLITE_REFUSE = "SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: no such subscriber in this shop');"

SQLITE_DDL = (
    f"""
    CREATE TRIGGER messages_subscriber_shop_insert BEFORE INSERT ON messages
      WHEN NEW.subscriber_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM subscribers s WHERE s.id = NEW.subscriber_id AND s.shop_id = NEW.shop_id)
      BEGIN {_SQLITE_REFUSE} END
    """,
    f"""
    CREATE TRIGGER messages_subscriber_shop_update BEFORE UPDATE OF subscriber_id, shop_id ON messages
      WHEN NEW.subscriber_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM subscribers s WHERE s.id = NEW.subscriber_id AND s.shop_id = NEW.shop_id)
      BEGIN {_SQLITE_REFUSE} END
    """,
    """
    CREATE TRIGGER subscribers_shop_update BEFORE UPDATE OF shop_id ON subscribers
      WHEN NEW.shop_id IS NOT OLD.shop_id AND EXISTS (
        SELECT 1 FROM messages m WHERE m.subscriber_id = OLD.id AND m.shop_id = OLD.shop_id)
      BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: messages still name this subscriber'); END
    """,
)
"""SQLite: the shop half of the rule (the declared key does the rest); created after both tables."""

SQLITE_DROP_DDL = (
    "DROP TRIGGER IF EXISTS messages_subscriber_shop_insert",
    "DROP TRIGGER IF EXISTS messages_subscriber_shop_update",
    "DROP TRIGGER IF EXISTS subscribers_shop_update",
)
"""SQLite's triggers, removed."""

for _table, _statements in ((Message.__table__, POSTGRESQL_MESSAGES_DDL),
                            (Subscriber.__table__, POSTGRESQL_SUBSCRIBERS_DDL)):
    for _statement in _statements:
        event.listen(_table, "after_create", DDL(_statement).execute_if(dialect="postgresql"))
# Messages are created after subscribers (they reference them), so both tables exist by then.
for _statement in SQLITE_DDL:
    event.listen(Message.__table__, "after_create", DDL(_statement).execute_if(dialect="sqlite"))
