"""`flask shops add`: register a store that uses a custom app's Admin API access token (no App Store install)."""
from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
from flask.cli import AppGroup

shops_cli = AppGroup("shops", help="Stores Kinnekt works for.")


@shops_cli.command("add")
@click.option("--domain", required=True, help="The store's <name>.myshopify.com domain.")
@click.option("--token", required=True, envvar="SHOPIFY_ADMIN_TOKEN", show_envvar=True,
              help="The custom app's Admin API access token (shpat_…); or set SHOPIFY_ADMIN_TOKEN.")
@click.option("--timezone", default=None,
              help="IANA time zone, e.g. Europe/Berlin (default: the store's, from Shopify).")
def add_shop(domain: str, token: str, timezone: str | None) -> None:
    """Check the token against Shopify, store it encrypted, and start the initial sync."""
    from kinnekt.db import Session, utcnow
    from kinnekt.models import Shop
    from kinnekt.queue import get_queue
    from kinnekt.shopify import bulk, endpoints, install, tokens
    from kinnekt.shopify.graphql import ShopifyAuthError, ShopifyError, client_for_token

    try:
        domain = endpoints.checked_domain(domain)
    except endpoints.BadShopDomain:
        raise click.BadParameter("use the store's <name>.myshopify.com domain (not its own domain or admin URL)",
                                 param_hint="--domain") from None
    token = (token or "").strip()
    if not token or any(ch.isspace() for ch in token):
        raise click.BadParameter("paste the Admin API access token exactly as Shopify shows it", param_hint="--token")
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise click.BadParameter(f"{timezone!r} is not an IANA time zone (like America/New_York)",
                                     param_hint="--timezone") from None

    try:
        details = install.fetch_shop_details(client_for_token(domain, token))
    except ShopifyAuthError:
        raise click.ClickException(f"Shopify refused the token for {domain}: check the domain, that the custom app "
                                   "is installed, and that the token is its Admin API access token") from None
    except ShopifyError as exc:
        raise click.ClickException(f"could not read the store from Shopify: {exc}") from None
    if details.get("myshopify_domain") and details["myshopify_domain"].lower() != domain:
        raise click.ClickException(f"the token belongs to {details['myshopify_domain']}, not {domain}")

    shop = Session.query(Shop).filter_by(domain=domain).one_or_none()
    if shop is None:
        shop = Shop(domain=domain)
        Session.add(shop)
    install.apply_shop_details(shop, details, timezone=timezone)
    shop.installed_at = shop.installed_at if shop.uninstalled_at is None and shop.installed_at else utcnow()
    shop.uninstalled_at = None
    Session.commit()
    tokens.save_static_token(shop, token)
    install.ensure_default_segments(shop)
    in_process = get_queue().mode != "rq"
    # Without Redis, a job queued here would die with this command; start-up recovery picks "queued" up.
    queued = bulk.request_sync(shop, enqueue=not in_process)
    click.echo(f"{shop.name or domain} ({domain}) is registered: time zone {shop.timezone}, currency {shop.currency}.")
    if not queued:
        click.echo("A sync is already queued or running.")
    elif in_process:
        click.echo("The initial sync starts when the app next starts (no REDIS_URL: jobs run inside the app).")
    else:
        click.echo("The initial sync is queued; a worker (python -m workers) imports the store's data.")


def init_app(app) -> None:
    """Register `flask shops ...`."""
    app.cli.add_command(shops_cli)
