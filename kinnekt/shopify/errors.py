"""What can go wrong talking to Shopify's Admin API: one ShopifyError family, so callers catch every Shopify failure
at once. Raised by the GraphQL client (kinnekt.shopify.graphql) and the token store (kinnekt.shopify.tokens), which
the client uses: they live here so that neither imports the other for them."""
from __future__ import annotations


class ShopifyError(Exception):
    """A GraphQL Admin call failed."""


class ShopifyUnavailable(ShopifyError):
    """Shopify could not be reached, or kept failing on its side (5xx), through every retry."""


class ShopifyThrottled(ShopifyError):
    """Shopify kept answering THROTTLED (or 429) through every retry."""


class ShopifyAuthError(ShopifyError):
    """Shopify refused the token (401 after a refresh) or the app lacks a scope / data access (403)."""


class ShopifyUnauthorized(ShopifyAuthError):
    """Shopify answered 401 to the token, a fresh one included: the app no longer has access to the shop."""


class GraphQLQueryError(ShopifyError):
    """The reply carried `errors`: a query Shopify could not run (syntax, unknown field, access denied)."""

    def __init__(self, errors):
        self.errors = errors if isinstance(errors, list) else [{"message": str(errors)}]
        super().__init__("; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in self.errors))


class UserErrors(ShopifyError):
    """A mutation answered with userErrors (the input was refused)."""

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__("; ".join(f"{'.'.join(e.get('field') or []) or 'input'}: {e.get('message')}" for e in errors))
