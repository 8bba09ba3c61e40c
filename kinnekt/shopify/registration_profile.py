"""The US registration form filled in from what the shop already told Shopify and Kinnekt.

The business (legal name, email, billing address and phone, primary domain) comes from the Admin GraphQL `shop`
query, asked when the merchant opens the form (never stored); the sample messages are the replies of the shop's
own keywords, and the opt-in description says how people sign up: the keywords (and the number they text) and
the storefront popup with its consent text (kinnekt.subscribers.popup.disclosure). Everything stays editable.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session as OrmSession

from kinnekt.models import Keyword, Shop
from kinnekt.models.sender import SenderNumber
from kinnekt.shopify.graphql import client_for
from kinnekt.sms import registration
from kinnekt.subscribers import popup

PROFILE_QUERY = """
query KinnektRegistrationProfile {
  shop {
    name
    email
    contactEmail
    billingAddress { company address1 address2 city provinceCode zip countryCodeV2 phone }
    primaryDomain { url host }
  }
}
"""
"""The shop's business details the carriers ask for (read_products-level access: no extra scope)."""


def fetch_profile(shop: Shop) -> dict:
    """The business as Shopify has it, in the form's field names (missing ones empty); raises ShopifyError when
    Shopify cannot be asked."""
    data = client_for(shop).query(PROFILE_QUERY).get("shop") or {}
    address = data.get("billingAddress") or {}
    domain = data.get("primaryDomain") or {}
    street = ", ".join(part for part in (address.get("address1"), address.get("address2")) if part)
    phone = registration.e164(address.get("phone") or "") or (address.get("phone") or "")
    return {
        "legal_name": address.get("company") or data.get("name") or "",
        "brand_name": data.get("name") or "",
        "street": street, "city": address.get("city") or "", "state": address.get("provinceCode") or "",
        "postal_code": address.get("zip") or "", "country": address.get("countryCodeV2") or "",
        "website": domain.get("url") or (f"https://{domain['host']}" if domain.get("host") else ""),
        "contact_email": data.get("contactEmail") or data.get("email") or "",
        "contact_phone": phone,
    }


def from_shop(session: OrmSession, shop: Shop, number: SenderNumber) -> dict:
    """What Kinnekt itself knows: the summary, sample messages from the keywords' replies, the opt-in description
    from the keywords and the popup's consent text, and a volume estimate."""
    keywords = session.execute(select(Keyword.word, Keyword.reply_text).where(
        Keyword.shop_id == shop.id, Keyword.active.is_(True)).order_by(Keyword.id)).all()
    replies = [reply.strip() for _word, reply in keywords if (reply or "").strip()]
    name = shop.name or shop.domain
    samples = replies[:2]
    defaults = [f"{name}: Thanks for joining our texts! Enjoy 10% off your next order. Reply STOP to opt out.",
                f"{name}: New arrivals are in. Shop now before they sell out. Reply STOP to opt out."]
    samples += defaults[len(samples):]
    ways = []
    if keywords:
        words = ", ".join(word for word, _reply in keywords[:5])
        ways.append(f"Customers text a keyword ({words}) to +{number.msisdn}; the first reply confirms the "
                    "subscription and says how to opt out (STOP) and get help (HELP).")
    settings = popup.settings_for(shop)
    ways.append(f"Customers enter their phone number in the sign-up popup on our online store "
                f"(\u201c{settings.headline}\u201d) and tick a box beside this consent text: \u201c"
                f"{popup.disclosure(shop)}\u201d")
    return {
        "entity_type": "PRIVATE_PROFIT",
        "use_case_summary": (f"Marketing texts from {name} to customers who signed up: offers, new products, "
                             "order reminders and abandoned cart reminders."),
        "sample_message_1": samples[0], "sample_message_2": samples[1],
        "opt_in_description": " ".join(ways),
        "monthly_volume": "10000",
    }


def prefill(session: OrmSession, shop: Shop, number: SenderNumber, *, with_shopify: bool = True
            ) -> tuple[dict, str | None]:
    """The form's starting values: a past submission of the number as it was, else Kinnekt's own and Shopify's
    details; and a note when Shopify could not be asked (the form is then filled without them)."""
    from kinnekt.shopify.graphql import ShopifyError
    found = registration.registrations_by_number(session, shop.id).get(number.id)
    if found is not None and found.details:
        return {**registration.blank_form(), **found.details}, None
    values = {**registration.blank_form(), **from_shop(session, shop, number)}
    if not with_shopify:
        return values, None
    try:
        values.update({k: v for k, v in fetch_profile(shop).items() if v})
    except ShopifyError:
        return values, "Shopify could not be asked for your store's details: fill them in below."
    return values, None
