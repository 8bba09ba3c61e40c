"""subscriber import mapping: a subscriber's last name and email, and the column mapping an import confirmed

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 13:40:00

A CSV import now shows the merchant each column with what it becomes before anything is saved: the upload waits
as a `subscriber_imports` row of status `draft` (bounded per shop, see kinnekt/subscribers/importing.py), and the
mapping the merchant confirmed is stored on it (`mapping`, one target per column) for the job that imports a
large file. Subscribers get the two columns an import can fill besides the first name: `last_name` and `email`.
Plain ADD COLUMN of nullable columns (see 0011), so there is nothing to fill.
"""
from alembic import op
import sqlalchemy as sa


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The two subscriber columns and the import's mapping."""
    op.add_column('subscribers', sa.Column('last_name', sa.String(length=255), nullable=True))
    op.add_column('subscribers', sa.Column('email', sa.String(length=255), nullable=True))
    op.add_column('subscriber_imports', sa.Column('mapping', sa.JSON(), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    op.drop_column('subscriber_imports', 'mapping')
    for column in ('email', 'last_name'):
        op.drop_column('subscribers', column)
