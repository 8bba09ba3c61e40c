"""ad platform audiences: connections, segment links, what each audience was sent

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 17:30:00

`ad_connections` holds a shop's connection to an ad platform (Meta, Google Ads: encrypted tokens, the ad account
chosen, the email setting), `audience_links` each segment kept in sync with an audience there, and
`audience_members` the hashed identifiers each audience was sent (one row per link and subscriber). New tables:
nothing to fill.
"""
from alembic import op
import sqlalchemy as sa
import kinnekt.db


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """The three tables and their keys."""
    op.create_table('ad_connections',
    sa.Column('id', ID, nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('access_token_enc', sa.Text(), nullable=True),
    sa.Column('access_token_expires_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('refresh_token_enc', sa.Text(), nullable=True),
    sa.Column('accounts', sa.JSON(), nullable=False),
    sa.Column('account_id', sa.String(length=64), nullable=True),
    sa.Column('account_name', sa.String(length=255), nullable=True),
    sa.Column('allow_emails', sa.Boolean(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('connected_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('shop_id', ID, nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_ad_connections_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ad_connections')),
    sa.UniqueConstraint('shop_id', 'platform', name=op.f('uq_ad_connections_shop_id_platform'))
    )
    op.create_index(op.f('ix_ad_connections_shop_id'), 'ad_connections', ['shop_id'], unique=False)
    op.create_table('audience_links',
    sa.Column('id', ID, nullable=False),
    sa.Column('connection_id', ID, nullable=False),
    sa.Column('segment_id', ID, nullable=True),
    sa.Column('segment_name', sa.String(length=255), nullable=False),
    sa.Column('audience_id', sa.String(length=128), nullable=True),
    sa.Column('audience_name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('sync_started_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('last_synced_at', kinnekt.db.UTCDateTime(), nullable=True),
    sa.Column('member_count', sa.Integer(), nullable=False),
    sa.Column('last_added', sa.Integer(), nullable=False),
    sa.Column('last_removed', sa.Integer(), nullable=False),
    sa.Column('last_invalid', sa.Integer(), nullable=False),
    sa.Column('last_requests', sa.Integer(), nullable=False),
    sa.Column('shop_id', ID, nullable=False),
    sa.Column('created_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['connection_id'], ['ad_connections.id'],
                            name=op.f('fk_audience_links_connection_id_ad_connections'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['segment_id'], ['segments.id'], name=op.f('fk_audience_links_segment_id_segments'),
                            ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_audience_links_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audience_links')),
    sa.UniqueConstraint('connection_id', 'segment_id', name=op.f('uq_audience_links_connection_id_segment_id'))
    )
    op.create_index(op.f('ix_audience_links_connection_id'), 'audience_links', ['connection_id'], unique=False)
    op.create_index(op.f('ix_audience_links_shop_id'), 'audience_links', ['shop_id'], unique=False)
    op.create_table('audience_members',
    sa.Column('id', ID, nullable=False),
    sa.Column('link_id', ID, nullable=False),
    sa.Column('subscriber_id', ID, nullable=True),
    sa.Column('phone_hash', sa.String(length=64), nullable=True),
    sa.Column('email_hash', sa.String(length=64), nullable=True),
    sa.Column('sent_at', kinnekt.db.UTCDateTime(), nullable=False),
    sa.Column('shop_id', ID, nullable=False),
    sa.ForeignKeyConstraint(['link_id'], ['audience_links.id'], name=op.f('fk_audience_members_link_id_audience_links'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['shop_id'], ['shops.id'], name=op.f('fk_audience_members_shop_id_shops'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'],
                            name=op.f('fk_audience_members_subscriber_id_subscribers'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audience_members')),
    sa.UniqueConstraint('link_id', 'subscriber_id', name=op.f('uq_audience_members_link_id_subscriber_id'))
    )
    op.create_index('ix_audience_members_subscriber', 'audience_members', ['subscriber_id'], unique=False)
    op.create_index(op.f('ix_audience_members_shop_id'), 'audience_members', ['shop_id'], unique=False)


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_index(op.f('ix_audience_members_shop_id'), table_name='audience_members')
    op.drop_index('ix_audience_members_subscriber', table_name='audience_members')
    op.drop_table('audience_members')
    op.drop_index(op.f('ix_audience_links_shop_id'), table_name='audience_links')
    op.drop_index(op.f('ix_audience_links_connection_id'), table_name='audience_links')
    op.drop_table('audience_links')
    op.drop_index(op.f('ix_ad_connections_shop_id'), table_name='ad_connections')
    op.drop_table('ad_connections')
