"""Whether the popup's app embed is switched on in the shop's live theme, and the theme editor link that turns it on.

Shopify keeps a theme's app embeds in its `config/settings_data.json`: under `current` (or the preset `current`
names), `blocks` holds one entry per app embed the merchant has touched, `{"type":
"shopify://apps/<app handle>/blocks/<block handle>/<extension id>", "disabled": <bool>, "settings": {…}}`.
An embed never switched on has no entry. The live theme is the one whose role is MAIN (read_themes scope).

Settings loads this after the page (an HTMX partial), so a slow answer from Shopify never holds up the first page.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote

from kinnekt.models import Shop
from kinnekt.shopify.graphql import AdminClient, GraphQLQueryError, ShopifyAuthError, ShopifyError, client_for
from kinnekt.shopify.tokens import NotConnected, TokenError

BLOCK_HANDLE = "popup"
"""The app embed block's file name in extensions/kinnekt-theme/blocks/ (without .liquid)."""

QUERY = """
query KinnektThemeEmbed {
  themes(first: 1, roles: [MAIN]) {
    nodes {
      id name role
      files(filenames: ["config/settings_data.json"], first: 1) {
        nodes { filename body { ... on OnlineStoreThemeFileBodyText { content } } }
      }
    }
  }
}
"""

ON, OFF, NOT_ADDED, UNKNOWN = "on", "off", "not_added", "unknown"
_LEADING_COMMENTS = re.compile(r"\A(?:\s*/\*.*?\*/)*\s*", re.S)


@dataclass(frozen=True)
class EmbedStatus:
    """What Settings shows: the state, the live theme's name, and why it is unknown (when it is)."""

    state: str
    theme: str | None = None
    problem: str | None = None


def editor_url(shop_domain: str, api_key: str, block_handle: str = BLOCK_HANDLE) -> str:
    """The theme editor of the live theme, on App embeds, with this app's embed selected (activateAppId)."""
    return (f"https://{shop_domain}/admin/themes/current/editor?context=apps"
            f"&activateAppId={quote(api_key, safe='')}/{quote(block_handle, safe='')}")


def embed_state(settings_data: str, app_handle: str, block_handle: str = BLOCK_HANDLE) -> str:
    """ON, OFF or NOT_ADDED from a settings_data.json text (Shopify starts it with a /* comment */); raises
    ValueError when it is not the JSON object Shopify writes."""
    data = json.loads(_LEADING_COMMENTS.sub("", settings_data or "", count=1))
    if not isinstance(data, dict):
        raise ValueError("settings_data.json is not an object")
    current = data.get("current")
    if isinstance(current, str):  # the name of a preset
        current = (data.get("presets") or {}).get(current)
    blocks = (current or {}).get("blocks") if isinstance(current, dict) else None
    found = []
    for block in (blocks or {}).values() if isinstance(blocks, dict) else ():
        parts = str((block or {}).get("type", "")).split("/") if isinstance(block, dict) else []
        # "shopify:", "", "apps", app handle, "blocks", block handle, extension id
        if len(parts) >= 6 and parts[:3] == ["shopify:", "", "apps"] and parts[3] == app_handle \
                and parts[4] == "blocks" and parts[5] == block_handle:
            found.append(block.get("disabled") is not True)
    if not found:
        return NOT_ADDED
    return ON if any(found) else OFF


def read(shop: Shop, app_handle: str, *, client: AdminClient | None = None) -> EmbedStatus:
    """The popup embed's state in the shop's live theme (one Admin API call); UNKNOWN with the reason when Shopify
    cannot tell us (no token, no read_themes scope yet, Shopify unreachable, a file we cannot read)."""
    try:
        client = client or client_for(shop)
        client.max_retries = 1  # a page is waiting: one retry, then say we could not tell
        data = client.query(QUERY)
    except (NotConnected, TokenError):
        return EmbedStatus(UNKNOWN, problem="Kinnekt is not connected to your store: open it from your Shopify admin.")
    except (ShopifyAuthError, GraphQLQueryError) as exc:
        if "read_themes" in str(exc) or "access" in str(exc).lower():
            return EmbedStatus(UNKNOWN, problem="Kinnekt needs permission to read your theme: open Kinnekt from "
                                                "your Shopify admin and approve the updated permissions.")
        return EmbedStatus(UNKNOWN, problem="Shopify did not answer the theme question.")
    except ShopifyError:
        return EmbedStatus(UNKNOWN, problem="Shopify could not be reached. Try again in a moment.")
    themes = ((data or {}).get("themes") or {}).get("nodes") or []
    if not themes:
        return EmbedStatus(UNKNOWN, problem="Your store has no published theme.")
    theme = themes[0]
    files = ((theme.get("files") or {}).get("nodes")) or []
    content = ((files[0].get("body") or {}).get("content")) if files else None
    if content is None:
        return EmbedStatus(NOT_ADDED, theme=theme.get("name"))
    try:
        return EmbedStatus(embed_state(content, app_handle), theme=theme.get("name"))
    except ValueError:
        return EmbedStatus(UNKNOWN, theme=theme.get("name"), problem="Your theme's settings file could not be read.")
