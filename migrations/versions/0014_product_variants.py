"""product_variants: each synced product's variants (title, SKU, price, position) for the product picker

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 09:00:00

Filled by the products webhooks and the next full sync; a variant goes with its product (ON DELETE CASCADE).
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    """product_variants table, unique (shop_id, shopify_id), indexed by (product_id, position)."""
    op.create_table('product_variants',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('product_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('shopify_id', sa.BigInteger(), nullable=False),
    sa.Column('title', sa.String(length=512), nullable=False),
    sa.Column('sku', sa.String(length=255), nullable=True),
    sa.Column('price', kinnekt.db.Money(), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('shop_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_product_variants_product_id_products'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_product_variants_shop_id_shops'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_product_variants')),
    sa.UniqueConstraint('shop_id', 'shopify_id', name=op.f('uq_product_variants_shop_id_shopify_id'))
    )
    op.create_index('ix_product_variants_product', 'product_variants', ['product_id', 'position'], unique=False)
    op.create_index(op.f('ix_product_variants_shop_id'), 'product_variants', ['shop_id'], unique=False)


def downgrade() -> None:
    """Drop it again."""
    op.drop_index(op.f('ix_product_variants_shop_id'), table_name='product_variants')
    op.drop_index('ix_product_variants_product', table_name='product_variants')
    op.drop_table('product_variants')
