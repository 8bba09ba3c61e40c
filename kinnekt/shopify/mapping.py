"""GraphQL Admin nodes (bulk JSONL lines and reconciliation pages) mapped onto the ingest rows.

The field selections live here too, so the bulk queries and the reconciliation queries ask for exactly
what the mappers read.
"""
from __future__ import annotations

from kinnekt.shopify.graphql import gid_to_id
from kinnekt.numbers import whole_number
from kinnekt.shopify.ingest.rows import CollectionRow, CustomerRow, LineItemRow, OrderRow, ProductRow, VariantRow
from kinnekt.shopify.values import money, shop_money, text, timestamp

# SMS consent: `smsMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt }`; the flat
# `defaultPhoneNumber.marketingState` is deprecated and no longer asked for (the mapper still reads it from a
# node that has it, such as a bulk file written before an upgrade).
CUSTOMER_FIELDS = """
id firstName lastName createdAt updatedAt tags
defaultEmailAddress { emailAddress }
defaultPhoneNumber { phoneNumber }
smsMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt }
defaultAddress { city countryCodeV2 }
"""

ORDER_FIELDS = """
id name email phone createdAt updatedAt cancelledAt test
displayFinancialStatus displayFulfillmentStatus currencyCode
totalPriceSet { shopMoney { amount } }
currentTotalPriceSet { shopMoney { amount } }
totalDiscountsSet { shopMoney { amount } }
discountCodes sourceName
customerJourneySummary { firstVisit { landingPage } }
customer { id }
"""

LINE_ITEM_FIELDS = """
id title variantTitle quantity
originalUnitPriceSet { shopMoney { amount } }
product { id } variant { id }
"""

PRODUCT_FIELDS = """
id title handle status updatedAt
featuredMedia { preview { image { url } } }
"""

VARIANT_FIELDS = """
id title sku price position
"""

COLLECTION_FIELDS = """
id title handle updatedAt
"""


def _required_id(node: dict) -> int:
    value = gid_to_id(node.get("id"))
    if value is None:
        raise ValueError(f"no Shopify id in {node.get('id')!r}")
    return value


def customer_row(node: dict) -> CustomerRow:
    """A Customer node as a CustomerRow (with SMS consent, which webhooks no longer carry)."""
    phone = node.get("defaultPhoneNumber") or {}
    consent = node.get("smsMarketingConsent") or {}
    address = node.get("defaultAddress") or {}
    state = consent.get("marketingState") or phone.get("marketingState")
    level = consent.get("marketingOptInLevel") or phone.get("marketingOptInLevel")
    return CustomerRow(
        shopify_id=_required_id(node),
        email=text((node.get("defaultEmailAddress") or {}).get("emailAddress") or node.get("email"), 255),
        phone=text(phone.get("phoneNumber")),
        first_name=text(node.get("firstName"), 255),
        last_name=text(node.get("lastName"), 255),
        city=text(address.get("city"), 255),
        country_code=(text(address.get("countryCodeV2")) or "")[:2].upper() or None,
        tags=[str(t).strip() for t in node.get("tags") or [] if str(t).strip()],
        created_at=timestamp(node.get("createdAt")),
        updated_at=timestamp(node.get("updatedAt")),
        sms_consent_state=state.lower() if isinstance(state, str) and state else None,
        sms_consent_updated_at=timestamp(consent.get("consentUpdatedAt") or phone.get("marketingUpdatedAt")),
        sms_consent_opt_in_level=level.lower() if isinstance(level, str) and level else None,
    )


def line_item_row(node: dict) -> LineItemRow:
    """A LineItem node (unit price before discounts, as REST's line_items[].price)."""
    return LineItemRow(
        shopify_id=_required_id(node),
        product_id=gid_to_id((node.get("product") or {}).get("id")),
        variant_id=gid_to_id((node.get("variant") or {}).get("id")),
        title=text(node.get("title"), 512),
        variant_title=text(node.get("variantTitle"), 512),
        quantity=int(node.get("quantity") or 0),
        price=shop_money(node.get("originalUnitPriceSet")),
    )


def order_row(node: dict, line_items: list[dict]) -> OrderRow:
    """An Order node and its LineItem nodes as an OrderRow."""
    visit = ((node.get("customerJourneySummary") or {}).get("firstVisit") or {})
    return OrderRow(
        shopify_id=_required_id(node),
        customer_shopify_id=gid_to_id((node.get("customer") or {}).get("id")),
        name=text(node.get("name"), 64),
        email=text(node.get("email"), 255),
        phone=text(node.get("phone")),
        created_at=timestamp(node.get("createdAt")),
        updated_at=timestamp(node.get("updatedAt")),
        cancelled_at=timestamp(node.get("cancelledAt")),
        test=bool(node.get("test")),
        financial_status=text(node.get("displayFinancialStatus")),
        fulfillment_status=text(node.get("displayFulfillmentStatus")),
        currency=text(node.get("currencyCode"), 3),
        total_price=shop_money(node.get("totalPriceSet")),
        current_total_price=shop_money(node.get("currentTotalPriceSet"), None),
        total_discounts=shop_money(node.get("totalDiscountsSet")),
        discount_codes=[{"code": str(code)} for code in node.get("discountCodes") or [] if code],
        landing_site=text(visit.get("landingPage"), 2048),
        source_name=text(node.get("sourceName"), 64),
        line_items=[line_item_row(item) for item in line_items],
    )


def product_row(node: dict, variants: list[dict] | None = None) -> ProductRow:
    """A Product node and its ProductVariant nodes (None: not asked for) as a ProductRow."""
    image = (((node.get("featuredMedia") or {}).get("preview") or {}).get("image") or {})
    return ProductRow(
        shopify_id=_required_id(node),
        title=text(node.get("title"), 512),
        handle=text(node.get("handle"), 255),
        status=(text(node.get("status")) or "active").lower(),
        image_url=text(image.get("url"), 2048),
        updated_at=timestamp(node.get("updatedAt")),
        variants=None if variants is None else [row for row in map(variant_row, variants) if row is not None],
    )


def variant_row(node: dict) -> VariantRow | None:
    """A ProductVariant node (price is a Money string, "12.50"); None when it has no numeric id."""
    variant_id = gid_to_id(node.get("id")) if isinstance(node, dict) else None
    if variant_id is None:
        return None
    return VariantRow(shopify_id=variant_id, title=text(node.get("title"), 512), sku=text(node.get("sku"), 255),
                      price=money(node.get("price"), default=None),
                      position=whole_number(node.get("position"), 2**31 - 1))


def collection_row(node: dict, products: list[dict] | None) -> CollectionRow:
    """A Collection node; `products` are its Product nodes, or None when membership was not asked for."""
    product_ids = None
    if products is not None:
        product_ids = [pid for pid in (gid_to_id(p.get("id")) for p in products) if pid is not None]
    return CollectionRow(
        shopify_id=_required_id(node),
        title=text(node.get("title"), 512),
        handle=text(node.get("handle"), 255),
        updated_at=timestamp(node.get("updatedAt")),
        product_ids=product_ids,
    )
