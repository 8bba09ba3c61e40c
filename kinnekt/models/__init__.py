"""All models, importable from one place so metadata (and Alembic) sees every table."""
from kinnekt.models.audience import AdConnection, AudienceLink, AudienceMember
from kinnekt.models.automation import Automation
from kinnekt.models.billing import BillingPlan, UsageRecord, UsageRecordMessage
from kinnekt.models.base import TenantMixin
from kinnekt.models.campaign import Campaign, CampaignSegment
from kinnekt.models.catalog import Collection, CollectionProduct, Product, ProductVariant
from kinnekt.models.compliance import DataRequest
from kinnekt.models.customer import Customer, CustomerTag
from kinnekt.models.deletion import ShopifyDeletion
from kinnekt.models.flow import Flow, FlowRun, FlowStep
from kinnekt.models.link import Attribution, Click, Link
from kinnekt.models.message import InboundMessage, Message, OutboxMessage
from kinnekt.models import campaign_key  # noqa: F401 (PostgreSQL's campaign key triggers, with the tables)
from kinnekt.models.nonce import SignatureNonce
from kinnekt.models.order import Checkout, LineItem, Order
from kinnekt.models.profile import ProfileProperty, SubscriberProperty
from kinnekt.models.sender import SenderNumber, SenderRegistration
from kinnekt.models.segment import Segment, SegmentCount, SegmentEvent, SegmentMember, StaticList, StaticListEntry
from kinnekt.models.shop import Shop
from kinnekt.models.shopify_segment import (SegmentTagMirror, SegmentTaggedCustomer, ShopifySegment,
                                           ShopifySegmentMember)
from kinnekt.models.signup import SignupAttempt
from kinnekt.models.storefront import StorefrontBrowser, StorefrontEvent
from kinnekt.models.subscriber import Keyword, Subscriber, SubscriptionEvent
from kinnekt.models.subscriber_import import SubscriberImport
from kinnekt.models import subscriber_key  # noqa: F401 (the messages -> subscribers key's triggers)
from kinnekt.models.sync import SyncOperation
from kinnekt.models.webhook import WebhookEvent

__all__ = [
    "AdConnection", "Attribution", "AudienceLink", "AudienceMember", "Automation", "BillingPlan", "Campaign",
    "CampaignSegment", "Checkout", "Click", "Collection",
    "CollectionProduct",
    "Customer", "CustomerTag", "DataRequest", "Flow", "FlowRun", "FlowStep",
    "InboundMessage", "Keyword", "LineItem", "Link", "Message", "Order",
    "OutboxMessage", "Product", "ProductVariant", "ProfileProperty", "Segment", "SegmentCount", "SegmentEvent",
    "SegmentMember", "SegmentTagMirror", "SegmentTaggedCustomer", "SenderNumber", "SenderRegistration", "Shop",
    "ShopifyDeletion", "ShopifySegment", "ShopifySegmentMember", "SignatureNonce", "SignupAttempt", "StaticList",
    "StaticListEntry", "StorefrontBrowser", "StorefrontEvent",
    "Subscriber", "SubscriberImport", "SubscriberProperty", "SubscriptionEvent", "SyncOperation",
    "TenantMixin", "UsageRecord", "UsageRecordMessage",
    "WebhookEvent",
]
