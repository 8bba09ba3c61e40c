"""Kinnekt: SMS marketing for Shopify merchants. `create_app` builds the Flask app."""
from __future__ import annotations

import logging

from flask import Flask

from kinnekt.config import PROJECT_ROOT, Config


def create_app(config: Config | None = None) -> Flask:
    """Build the app: config, extensions, database, queue, blueprints, error handlers, CLI commands."""
    config = config or Config.from_env()
    problems = config.validate()
    if problems and not config.TESTING:
        raise RuntimeError("Kinnekt is not configured: " + "; ".join(problems) +
                           ". Set them in the environment (see README), or set KINNEKT_DEMO=1 for the demo.")
    app = Flask(__name__, template_folder=str(PROJECT_ROOT / "templates"),
                static_folder=str(PROJECT_ROOT / "static"), instance_path=str(PROJECT_ROOT / "instance"))
    app.config.update(config.as_flask())
    logging.basicConfig(level=getattr(logging, config.LOG_LEVEL.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for warning in config.warnings():
        logging.getLogger("kinnekt").warning("%s", warning)
    register_extensions(app)
    register_guards(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def register_extensions(app: Flask) -> None:
    """Database session, the job queue, template helpers."""
    from kinnekt import db
    from kinnekt.queue import init_queue
    from kinnekt.web import templating

    db.configure(app.config["DATABASE_URL"])

    @app.teardown_appcontext
    def _remove_session(_exc=None):
        db.Session.remove()

    init_queue(app)
    templating.init_app(app)

    if not app.config.get("TESTING"):
        from kinnekt.schedule import start_background

        @app.before_request
        def _start_background_once():
            start_background(app)


def register_guards(app: Flask) -> None:
    """Input no view can use, refused before the views: ids past a BIGINT (404), NUL characters (400)."""
    from kinnekt.web import guards
    guards.init_app(app)  # before the blueprints: their routes' <int:...> take its id converter


def register_blueprints(app: Flask) -> None:
    """Merchant pages (session-token protected), auth pages, and public endpoints."""
    from kinnekt.web import (api_segments, audience_oauth, audiences, auth, automations, billing, campaigns, catalog,
                             compliance, flows, health, home, keywords, lists, numbers, outbox, pixel, pixel_settings,
                             properties, redirects, registration, segments, settings, shopify_oauth, signup_settings,
                             sms_webhooks, storefront, subscribers, webhooks)
    merchant = (home, segments, lists, api_segments, campaigns, automations, flows, subscribers, keywords, settings,
                outbox, catalog, compliance, signup_settings, properties, pixel_settings, billing, numbers,
                registration, audiences)
    # each verifies its caller's own signature; redirects (/r/<code>) need none: the code is all they reveal
    # storefront: the app proxy routes verify Shopify's proxy signature; /j/<shop> shows only public links
    # health: /healthz says ok or unavailable to anyone, its details only to the HEALTH_TOKEN holder
    # pixel: /pixel/events takes only a shop's own pixel key, rate-limited per shop and per browser
    # audience_oauth: the ad platforms' login round trip, bound by a signed state and this browser's cookie
    public = (auth, shopify_oauth, webhooks, sms_webhooks, redirects, storefront, health, pixel, audience_oauth)
    for module in merchant + public:
        app.register_blueprint(module.bp)


def register_errorhandlers(app: Flask) -> None:
    """HTML error pages (or partials for htmx) and JSON errors for /api."""
    from kinnekt.web import errors
    errors.init_app(app)


def register_commands(app: Flask) -> None:
    """`flask db ...`, `flask demo ...`."""
    from kinnekt import cli
    cli.init_app(app)
