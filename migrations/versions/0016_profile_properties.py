"""profile properties: custom property definitions per shop, and each subscriber's typed property values

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 10:30:00

`profile_properties` holds a shop's custom properties (name unique per shop, case-insensitively, through its
folded `name_key`; a type: text, number or date). `subscriber_properties` holds one value per subscriber and
property (built-ins `birthday` and `language` included), in the column of its type: text with its case-folded
copy, a number as integer 1/10000 units, a date with its month and day (`anniversary`). Both are new tables,
so there is nothing to fill.
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """The two tables, their unique keys and the (shop, property) index of the values."""
    op.create_table('profile_properties',
    sa.Column('id', ID, nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('name_key', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=8), nullable=False),
    sa.Column('shop_id', ID, nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_profile_properties_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_profile_properties')),
    sa.UniqueConstraint('shop_id', 'name_key', name=op.f('uq_profile_properties_shop_id_name_key'))
    )
    op.create_index(op.f('ix_profile_properties_shop_id'), 'profile_properties', ['shop_id'], unique=False)
    op.create_table('subscriber_properties',
    sa.Column('id', ID, nullable=False),
    sa.Column('subscriber_id', ID, nullable=False),
    sa.Column('name_key', sa.String(length=64), nullable=False),
    sa.Column('text_value', sa.Text(), nullable=True),
    sa.Column('text_folded', sa.Text(), nullable=True),
    sa.Column('number_value', kinnekt.db.Money(), nullable=True),
    sa.Column('date_value', sa.Date(), nullable=True),
    sa.Column('anniversary', sa.Integer(), nullable=True),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('shop_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_subscriber_properties_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'],
                            name=op.f('fk_subscriber_properties_subscriber_id_subscribers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_subscriber_properties')),
    sa.UniqueConstraint('subscriber_id', 'name_key', name=op.f('uq_subscriber_properties_subscriber_id_name_key'))
    )
    op.create_index('ix_subscriber_properties_shop_name', 'subscriber_properties', ['shop_id', 'name_key'],
                    unique=False)
    op.create_index(op.f('ix_subscriber_properties_shop_id'), 'subscriber_properties', ['shop_id'], unique=False)


def downgrade() -> None:
    """Drop them again."""
    op.drop_index(op.f('ix_subscriber_properties_shop_id'), table_name='subscriber_properties')
    op.drop_index('ix_subscriber_properties_shop_name', table_name='subscriber_properties')
    op.drop_table('subscriber_properties')
    op.drop_index(op.f('ix_profile_properties_shop_id'), table_name='profile_properties')
    op.drop_table('profile_properties')
