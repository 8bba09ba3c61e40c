"""PostgreSQL: the campaign key's check reads the statement's new rows once

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 10:30:00

messages_campaign_key() (0007) locked the named campaigns with `campaigns WHERE (id, shop_id) IN (SELECT ... FROM
new_rows)`, which PostgreSQL ran as a nested loop scanning every new row once per campaign of the schema: a
snapshot's cost grew with every campaign the shop ever had. It now collects the distinct (campaign, shop) pairs
first, then probes campaigns by index. The function is a frozen copy of kinnekt/models/campaign_key.py as of
this revision; the downgrade puts 0007's back.
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

CAMPAIGN_KEY = """
    CREATE OR REPLACE FUNCTION messages_campaign_key() RETURNS trigger LANGUAGE plpgsql
    SET search_path FROM CURRENT AS $$
    DECLARE
      ids bigint[];
      shops bigint[];
      found bigint;
    BEGIN
      -- One pass over the new rows; then one index probe per distinct pair (a join of campaigns with the
      -- transition table itself would scan the whole table once per campaign of the schema).
      SELECT array_agg(p.campaign_id), array_agg(p.shop_id) INTO ids, shops
        FROM (SELECT DISTINCT n.campaign_id, n.shop_id FROM new_rows n WHERE n.campaign_id IS NOT NULL) p;
      IF ids IS NULL THEN
        RETURN NULL;
      END IF;
      PERFORM 1 FROM unnest(ids, shops) AS p(id, shop_id)
        JOIN campaigns c ON c.id = p.id AND c.shop_id = p.shop_id
       ORDER BY c.id FOR KEY SHARE OF c;
      GET DIAGNOSTICS found = ROW_COUNT;  -- a campaign deleted meanwhile is not locked, so not counted
      IF found < cardinality(ids) THEN
        RAISE foreign_key_violation USING
          MESSAGE = 'insert on table "messages" violates the campaign key: no such campaign in this shop',
          CONSTRAINT = 'fk_messages_campaign_id_campaigns';
      END IF;
      RETURN NULL;
    END $$
    """
"""messages_campaign_key() as of this revision."""

CAMPAIGN_KEY_0007 = """
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
    """
"""messages_campaign_key() as 0007 installed it (the downgrade puts it back)."""


def upgrade() -> None:
    """PostgreSQL: replace the function (the trigger calling it stays)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CAMPAIGN_KEY)


def downgrade() -> None:
    """PostgreSQL: 0007's function."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CAMPAIGN_KEY_0007)
