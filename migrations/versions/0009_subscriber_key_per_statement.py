"""The messages -> subscribers key: a message's subscriber is one of its shop's; on PostgreSQL checked per statement

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 11:00:00

PostgreSQL: the declared key (checked, and its subscriber row locked, once per inserted row) is replaced by
triggers that check a whole statement and hold off a deletion with a lock per shop. SQLite keeps its declared
key and gets triggers that add the shop to it. The statements are a frozen copy of
kinnekt/models/subscriber_key.py as of this revision (what `create_all` runs); a later change to them needs a
migration of its own.
"""
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

POSTGRESQL_CREATE = (
    """
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
        PERFORM pg_advisory_xact_lock_shared(hashtext('kinnekt subscriber key ' || current_schema()), mod(shop, 2147483647)::int);
      END LOOP;
      -- One anti-join (a hash join for a big insert; the planner knows the new rows' count) after the locks:
      -- this statement's snapshot sees a deletion that committed while the lock was awaited.
      SELECT count(*) INTO missing FROM new_rows n
        LEFT JOIN (SELECT s.id, s.shop_id FROM subscribers s WHERE s.shop_id = ANY (shops)) s
          ON s.id = n.subscriber_id AND s.shop_id = n.shop_id
       WHERE n.subscriber_id IS NOT NULL AND s.id IS NULL;
      IF missing > 0 THEN
        RAISE foreign_key_violation USING
          MESSAGE = 'insert on table "messages" violates the subscriber key: no such subscriber in this shop',
          CONSTRAINT = 'fk_messages_subscriber_id_subscribers';
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER messages_1_subscriber_key AFTER INSERT ON messages
      REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION messages_subscriber_key()
    """,
    """
    CREATE OR REPLACE FUNCTION messages_subscriber_key_row() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      PERFORM pg_advisory_xact_lock_shared(hashtext('kinnekt subscriber key ' || current_schema()), mod(NEW.shop_id, 2147483647)::int);
      IF NOT EXISTS (SELECT 1 FROM subscribers s WHERE s.id = NEW.subscriber_id AND s.shop_id = NEW.shop_id) THEN
        RAISE foreign_key_violation USING
          MESSAGE = 'update on table "messages" violates the subscriber key: no such subscriber in this shop',
          CONSTRAINT = 'fk_messages_subscriber_id_subscribers';
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
    """
    CREATE OR REPLACE FUNCTION subscribers_key_lock() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      PERFORM pg_advisory_xact_lock(hashtext('kinnekt subscriber key ' || current_schema()), mod(OLD.shop_id, 2147483647)::int);
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

POSTGRESQL_DROP = (
    'DROP TRIGGER IF EXISTS messages_1_subscriber_key ON messages',
    'DROP TRIGGER IF EXISTS messages_subscriber_key_update ON messages',
    'DROP TRIGGER IF EXISTS subscribers_key_delete ON subscribers',
    'DROP TRIGGER IF EXISTS subscribers_key_update ON subscribers',
    'DROP TRIGGER IF EXISTS subscribers_release_messages ON subscribers',
    'DROP TRIGGER IF EXISTS subscribers_truncate_messages ON subscribers',
    'DROP FUNCTION IF EXISTS messages_subscriber_key()',
    'DROP FUNCTION IF EXISTS messages_subscriber_key_row()',
    'DROP FUNCTION IF EXISTS subscribers_key_lock()',
    'DROP FUNCTION IF EXISTS subscribers_release_messages()',
    'DROP FUNCTION IF EXISTS subscribers_truncate_messages()',
)

SQLITE_CREATE = (
    """
    CREATE TRIGGER messages_subscriber_shop_insert BEFORE INSERT ON messages
      WHEN NEW.subscriber_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM subscribers s WHERE s.id = NEW.subscriber_id AND s.shop_id = NEW.shop_id)
      BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: no such subscriber in this shop'); END
    """,
    """
    CREATE TRIGGER messages_subscriber_shop_update BEFORE UPDATE OF subscriber_id, shop_id ON messages
      WHEN NEW.subscriber_id IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM subscribers s WHERE s.id = NEW.subscriber_id AND s.shop_id = NEW.shop_id)
      BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: no such subscriber in this shop'); END
    """,
    """
    CREATE TRIGGER subscribers_shop_update BEFORE UPDATE OF shop_id ON subscribers
      WHEN NEW.shop_id IS NOT OLD.shop_id AND EXISTS (
        SELECT 1 FROM messages m WHERE m.subscriber_id = OLD.id AND m.shop_id = OLD.shop_id)
      BEGIN SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: messages still name this subscriber'); END
    """,
)

SQLITE_DROP = (
    'DROP TRIGGER IF EXISTS messages_subscriber_shop_insert',
    'DROP TRIGGER IF EXISTS messages_subscriber_shop_update',
    'DROP TRIGGER IF EXISTS subscribers_shop_update',
)


def upgrade() -> None:
    """PostgreSQL: the triggers in place of the declared key. SQLite: the triggers beside it."""
    if op.get_bind().dialect.name != "postgresql":
        for statement in SQLITE_CREATE:
            op.execute(statement)
        return
    op.drop_constraint('fk_messages_subscriber_id_subscribers', 'messages', type_='foreignkey')
    for statement in POSTGRESQL_CREATE:
        op.execute(statement)


def downgrade() -> None:
    """Back to the declared key alone (on PostgreSQL checked per row)."""
    if op.get_bind().dialect.name != "postgresql":
        for statement in SQLITE_DROP:
            op.execute(statement)
        return
    for statement in POSTGRESQL_DROP:
        op.execute(statement)
    op.create_foreign_key('fk_messages_subscriber_id_subscribers', 'messages', 'subscribers',
                          ['subscriber_id'], ['id'], ondelete='SET NULL')
