"""case-folded copies of the text segments compare case-insensitively; tags stored case-folded

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 08:00:00

The segment contract's case-insensitive is Unicode case folding (Python's `str.casefold()` after trimming),
which neither SQLite's `lower()` (ASCII only) nor PostgreSQL's (no ß → ss) does. So the compared text gets
a folded copy computed in Python (`kinnekt.casefold`): customers.city_folded, subscribers.keyword_folded and
carrier_folded, line_items.title_folded and variant_title_folded, filled here for the rows that exist.
Customer tags are stored folded themselves (as they were stored lower-cased); a tag that folds onto another
tag of the same customer is dropped. None of the sources was indexed, so neither are the copies; the tags'
(shop_id, tag) index stays. Plain ADD / DROP COLUMN on subscribers (see 0011).
"""
from alembic import op
import sqlalchemy as sa

from kinnekt.casefold import fold


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

COPIES = (("customers", "city"), ("subscribers", "keyword"), ("subscribers", "carrier"),
          ("line_items", "title"), ("line_items", "variant_title"))
BATCH = 5000


def _backfill(connection, table: str, source: str) -> None:
    """Fill `<source>_folded` from `source` in id order, a batch at a time."""
    rows = sa.table(table, sa.column("id"), sa.column(source), sa.column(f"{source}_folded"))
    last = None
    while True:
        query = sa.select(rows.c.id, rows.c[source]).where(rows.c[source].is_not(None)).order_by(rows.c.id)
        if last is not None:
            query = query.where(rows.c.id > last)
        batch = connection.execute(query.limit(BATCH)).all()
        if not batch:
            return
        connection.execute(
            rows.update().where(rows.c.id == sa.bindparam("b_id"))
            .values({f"{source}_folded": sa.bindparam("b_folded")}),
            [{"b_id": row_id, "b_folded": fold(value)} for row_id, value in batch])
        last = batch[-1][0]


def _fold_tags(connection) -> None:
    """Store every tag case-folded, a batch at a time; drop one that folds onto a tag its customer already has."""
    tags = sa.table("customer_tags", sa.column("id"), sa.column("customer_id"), sa.column("tag"))
    last = 0
    while True:
        batch = connection.execute(sa.select(tags.c.id, tags.c.customer_id, tags.c.tag).where(tags.c.id > last)
                                   .order_by(tags.c.id).limit(BATCH)).all()
        if not batch:
            return
        for row_id, customer_id, tag in batch:
            folded = fold(tag)[:255]
            if folded == tag:
                continue
            taken = connection.execute(sa.select(tags.c.id).where(tags.c.customer_id == customer_id,
                                                                 tags.c.tag == folded)).first()
            if taken is not None:
                connection.execute(tags.delete().where(tags.c.id == row_id))
            else:
                connection.execute(tags.update().where(tags.c.id == row_id).values(tag=folded))
        last = batch[-1][0]


def upgrade() -> None:
    """Add the folded copies, fill them; fold the stored tags."""
    for table, source in COPIES:
        op.add_column(table, sa.Column(f"{source}_folded", sa.Text(), nullable=True))
    connection = op.get_bind()
    for table, source in COPIES:
        _backfill(connection, table, source)
    _fold_tags(connection)


def downgrade() -> None:
    """Drop the copies (tags stay folded: a folded tag is a valid lower-case one)."""
    for table, source in reversed(COPIES):
        op.drop_column(table, f"{source}_folded")
