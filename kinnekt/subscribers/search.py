"""Finding subscribers by what a merchant types in a search box: part of a name, or the digits of a phone."""
from __future__ import annotations

import re

from sqlalchemy import or_

from kinnekt.models import Customer, Subscriber


def matches(query: str):
    """A condition on Subscriber (and an outer-joined Customer): the phone holds the digits typed (spaces,
    dashes, brackets ignored) or a first / last / full name contains the text, case-insensitively."""
    conditions = [
        Subscriber.first_name.icontains(query, autoescape=True),
        Customer.first_name.icontains(query, autoescape=True),
        Customer.last_name.icontains(query, autoescape=True),
        (Customer.first_name + " " + Customer.last_name).icontains(query, autoescape=True),
    ]
    digits = re.sub(r"\D", "", query)
    if digits and re.fullmatch(r"[\d\s()+.\-]+", query):
        conditions.append(Subscriber.phone.contains(digits, autoescape=True))
    return or_(*conditions)
