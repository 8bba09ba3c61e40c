"""the sender each message went out from, and one default sender per shop and country

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 17:10:00

Each shop now sends from its own numbers (kinnekt/sms/senders.py): a message records the number or id it went out
from (`messages.sender`, a plain nullable ADD COLUMN, see 0011: older messages keep NULL, which means the app's
single sender of the time). A shop has at most one active default sender per country, in the database: a partial
unique index on `sender_numbers (shop_id, country)` where the row is active and the default (0021 leaves at most
one row per shop anyway: no number has been bought before this revision).
"""
from alembic import op
import sqlalchemy as sa


revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None

DEFAULT = sa.text("status = 'active' AND is_default")


def upgrade() -> None:
    """The message column and the default-per-country index."""
    op.add_column('messages', sa.Column('sender', sa.String(length=32), nullable=True))
    op.create_index('uq_sender_numbers_default', 'sender_numbers', ['shop_id', 'country'], unique=True,
                    postgresql_where=DEFAULT, sqlite_where=DEFAULT)


def downgrade() -> None:
    """Drop them again."""
    op.drop_index('uq_sender_numbers_default', table_name='sender_numbers')
    op.drop_column('messages', 'sender')
