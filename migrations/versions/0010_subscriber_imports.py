"""subscriber_imports: CSV imports too large for one request, with the progress their jobs record

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 02:38:03.410437
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The subscriber_imports table, indexed by shop."""
    op.create_table('subscriber_imports',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('file', sa.LargeBinary(), nullable=True),
    sa.Column('consent_text', sa.Text(), nullable=False),
    sa.Column('total_rows', sa.Integer(), nullable=False),
    sa.Column('processed_rows', sa.Integer(), nullable=False),
    sa.Column('imported', sa.Integer(), nullable=False),
    sa.Column('counts', sa.JSON(), nullable=False),
    sa.Column('rejected', sa.JSON(), nullable=False),
    sa.Column('region', sa.String(length=2), nullable=True),
    sa.Column('ignored_columns', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('finished_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_subscriber_imports_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriber_imports'))
    )
    with op.batch_alter_table('subscriber_imports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_subscriber_imports_shop_id'), ['shop_id'], unique=False)


def downgrade() -> None:
    """Drop the table (imports still running are lost with their files)."""
    with op.batch_alter_table('subscriber_imports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_subscriber_imports_shop_id'))

    op.drop_table('subscriber_imports')
