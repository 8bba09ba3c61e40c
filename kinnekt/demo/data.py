"""The demo store's fixed facts: the shop, its texts and keywords, the catalog, the campaigns and segments,
where its customers live and what they are called, and when people shop."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal

SHOP_NAME = "Northwind Outfitters"
STORE_HOST = "northwind-outfitters.com"
STORE_URL = f"https://{STORE_HOST}"
THEME_NAME = "Dawn"
"""The demo store's live theme (Settings names it beside the popup's app embed)."""
THEME_POPUP_EMBED = "on"
"""The popup's app embed in the live theme: switched on, as in a store whose popup runs (Settings shows it)."""
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
    ("Birthdays in the next 7 days", 3,
     {"match": "all", "rules": [{"field": "property", "attribute": "birthday", "op": "anniversary_next_days",
                                 "value": 7}]}),
)
BIRTHDAY_SHARE = 0.4
LANGUAGE_SHARE = 0.6
"""Shares of subscribers with a birthday and with a language (profile properties)."""
LANGUAGES = {"US": (("en", 90), ("es", 10)), "CA": (("en", 75), ("fr", 25)), "GB": (("en", 1),),
             "AU": (("en", 1),), "DE": (("de", 85), ("en", 15))}
"""The languages subscribers of a country gave, weighted; other countries are as the US."""
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
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
