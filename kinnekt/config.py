"""Settings read from the environment, with the embedded demo defaults and a test config."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from flask import current_app, has_app_context

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = f"sqlite:///{PROJECT_ROOT / 'instance' / 'kinnekt.sqlite3'}"
# A fixed demo key keeps the demo database readable across restarts; it is refused outside demo mode.
DEMO_TOKEN_KEY = "ZGVtby1vbmx5LWtleS1uZXZlci11c2UtaW4tcHJvZC0="
DEMO_SECRET_KEY = "demo-only-secret-key"


def _bool(value: str | None, default: bool = False) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _private_key(env) -> str:
    """The Vonage application's private key (PEM): VONAGE_PRIVATE_KEY itself (a one-line value may write its
    newlines as \\n), else the file VONAGE_PRIVATE_KEY_PATH names; empty when neither is set. A path that
    cannot be read is an error at start-up, not at the first send."""
    text = (env.get("VONAGE_PRIVATE_KEY") or "").strip()
    if text:
        return text.replace("\\n", "\n")
    path = (env.get("VONAGE_PRIVATE_KEY_PATH") or "").strip()
    return Path(path).read_text() if path else ""


def _url_or_none(value: str | None) -> str | None:
    """HOST is a URL only when the Shopify CLI sets it; elsewhere it is often a bare host name."""
    return value if value and value.startswith(("http://", "https://")) else None


def public_url_is_set(env: dict[str, str]) -> bool:
    """True when the environment names the app's public URL (SHOPIFY_APP_URL, APP_URL, or HOST as a URL)."""
    return bool(env.get("SHOPIFY_APP_URL") or env.get("APP_URL") or _url_or_none(env.get("HOST")))


def served_url(host: str | None, port: int | str) -> str:
    """The URL a local server on `host`:`port` answers at (a wildcard host is reached at 127.0.0.1)."""
    host = (host or "").strip() or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"


@dataclass
class Config:
    """Every setting the app reads; `from_env` documents the variable behind each one."""

    SECRET_KEY: str = ""
    DATABASE_URL: str = DEFAULT_DATABASE_URL
    REDIS_URL: str = ""
    TOKEN_ENCRYPTION_KEY: str = ""
    SHOPIFY_API_KEY: str = ""
    SHOPIFY_API_SECRET: str = ""
    SHOPIFY_APP_URL: str = "http://127.0.0.1:5000"
    SCOPES: str = ("read_customers,write_customers,read_orders,read_all_orders,read_products,"
                   "read_discounts,write_discounts,write_app_proxy,read_themes,"
                   "write_pixels,read_customer_events")
    SHOPIFY_APP_HANDLE: str = "kinnekt-sms"
    SHOPIFY_API_VERSION: str = "2026-10"
    SHOPIFY_BASE_URL_OVERRIDE: str = ""
    PORT: int = 5000
    DEMO_MODE: bool = False
    DEMO_SHOP_DOMAIN: str = "kinnekt-demo.myshopify.com"
    APP_BRIDGE_ENABLED: bool = True
    QUEUE_NAME: str = "kinnekt"
    VONAGE_APPLICATION_ID: str = ""
    VONAGE_PRIVATE_KEY: str = ""
    VONAGE_NUMBERS_HOST_OVERRIDE: str = ""
    VONAGE_SIGNATURE_SECRET: str = ""
    VONAGE_UNSIGNED_WEBHOOKS: bool = False
    VONAGE_SENDER: str = ""
    VONAGE_HOST_OVERRIDE: str = ""
    VONAGE_API_KEY: str = ""
    VONAGE_API_SECRET: str = ""
    SMS_RATE_PER_SECOND: int = 30
    BILLING_REQUIRED: bool = True
    SHOPIFY_BILLING_TEST: bool = False
    SMS_SENDER_RATE_PER_SECOND: int = 30
    MAX_WEBHOOK_BYTES: int = 1_048_576
    MAX_UPLOAD_BYTES: int = 16 * 1_048_576
    TRUSTED_PROXY_HOPS: int = 0
    HEALTH_TOKEN: str = ""
    META_APP_ID: str = ""
    META_APP_SECRET: str = ""
    META_API_VERSION: str = "v25.0"
    META_GRAPH_URL: str = "https://graph.facebook.com"
    META_DIALOG_URL: str = "https://www.facebook.com"
    GOOGLE_ADS_CLIENT_ID: str = ""
    GOOGLE_ADS_CLIENT_SECRET: str = ""
    GOOGLE_ADS_DEVELOPER_TOKEN: str = ""
    GOOGLE_ADS_API_VERSION: str = "v26"
    GOOGLE_ADS_API_URL: str = "https://googleads.googleapis.com"
    GOOGLE_OAUTH_AUTHORIZE_URL: str = "https://accounts.google.com/o/oauth2/v2/auth"
    GOOGLE_OAUTH_TOKEN_URL: str = "https://oauth2.googleapis.com/token"
    TESTING: bool = False
    LOG_LEVEL: str = "INFO"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Config":
        """Build a config from environment variables (names as the Shopify CLI passes them)."""
        env = dict(os.environ if env is None else env)
        demo = _bool(env.get("KINNEKT_DEMO"))
        cfg = cls(
            SECRET_KEY=env.get("SECRET_KEY", ""),
            DATABASE_URL=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            REDIS_URL=env.get("REDIS_URL", ""),
            TOKEN_ENCRYPTION_KEY=env.get("TOKEN_ENCRYPTION_KEY", ""),
            SHOPIFY_API_KEY=env.get("SHOPIFY_API_KEY", ""),
            SHOPIFY_API_SECRET=env.get("SHOPIFY_API_SECRET", ""),
            # The Shopify CLI passes the tunnel URL as APP_URL/HOST; SHOPIFY_APP_URL wins when set. The demo
            # without any of them is reached at HOST:PORT (below).
            SHOPIFY_APP_URL=(env.get("SHOPIFY_APP_URL") or env.get("APP_URL") or _url_or_none(env.get("HOST"))
                             or cls.SHOPIFY_APP_URL).rstrip("/"),
            SCOPES=env.get("SCOPES") or cls.SCOPES,
            SHOPIFY_APP_HANDLE=env.get("SHOPIFY_APP_HANDLE") or cls.SHOPIFY_APP_HANDLE,
            SHOPIFY_API_VERSION=env.get("SHOPIFY_API_VERSION") or cls.SHOPIFY_API_VERSION,
            SHOPIFY_BASE_URL_OVERRIDE=env.get("SHOPIFY_BASE_URL_OVERRIDE", ""),
            PORT=int(env.get("PORT") or cls.PORT),
            DEMO_MODE=demo,
            DEMO_SHOP_DOMAIN=env.get("KINNEKT_DEMO_SHOP") or cls.DEMO_SHOP_DOMAIN,
            APP_BRIDGE_ENABLED=_bool(env.get("APP_BRIDGE_ENABLED"), True),
            QUEUE_NAME=env.get("QUEUE_NAME") or cls.QUEUE_NAME,
            VONAGE_APPLICATION_ID=env.get("VONAGE_APPLICATION_ID", "").strip(),
            VONAGE_PRIVATE_KEY=_private_key(env),
            VONAGE_NUMBERS_HOST_OVERRIDE=env.get("VONAGE_NUMBERS_HOST_OVERRIDE", "").strip(),
            VONAGE_SIGNATURE_SECRET=env.get("VONAGE_SIGNATURE_SECRET", ""),
            VONAGE_UNSIGNED_WEBHOOKS=_bool(env.get("VONAGE_UNSIGNED_WEBHOOKS")),
            VONAGE_SENDER=env.get("VONAGE_SENDER", ""),
            VONAGE_HOST_OVERRIDE=env.get("VONAGE_HOST_OVERRIDE", ""),
            VONAGE_API_KEY=env.get("VONAGE_API_KEY", "").strip(),
            VONAGE_API_SECRET=env.get("VONAGE_API_SECRET", "").strip(),
            BILLING_REQUIRED=_bool(env.get("KINNEKT_BILLING_REQUIRED"), True),
            SHOPIFY_BILLING_TEST=_bool(env.get("SHOPIFY_BILLING_TEST"), demo),
            SMS_RATE_PER_SECOND=int(env.get("SMS_RATE_PER_SECOND") or cls.SMS_RATE_PER_SECOND),
            SMS_SENDER_RATE_PER_SECOND=int(env.get("SMS_SENDER_RATE_PER_SECOND") or cls.SMS_SENDER_RATE_PER_SECOND),
            MAX_WEBHOOK_BYTES=int(env.get("MAX_WEBHOOK_BYTES") or cls.MAX_WEBHOOK_BYTES),
            MAX_UPLOAD_BYTES=int(env.get("MAX_UPLOAD_BYTES") or cls.MAX_UPLOAD_BYTES),
            TRUSTED_PROXY_HOPS=int(env.get("TRUSTED_PROXY_HOPS") or cls.TRUSTED_PROXY_HOPS),
            HEALTH_TOKEN=env.get("HEALTH_TOKEN", ""),
            META_APP_ID=env.get("META_APP_ID", "").strip(),
            META_APP_SECRET=env.get("META_APP_SECRET", "").strip(),
            META_API_VERSION=env.get("META_API_VERSION") or cls.META_API_VERSION,
            META_GRAPH_URL=(env.get("META_GRAPH_URL") or cls.META_GRAPH_URL).rstrip("/"),
            META_DIALOG_URL=(env.get("META_DIALOG_URL") or cls.META_DIALOG_URL).rstrip("/"),
            GOOGLE_ADS_CLIENT_ID=env.get("GOOGLE_ADS_CLIENT_ID", "").strip(),
            GOOGLE_ADS_CLIENT_SECRET=env.get("GOOGLE_ADS_CLIENT_SECRET", "").strip(),
            GOOGLE_ADS_DEVELOPER_TOKEN=env.get("GOOGLE_ADS_DEVELOPER_TOKEN", "").strip(),
            GOOGLE_ADS_API_VERSION=env.get("GOOGLE_ADS_API_VERSION") or cls.GOOGLE_ADS_API_VERSION,
            GOOGLE_ADS_API_URL=(env.get("GOOGLE_ADS_API_URL") or cls.GOOGLE_ADS_API_URL).rstrip("/"),
            GOOGLE_OAUTH_AUTHORIZE_URL=env.get("GOOGLE_OAUTH_AUTHORIZE_URL") or cls.GOOGLE_OAUTH_AUTHORIZE_URL,
            GOOGLE_OAUTH_TOKEN_URL=env.get("GOOGLE_OAUTH_TOKEN_URL") or cls.GOOGLE_OAUTH_TOKEN_URL,
            LOG_LEVEL=env.get("LOG_LEVEL") or cls.LOG_LEVEL,
        )
        if demo and not public_url_is_set(env):
            # The demo's links (short links, the shareable link) must reach the demo where it is served.
            cfg.SHOPIFY_APP_URL = served_url(env.get("HOST"), cfg.PORT)
        cfg.apply_demo_defaults()
        return cfg

    @property
    def demo_auth(self) -> bool:
        """True when merchant routes may skip the session token: demo mode with no real app secret."""
        return self.DEMO_MODE and not self.SHOPIFY_API_SECRET

    def apply_demo_defaults(self) -> None:
        """Fill the secrets a demo needs; outside demo mode missing secrets stay empty and fail `validate`."""
        if self.DEMO_MODE:
            self.SECRET_KEY = self.SECRET_KEY or DEMO_SECRET_KEY
            self.TOKEN_ENCRYPTION_KEY = self.TOKEN_ENCRYPTION_KEY or DEMO_TOKEN_KEY
            self.SHOPIFY_API_KEY = self.SHOPIFY_API_KEY or "kinnekt-demo"

    def validate(self) -> list[str]:
        """Return the problems that stop this config from running a real (non-demo) app."""
        problems = []
        if self.DEMO_MODE:
            return problems
        for name in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEY", "SHOPIFY_API_KEY", "SHOPIFY_API_SECRET"):
            if not getattr(self, name):
                problems.append(f"{name} is not set")
        if self.TOKEN_ENCRYPTION_KEY == DEMO_TOKEN_KEY:
            problems.append("TOKEN_ENCRYPTION_KEY is the public demo key")
        if bool(self.VONAGE_APPLICATION_ID) != bool(self.VONAGE_PRIVATE_KEY):
            problems.append("VONAGE_APPLICATION_ID and VONAGE_PRIVATE_KEY (or VONAGE_PRIVATE_KEY_PATH) go together")
        elif self.VONAGE_PRIVATE_KEY and "PRIVATE KEY-----" not in self.VONAGE_PRIVATE_KEY:
            problems.append("VONAGE_PRIVATE_KEY is not a PEM private key")
        if bool(self.VONAGE_API_KEY) != bool(self.VONAGE_API_SECRET):
            problems.append("VONAGE_API_KEY and VONAGE_API_SECRET go together (the Numbers API needs both)")
        elif self.VONAGE_API_KEY and not re.fullmatch(r"[0-9A-Za-z]{4,32}", self.VONAGE_API_KEY):
            problems.append("VONAGE_API_KEY is not a Vonage API key (letters and digits)")
        if self.VONAGE_NUMBERS_HOST_OVERRIDE and not re.fullmatch(r"[0-9A-Za-z.-]+(:[0-9]{1,5})?",
                                                                  self.VONAGE_NUMBERS_HOST_OVERRIDE):
            problems.append("VONAGE_NUMBERS_HOST_OVERRIDE is not a host or host:port")
        if not self.VONAGE_SIGNATURE_SECRET and not self.VONAGE_UNSIGNED_WEBHOOKS:
            # Unsigned, /sms/inbound takes anyone's word for who texted STOP or START.
            problems.append("VONAGE_SIGNATURE_SECRET is not set (set VONAGE_UNSIGNED_WEBHOOKS=1 to accept "
                            "unsigned Vonage webhooks on purpose)")
        return problems

    def warnings(self) -> list[str]:
        """Settings that run, but that an operator should know about (logged at start-up)."""
        if not self.DEMO_MODE and not self.VONAGE_SIGNATURE_SECRET and self.VONAGE_UNSIGNED_WEBHOOKS:
            return ["VONAGE_UNSIGNED_WEBHOOKS=1: /sms/inbound and /sms/receipt accept unsigned requests, so anyone "
                    "who finds those URLs can post texts (STOP, START) in any number's name"]
        return []

    def as_flask(self) -> dict:
        """The settings as a dict for `app.config.update`."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["MAX_CONTENT_LENGTH"] = self.MAX_UPLOAD_BYTES  # Flask refuses larger request bodies with 413
        out.update(self.extra)
        return out


def config_for_tests(**overrides) -> Config:
    """A config for tests: a real app secret (so tokens are verified), never demo auth."""
    cfg = Config(
        SECRET_KEY="test-secret-key",
        DATABASE_URL=os.environ.get("DATABASE_URL") or "sqlite://",
        REDIS_URL="",
        TOKEN_ENCRYPTION_KEY="dGVzdC10ZXN0LXRlc3QtdGVzdC10ZXN0LXRlc3QtMDA=",
        SHOPIFY_API_KEY="test-api-key",
        SHOPIFY_API_SECRET="test-api-secret-for-hs256-0123456789abcdef",
        SHOPIFY_APP_URL="https://kinnekt.test",
        APP_BRIDGE_ENABLED=False,
        # Tests post unsigned Vonage webhooks; the signature tests set VONAGE_SIGNATURE_SECRET themselves.
        VONAGE_UNSIGNED_WEBHOOKS=True,
        # Shops of most tests send without a plan; the billing tests switch it on (tests/test_billing_*.py).
        BILLING_REQUIRED=False,
        SHOPIFY_BILLING_TEST=True,
        TESTING=True,
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def public_base() -> str:
    """The app's public URL that short links and the pixel's endpoint live under (SHOPIFY_APP_URL, without a
    trailing slash): the running app's setting, or the environment's outside a request or app context."""
    if has_app_context():
        base = current_app.config.get("SHOPIFY_APP_URL") or ""
    else:
        base = Config.from_env().SHOPIFY_APP_URL
    return base.rstrip("/")
