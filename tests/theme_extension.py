"""The theme app extension (extensions/kinnekt-theme) as Shopify's storefront renders it, for the tests.

An app embed block's Liquid is rendered with python-liquid with what Shopify gives it: `block.settings` (the
schema's defaults, overridden by what the merchant chose), `template.name`, `routes.root_url`, and the `asset_url`
and `stylesheet_tag` filters (assets are served from Shopify's CDN). The `{% schema %}` tag is Shopify's and is
never output, so it is taken out before rendering, as Shopify does.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

from liquid import Environment

EXTENSION = Path(__file__).resolve().parents[1] / "extensions" / "kinnekt-theme"
CDN = "https://cdn.shopify.com"
ASSET_PREFIX = "/extensions/019a3c1e-kinnekt/kinnekt-theme/assets/"
SCHEMA = re.compile(r"{%-?\s*schema\s*-?%}(.*?){%-?\s*endschema\s*-?%}", re.S)


def block_source(handle: str = "popup") -> str:
    """The block's Liquid file as written."""
    return (EXTENSION / "blocks" / f"{handle}.liquid").read_text(encoding="utf-8")


def schema(handle: str = "popup") -> dict:
    """The block's `{% schema %}` JSON."""
    return json.loads(SCHEMA.search(block_source(handle)).group(1))


def defaults(handle: str = "popup") -> dict:
    """The block's settings at their schema defaults (what a merchant who switched it on and changed nothing has)."""
    return {s["id"]: s.get("default") for s in schema(handle)["settings"] if "id" in s}


def asset_url(name: str) -> str:
    """Shopify's `asset_url` for an asset of the extension."""
    return f"{CDN}{ASSET_PREFIX}{name}"


def _stylesheet_tag(url: str) -> str:
    return f'<link href="{url}" rel="stylesheet" type="text/css" media="all" />'


def asset_file(url: str) -> Path | None:
    """The extension's file behind an `asset_url` (None for any other URL)."""
    path = urlsplit(url).path
    if not path.startswith(ASSET_PREFIX):
        return None
    candidate = EXTENSION / "assets" / path.removeprefix(ASSET_PREFIX)
    return candidate if candidate.is_file() and candidate.parent == EXTENSION / "assets" else None


_env = Environment()
_env.filters["asset_url"] = asset_url
_env.filters["stylesheet_tag"] = _stylesheet_tag


def render_embed(handle: str = "popup", *, settings: dict | None = None, template: str = "index",
                 root_url: str = "/") -> str:
    """The HTML the app embed adds before `</body>` on a storefront page of this template."""
    source = SCHEMA.sub("", block_source(handle))
    values = {**defaults(handle), **(settings or {})}
    return _env.from_string(source).render(block={"settings": values}, template={"name": template},
                                           routes={"root_url": root_url})


def storefront_page(embed_html: str, *, title: str = "Alpha store", body: str = "<p>Our bread.</p>") -> str:
    """A small storefront page, as a theme renders one, with the app embed's output at the end of the body."""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body><h1>{title}</h1>{body}
<script>window.Shopify = {{country: "US", routes: {{root: "/"}}}};</script>
{embed_html}
</body></html>"""
