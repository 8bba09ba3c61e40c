"""popup sign-up attempts (limits per IP and per number), re-opt-in requests to opted-out numbers

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 02:14:02

Plain ADD / DROP COLUMN on subscribers (SQLite has both since 3.35): a batch copy of the table would drop
the subscriber key triggers of 0009.
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """signup_attempts table; subscribers.reoptin_asked_at."""
    op.create_table('signup_attempts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_signup_attempts_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_signup_attempts'))
    )
    op.create_index(op.f('ix_signup_attempts_at'), 'signup_attempts', ['at'], unique=False)
    op.create_index(op.f('ix_signup_attempts_shop_id'), 'signup_attempts', ['shop_id'], unique=False)
    op.create_index('ix_signup_attempts_shop_ip_at', 'signup_attempts', ['shop_id', 'ip', 'at'], unique=False)
    op.create_index('ix_signup_attempts_shop_phone_at', 'signup_attempts', ['shop_id', 'phone', 'at'], unique=False)
    op.add_column('subscribers', sa.Column('reoptin_asked_at', kinnekt.db.UTCDateTime(), nullable=True))


def downgrade() -> None:
    """Drop them again."""
    op.drop_column('subscribers', 'reoptin_asked_at')
    op.drop_index('ix_signup_attempts_shop_phone_at', table_name='signup_attempts')
    op.drop_index('ix_signup_attempts_shop_ip_at', table_name='signup_attempts')
    op.drop_index(op.f('ix_signup_attempts_shop_id'), table_name='signup_attempts')
    op.drop_index(op.f('ix_signup_attempts_at'), table_name='signup_attempts')
    op.drop_table('signup_attempts')
