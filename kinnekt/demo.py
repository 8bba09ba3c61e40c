"""The demo store: a deterministic, realistic apparel shop ("Northwind Outfitters") with two years of history."""
from __future__ import annotations

import datetime as dt
import random
import re
import unicodedata
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import carrier as pn_carrier, timezone as pn_timezone
from sqlalchemy import func, inspect, select

from kinnekt.campaigns import links
from kinnekt.config import Config
from kinnekt.db import Base
from kinnekt.models import (
    Attribution, Campaign, CampaignSegment, Checkout, Click, Collection, CollectionProduct, Customer, CustomerTag,
    InboundMessage, Keyword, LineItem, Link, Message, Order, OutboxMessage, Product, ProductVariant, Segment,
    SegmentCount, SegmentEvent, SegmentMember, Shop, Subscriber, SubscriptionEvent,
)
from kinnekt.models.subscriber_key import before_deleting_subscribers
from kinnekt.sms import prices

SHOP_NAME = "Northwind Outfitters"
STORE_HOST = "northwind-outfitters.com"
STORE_URL = f"https://{STORE_HOST}"
SHOP_TIMEZONE = "America/New_York"
SENDER = "+18885550199"  # toll-free; phonenumbers accepts it as a valid US number
UTC = dt.timezone.utc
ZERO = Decimal("0.00")

CONSENT_TEXTS = {
    "keyword": ("Text {word} to (888) 555-0199 to get recurring automated marketing texts from Northwind Outfitters. "
                "Consent is not a condition of purchase. Msg frequency varies. Msg & data rates may apply. "
                "Reply HELP for help, STOP to cancel."),
    "mobile_popup": ("By signing up you agree to receive recurring automated marketing texts from Northwind "
                     "Outfitters at the number provided. Consent is not a condition of purchase. Msg frequency "
                     "varies. Msg & data rates may apply. Reply HELP for help, STOP to cancel."),
    "shareable_link": ("By sending the prefilled text you agree to receive recurring automated marketing texts "
                       "from Northwind Outfitters. Consent is not a condition of purchase. Msg & data rates may "
                       "apply. Reply STOP to cancel."),
    "checkout": ("Text me with news and offers. By checking this box you agree to receive recurring automated "
                 "marketing texts at the number provided. Consent is not a condition of purchase. Reply STOP to "
                 "cancel."),
    "import": ("Imported from a CSV export of the store's previous SMS tool; consent was collected there with "
               "the same terms. Reply STOP to cancel."),
    "manual": ("Added by store staff after the customer agreed in store to receive recurring automated marketing "
               "texts. Reply STOP to cancel."),
}

CONFIRM_TEXT = ("Northwind Outfitters: Reply Y to confirm you want recurring automated marketing texts. "
                "Msg & data rates may apply. Reply STOP to cancel.")
WELCOME_TEXT = ("Northwind Outfitters: You're in! Here's 10% off your first order: WELCOME10. Msg frequency "
                "varies. Reply HELP for help, STOP to cancel.")

KEYWORDS = (  # word, days after install it was created, reply text, share of keyword sign-ups
    ("JOIN", 1, "Northwind Outfitters: Welcome! You're signed up for recurring automated marketing texts. Here's "
                "10% off your first order: WELCOME10. Msg frequency varies. Msg & data rates may apply. Reply HELP "
                "for help, STOP to cancel.", 64),
    ("VIP", 38, "Northwind Outfitters: You're on the VIP list! Expect early access to new drops and members-only "
                "offers. Msg frequency varies. Msg & data rates may apply. Reply HELP for help, STOP to cancel.", 22),
    ("SUMMER", 340, "Northwind Outfitters: Summer's here! Take 20% off swim & linen with code SUMMER20. Msg & data "
                    "rates may apply. Reply STOP to cancel.", 14),
)

# code -> (Shopify discount type, percent or fixed amount)
DISCOUNTS = {
    "WELCOME10": ("percentage", Decimal(10)),
    "SUMMER20": ("percentage", Decimal(20)),
    "VIP15": ("percentage", Decimal(15)),
    "TAKE10": ("fixed_amount", Decimal(10)),
    "FREESHIP": ("shipping", None),
    "VIPEARLY": ("percentage", Decimal(25)),
    "FLASH20": ("percentage", Decimal(20)),
    "SHIPFREE": ("shipping", None),
}

TOPS = ("XS", "S", "M", "L", "XL")
WAIST = ("28", "30", "32", "34", "36")
DRESS = ("XS", "S", "M", "L")
SHOES = ("7", "8", "9", "10", "11", "12")
PAIR = ("S/M", "L/XL")
ONE = ()

C_SUMMER, C_FALL, C_OUTER, C_ACC = "Summer Essentials", "Fall Layers", "Outerwear", "Accessories"
C_BEST, C_NEW, C_SALE, C_GIFT = "Best Sellers", "New Arrivals", "Sale", "Gifts Under $50"
COLLECTIONS = (C_SUMMER, C_FALL, C_OUTER, C_ACC, C_BEST, C_NEW, C_SALE, C_GIFT)

# title, price, sizes, colors, collections, popularity, life ("core", "mid", "new", "archived")
PRODUCTS = (
    ("Everyday Organic Tee", "28.00", TOPS, ("White", "Black", "Heather Grey", "Navy"), (C_SUMMER, C_BEST, C_GIFT),
     10, "core"),
    ("Heavyweight Pocket Tee", "34.00", TOPS, ("Off-White", "Olive", "Washed Black"), (C_SUMMER,), 6, "core"),
    ("Breton Stripe Long Sleeve", "48.00", TOPS, ("Navy/Ecru", "Red/Ecru"), (C_FALL, C_BEST), 6, "core"),
    ("Linen Camp Shirt", "68.00", TOPS, ("Sand", "Sage", "Sky Blue"), (C_SUMMER,), 5, "core"),
    ("Oxford Button-Down", "72.00", TOPS, ("White", "Blue", "Pink"), (C_BEST,), 5, "core"),
    ("Merino Crew Sweater", "98.00", TOPS, ("Charcoal", "Oatmeal", "Forest"), (C_FALL, C_BEST), 6, "core"),
    ("Cable Knit Fisherman Sweater", "128.00", TOPS, ("Cream", "Navy"), (C_FALL, C_NEW), 4, "new"),
    ("Fleece Quarter-Zip", "84.00", TOPS, ("Navy", "Heather Grey"), (C_FALL, C_SALE), 4, "core"),
    ("Garment-Dyed Hoodie", "78.00", TOPS, ("Faded Black", "Sage", "Clay"), (C_FALL, C_BEST), 7, "core"),
    ("Stretch Chino Pant", "78.00", WAIST, ("Khaki", "Navy", "Olive"), (C_BEST,), 6, "core"),
    ("Relaxed Selvedge Denim", "118.00", WAIST, ("Indigo Rinse", "Light Wash"), (C_FALL,), 4, "core"),
    ('Trail Short 7"', "54.00", TOPS, ("Stone", "Navy"), (C_SUMMER, C_SALE), 4, "core"),
    ("Linen Drawstring Short", "52.00", TOPS, ("Natural", "Black"), (C_SUMMER,), 3, "mid"),
    ("Corduroy Work Pant", "88.00", WAIST, ("Brown", "Navy"), (C_FALL, C_NEW), 3, "new"),
    ("Linen Wrap Dress", "96.00", DRESS, ("Natural", "Black"), (C_SUMMER,), 3, "core"),
    ("Cotton Poplin Sundress", "82.00", DRESS, ("White", "Yellow Gingham"), (C_SUMMER, C_SALE), 3, "mid"),
    ("Waxed Canvas Field Jacket", "228.00", TOPS, ("Olive", "Tan"), (C_OUTER, C_BEST), 4, "core"),
    ("Packable Down Vest", "138.00", TOPS, ("Black", "Navy", "Rust"), (C_OUTER, C_FALL), 3, "core"),
    ("Lightweight Rain Shell", "148.00", TOPS, ("Yellow", "Black"), (C_OUTER,), 3, "core"),
    ("Sherpa-Lined Trucker Jacket", "168.00", TOPS, ("Denim", "Brown"), (C_OUTER, C_NEW), 3, "new"),
    ("Wool Overshirt", "138.00", TOPS, ("Grey Check", "Navy Plaid"), (C_OUTER, C_FALL), 3, "core"),
    ("Quilted Liner Jacket", "158.00", TOPS, ("Black", "Olive"), (C_OUTER, C_SALE), 2, "core"),
    ("Recycled Swim Trunks", "58.00", TOPS, ("Navy Wave", "Coral"), (C_SUMMER,), 3, "mid"),
    ("Ribbed One-Piece Swimsuit", "88.00", DRESS, ("Black", "Terracotta"), (C_SUMMER, C_SALE), 2, "mid"),
    ("Canvas Weekender Bag", "148.00", ONE, ("Natural", "Olive"), (C_ACC, C_BEST), 3, "core"),
    ("Leather Belt", "58.00", ("30", "32", "34", "36", "38"), ("Brown", "Black"), (C_ACC,), 3, "core"),
    ("Merino Beanie", "32.00", ONE, ("Charcoal", "Rust", "Forest"), (C_ACC, C_FALL, C_GIFT), 5, "core"),
    ("Waxed Canvas Tote", "68.00", ONE, ("Olive", "Navy"), (C_ACC,), 3, "core"),
    ("Wool Blend Scarf", "48.00", ONE, ("Camel", "Grey Plaid"), (C_ACC, C_GIFT), 3, "core"),
    ("Polarized Sunglasses", "78.00", ONE, ("Tortoise", "Matte Black"), (C_ACC, C_SUMMER), 3, "core"),
    ("Cotton Bucket Hat", "38.00", PAIR, ("Khaki", "Black"), (C_ACC, C_SUMMER, C_GIFT), 3, "core"),
    ("Everyday Baseball Cap", "32.00", ONE, ("Navy", "Stone", "Black"), (C_ACC, C_BEST, C_GIFT), 5, "core"),
    ("Leather Card Wallet", "45.00", ONE, ("Tan", "Black"), (C_ACC, C_GIFT), 3, "core"),
    ("Crew Socks 3-Pack", "24.00", PAIR, (), (C_ACC, C_BEST, C_GIFT), 7, "core"),
    ("Wool Hiking Socks", "22.00", PAIR, ("Charcoal", "Moss"), (C_ACC, C_GIFT), 3, "core"),
    ("Leather Gloves", "68.00", ("S", "M", "L"), ("Brown", "Black"), (C_ACC, C_NEW), 2, "new"),
    ("Rolltop Backpack", "128.00", ONE, ("Black", "Olive"), (C_ACC,), 3, "core"),
    ("Canvas Low-Top Sneaker", "78.00", SHOES, ("White", "Navy"), (C_SUMMER, C_BEST), 4, "core"),
    ("Suede Chukka Boot", "168.00", SHOES, ("Sand", "Chocolate"), (C_FALL,), 2, "mid"),
    ("Northwind Gift Card", "50.00", ("$25", "$50", "$100"), (), (C_GIFT,), 2, "core"),
    ("Tie-Dye Crew Tee", "32.00", TOPS, ("Sunset", "Ocean"), (C_SALE,), 3, "archived"),
)

# Past campaigns: name, days before now, include, exclude, discount code, landing path, body, click rate.
CAMPAIGNS = (
    ("Summer Linen Edit", 128, ("all",), (), None, "/collections/summer-essentials",
     "Northwind Outfitters: Summer linen is here \u2600\ufe0f Camp shirts, wrap dresses & drawstring shorts made to "
     "breathe. Shop the edit: {url}", 0.11),
    ("VIP Early Access", 74, ("keyword:VIP",), (), "VIPEARLY", "/collections/new-arrivals",
     "Northwind Outfitters VIPs: early access starts now. Take 25% off new arrivals with code VIPEARLY before "
     "anyone else: {url}", 0.15),
    ("Weekend Flash Sale", 46, ("all",), ("keyword:VIP",), "FLASH20", "/collections/all",
     "Northwind Outfitters: Flash sale! 20% off everything this weekend only with code FLASH20. Ends Sunday at "
     "midnight: {url}", 0.13),
    ("Back in Stock: Waxed Canvas Field Jacket", 19, ("mobile_popup", "shareable_link"), (), None,
     "/products/waxed-canvas-field-jacket",
     "Northwind Outfitters: It's back. The Waxed Canvas Field Jacket is restocked in Olive and Tan, but sizes go "
     "fast: {url}", 0.10),
    ("Free Shipping Weekend", 6, ("all",), (), "SHIPFREE", "/",
     "Northwind Outfitters: Free shipping on every order this weekend, no minimum. Use code SHIPFREE at "
     "checkout: {url}", 0.09),
)
DRAFT_CAMPAIGN = ("Holiday Gift Guide", ("all",), "/collections/gifts-under-50",
                  "Northwind Outfitters: Gifts they'll actually wear \U0001F381 Our holiday guide has something for "
                  "everyone, from $22 wool socks to the Canvas Weekender: {url}")
SCHEDULED_CAMPAIGN = ("Winter Sale Kickoff", ("all",), "WINTER25", "/collections/sale",
                      "Northwind Outfitters: Our Winter Sale starts now: 25% off outerwear and knits with code "
                      "WINTER25. Shop before your size sells out: {url}")

MANUAL_SEGMENTS = (
    ("Ordered in last 30 days and spent over $25", 12,
     {"match": "all", "rules": [{"field": "last_order_created", "op": "eq", "value": "last_30_days"},
                                {"field": "money_spent", "op": "gt", "value": 25}]}),
    ("Loyal but inactive", 5,
     {"match": "all", "rules": [{"field": "number_of_orders", "op": "gte", "value": 3},
                                {"field": "last_order_created", "op": "more_than_days_ago", "value": 90}]}),
)
AUTO_SEGMENTS = (("all", "All subscribers"), ("mobile_popup", "Mobile Popup"), ("shareable_link", "Shareable Link"),
                 ("checkout", "Checkout"))

# Vonage delivery-receipt err-codes for failures that are not the recipient's fault forever.
TRANSIENT_ERRORS = (("1", "Unknown"), ("2", "Absent subscriber - temporary"), ("6", "Anti-spam rejection"),
                    ("7", "Handset busy"), ("8", "Network error"), ("12", "Destination unreachable"))
PERMANENT_ERROR = ("3", "Absent subscriber - permanent")
USER_AGENTS = (
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/18.6 Mobile/15E148 Safari/604.1", 52),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 26_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/26.1 Mobile/15E148 Safari/604.1", 18),
    ("Mozilla/5.0 (Linux; Android 15; Pixel 9) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/141.0.0.0 "
     "Mobile Safari/537.36", 14),
    ("Mozilla/5.0 (Linux; Android 14; SM-S921U) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/140.0.0.0 "
     "Mobile Safari/537.36", 12),
    ("Mozilla/5.0 (Linux; Android 14; moto g power 5G - 2024) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/139.0.0.0 Mobile Safari/537.36", 4),
)

# area code, city, weight: a New York brand sells most in the Northeast.
US_AREAS = (
    ("212", "New York", 6), ("646", "New York", 5), ("917", "New York", 5), ("718", "Brooklyn", 5),
    ("347", "Brooklyn", 3), ("516", "Garden City", 2), ("914", "Yonkers", 2), ("201", "Jersey City", 3),
    ("973", "Newark", 2), ("908", "Elizabeth", 1), ("617", "Boston", 4), ("857", "Boston", 2),
    ("781", "Waltham", 1), ("401", "Providence", 1), ("203", "New Haven", 2), ("860", "Hartford", 1),
    ("215", "Philadelphia", 3), ("267", "Philadelphia", 2), ("412", "Pittsburgh", 1), ("202", "Washington", 3),
    ("301", "Bethesda", 1), ("410", "Baltimore", 2), ("703", "Arlington", 2), ("571", "Alexandria", 1),
    ("804", "Richmond", 1), ("919", "Raleigh", 1), ("704", "Charlotte", 1), ("404", "Atlanta", 2),
    ("678", "Atlanta", 1), ("305", "Miami", 2), ("786", "Miami", 1), ("954", "Fort Lauderdale", 1),
    ("407", "Orlando", 1), ("813", "Tampa", 1), ("615", "Nashville", 1), ("312", "Chicago", 3),
    ("773", "Chicago", 2), ("414", "Milwaukee", 1), ("612", "Minneapolis", 1), ("313", "Detroit", 1),
    ("614", "Columbus", 1), ("216", "Cleveland", 1), ("317", "Indianapolis", 1), ("314", "St. Louis", 1),
    ("816", "Kansas City", 1), ("504", "New Orleans", 1), ("214", "Dallas", 2), ("512", "Austin", 2),
    ("713", "Houston", 2), ("210", "San Antonio", 1), ("303", "Denver", 2), ("720", "Denver", 1),
    ("801", "Salt Lake City", 1), ("602", "Phoenix", 1), ("480", "Scottsdale", 1), ("702", "Las Vegas", 1),
    ("206", "Seattle", 2), ("425", "Bellevue", 1), ("503", "Portland", 2), ("207", "Portland", 1),
    ("415", "San Francisco", 3), ("510", "Oakland", 1), ("408", "San Jose", 1), ("650", "Palo Alto", 1),
    ("213", "Los Angeles", 2), ("310", "Santa Monica", 2), ("323", "Los Angeles", 2), ("626", "Pasadena", 1),
    ("949", "Irvine", 1), ("619", "San Diego", 1), ("808", "Honolulu", 1), ("802", "Burlington", 1),
)
CA_AREAS = (("416", "Toronto", 4), ("647", "Toronto", 3), ("604", "Vancouver", 3), ("778", "Vancouver", 1),
            ("514", "Montréal", 3), ("613", "Ottawa", 1), ("403", "Calgary", 1), ("902", "Halifax", 1))
GB_CITIES = (("London", 8), ("Manchester", 2), ("Bristol", 1), ("Leeds", 1), ("Edinburgh", 1), ("Glasgow", 1),
             ("Brighton", 1))
DE_CITIES = (("Berlin", 4), ("Hamburg", 2), ("München", 2), ("Köln", 1), ("Frankfurt am Main", 1),
             ("Leipzig", 1))
AU_CITIES = (("Sydney", 4), ("Melbourne", 4), ("Brisbane", 2), ("Perth", 1), ("Adelaide", 1))
COUNTRY_MIX = {"US": 85, "CA": 5, "GB": 4, "DE": 3, "AU": 3}
TAX_RATES = {"US": Decimal("0.07"), "CA": Decimal("0.13")}  # exports to GB/DE/AU carry no sales tax here

FIRST_NAMES = (
    "Emma Olivia Ava Sophia Isabella Mia Charlotte Amelia Harper Evelyn Abigail Emily Ella Elizabeth Camila Luna "
    "Sofia Avery Mila Aria Scarlett Penelope Layla Chloe Victoria Madison Eleanor Grace Nora Riley Zoey Hannah "
    "Hazel Lily Ellie Violet Zoe Stella Aurora Natalie Leah Willow Lucy Audrey Claire Naomi Elena Caroline Anna "
    "Maya Ruby Ivy Alice Hailey Samantha Sarah Quinn Eva Piper Sophie Josephine Clara Julia Priya Aisha Mei "
    "Fatima Ximena Keiko Liam Noah Oliver Elijah James William Benjamin Lucas Henry Theodore Jack Levi Alexander "
    "Jackson Mateo Daniel Michael Mason Sebastian Ethan Logan Owen Samuel Jacob Asher Aiden John Joseph Wyatt "
    "David Leo Luke Julian Hudson Matthew Ezra Gabriel Carter Isaac Anthony Dylan Thomas Miles Caleb Christopher "
    "Andrew Nathan Adrian Cameron Santiago Aaron Ryan Marcus Malik Diego Hiroshi Arjun Omar Wei Tariq Andre"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson "
    "Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis "
    "Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall Rivera "
    "Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins Reyes Stewart "
    "Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed Kelly Howard Ramos Kim "
    "Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo "
    "Sanders Patel Myers Long Ross Foster Jimenez Chen Wang Okafor Sullivan O'Brien Murray Fraser MacDonald"
).split()
DE_FIRST = ("Lukas Leon Finn Jonas Paul Felix Elias Maximilian Ben Noah Jakob Moritz Tim Niklas Tobias Emma Mia "
            "Hannah Sophia Lena Lea Marie Anna Emilia Clara Johanna Greta Julia Laura Katharina").split()
DE_LAST = ("Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Koch Richter Klein Wolf "
           "Schröder Neumann Schwarz Braun Zimmermann Hofmann Krüger Hartmann Lange Werner Krause Lehmann Köhler "
           "Maier Herrmann König").split()
EMAIL_DOMAINS = {
    "US": (("gmail.com", 45), ("yahoo.com", 10), ("icloud.com", 12), ("outlook.com", 8), ("hotmail.com", 7),
           ("aol.com", 3), ("proton.me", 3), ("me.com", 2)),
    "CA": (("gmail.com", 50), ("outlook.com", 10), ("rogers.com", 6), ("shaw.ca", 5), ("icloud.com", 8)),
    "GB": (("gmail.com", 45), ("btinternet.com", 10), ("yahoo.co.uk", 10), ("outlook.com", 8), ("icloud.com", 8)),
    "DE": (("gmail.com", 30), ("gmx.de", 25), ("web.de", 20), ("t-online.de", 10)),
    "AU": (("gmail.com", 45), ("bigpond.com", 12), ("outlook.com", 8), ("icloud.com", 10)),
}

ORDER_HOURS = (2, 1, 1, .5, .5, .7, 1.5, 2.5, 3.5, 4, 4.5, 5, 5.5, 5, 4.5, 4.5, 4.5, 5, 5.5, 6.5, 7, 6.5, 5, 3.5)
SEASON = {1: .8, 2: .75, 3: .9, 4: 1, 5: 1.05, 6: 1.15, 7: 1.1, 8: 1, 9: .95, 10: 1.05, 11: 1.5, 12: 1.7}

_GSM7 = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
            "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM7_EXT = set("^{}\\[~]|€\f")
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def is_seeded(session, domain: str) -> bool:
    """True when a demo shop with this domain exists (seeding commits once, so it is complete)."""
    found = session.execute(select(Shop.id).where(Shop.domain == domain, Shop.is_demo.is_(True))).first()
    return found is not None


def clear(session, domain: str) -> bool:
    """Delete a demo shop and every row it owns; False when there is no such demo shop. Commits."""
    shop_id = session.execute(select(Shop.id).where(Shop.domain == domain, Shop.is_demo.is_(True))).scalar()
    if shop_id is None:
        return False
    before_deleting_subscribers(session, shop_id)  # before any row lock: see models/subscriber_key.py
    # Children first: cascades would work too, but SQLite checks unindexed FKs row by row on a cascade.
    for table in reversed(Base.metadata.sorted_tables):
        if "shop_id" in table.c:
            session.execute(table.delete().where(table.c.shop_id == shop_id).execution_options(all_shops=True))
    session.execute(Shop.__table__.delete().where(Shop.__table__.c.id == shop_id))
    session.commit()
    # The session may still hold loaded objects of the deleted rows, and SQLite reuses ids: drop them.
    # (Expired ones are harmless: they reload by primary key.) No attribute access, so nothing reloads here.
    for obj in list(session.identity_map.values()):
        state = inspect(obj)
        if (isinstance(obj, Shop) and state.identity == (shop_id,)) or state.dict.get("shop_id") == shop_id:
            session.expunge(obj)
    return True


def seed(session, *, domain: str = "kinnekt-demo.myshopify.com", now: dt.datetime, customers: int = 3000,
         seed: int = 20261122, link_base: str | None = None) -> Shop:
    """Create the demo shop with its catalog, customers, orders, subscribers, segments and campaigns, and its
    customers' lifecycle stages; commits, then gathers the planner's statistics (kinnekt/db_statistics.py).

    The same arguments always give the same rows: every random choice comes from `random.Random` seeded with
    `seed`, and every time is relative to `now` (an aware datetime). Short links in the seeded texts live under
    `link_base` (default: the app's public URL, as links.short_url makes them), so they open in the demo.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    if customers < 0:
        raise ValueError("customers must be >= 0")
    if session.execute(select(Shop.id).where(Shop.domain == domain)).first() is not None:
        raise ValueError(f"a shop with domain {domain!r} already exists")
    store = _DemoStore(domain, now.astimezone(UTC), customers, seed)
    store.link_base = (link_base if link_base is not None else links.public_base()).rstrip("/") + "/r/"
    store.build()
    shop = store.write(session)
    from kinnekt.segments import lifecycle
    # Stages and expected next orders once, as the daily job would; no segment reads them yet (the demo's own
    # segments are built after seeding), so no re-check is queued.
    lifecycle.update_shop(session, shop, now=now, recheck=False)
    from kinnekt import db_statistics
    db_statistics.analyze(session)  # thousands of rows just arrived: the planner needs to know (SQLite never asks)
    return shop


_SHORT_LINK = re.compile(r"(https?://[^\s/]+(?:/[^\s]*?)?)/r/[A-Za-z0-9]+")


def rebase_links(session, domain: str, base: str) -> int:
    """Point the demo shop's texts (messages and the Outbox) at short links under `base`; commits.

    The demo database outlives a run: texts seeded or sent while it was served at another address keep that
    address, where nothing answers now. Returns how many bases were rewritten (0 when all were current).
    """
    shop_id = session.execute(select(Shop.id).where(Shop.domain == domain, Shop.is_demo.is_(True))).scalar()
    if shop_id is None:
        return 0
    new = base.rstrip("/") + "/r/"
    tables = ((Message.__table__, Message.__table__.c.body), (OutboxMessage.__table__, OutboxMessage.__table__.c.text))
    old_bases: set[str] = set()
    for table, column in tables:
        for (text,) in session.execute(select(column).where(table.c.shop_id == shop_id, column.like("%/r/%"))
                                       .execution_options(all_shops=True)):
            old_bases.update(m.group(1) + "/r/" for m in _SHORT_LINK.finditer(text or ""))
    old_bases.discard(new)
    for old in sorted(old_bases):
        for table, column in tables:
            session.execute(table.update().where(table.c.shop_id == shop_id, column.contains(old, autoescape=True))
                            .values({column.name: func.replace(column, old, new)}).execution_options(all_shops=True))
    session.commit()
    return len(old_bases)


# --- small helpers -------------------------------------------------------------------------------------------

def _cents(value) -> Decimal:
    return Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def _email_part(name: str) -> str:
    for src, dst in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("Ä", "ae"), ("Ö", "oe"), ("Ü", "ue")):
        name = name.replace(src, dst)
    return re.sub(r"[^a-z]", "", unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower())


def _pick(rng: random.Random, weighted):
    """One item from ((item, weight), ...)."""
    items = [item for item, _ in weighted]
    return rng.choices(items, weights=[w for _, w in weighted])[0]


def _quota(rng: random.Random, n: int, weights: dict) -> list:
    """n labels in proportion to weights (largest remainder), each present once n allows it, shuffled."""
    total = sum(weights.values())
    raw = {k: n * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    if n >= len(weights):
        for k in counts:
            counts[k] = max(counts[k], 1)
    by_remainder = sorted(weights, key=lambda k: (-(raw[k] - int(raw[k])), list(weights).index(k)))
    i = 0
    while sum(counts.values()) < n:
        counts[by_remainder[i % len(by_remainder)]] += 1
        i += 1
    while sum(counts.values()) > n:
        largest = max(counts, key=lambda k: (counts[k], -list(weights).index(k)))
        counts[largest] -= 1
    out = [k for k in weights for _ in range(counts[k])]
    rng.shuffle(out)
    return out


def _sms_parts(text: str) -> tuple[str, int]:
    """The encoding ("gsm7" or "ucs2") and the number of SMS parts a text needs."""
    if all(c in _GSM7 or c in _GSM7_EXT for c in text):
        units, single, multi, enc = [2 if c in _GSM7_EXT else 1 for c in text], 160, 153, "gsm7"
    else:
        units, single, multi, enc = [2 if ord(c) > 0xFFFF else 1 for c in text], 70, 67, "ucs2"
    if sum(units) <= single:
        return enc, 1
    parts, used = 1, 0
    for u in units:  # never split an escape pair or a surrogate pair
        if used + u > multi:
            parts, used = parts + 1, 0
        used += u
    return enc, parts


def _phone_facts(e164: str) -> tuple[str | None, str | None, str | None]:
    """Country, carrier (by prefix) and first time zone of a number, as the subscriber record keeps them."""
    number = phonenumbers.parse(e164)
    country = phonenumbers.region_code_for_number(number)
    carrier_name = pn_carrier.name_for_number(number, "en") or None
    zones = pn_timezone.time_zones_for_number(number)
    zone = zones[0] if zones and zones[0] != "Etc/Unknown" else None
    return country, carrier_name, zone


class _Phones:
    """Valid, unique mobile numbers with a matching city, per country."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()

    def new(self, country: str) -> tuple[str, str]:
        rng = self.rng
        for _ in range(200):
            if country in ("US", "CA"):
                area, city = _pick(rng, [((a, c), w) for a, c, w in (US_AREAS if country == "US" else CA_AREAS)])
                exchange = rng.randint(200, 999)
                if exchange % 100 == 11 or exchange == 555:
                    continue
                digits, region = f"+1{area}{exchange}{rng.randint(0, 9999):04d}", country
            elif country == "GB":
                digits, city = f"+447{rng.choice('45789')}{rng.randint(0, 99_999_999):08d}", _pick(rng, GB_CITIES)
            elif country == "DE":
                prefix = rng.choice(("151", "152", "157", "160", "162", "170", "171", "172", "173", "174", "175",
                                     "176", "177", "178", "179"))
                width = 7 if prefix.startswith(("16", "17")) and rng.random() < 0.5 else 8
                digits, city = f"+49{prefix}{rng.randint(0, 10 ** width - 1):0{width}d}", _pick(rng, DE_CITIES)
            else:
                digits, city = f"+614{rng.randint(0, 99_999_999):08d}", _pick(rng, AU_CITIES)
            if digits in self.used:
                continue
            number = phonenumbers.parse(digits)
            if phonenumbers.is_valid_number(number) and phonenumbers.region_code_for_number(number) == country:
                self.used.add(digits)
                return digits, city
        raise RuntimeError(f"could not make a valid {country} number")  # pragma: no cover


def _sku(handle: str, label: str | None) -> str:
    """A demo variant's SKU: NW-, the product handle's initials, then the variant's option values."""
    initials = "".join(word[0] for word in handle.split("-") if word).upper()
    options = "-".join(part.strip().replace(" ", "").upper() for part in (label or "").split("/") if part.strip())
    return "-".join(part for part in ("NW", initials, options) if part)[:255]


def _insert(session, model, rows: list[dict], returning: tuple[str, ...] = ()):
    """Bulk insert one shop's rows (Core executemany) and return `returning` columns of all its rows in the table.

    Refuses rows that leave out a column whose default is a call (a clock), so the data stays deterministic.
    """
    if not rows:
        return []
    table = model.__table__
    keys = rows[0].keys()
    for column in table.c:
        default = column.default
        if column.name not in keys and default is not None and default.is_callable and not column.primary_key \
                and "folded_from" not in column.info:  # a folded copy is computed from its row, not a clock
            raise AssertionError(f"{table.name}.{column.name} must be given explicitly (its default is a call)")
    session.execute(table.insert(), rows)
    if not returning:
        return []
    # Reading the new ids back is much faster on PostgreSQL than executemany with RETURNING.
    query = select(*(table.c[name] for name in returning)).where(table.c.shop_id == rows[0]["shop_id"])
    return session.execute(query.execution_options(all_shops=True)).all()


# --- the store ----------------------------------------------------------------------------------------------

class _DemoStore:
    """Builds every row of the demo shop in memory (plain dicts; helper keys start with "_"), then writes them."""

    def __init__(self, domain: str, now: dt.datetime, n_customers: int, seed: int):
        self.domain, self.now, self.n_customers, self.seed = domain, now, n_customers, seed
        self.t0 = now.replace(microsecond=0)
        self.start = self.t0 - dt.timedelta(days=730)
        self.installed_at = self.t0 - dt.timedelta(days=540, hours=3, minutes=12, seconds=41)
        self.tz = ZoneInfo(SHOP_TIMEZONE)
        self.codes: set[str] = set()
        self.provider_ids: set[str] = set()
        self.order_seq = 0

    def rng(self, part: str) -> random.Random:
        """An independent stream per part, so changing one part leaves the others as they were."""
        return random.Random(f"{self.seed}:{part}")

    def unique_rng(self, part: str) -> random.Random:
        """A stream for values unique across the whole database (link codes, provider ids): mixes in the domain."""
        return random.Random(f"{self.seed}:{self.domain}:{part}")

    # time helpers

    def shop_time(self, rng: random.Random, lo: dt.datetime, hi: dt.datetime, seasonal: bool = False) -> dt.datetime:
        """A moment in [lo, hi] at a plausible local shopping hour, optionally weighted by season."""
        span = max(int((hi - lo).total_seconds()), 1)
        for _ in range(12):
            moment = lo + dt.timedelta(seconds=rng.randrange(span))
            local = moment.astimezone(self.tz)
            if seasonal and rng.random() > SEASON[local.month] / 1.7:
                continue
            break
        hour = rng.choices(range(24), weights=ORDER_HOURS)[0]
        local_dt = dt.datetime(local.year, local.month, local.day, hour, rng.randrange(60), rng.randrange(60),
                               tzinfo=self.tz)
        candidate = local_dt.astimezone(UTC)
        return candidate if lo <= candidate <= hi else moment

    def clamp(self, moment: dt.datetime) -> dt.datetime:
        return min(moment, self.t0)

    # build

    def build(self) -> None:
        self.build_catalog()
        self.build_customers()
        self.build_orders()
        self.ensure_order_exceptions()
        self.build_keywords()
        self.build_subscribers()
        self.build_campaigns()
        self.finish_orders()
        self.build_attributions()
        self.build_checkouts()
        self.build_customer_facts()
        self.build_segments()
        self.build_outbox()

    def build_catalog(self) -> None:
        rng = self.rng("catalog")
        self.collections = []
        cid = 4_310_000_000_000 + rng.randrange(10_000_000_000)
        by_title = {}
        for title in COLLECTIONS:
            cid += rng.randint(1_000_000, 90_000_000)
            handle = _slug(title)
            synced = self.installed_at + dt.timedelta(minutes=2, seconds=rng.randrange(60))
            col = {"shopify_id": cid, "title": title, "handle": handle, "_members": []}
            self.collections.append(col)
            by_title[title] = col
        self.products = []
        pid = 8_410_000_000_000 + rng.randrange(10_000_000_000)
        vid = 45_120_000_000_000 + rng.randrange(10_000_000_000)
        for title, price, sizes, colors, cols, weight, life in PRODUCTS:
            pid += rng.randint(5_000_000, 400_000_000)
            if life == "core":
                launched = self.start - dt.timedelta(days=rng.randint(30, 500))
            elif life == "mid":
                launched = self.start + dt.timedelta(days=rng.randint(120, 420))
            elif life == "new":
                launched = self.t0 - dt.timedelta(days=rng.randint(25, 100))
            else:
                launched = self.start - dt.timedelta(days=rng.randint(100, 300))
            launched += dt.timedelta(seconds=rng.randrange(86_400))
            retired = self.t0 - dt.timedelta(days=rng.randint(280, 330)) if life == "archived" else None
            variants = []
            if title == "Northwind Gift Card":
                for label in sizes:
                    vid += rng.randint(1, 40)
                    variants.append((vid, label, Decimal(label[1:] + ".00")))
            else:
                for color in colors or (None,):
                    for size in sizes or (None,):
                        vid += rng.randint(1, 40)
                        label = " / ".join(p for p in (color, size) if p) or None
                        variants.append((vid, label, Decimal(price)))
            updated = min(self.t0 - dt.timedelta(hours=rng.randint(2, 2000)),
                          max(launched, retired or launched) + dt.timedelta(days=rng.randint(1, 200)))
            updated = max(updated, launched)
            synced = max(self.installed_at, launched) + dt.timedelta(minutes=1, seconds=rng.randrange(300))
            product = {
                "shopify_id": pid, "title": title, "handle": _slug(title),
                "status": "archived" if life == "archived" else "active", "image_url": None,
                "shopify_updated_at": updated, "created_at": synced, "updated_at": max(synced, updated),
                "_variants": variants, "_weight": weight, "_from": launched,
                "_until": retired or self.t0 + dt.timedelta(days=1),
            }
            self.products.append(product)
            for col_title in cols:
                by_title[col_title]["_members"].append(product)
        for col in self.collections:
            newest = max(p["_from"] for p in col["_members"])
            col["shopify_updated_at"] = min(self.t0, newest + dt.timedelta(hours=rng.randint(1, 72)))
            col["created_at"] = max(self.installed_at, newest) + dt.timedelta(minutes=2)
            col["updated_at"] = max(col["created_at"], col["shopify_updated_at"])

    def build_customers(self) -> None:
        rng = self.rng("customers")
        self.phones = _Phones(self.rng("phones"))
        emails: set[str] = set()
        countries = _quota(rng, self.n_customers, COUNTRY_MIX)
        span = (self.t0 - self.start - dt.timedelta(hours=2)).total_seconds()
        people = []
        for country in countries:
            first = rng.choice(DE_FIRST if country == "DE" else FIRST_NAMES)
            last = rng.choice(DE_LAST if country == "DE" else LAST_NAMES)
            created = self.start + dt.timedelta(seconds=int(span * rng.random() ** 0.8))
            if rng.random() < 0.8:
                phone, city = self.phones.new(country)
            else:
                phone, city = None, self._city(rng, country)
            f, l = _email_part(first), _email_part(last)
            for attempt in range(50):
                local = rng.choice((f"{f}.{l}", f"{f}{l}", f"{f[0]}{l}", f"{f}.{l}{rng.randint(1, 99)}",
                                    f"{f}{l}{rng.randint(70, 99)}", f"{f}_{l}"))
                if attempt > 5:
                    local += str(rng.randint(100, 9999))
                email = f"{local}@{_pick(rng, EMAIL_DOMAINS[country])}"
                if email not in emails:
                    emails.add(email)
                    break
            if rng.random() < 0.015:
                n_orders = rng.randint(6, 16)  # the loyal few
            elif rng.random() < 0.2:
                n_orders = 0
            else:
                n_orders = 1
                while rng.random() < 0.5 and n_orders < 25:
                    n_orders += 1
            tags = set()
            if rng.random() < 0.35:
                tags.add("newsletter")
            wholesale = rng.random() < 0.015
            if wholesale:
                tags.add("wholesale")
            acquisition = rng.random()
            if acquisition < 0.08:
                tags.add("instagram")
            elif acquisition < 0.13:
                tags.add("referral")
            elif acquisition < 0.17:
                tags.add("tiktok")
            people.append({
                "email": email, "phone": phone, "first_name": first, "last_name": last, "city": city,
                "country_code": country, "shopify_created_at": created,
                "_n_orders": n_orders, "_tags": tags, "_wholesale": wholesale, "_orders": [], "_sub": None,
            })
        people.sort(key=lambda c: (c["shopify_created_at"], c["email"]))
        cid = 6_920_000_000_000 + rng.randrange(10_000_000_000)
        for person in people:
            cid += rng.randint(2_000_000, 60_000_000)
            person["shopify_id"] = cid
        self.customers = people

    def _city(self, rng: random.Random, country: str) -> str:
        if country in ("US", "CA"):
            return _pick(rng, [(c, w) for _, c, w in (US_AREAS if country == "US" else CA_AREAS)])
        return _pick(rng, {"GB": GB_CITIES, "DE": DE_CITIES, "AU": AU_CITIES}[country])

    def build_orders(self) -> None:
        rng = self.rng("orders")
        self.orders = []
        for customer in self.customers:
            n = customer["_n_orders"]
            if not n:
                continue
            created = customer["shopify_created_at"]
            if rng.random() < 0.8:
                first = created + dt.timedelta(minutes=rng.randint(1, 40))
            else:
                first = self.shop_time(rng, created, min(self.t0, created + dt.timedelta(days=60)))
            first = min(first, self.t0 - dt.timedelta(minutes=5))
            # Repeat purchases come after a gap (shorter for the loyal, and in the holiday season); a customer
            # who arrived lately has not had the time for all of them yet.
            mean_gap = 40.0 if n >= 6 else 110.0
            times, at = [first], first
            while len(times) < n:
                season = SEASON[at.astimezone(self.tz).month]
                gap = max(2 * 86_400, int(rng.expovariate(season / mean_gap) * 86_400))
                at += dt.timedelta(seconds=gap)
                if at >= self.t0 - dt.timedelta(hours=1):
                    break
                at = self.shop_time(rng, at, min(self.t0, at + dt.timedelta(days=1)))
                times.append(at)
            for i, at in enumerate(times):
                self.make_order(rng, at, customer, first_order=i == 0)
        guests = round(len(self.orders) * 0.012)
        for _ in range(guests):
            at = self.shop_time(rng, self.start, self.t0, seasonal=True)
            self.make_order(rng, at, None, first_order=True)

    def ensure_order_exceptions(self) -> None:
        """Make sure even a small store has a test order, a cancelled one and one without a current total."""
        rng = self.rng("order-exceptions")
        owned = [o for o in self.orders if o["_customer"] and not o["test"] and o["cancelled_at"] is None]
        if owned and not any(o["test"] for o in self.orders):
            order = rng.choice(owned)
            order.update(test=True, financial_status="paid", current_total_price=order["total_price"])
            owned.remove(order)
        old_enough = [o for o in owned if self.t0 - o["created_at"] > dt.timedelta(hours=3)]
        if old_enough and not any(o["cancelled_at"] for o in self.orders):
            order = rng.choice(old_enough)
            cancelled = self.clamp(order["created_at"] + dt.timedelta(minutes=rng.randint(30, 2400)))
            order.update(cancelled_at=cancelled, financial_status="voided", fulfillment_status="unfulfilled",
                         current_total_price=ZERO, shopify_updated_at=cancelled, updated_at=cancelled)
            owned.remove(order)
        synced_early = [o for o in owned if o["financial_status"] == "paid"
                        and self.t0 - o["created_at"] > dt.timedelta(days=540)]
        if synced_early and not any(o["current_total_price"] is None for o in self.orders):
            rng.choice(synced_early)["current_total_price"] = None

    def make_order(self, rng: random.Random, at: dt.datetime, customer: dict | None, *, first_order: bool,
                   code: str | None = None, landing: str | None = None, campaign_order: bool = False) -> dict:
        """Build one order with line items, money and statuses as Shopify would report them by now."""
        country = customer["country_code"] if customer else "US"
        available = [p for p in self.products if p["_from"] <= at < p["_until"]]
        n_lines = min(rng.choices((1, 2, 3, 4), weights=(60, 27, 10, 3))[0], len(available))
        picked = []
        pool = list(available)
        for _ in range(n_lines):
            product = rng.choices(pool, weights=[p["_weight"] for p in pool])[0]
            pool.remove(product)
            picked.append(product)
        lines = []
        for product in picked:
            variant_id, variant_title, price = rng.choice(product["_variants"])
            if customer and customer["_wholesale"]:
                qty = rng.randint(3, 8)
            else:
                qty = rng.choices((1, 2, 3), weights=(88, 9, 3))[0]
            lines.append({"product_id": product["shopify_id"], "variant_id": variant_id, "title": product["title"],
                          "variant_title": variant_title, "quantity": qty, "price": price})
        subtotal = sum((line["price"] * line["quantity"] for line in lines), ZERO)

        if code is None and not campaign_order:
            summer = at.astimezone(self.tz).month in (6, 7, 8)
            loyal = customer is not None and customer["_n_orders"] >= 5
            roll = rng.random()  # disjoint bands: about one order in five carries a code
            if first_order and roll < 0.25:
                code = "WELCOME10"
            elif summer and roll >= 0.9:
                code = "SUMMER20"
            elif loyal and 0.8 <= roll < 0.9:
                code = "VIP15"
            elif 0.74 <= roll < 0.8:
                code = "TAKE10" if subtotal >= 75 else "FREESHIP"
        kind, value = DISCOUNTS[code] if code else (None, None)
        item_discount = ZERO
        if kind == "percentage":
            item_discount = _cents(subtotal * value / 100)
        elif kind == "fixed_amount":
            item_discount = min(_cents(value), subtotal)
        goods = subtotal - item_discount
        if country == "US":
            shipping = ZERO if goods >= 100 else Decimal("8.00")
        elif country == "CA":
            shipping = ZERO if goods >= 150 else Decimal("15.00")
        else:
            shipping = ZERO if goods >= 200 else Decimal("25.00")
        if code == "FREESHIP" and shipping == ZERO:
            code, kind = None, None  # nothing to waive: the code would not have been entered
        ship_discount = shipping if kind == "shipping" else ZERO
        tax = _cents(goods * TAX_RATES.get(country, ZERO))
        total = goods + shipping - ship_discount + tax
        discounts = item_discount + ship_discount
        discount_codes = [{"code": code, "amount": str(discounts), "type": kind}] if code else []

        age = self.t0 - at
        cancelled_at = None
        test = (not campaign_order) and rng.random() < 0.004
        current = total
        roll = rng.random()
        if not test and not campaign_order and age > dt.timedelta(hours=3) and roll < 0.018:
            cancelled_at = self.clamp(at + dt.timedelta(minutes=rng.randint(30, 2400)))
            financial = "voided" if rng.random() < 0.6 else "refunded"
            fulfillment, current = "unfulfilled", ZERO
        elif test:
            financial, fulfillment = "paid", rng.choice(("fulfilled", "unfulfilled"))
        elif age < dt.timedelta(days=2):
            financial = rng.choices(("paid", "authorized", "pending"), weights=(72, 22, 6))[0]
            fulfilled_share = 0.0 if age < dt.timedelta(hours=20) else 0.45
            fulfillment = "fulfilled" if rng.random() < fulfilled_share else "unfulfilled"
        else:
            recent = age < dt.timedelta(days=7)
            financial = rng.choices(
                ("paid", "partially_refunded", "refunded", "pending", "authorized", "partially_paid", "expired"),
                weights=(90, 2, 1, 2, 5, 0, 0) if recent else (87.8, 4.5, 3.5, 1.3, 1.2, 0.8, 0.9))[0]
            fulfillment = rng.choices(("fulfilled", "partially_fulfilled", "unfulfilled"),
                                      weights=(85, 5, 10) if recent else (95.5, 2, 2.5))[0]
            if financial == "refunded":
                current = ZERO
                fulfillment = "fulfilled" if rng.random() < 0.6 else "unfulfilled"
            elif financial == "partially_refunded":
                if len(lines) > 1:
                    line = rng.choice(lines)
                    share = line["price"] * line["quantity"] / subtotal
                    refund = _cents((goods * share) * (1 + TAX_RATES.get(country, ZERO)))
                else:
                    refund = _cents(total * Decimal(rng.randint(15, 50)) / 100)
                current = max(total - refund, Decimal("0.01"))
        if financial == "paid" and age > dt.timedelta(days=540) and rng.random() < 0.03:
            current = None  # old orders synced before Shopify reported a current total

        if cancelled_at:
            updated = cancelled_at
        elif financial in ("refunded", "partially_refunded"):
            updated = at + dt.timedelta(days=rng.randint(5, 30), minutes=rng.randint(0, 600))
        elif fulfillment == "fulfilled":
            updated = at + dt.timedelta(hours=rng.randint(4, 96))
        else:
            updated = at + dt.timedelta(minutes=rng.randint(1, 30))
        updated = self.clamp(max(updated, at))

        if landing is None:
            roll = rng.random()
            if roll < 0.4:
                landing = "/"
            elif roll < 0.65:
                landing = "/collections/" + rng.choice(self.collections)["handle"]
            else:
                landing = "/products/" + rng.choice(picked)["handle"]
            roll = rng.random()
            if roll < 0.1:
                landing += "?utm_source=instagram&utm_medium=social"
            elif roll < 0.15:
                landing += "?utm_source=google&utm_medium=cpc"
        source = "web" if campaign_order else rng.choices(
            ("web", "pos", "shopify_draft_order", "iphone", "android"), weights=(86, 6, 3, 3, 2))[0]
        if customer is None:
            guest_first, guest_last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            email = f"{_email_part(guest_first)}.{_email_part(guest_last)}{rng.randint(1, 99)}@gmail.com"
        self.order_seq += 1
        order = {
            "email": customer["email"] if customer else email, "phone": customer["phone"] if customer else None,
            "created_at": at, "shopify_updated_at": updated, "updated_at": updated, "cancelled_at": cancelled_at,
            "test": test, "financial_status": financial, "fulfillment_status": fulfillment, "currency": "USD",
            "total_price": total, "current_total_price": current, "total_discounts": discounts,
            "discount_codes": discount_codes, "landing_site": landing, "source_name": source,
            "_customer": customer, "_lines": lines, "_seq": self.order_seq,
        }
        self.orders.append(order)
        if customer is not None:
            customer["_orders"].append(order)
        return order

    def build_keywords(self) -> None:
        rng = self.rng("keywords")
        self.keywords = {}
        for word, after_days, reply, share in KEYWORDS:
            created = self.installed_at + dt.timedelta(days=after_days, minutes=rng.randint(10, 600))
            self.keywords[word] = {"word": word, "reply_text": reply, "active": True, "created_at": created,
                                   "updated_at": created + dt.timedelta(minutes=rng.randint(0, 30)),
                                   "_share": share}

    def build_subscribers(self) -> None:
        rng = self.rng("subscribers")
        n = self.n_customers
        with_phone = [c for c in self.customers if c["phone"]]
        # Buyers subscribe more often than browsers (weighted sampling without replacement).
        keyed = sorted(with_phone, key=lambda c: rng.random() ** (1 / (2.0 if c["_orders"] else 1.0)), reverse=True)
        linked = keyed[:min(round(n * 0.45), len(keyed))]
        subs = []
        for customer in linked:
            sub = {"phone": customer["phone"], "first_name": customer["first_name"], "_customer": customer}
            customer["_sub"] = sub
            subs.append(sub)
        countries = _quota(rng, round(n * 0.1), {"US": 88, "CA": 4, "GB": 3, "DE": 2, "AU": 3})
        for country in countries:
            phone, _ = self.phones.new(country)
            first = rng.choice(DE_FIRST if country == "DE" else FIRST_NAMES) if rng.random() < 0.45 else None
            subs.append({"phone": phone, "first_name": first, "_customer": None})

        # Checkout consent needs an order placed after install.
        quota_checkout = round(len(subs) * 0.2)
        eligible = [s for s in subs if s["_customer"] and any(
            o["created_at"] >= self.installed_at and not o["test"] for o in s["_customer"]["_orders"])]
        rng.shuffle(eligible)
        checkout = eligible[:quota_checkout]
        for sub in checkout:
            order = rng.choice([o for o in sub["_customer"]["_orders"]
                                if o["created_at"] >= self.installed_at and not o["test"]])
            sub["source"], sub["_order"], sub["_consent"] = "checkout", order, order["created_at"]
        rest = [s for s in subs if "source" not in s]
        for sub, source in zip(rest, _quota(rng, len(rest), {"keyword": 27, "mobile_popup": 33,
                                                              "shareable_link": 11, "import": 12, "manual": 5})):
            sub["source"] = source

        import_batches = (self.installed_at + dt.timedelta(days=2, hours=3), self.installed_at +
                          dt.timedelta(days=96, hours=5))
        for sub in subs:
            source = sub["source"]
            customer = sub["_customer"]
            lo = self.installed_at + dt.timedelta(days=1)
            if customer:
                lo = max(lo, customer["shopify_created_at"])
            if source == "import":
                batch = import_batches[0] if rng.random() < 0.8 else import_batches[1]
                if customer and customer["shopify_created_at"] > batch:
                    batch = import_batches[1] if customer["shopify_created_at"] <= import_batches[1] else None
                if batch is None:
                    source = sub["source"] = "manual"
                else:
                    sub["_consent"] = batch - dt.timedelta(days=rng.randint(20, 400))
                    sub["_joined"] = batch + dt.timedelta(seconds=rng.randrange(600))
            if source != "checkout" and "_joined" not in sub:
                moment = lo + dt.timedelta(seconds=int((self.t0 - lo).total_seconds() * rng.random() ** 0.75))
                moment = self.shop_time(rng, max(lo, moment - dt.timedelta(hours=12)),
                                        min(self.t0 - dt.timedelta(minutes=10), moment + dt.timedelta(hours=12)))
                sub["_consent"] = moment
            if source == "keyword":
                options = [(w, k["_share"]) for w, k in self.keywords.items() if k["created_at"] <= sub["_consent"]]
                if not options:
                    sub["_consent"] = self.keywords["JOIN"]["created_at"] + dt.timedelta(hours=rng.randint(1, 200))
                    options = [("JOIN", 1)]
                sub["keyword"] = _pick(rng, options)
            if source == "checkout":
                sub["_joined"] = sub["_consent"]
            elif source in ("keyword", "manual"):
                sub["_joined"] = sub["_consent"] + dt.timedelta(seconds=rng.randint(1, 5))
            elif source in ("mobile_popup", "shareable_link"):
                sub["_joined"] = sub["_consent"] + dt.timedelta(seconds=rng.randint(40, 900))

        # Statuses: pending only where double opt-in applies; everyone else subscribed, some left since.
        opt_in = [s for s in subs if s["source"] in ("mobile_popup", "shareable_link")]
        rng.shuffle(opt_in)
        pending = opt_in[:max(1, round(len(subs) * 0.035))] if opt_in else []
        for sub in pending:
            sub["status"] = "pending"
        for sub in subs:
            sub["_joined"] = min(sub["_joined"], self.t0)  # a confirmation reply cannot come after now
        others = [s for s in subs if "status" not in s and s["_joined"] < self.t0 - dt.timedelta(hours=1)]
        rng.shuffle(others)
        leaving = others[:max(1, round(len(subs) * 0.09))] if len(others) > 1 else []
        campaign_times = [self.campaign_time(days) for _, days, *_ in CAMPAIGNS]
        for sub in subs:
            sub.setdefault("status", "subscribed")
        for sub in leaving:
            sub["status"] = "unsubscribed"
            joined = sub["_joined"]
            after = [t for t in campaign_times if t > joined]
            if after and rng.random() < 0.65:
                left = rng.choice(after) + dt.timedelta(minutes=rng.randint(2, 180))
            else:
                left = joined + dt.timedelta(seconds=int((self.t0 - joined).total_seconds() * rng.random()))
            sub["_left"] = min(max(left, joined + dt.timedelta(minutes=1)), self.t0 - dt.timedelta(minutes=1))
            if sub["source"] == "checkout" and rng.random() < 0.3:
                sub["_left_how"] = "Withdrew SMS consent in Shopify"
            elif rng.random() < 0.1:
                sub["_left_how"] = "Removed by store staff"
            else:
                sub["_left_how"] = "Replied " + _pick(rng, (("STOP", 80), ("Stop", 8), ("UNSUBSCRIBE", 6),
                                                              ("CANCEL", 4), ("END", 2)))
        # A few numbers that stopped working: every send fails for good; the second failure suppresses them.
        live = [s for s in subs if s["status"] == "subscribed"]
        for sub in live:
            sub["_dead"] = False
        rng.shuffle(live)
        for sub in live[:max(1, round(len(live) * 0.008))]:
            sub["_dead"] = True

        subs.sort(key=lambda s: (s["_consent"], s["phone"]))
        ip_rng = self.rng("consent-ip")
        for sub in subs:
            country, carrier_name, zone = _phone_facts(sub["phone"])
            source = sub["source"]
            word = sub.get("keyword")
            consent_text = CONSENT_TEXTS[source].format(word=word)
            sub.update({
                "status": sub["status"], "source": source, "keyword": word, "country": country,
                "carrier": carrier_name, "timezone": zone, "consent_at": sub["_consent"], "consent_text": consent_text,
                "consent_ip": None, "consent_message_id": None,
                "subscribed_at": None if sub["status"] == "pending" else sub["_joined"],
                "unsubscribed_at": sub.get("_left"), "unsubscribe_reason": sub.get("_left_how"),
                "suppressed_at": None, "suppressed_reason": None,
                "sent_count": 0, "clicks_count": 0, "last_received_at": None, "last_clicked_at": None,
                "_messages": [], "_clicks": [],
            })
            if source in ("mobile_popup", "shareable_link"):
                if ip_rng.random() < 0.85:
                    sub["consent_ip"] = (f"{ip_rng.choice(('192.0.2', '198.51.100', '203.0.113'))}."
                                         f"{ip_rng.randint(1, 254)}")
                else:
                    sub["consent_ip"] = f"2001:db8:{ip_rng.randrange(0x10000):x}::{ip_rng.randrange(0x10000):x}"
        self.subscribers = subs

    def campaign_time(self, days_ago: int) -> dt.datetime:
        """A campaign's send time: 10 or 11 a.m. in New York, `days_ago` days before now."""
        day = (self.t0 - dt.timedelta(days=days_ago)).date()
        return dt.datetime(day.year, day.month, day.day, 15, 0, tzinfo=UTC)

    def in_segment(self, sub: dict, key: str) -> bool:
        if key == "all":
            return True
        if key.startswith("keyword:"):
            return sub["source"] == "keyword" and sub["keyword"] == key.split(":", 1)[1]
        return sub["source"] == key

    def deferred(self, sub: dict, moment: dt.datetime) -> dt.datetime | None:
        """The end of the recipient's quiet hours (21:00-08:00 local) when `moment` falls inside them."""
        zone = ZoneInfo(sub["timezone"] or SHOP_TIMEZONE)
        local = moment.astimezone(zone)
        minutes = local.hour * 60 + local.minute
        if 8 * 60 <= minutes < 21 * 60:
            return None
        day = local.date() if minutes < 8 * 60 else local.date() + dt.timedelta(days=1)
        return dt.datetime(day.year, day.month, day.day, 8, 0, tzinfo=zone).astimezone(UTC)

    def build_campaigns(self) -> None:
        rng = self.rng("campaigns")
        ids = self.unique_rng("ids")
        self.campaigns, self.messages, self.links, self.clicks = [], [], [], []
        order_rng = self.rng("campaign-orders")
        for name, days, include, exclude, code, path, body, click_rate in CAMPAIGNS:
            started = self.campaign_time(days)
            url = STORE_URL + path
            campaign = {
                "name": name, "body": body.format(url=url), "status": "completed", "enabled": True,
                "send_now": False, "send_at": started, "recipient_local_time": False,
                "discount_mode": "shared" if code else "none", "discount_code": code, "started_at": started,
                "failure_reason": None,
                "created_at": started - dt.timedelta(days=rng.randint(1, 6), hours=rng.randint(0, 8)),
                "_include": include, "_exclude": exclude, "_url": url, "_messages": [],
            }
            recipients = [s for s in self.subscribers
                          if s["subscribed_at"] is not None and s["subscribed_at"] <= started
                          and (s["unsubscribed_at"] is None or s["unsubscribed_at"] > started)
                          and (s["suppressed_at"] is None or s["suppressed_at"] > started)
                          and any(self.in_segment(s, k) for k in include)
                          and not any(self.in_segment(s, k) for k in exclude)]
            finished = started
            for i, sub in enumerate(recipients):
                slot = started + dt.timedelta(seconds=i // 30)  # the provider's 30 messages a second
                due = self.deferred(sub, slot)
                sent = (due + dt.timedelta(seconds=(i % 90) // 3)) if due else slot
                code_chars = self.short_code(ids)
                text = campaign["body"].replace(url, self.link_base + code_chars) + "\nReply STOP to unsubscribe"
                encoding, parts = _sms_parts(text)
                provider_id = self.provider_id(ids)
                message = {
                    "kind": "campaign", "to_phone": sub["phone"], "body": text, "skip_reason": None, "due_at": due,
                    "attempts": 1, "client_ref": None, "provider_id": provider_id, "encoding": encoding,
                    "segments": parts, "price": prices.price_per_part(sub["country"]) * parts,
                    "error_code": None, "error_reason": None, "sent_at": sent, "delivered_at": None,
                    "created_at": started, "_campaign": campaign, "_sub": sub,
                }
                roll = rng.random()
                if sub.get("_dead"):
                    message["status"] = "failed"
                    message["error_code"], message["error_reason"] = PERMANENT_ERROR
                    message["updated_at"] = sent + dt.timedelta(seconds=rng.randint(5, 120))
                    failures = sum(1 for m in sub["_messages"] if m["status"] == "failed") + 1
                    if failures >= 2:
                        sub["suppressed_at"] = message["updated_at"]
                        sub["suppressed_reason"] = "Delivery failed twice: this number no longer works"
                elif roll < 0.02:
                    message["status"] = "failed"
                    message["error_code"], message["error_reason"] = rng.choice(TRANSIENT_ERRORS)
                    message["updated_at"] = sent + dt.timedelta(seconds=rng.randint(5, 3600))
                elif roll < 0.035:
                    message["status"], message["updated_at"] = "sent", sent + dt.timedelta(seconds=1)
                else:
                    message["status"] = "delivered"
                    message["delivered_at"] = sent + dt.timedelta(seconds=rng.randint(2, 40))
                    message["updated_at"] = message["delivered_at"]
                finished = max(finished, sent)
                link = {"code": code_chars, "url": url, "created_at": started, "_message": message}
                self.messages.append(message)
                self.links.append(link)
                sub["_messages"].append(message)
                campaign["_messages"].append(message)
                if message["status"] == "delivered" and rng.random() < click_rate:
                    self.click(rng, order_rng, campaign, sub, link, message, code, path)
                elif (message["status"] == "delivered" and code and sub["_customer"] is not None
                      and order_rng.random() < 0.025):
                    at = self.clamp(sent + dt.timedelta(minutes=order_rng.randint(20, 4 * 24 * 60)))
                    if at > sub["_customer"]["shopify_created_at"] and at < self.t0:
                        self.make_order(order_rng, at, sub["_customer"], first_order=False, code=code,
                                        campaign_order=True)
            campaign["finished_at"] = finished + dt.timedelta(seconds=1)
            campaign["updated_at"] = campaign["finished_at"]
            self.campaigns.append(campaign)

        for sub in self.subscribers:
            accepted = [m for m in sub["_messages"] if m["provider_id"]]
            sub["sent_count"] = len(accepted)
            sub["last_received_at"] = max((m["sent_at"] for m in accepted), default=None)
            sub["clicks_count"] = len(sub["_clicks"])
            sub["last_clicked_at"] = max((c["at"] for c in sub["_clicks"]), default=None)

    def click(self, rng, order_rng, campaign, sub, link, message, code, path) -> None:
        """One or more clicks on a delivered message's link, and sometimes the order that followed."""
        sent = message["delivered_at"]
        first = sent + dt.timedelta(seconds=min(int(rng.lognormvariate(7.0, 1.3)), 2 * 86_400))
        moments = [first]
        if rng.random() < 0.25:
            moments.append(first + dt.timedelta(seconds=int(rng.lognormvariate(8.0, 1.5))))
        agent = _pick(rng, USER_AGENTS)
        for at in moments:
            if at >= self.t0:
                continue
            click = {"at": at, "user_agent": agent, "_link": link, "_campaign": campaign, "_sub": sub}
            self.clicks.append(click)
            sub["_clicks"].append(click)
        customer = sub["_customer"]
        if customer is None or not sub["_clicks"] or sub["_clicks"][-1]["_link"] is not link:
            return
        if order_rng.random() < 0.22:
            at = first + dt.timedelta(seconds=min(int(order_rng.lognormvariate(7.5, 1.6)), 4 * 86_400))
            if customer["shopify_created_at"] < at < self.t0:
                slug = _slug(campaign["name"])
                landing = f"{path}?utm_source=sms&utm_medium=kinnekt&utm_campaign={slug}&kn={link['code']}"
                use_code = code if code and order_rng.random() < 0.7 else None
                self.make_order(order_rng, at, customer, first_order=not customer["_orders"], code=use_code,
                                landing=landing, campaign_order=True)

    def short_code(self, rng: random.Random) -> str:
        while True:
            code = "".join(rng.choice(_ALNUM) for _ in range(8))
            if code not in self.codes:
                self.codes.add(code)
                return code

    def provider_id(self, rng: random.Random) -> str:
        while True:
            value = f"{rng.getrandbits(64):016X}"
            if value not in self.provider_ids:
                self.provider_ids.add(value)
                return value

    def finish_orders(self) -> None:
        """Number the orders in time order (names, Shopify ids), as the shop would have."""
        rng = self.rng("order-ids")
        self.orders.sort(key=lambda o: (o["created_at"], o["_seq"]))
        oid = 5_640_000_000_000 + rng.randrange(10_000_000_000)
        lid = 14_230_000_000_000 + rng.randrange(10_000_000_000)
        for number, order in enumerate(self.orders, start=1001):
            oid += rng.randint(5_000_000, 60_000_000)
            order["shopify_id"], order["name"] = oid, f"#{number}"
            for line in order["_lines"]:
                lid += rng.randint(1_000_000, 30_000_000)
                line["shopify_id"] = lid
        for customer in self.customers:
            customer["_orders"].sort(key=lambda o: (o["created_at"], o["_seq"]))

    def build_attributions(self) -> None:
        """Credit orders to campaigns: the campaign's discount code first, else the last click within the window."""
        window = dt.timedelta(days=5)
        by_code = {c["discount_code"].lower(): c for c in self.campaigns if c["discount_code"]}
        rng = self.rng("attributions")
        self.attributions = []
        for order in self.orders:
            if order["test"] or order["cancelled_at"] is not None:
                continue
            customer = order["_customer"]
            sub = customer["_sub"] if customer else None
            at = order["created_at"]
            campaign, method = None, None
            codes = [d["code"].lower() for d in order["discount_codes"]]
            for code in codes:  # a campaign's code wins over a click, as in kinnekt.campaigns.attribution
                candidate = by_code.get(code)
                if candidate and candidate["started_at"] <= at:
                    campaign, method = candidate, "discount_code"
                    break
            if campaign is None and sub is not None:
                clicks = [c for c in sub["_clicks"] if c["at"] <= at and at - c["at"] <= window]
                if clicks:
                    campaign, method = max(clicks, key=lambda c: c["at"])["_campaign"], "click"
            if campaign is None:
                continue
            revenue = order["current_total_price"] if order["current_total_price"] is not None else order["total_price"]
            self.attributions.append({
                "method": method, "revenue": revenue,
                "attributed_at": at + dt.timedelta(seconds=rng.randint(2, 90)),
                "_order": order, "_campaign": campaign,
                "_sub": sub if method == "click" or (sub and any(
                    m["_campaign"] is campaign for m in sub["_messages"])) else None,
            })

    def build_checkouts(self) -> None:
        rng = self.rng("checkouts")
        tokens = self.unique_rng("checkout-tokens")
        since = self.t0 - dt.timedelta(days=60)
        self.checkouts = []
        for order in self.orders:
            if order["created_at"] < since or order["source_name"] != "web" or order["test"]:
                continue
            started = order["created_at"] - dt.timedelta(minutes=rng.randint(3, 25), seconds=rng.randrange(60))
            self.checkouts.append({
                "token": f"{tokens.getrandbits(128):032x}", "_customer": order["_customer"],
                "phone": order["phone"], "started_at": started, "completed_at": order["created_at"],
                "shopify_updated_at": order["created_at"], "created_at": started, "updated_at": order["created_at"],
            })
        unlinked = [s for s in self.subscribers if s["_customer"] is None]
        for _ in range(round(self.n_customers * 0.06)):
            started = self.shop_time(rng, since, self.t0 - dt.timedelta(minutes=30))
            customer, phone = None, None
            if rng.random() < 0.72 and self.customers:
                customer = rng.choice(self.customers)
                if customer["shopify_created_at"] > started:
                    customer = None
                else:
                    phone = customer["phone"]
            if customer is None and unlinked and rng.random() < 0.5:
                phone = rng.choice(unlinked)["phone"]
            touched = self.clamp(started + dt.timedelta(minutes=rng.randint(1, 40)))
            self.checkouts.append({
                "token": f"{tokens.getrandbits(128):032x}", "_customer": customer, "phone": phone,
                "started_at": started, "completed_at": None, "shopify_updated_at": touched,
                "created_at": started, "updated_at": touched,
            })
        self.checkouts.sort(key=lambda c: (c["started_at"], c["token"]))

    def build_customer_facts(self) -> None:
        """Facts over counted orders (not test, not cancelled), as segment-rules.md "Which orders count" says."""
        rng = self.rng("customer-facts")
        for customer in self.customers:
            counted = [o for o in customer["_orders"] if not o["test"] and o["cancelled_at"] is None]
            customer["money_spent"] = sum(
                (o["current_total_price"] if o["current_total_price"] is not None else o["total_price"]
                 for o in counted), ZERO)
            customer["total_discounts"] = sum((o["total_discounts"] for o in counted), ZERO)
            customer["orders_count"] = len(counted)
            customer["first_order_at"] = counted[0]["created_at"] if counted else None
            customer["last_order_at"] = counted[-1]["created_at"] if counted else None
            if len(counted) >= 2:
                customer["_tags"].add("returning")
            latest = max([customer["shopify_created_at"]] + [o["shopify_updated_at"] for o in customer["_orders"]])
            customer["shopify_updated_at"] = self.clamp(latest + dt.timedelta(minutes=rng.randint(0, 90)))
            customer["created_at"] = max(self.installed_at + dt.timedelta(minutes=1, seconds=rng.randrange(900)),
                                         customer["shopify_created_at"] + dt.timedelta(seconds=rng.randint(1, 20)))
            customer["updated_at"] = max(customer["created_at"], customer["shopify_updated_at"])
            sub = customer["_sub"]
            if customer["phone"] is None:
                customer["sms_consent_state"], customer["sms_consent_updated_at"] = None, None
            elif sub is not None and sub["source"] == "checkout":
                left = sub["status"] == "unsubscribed"
                customer["sms_consent_state"] = "unsubscribed" if left else "subscribed"
                customer["sms_consent_updated_at"] = sub["unsubscribed_at"] if left else sub["subscribed_at"]
            else:
                customer["sms_consent_state"] = "not_subscribed"
                customer["sms_consent_updated_at"] = None
        buyers = sorted((c for c in self.customers if c["orders_count"]),
                        key=lambda c: (c["money_spent"], c["shopify_id"]), reverse=True)
        for customer in buyers[:max(1, round(len(buyers) * 0.05))] if buyers else []:
            customer["_tags"].add("vip")

    def segment_history(self, key: str, created: dt.datetime) -> tuple[list[dict], list[dict]]:
        """The enter/leave log and daily counts an automatic segment created at `created` would have written:
        its first build takes who was subscribed then; later, each subscription enters (a re-check) and each
        unsubscription or suppression leaves. Ends with exactly the segment's members of now."""
        changes = []
        for sub in self.subscribers:
            if sub["subscribed_at"] is None or not self.in_segment(sub, key):
                continue
            left = sub["unsubscribed_at"] if sub["status"] == "unsubscribed" else sub["suppressed_at"]
            if left is not None and left <= created:
                continue  # gone before the segment existed
            entered = max(sub["subscribed_at"], created)
            changes.append((entered, 0 if entered == created else 1, "enter", sub))
            if left is not None:
                changes.append((left, 1, "leave", sub))
        changes.sort(key=lambda c: (c[0], c[1], c[2] == "enter", c[3]["phone"]))
        events = [{"kind": kind, "at": at, "cause": "build" if order == 0 else "recheck", "_sub": sub}
                  for at, order, kind, sub in changes]
        zone = ZoneInfo(SHOP_TIMEZONE)
        by_day: dict[dt.date, tuple[int, dt.datetime]] = {created.astimezone(zone).date(): (0, created)}
        count = 0
        for event in events:
            count += 1 if event["kind"] == "enter" else -1
            by_day[event["at"].astimezone(zone).date()] = (count, event["at"])
        counts = [{"day": day, "member_count": n, "at": at} for day, (n, at) in sorted(by_day.items())]
        return events, counts

    def build_segments(self) -> None:
        rng = self.rng("segments")
        marketable = [s for s in self.subscribers if s["status"] == "subscribed" and s["suppressed_at"] is None]
        self.segments = []

        def auto(name, source, rule, created, keyword=None, key=None):
            members = [s for s in marketable if self.in_segment(s, key or source)]
            history = self.segment_history(key or source, created)
            self.segments.append({
                "name": name, "kind": "auto", "auto_source": source, "_keyword": keyword,
                "definition": {"match": "all", "rules": [rule]}, "has_relative_time": False,
                "member_count": len(members), "build_status": "done", "last_built_at": self.now,
                "build_ms": rng.randint(8, 90), "created_at": created, "updated_at": created,
                "_members": [(s, max(s["subscribed_at"], created)) for s in members], "_key": key or source,
                "_events": history[0], "_counts": history[1],
            })

        for source, name in AUTO_SEGMENTS:
            auto(name, source, {"field": "subscription_source", "op": "eq", "value": source},
                 self.installed_at + dt.timedelta(seconds=rng.randint(5, 60)))
            if source == "all":
                for word, keyword in self.keywords.items():
                    auto(f"Keyword: {word}", "keyword", {"field": "keyword", "op": "eq", "value": word},
                         keyword["created_at"] + dt.timedelta(seconds=1), keyword=keyword, key=f"keyword:{word}")
        for name, days, definition in MANUAL_SEGMENTS:
            created = self.t0 - dt.timedelta(days=days, minutes=rng.randint(0, 600))
            self.segments.append({
                "name": name, "kind": "manual", "auto_source": None, "_keyword": None, "definition": definition,
                "has_relative_time": True, "member_count": 0, "build_status": "pending", "last_built_at": None,
                "build_ms": None, "created_at": created, "updated_at": created, "_members": [], "_key": None,
                "_events": [], "_counts": [],
            })
        by_key = {s["_key"]: s for s in self.segments if s["_key"]}
        for campaign in self.campaigns:
            campaign["_audience"] = ([(by_key[k], "include") for k in campaign["_include"]]
                                     + [(by_key[k], "exclude") for k in campaign["_exclude"]])
        # A draft and a scheduled campaign, so both states show up in the list.
        name, include, path, body = DRAFT_CAMPAIGN
        created = self.t0 - dt.timedelta(days=2, hours=rng.randint(1, 9))
        self.campaigns.append({
            "name": name, "body": body.format(url=STORE_URL + path), "status": "draft", "enabled": True,
            "send_now": False, "send_at": None, "recipient_local_time": False, "discount_mode": "none",
            "discount_code": None, "started_at": None, "finished_at": None, "failure_reason": None,
            "created_at": created, "updated_at": created + dt.timedelta(minutes=rng.randint(3, 50)),
            "_audience": [(by_key[k], "include") for k in include],
        })
        name, include, code, path, body = SCHEDULED_CAMPAIGN
        created = self.t0 - dt.timedelta(days=1, hours=rng.randint(1, 9))
        send_at = self.campaign_time(-3)
        self.campaigns.append({
            "name": name, "body": body.format(url=STORE_URL + path), "status": "scheduled", "enabled": True,
            "send_now": False, "send_at": send_at, "recipient_local_time": False, "discount_mode": "shared",
            "discount_code": code, "started_at": None, "finished_at": None, "failure_reason": None,
            "created_at": created, "updated_at": created + dt.timedelta(minutes=rng.randint(3, 50)),
            "_audience": [(by_key[k], "include") for k in include],
        })

    def build_outbox(self) -> None:
        """What the outbox sink "sent" lately: confirmation requests, welcome texts and keyword replies."""
        refs = self.unique_rng("outbox")
        recent = sorted(self.subscribers, key=lambda s: (s["_consent"], s["phone"]))[-10:]
        texts = []
        for sub in recent:
            if sub["source"] in ("mobile_popup", "shareable_link"):
                texts.append((sub["_consent"] + dt.timedelta(seconds=2), sub["phone"], CONFIRM_TEXT))
                if sub["subscribed_at"]:
                    texts.append((sub["subscribed_at"] + dt.timedelta(seconds=2), sub["phone"], WELCOME_TEXT))
            elif sub["source"] == "keyword":
                texts.append((sub["subscribed_at"] + dt.timedelta(seconds=2), sub["phone"],
                              self.keywords[sub["keyword"]]["reply_text"]))
        texts.sort()
        self.outbox = [{"to_phone": phone, "sender": SENDER, "text": text,
                        "client_ref": f"outbox-{refs.getrandbits(64):016x}", "created_at": self.clamp(at)}
                       for at, phone, text in texts[-8:]]
        # Inbound texts behind keyword sign-ups and STOP replies.
        inbound = self.unique_rng("inbound")
        self.inbound = []
        for sub in self.subscribers:
            if sub["source"] == "keyword":
                provider_id = self.provider_id(inbound)
                sub["consent_message_id"] = provider_id
                text = _pick(inbound, ((sub["keyword"], 80), (sub["keyword"].lower(), 12),
                                       (sub["keyword"].title(), 8)))
                self.inbound.append({"provider_id": provider_id, "_sub": sub, "from_phone": sub["phone"],
                                     "to_number": SENDER, "text": text, "intent": "keyword",
                                     "received_at": sub["_consent"],
                                     "processed_at": sub["_consent"] + dt.timedelta(seconds=1)})
            if (sub.get("_left_how") or "").startswith("Replied "):
                word = sub["_left_how"].split(" ", 1)[1]
                self.inbound.append({"provider_id": self.provider_id(inbound), "_sub": sub,
                                     "from_phone": sub["phone"], "to_number": SENDER, "text": word,
                                     "intent": "stop", "received_at": sub["unsubscribed_at"],
                                     "processed_at": sub["unsubscribed_at"] + dt.timedelta(seconds=1)})
        self.inbound.sort(key=lambda m: (m["received_at"], m["provider_id"]))

    # write

    def write(self, session) -> Shop:
        """Insert everything in a few bulk statements and commit once."""
        t0, installed = self.t0, self.installed_at
        shop = Shop(
            domain=self.domain, name=SHOP_NAME, email=f"hello@{STORE_HOST}", timezone=SHOP_TIMEZONE, currency="USD",
            primary_domain=STORE_HOST, token_kind="static", access_token_enc=None, refresh_token_enc=None,
            scopes=Config.SCOPES, installed_at=installed, is_demo=True, sync_status="done", sync_progress=100,
            last_synced_at=t0 - dt.timedelta(hours=6), sender=SENDER, checkout_collection=True,
            double_opt_in=True, attribution_window_days=5, created_at=installed, updated_at=t0 - dt.timedelta(hours=6),
        )
        session.add(shop)
        session.flush()
        sid = shop.id

        def clean(obj: dict, **extra) -> dict:
            row = {k: v for k, v in obj.items() if not k.startswith("_")}
            row.update(extra, shop_id=sid)
            return row

        rows = _insert(session, Product, [clean(p) for p in self.products], returning=("id", "shopify_id"))
        product_ids = {shopify_id: id_ for id_, shopify_id in rows}
        _insert(session, ProductVariant, [
            {"shop_id": sid, "product_id": product_ids[p["shopify_id"]], "shopify_id": variant_id,
             "title": label or "Default Title", "sku": _sku(p["handle"], label), "price": price, "position": position,
             "created_at": p["created_at"], "updated_at": p["updated_at"]}
            for p in self.products for position, (variant_id, label, price) in enumerate(p["_variants"], start=1)])
        _insert(session, Collection, [clean(c) for c in self.collections])
        _insert(session, CollectionProduct, [
            {"shop_id": sid, "collection_id": c["shopify_id"], "product_id": p["shopify_id"]}
            for c in self.collections for p in c["_members"]])

        rows = _insert(session, Customer, [clean(c) for c in self.customers], returning=("id", "shopify_id"))
        customer_ids = {shopify_id: id_ for id_, shopify_id in rows}
        for customer in self.customers:
            customer["_id"] = customer_ids[customer["shopify_id"]]
        _insert(session, CustomerTag, [{"shop_id": sid, "customer_id": c["_id"], "tag": tag}
                                       for c in self.customers for tag in sorted(c["_tags"])])

        def cid(customer):
            return customer["_id"] if customer else None

        rows = _insert(session, Order, [clean(o, customer_id=cid(o["_customer"])) for o in self.orders],
                       returning=("id", "shopify_id"))
        order_ids = {shopify_id: id_ for id_, shopify_id in rows}
        for order in self.orders:
            order["_id"] = order_ids[order["shopify_id"]]
        _insert(session, LineItem, [dict(line, shop_id=sid, order_id=o["_id"], customer_id=cid(o["_customer"]),
                                         counted=not o["test"] and o["cancelled_at"] is None)
                                    for o in self.orders for line in o["_lines"]])
        _insert(session, Checkout, [clean(c, customer_id=cid(c["_customer"])) for c in self.checkouts])

        rows = _insert(session, Keyword, [clean(k) for k in self.keywords.values()], returning=("id", "word"))
        for id_, word in rows:
            self.keywords[word]["_id"] = id_

        def kid(word):
            return self.keywords[word]["_id"] if word else None

        rows = _insert(session, Subscriber, [
            clean(s, keyword_id=kid(s["keyword"]), customer_id=cid(s["_customer"]),
                  created_at=s["_consent"], updated_at=self._sub_updated(s)) for s in self.subscribers],
            returning=("id", "phone"))
        sub_ids = {phone: id_ for id_, phone in rows}
        for sub in self.subscribers:
            sub["_id"] = sub_ids[sub["phone"]]
        _insert(session, SubscriptionEvent, self._events(sid))
        _insert(session, InboundMessage, [clean(m, subscriber_id=m["_sub"]["_id"]) for m in self.inbound])

        rows = _insert(session, Segment, [
            clean(s, keyword_id=s["_keyword"]["_id"] if s["_keyword"] else None) for s in self.segments],
            returning=("id", "name"))
        seg_ids = {name: id_ for id_, name in rows}
        for segment in self.segments:
            segment["_id"] = seg_ids[segment["name"]]
        _insert(session, SegmentMember, [{"shop_id": sid, "segment_id": seg["_id"], "subscriber_id": sub["_id"],
                                          "entered_at": entered}
                                         for seg in self.segments for sub, entered in seg["_members"]])
        # In time order across segments, so that the log's ids follow time as a live shop's do.
        _insert(session, SegmentEvent, sorted(
            ({"shop_id": sid, "segment_id": seg["_id"], "subscriber_id": event["_sub"]["_id"], "kind": event["kind"],
              "at": event["at"], "cause": event["cause"]} for seg in self.segments for event in seg["_events"]),
            key=lambda e: (e["at"], e["segment_id"], e["kind"] == "enter", e["subscriber_id"])))
        _insert(session, SegmentCount, [{"shop_id": sid, "segment_id": seg["_id"], **count}
                                        for seg in self.segments for count in seg["_counts"]])

        rows = _insert(session, Campaign, [clean(c) for c in self.campaigns], returning=("id", "name"))
        camp_ids = {name: id_ for id_, name in rows}
        for campaign in self.campaigns:
            campaign["_id"] = camp_ids[campaign["name"]]
        _insert(session, CampaignSegment, [{"shop_id": sid, "campaign_id": c["_id"], "segment_id": seg["_id"],
                                            "mode": mode} for c in self.campaigns for seg, mode in c["_audience"]])
        rows = _insert(session, Message, [
            clean(m, campaign_id=m["_campaign"]["_id"], subscriber_id=m["_sub"]["_id"]) for m in self.messages],
            returning=("id", "provider_id"))
        msg_ids = {provider_id: id_ for id_, provider_id in rows}
        rows = _insert(session, Link, [
            clean(link, campaign_id=link["_message"]["_campaign"]["_id"],
                  subscriber_id=link["_message"]["_sub"]["_id"],
                  message_id=msg_ids[link["_message"]["provider_id"]]) for link in self.links],
            returning=("id", "code"))
        link_ids = {code: id_ for id_, code in rows}
        self.clicks.sort(key=lambda c: (c["at"], c["_link"]["code"]))
        _insert(session, Click, [clean(c, link_id=link_ids[c["_link"]["code"]], campaign_id=c["_campaign"]["_id"],
                                       subscriber_id=c["_sub"]["_id"]) for c in self.clicks])
        _insert(session, Attribution, [
            clean(a, order_id=a["_order"]["_id"], campaign_id=a["_campaign"]["_id"],
                  subscriber_id=a["_sub"]["_id"] if a["_sub"] else None) for a in self.attributions])
        _insert(session, OutboxMessage, [clean(m) for m in self.outbox])
        session.commit()
        return shop

    def _sub_updated(self, sub: dict) -> dt.datetime:
        moments = [sub["_consent"], sub["subscribed_at"], sub["unsubscribed_at"], sub["suppressed_at"],
                   sub["last_received_at"], sub["last_clicked_at"]]
        return max(m for m in moments if m is not None)

    def _events(self, sid: int) -> list[dict]:
        """The consent history: pending -> subscribed (double opt-in), unsubscribed, suppressed."""
        events = []
        for sub in self.subscribers:
            source, sub_id = sub["source"], sub["_id"]

            def add(kind, at, detail, event_source=None):
                events.append({"shop_id": sid, "subscriber_id": sub_id, "kind": kind, "at": at,
                               "source": event_source, "detail": detail})

            if source in ("mobile_popup", "shareable_link"):
                add("pending", sub["consent_at"], "Confirmation text sent (double opt-in)", source)
                if sub["subscribed_at"]:
                    add("subscribed", sub["subscribed_at"], "Replied Y to confirm", source)
            elif source == "keyword":
                add("subscribed", sub["subscribed_at"],
                    f"Texted {sub['keyword']} (message {sub['consent_message_id']})", source)
            elif source == "checkout":
                add("subscribed", sub["subscribed_at"], f"SMS consent at checkout, order {sub['_order']['name']}",
                    source)
            elif source == "import":
                add("subscribed", sub["subscribed_at"], "Imported from sms-subscribers-export.csv", source)
            else:
                add("subscribed", sub["subscribed_at"], "Added by store staff", source)
            if sub["unsubscribed_at"]:
                add("unsubscribed", sub["unsubscribed_at"], sub["unsubscribe_reason"])
            if sub["suppressed_at"]:
                add("suppressed", sub["suppressed_at"], sub["suppressed_reason"])
        events.sort(key=lambda e: (e["at"], e["subscriber_id"], e["kind"]))
        return events
