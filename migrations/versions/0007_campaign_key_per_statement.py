"""PostgreSQL: the messages -> campaigns key checked once per statement (triggers) instead of per row

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 08:40:00

SQLite keeps its declared key. The statements are a frozen copy of kinnekt/models/campaign_key.py as of this
revision (what `create_all` runs); a later change to them needs a migration of its own.
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CREATE = (
    """
    CREATE OR REPLACE FUNCTION messages_campaign_key() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
      wanted bigint;
      found bigint;
    BEGIN
      SELECT count(*) INTO wanted
        FROM (SELECT DISTINCT n.campaign_id, n.shop_id FROM new_rows n WHERE n.campaign_id IS NOT NULL) pairs;
      IF wanted = 0 THEN
        RETURN NULL;
      END IF;
      PERFORM 1 FROM campaigns c
       WHERE (c.id, c.shop_id) IN (SELECT n.campaign_id, n.shop_id FROM new_rows n WHERE n.campaign_id IS NOT NULL)
       ORDER BY c.id FOR KEY SHARE OF c;
      GET DIAGNOSTICS found = ROW_COUNT;  -- a campaign deleted meanwhile is not locked, so not counted
      IF found < wanted THEN
        RAISE foreign_key_violation USING
          MESSAGE = 'insert on table "messages" violates the campaign key: no such campaign in this shop',
          CONSTRAINT = 'fk_messages_campaign_id_campaigns';
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER messages_campaign_key AFTER INSERT ON messages
      REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION messages_campaign_key()
    """,
    """
    CREATE OR REPLACE FUNCTION messages_campaign_key_row() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      IF NEW.campaign_id IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM campaigns c WHERE c.id = NEW.campaign_id AND c.shop_id = NEW.shop_id FOR KEY SHARE OF c)
      THEN
        RAISE foreign_key_violation USING
          MESSAGE = 'update on table "messages" violates the campaign key: no such campaign in this shop',
          CONSTRAINT = 'fk_messages_campaign_id_campaigns';
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER messages_campaign_key_update AFTER UPDATE OF campaign_id, shop_id ON messages FOR EACH ROW
      WHEN (NEW.campaign_id IS DISTINCT FROM OLD.campaign_id OR NEW.shop_id IS DISTINCT FROM OLD.shop_id)
      EXECUTE FUNCTION messages_campaign_key_row()
    """,
    """
    CREATE OR REPLACE FUNCTION campaigns_delete_messages() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      DELETE FROM messages m USING old_rows o WHERE m.campaign_id = o.id;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER campaigns_delete_messages AFTER DELETE ON campaigns
      REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION campaigns_delete_messages()
    """,
    """
    CREATE OR REPLACE FUNCTION campaigns_truncate_messages() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      DELETE FROM messages WHERE campaign_id IS NOT NULL;
      RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER campaigns_truncate_messages AFTER TRUNCATE ON campaigns
      FOR EACH STATEMENT EXECUTE FUNCTION campaigns_truncate_messages()
    """,
    """
    CREATE OR REPLACE FUNCTION campaigns_key_update() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM messages m WHERE m.campaign_id = OLD.id AND m.shop_id = OLD.shop_id) THEN
        RAISE foreign_key_violation USING
          MESSAGE = 'update on table "campaigns" violates the campaign key: messages still name it',
          CONSTRAINT = 'fk_messages_campaign_id_campaigns';
      END IF;
      RETURN NEW;
    END $$
    """,
    """
    CREATE TRIGGER campaigns_key_update BEFORE UPDATE OF id, shop_id ON campaigns FOR EACH ROW
      WHEN (NEW.id IS DISTINCT FROM OLD.id OR NEW.shop_id IS DISTINCT FROM OLD.shop_id)
      EXECUTE FUNCTION campaigns_key_update()
    """,
)

DROP = (
    'DROP TRIGGER IF EXISTS messages_campaign_key ON messages',
    'DROP TRIGGER IF EXISTS messages_campaign_key_update ON messages',
    'DROP TRIGGER IF EXISTS campaigns_delete_messages ON campaigns',
    'DROP TRIGGER IF EXISTS campaigns_key_update ON campaigns',
    'DROP TRIGGER IF EXISTS campaigns_truncate_messages ON campaigns',
    'DROP FUNCTION IF EXISTS messages_campaign_key()',
    'DROP FUNCTION IF EXISTS messages_campaign_key_row()',
    'DROP FUNCTION IF EXISTS campaigns_delete_messages()',
    'DROP FUNCTION IF EXISTS campaigns_key_update()',
    'DROP FUNCTION IF EXISTS campaigns_truncate_messages()',
)


def upgrade() -> None:
    """Drop the declared key on PostgreSQL and install the statement-level check and the cascades."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_constraint('fk_messages_campaign_id_campaigns', 'messages', type_='foreignkey')
    for statement in CREATE:
        op.execute(statement)


def downgrade() -> None:
    """Back to the declared key (checked per row) on PostgreSQL."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in DROP:
        op.execute(statement)
    op.create_foreign_key('fk_messages_campaign_id_campaigns', 'messages', 'campaigns',
                          ['campaign_id', 'shop_id'], ['id', 'shop_id'], ondelete='CASCADE')
