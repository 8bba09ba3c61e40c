"""kinnekt/subscribers/listing.py: the list's filters read from a query string (bad values are "all") and the
parameters they give page links. The list itself is tested through its page in test_subscribers_web."""
from __future__ import annotations

from werkzeug.datastructures import MultiDict

from kinnekt.subscribers.listing import QUERY_MAX_LENGTH, Filters


def test_filters_read_from_the_query_string():
    args = MultiDict({"q": "  ada ", "status": "subscribed", "source": "mobile_popup", "keyword": " join ",
                      "country": "gb"})
    filters = Filters.from_args(args)
    assert filters == Filters(query="ada", status="subscribed", source="mobile_popup", keyword="JOIN", country="GB")
    assert filters.params() == {"q": "ada", "status": "subscribed", "source": "mobile_popup", "keyword": "JOIN",
                                "country": "GB"}


def test_unknown_or_malformed_filters_are_all():
    args = MultiDict({"status": "SUBSCRIBED", "source": "fax", "keyword": "no-dashes", "country": "GBR"})
    filters = Filters.from_args(args)
    assert filters == Filters()
    assert filters.params() == {}


def test_no_filters_and_a_long_search_cut():
    assert Filters.from_args(MultiDict()) == Filters()
    assert Filters.from_args(MultiDict({"q": "x" * 500})).query == "x" * QUERY_MAX_LENGTH
    assert Filters.from_args(MultiDict({"keyword": "K" * 33})).keyword == ""
