"""a shop's own senders and their US carrier registrations

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 17:00:00

`sender_numbers` holds each shop's numbers (bought through Vonage's Numbers API or brought) and alphanumeric
sender ids; a live phone number belongs to one shop (a partial unique index on `msisdn`). `sender_registrations`
holds the US registration of a number (toll-free verification or 10DLC), one per number. New tables: nothing to
fill.
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
LIVE = sa.text("status = 'active' AND kind <> 'alphanumeric'")


def upgrade() -> None:
    """The two tables, their keys and the live-number index."""
    op.create_table('sender_numbers',
    sa.Column('id', ID, nullable=False),
    sa.Column('msisdn', sa.String(length=20), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('messages_per_second', sa.Integer(), nullable=True),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('linked_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('released_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('shop_id', ID, nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_sender_numbers_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sender_numbers'))
    )
    op.create_index(op.f('ix_sender_numbers_shop_id'), 'sender_numbers', ['shop_id'], unique=False)
    op.create_index('uq_sender_numbers_live_msisdn', 'sender_numbers', ['msisdn'], unique=True,
                    postgresql_where=LIVE, sqlite_where=LIVE)
    op.create_table('sender_registrations',
    sa.Column('id', ID, nullable=False),
    sa.Column('sender_number_id', ID, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=True),
    sa.Column('brand_id', sa.String(length=128), nullable=True),
    sa.Column('rejection_reason', sa.Text(), nullable=True),
    sa.Column('submitted_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('decided_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('checked_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('shop_id', ID, nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['sender_number_id'], ['sender_numbers.id'],
                            name=op.f('fk_sender_registrations_sender_number_id_sender_numbers'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_sender_registrations_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sender_registrations')),
    sa.UniqueConstraint('sender_number_id', name=op.f('uq_sender_registrations_sender_number_id'))
    )
    op.create_index(op.f('ix_sender_registrations_shop_id'), 'sender_registrations', ['shop_id'], unique=False)


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index(op.f('ix_sender_registrations_shop_id'), table_name='sender_registrations')
    op.drop_table('sender_registrations')
    op.drop_index('uq_sender_numbers_live_msisdn', table_name='sender_numbers')
    op.drop_index(op.f('ix_sender_numbers_shop_id'), table_name='sender_numbers')
    op.drop_table('sender_numbers')
