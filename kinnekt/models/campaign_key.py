"""PostgreSQL: the messages -> campaigns key, checked once per statement instead of once per row.

A campaign's message belongs to that campaign and to its shop: `(campaign_id, shop_id)` must name a row of
`campaigns (id, shop_id)`, and deleting a campaign deletes its messages. On SQLite this is a declared foreign
key (models/message.py). On PostgreSQL a declared key checks each inserted row on its own: in a 100,000-row
audience snapshot that is 100,000 checks of the same campaign row, about a quarter of the statement
(docs/benchmarks.md). So PostgreSQL enforces the same rule with triggers that look at the whole statement:

- after an INSERT into messages: lock each campaign the new rows name (FOR KEY SHARE, as a key's check does,
  so a concurrent deletion waits for this transaction, then deletes what it committed), then refuse the
  statement (SQLSTATE 23503, foreign_key_violation) if any row names a (campaign, shop) that does not exist;
- after an UPDATE of a message's campaign_id or shop_id: the same check for that row (nothing updates them
  today; the trigger keeps the rule whole);
- after a DELETE from campaigns (the merchant's delete, a shop's erasure cascading from shops): delete the
  campaigns' messages in the same statement's transaction (their links and clicks cascade from them);
- before an UPDATE of a campaign's id or shop_id: refuse it while messages name the old pair (the unique
  `campaigns (id, shop_id)` also makes such an update take the lock that conflicts with FOR KEY SHARE);
- after a TRUNCATE of campaigns: delete every campaign message (TRUNCATE of both together finds none).

The functions keep the search_path they were created with, so they always read the tables of their own
schema. Like a declared key's cascade, the deletion relies on READ COMMITTED (the app's level for every
transaction): its DELETE sees the rows an insert committed while the deletion waited for its lock.
The statements are created with the tables (`create_all`); migration 0007 installs a frozen copy, 0008 the
faster check of the new rows.
"""
from __future__ import annotations

from sqlalchemy import DDL, event

from kinnekt.models.campaign import Campaign
from kinnekt.models.message import Message

MESSAGES_DDL = (
    """
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
)
"""The messages side: created after the messages table."""

CAMPAIGNS_DDL = (
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
"""The campaigns side: created after the campaigns table."""

DROP_DDL = (
    "DROP TRIGGER IF EXISTS messages_campaign_key ON messages",
    "DROP TRIGGER IF EXISTS messages_campaign_key_update ON messages",
    "DROP TRIGGER IF EXISTS campaigns_delete_messages ON campaigns",
    "DROP TRIGGER IF EXISTS campaigns_key_update ON campaigns",
    "DROP TRIGGER IF EXISTS campaigns_truncate_messages ON campaigns",
    "DROP FUNCTION IF EXISTS messages_campaign_key()",
    "DROP FUNCTION IF EXISTS messages_campaign_key_row()",
    "DROP FUNCTION IF EXISTS campaigns_delete_messages()",
    "DROP FUNCTION IF EXISTS campaigns_key_update()",
    "DROP FUNCTION IF EXISTS campaigns_truncate_messages()",
)
"""Everything above, removed (migration 0007's downgrade)."""

for _table, _statements in ((Message.__table__, MESSAGES_DDL), (Campaign.__table__, CAMPAIGNS_DDL)):
    for _statement in _statements:
        event.listen(_table, "after_create", DDL(_statement).execute_if(dialect="postgresql"))
