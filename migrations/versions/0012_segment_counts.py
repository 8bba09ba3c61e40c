"""segment_counts: each segment's member count at the end of a day, for the segment page's chart; an index of
segment_events by (segment, kind, id) for its log filtered to enters or leaves

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 07:40:00
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """segment_counts table, unique (segment_id, day); ix_segment_events_segment_kind."""
    op.create_table('segment_counts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('segment_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('member_count', sa.Integer(), nullable=False),
    sa.Column('at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['segment_id'], ['segments.id'], name=op.f('fk_segment_counts_segment_id_segments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_segment_counts_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_segment_counts')),
    sa.UniqueConstraint('segment_id', 'day', name=op.f('uq_segment_counts_segment_id_day'))
    )
    op.create_index(op.f('ix_segment_counts_shop_id'), 'segment_counts', ['shop_id'], unique=False)
    op.create_index('ix_segment_events_segment_kind', 'segment_events', ['segment_id', 'kind', 'id'], unique=False)


def downgrade() -> None:
    """Drop them again."""
    op.drop_index('ix_segment_events_segment_kind', table_name='segment_events')
    op.drop_index(op.f('ix_segment_counts_shop_id'), table_name='segment_counts')
    op.drop_table('segment_counts')
