"""Configuration from the environment and the app factory."""
import pytest

from kinnekt import create_app
from kinnekt.config import DEMO_TOKEN_KEY, Config
from kinnekt.crypto import TokenCipher


def test_env_names_match_the_shopify_cli():
    cfg = Config.from_env({
        "SHOPIFY_API_KEY": "key", "SHOPIFY_API_SECRET": "secret", "SHOPIFY_APP_URL": "https://app.example.com/",
        "SCOPES": "read_orders", "PORT": "8081", "DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://h:6379/0",
        "SECRET_KEY": "s", "TOKEN_ENCRYPTION_KEY": "t", "VONAGE_APPLICATION_ID": "app-1",
        "VONAGE_SENDER": "+18885550199", "VONAGE_SIGNATURE_SECRET": "vs",
        "VONAGE_PRIVATE_KEY": "-----BEGIN PRIVATE KEY-----\\nMII\\n-----END PRIVATE KEY-----",
    })
    assert (cfg.SHOPIFY_API_KEY, cfg.SHOPIFY_API_SECRET, cfg.SCOPES, cfg.PORT) == ("key", "secret", "read_orders", 8081)
    assert cfg.SHOPIFY_APP_URL == "https://app.example.com"
    assert cfg.DATABASE_URL == "postgresql://u@h/db" and cfg.REDIS_URL == "redis://h:6379/0"
    assert cfg.VONAGE_APPLICATION_ID == "app-1" and cfg.VONAGE_SENDER == "+18885550199"
    assert cfg.VONAGE_PRIVATE_KEY == "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----"  # \n made newlines
    assert not cfg.DEMO_MODE and cfg.validate() == []


def test_an_application_without_its_key_or_a_key_that_is_no_pem_refuses_to_start():
    production = {"SECRET_KEY": "s", "TOKEN_ENCRYPTION_KEY": "t", "SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "x",
                  "VONAGE_SIGNATURE_SECRET": "vs"}
    assert any("go together" in p for p in Config.from_env({**production, "VONAGE_APPLICATION_ID": "a"}).validate())
    assert any("not a PEM" in p for p in Config.from_env(
        {**production, "VONAGE_APPLICATION_ID": "a", "VONAGE_PRIVATE_KEY": "secret"}).validate())


def test_the_numbers_api_key_and_secret_go_together_and_are_checked():
    production = {"SECRET_KEY": "s", "TOKEN_ENCRYPTION_KEY": "t", "SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "x",
                  "VONAGE_SIGNATURE_SECRET": "vs"}
    cfg = Config.from_env({**production, "VONAGE_API_KEY": " abcd1234 ", "VONAGE_API_SECRET": "Secret0123456789",
                           "VONAGE_NUMBERS_HOST_OVERRIDE": "127.0.0.1:8443"})
    assert (cfg.VONAGE_API_KEY, cfg.VONAGE_NUMBERS_HOST_OVERRIDE) == ("abcd1234", "127.0.0.1:8443")
    assert cfg.validate() == []
    assert Config.from_env(production).validate() == []  # neither: sender names only, nothing bought
    assert Config.from_env({**production, "VONAGE_API_KEY": "abcd1234"}).validate() == [
        "VONAGE_API_KEY and VONAGE_API_SECRET go together (the Numbers API needs both)"]
    assert Config.from_env({**production, "VONAGE_API_SECRET": "s"}).validate() == [
        "VONAGE_API_KEY and VONAGE_API_SECRET go together (the Numbers API needs both)"]
    assert Config.from_env({**production, "VONAGE_API_KEY": "ab cd/12", "VONAGE_API_SECRET": "s"}).validate() == [
        "VONAGE_API_KEY is not a Vonage API key (letters and digits)"]
    assert Config.from_env({**production, "VONAGE_NUMBERS_HOST_OVERRIDE": "https://x/y"}).validate() == [
        "VONAGE_NUMBERS_HOST_OVERRIDE is not a host or host:port"]


def test_the_private_key_can_come_from_a_file(tmp_path):
    path = tmp_path / "private.key"
    path.write_text("-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n")
    assert Config.from_env({"VONAGE_PRIVATE_KEY_PATH": str(path)}).VONAGE_PRIVATE_KEY == path.read_text()
    assert Config.from_env({}).VONAGE_PRIVATE_KEY == ""


def test_defaults_are_the_embedded_ones():
    cfg = Config.from_env({"KINNEKT_DEMO": "1"})
    assert cfg.DATABASE_URL.startswith("sqlite:///") and cfg.DATABASE_URL.endswith("instance/kinnekt.sqlite3")
    assert cfg.REDIS_URL == ""
    assert cfg.demo_auth and cfg.validate() == []


def test_real_secret_turns_demo_auth_off():
    cfg = Config.from_env({"KINNEKT_DEMO": "1", "SHOPIFY_API_SECRET": "real"})
    assert cfg.DEMO_MODE and not cfg.demo_auth


def test_production_refuses_missing_secrets_and_the_demo_key():
    cfg = Config.from_env({"SHOPIFY_API_KEY": "k"})
    problems = cfg.validate()
    assert "SECRET_KEY is not set" in problems and "SHOPIFY_API_SECRET is not set" in problems
    with pytest.raises(RuntimeError, match="not configured"):
        create_app(cfg)
    cfg = Config.from_env({"SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "s", "SECRET_KEY": "x",
                           "TOKEN_ENCRYPTION_KEY": DEMO_TOKEN_KEY, "VONAGE_SIGNATURE_SECRET": "vs"})
    assert cfg.validate() == ["TOKEN_ENCRYPTION_KEY is the public demo key"]


PRODUCTION = {"SHOPIFY_API_KEY": "k", "SHOPIFY_API_SECRET": "s", "SECRET_KEY": "x",
              "TOKEN_ENCRYPTION_KEY": "dGVzdC10ZXN0LXRlc3QtdGVzdC10ZXN0LXRlc3QtMDA="}


def test_production_refuses_to_start_without_a_vonage_signature_secret():
    cfg = Config.from_env(PRODUCTION)
    assert cfg.validate() == ["VONAGE_SIGNATURE_SECRET is not set (set VONAGE_UNSIGNED_WEBHOOKS=1 to accept "
                              "unsigned Vonage webhooks on purpose)"]
    with pytest.raises(RuntimeError, match="VONAGE_SIGNATURE_SECRET is not set"):
        create_app(cfg)
    assert Config.from_env({**PRODUCTION, "VONAGE_SIGNATURE_SECRET": "vs"}).validate() == []
    assert Config.from_env({**PRODUCTION, "VONAGE_UNSIGNED_WEBHOOKS": "0"}).validate() != []


def test_unsigned_vonage_webhooks_on_purpose_start_with_a_warning(database_url, caplog, monkeypatch):
    from kinnekt import queue
    monkeypatch.setattr(queue, "_queue", queue._queue)  # the suite's queue is the current one again afterwards
    cfg = Config.from_env({**PRODUCTION, "VONAGE_UNSIGNED_WEBHOOKS": "1", "DATABASE_URL": database_url})
    assert cfg.validate() == []
    with caplog.at_level("WARNING", logger="kinnekt"):
        app = create_app(cfg)
    app.extensions["kinnekt_queue"].stop()
    assert any("VONAGE_UNSIGNED_WEBHOOKS=1" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    assert Config.from_env({**PRODUCTION, "VONAGE_SIGNATURE_SECRET": "vs"}).warnings() == []
    assert Config.from_env({"KINNEKT_DEMO": "1"}).warnings() == []  # the demo needs no secret and no warning


def test_factory_registers_every_area(app):
    rules = {rule.rule for rule in app.url_map.iter_rules()}
    for path in ("/segments/", "/campaigns/", "/subscribers/", "/keywords/", "/settings/", "/outbox/",
                 "/auth/session-token-bounce", "/"):
        assert path in rules
    assert app.config["TESTING"] and app.extensions["kinnekt_queue"].mode == "in-process"
    assert {"db", "demo"} <= set(app.cli.commands)


def test_token_cipher_round_trip_and_wrong_key():
    cipher = TokenCipher(DEMO_TOKEN_KEY)
    secret = cipher.encrypt("shpat_abc")
    assert secret != "shpat_abc" and cipher.decrypt(secret) == "shpat_abc"
    other = TokenCipher("dGVzdC10ZXN0LXRlc3QtdGVzdC10ZXN0LXRlc3QtMDA=")
    with pytest.raises(ValueError):
        other.decrypt(secret)
    with pytest.raises(ValueError, match="32 bytes"):
        TokenCipher("too-short")


def test_app_url_from_the_shopify_cli_variables():
    assert Config.from_env({"APP_URL": "https://tunnel.example.com/"}).SHOPIFY_APP_URL == "https://tunnel.example.com"
    assert Config.from_env({"HOST": "https://h.example.com"}).SHOPIFY_APP_URL == "https://h.example.com"
    assert Config.from_env({"HOST": "worker-7"}).SHOPIFY_APP_URL == "http://127.0.0.1:5000"
    both = {"SHOPIFY_APP_URL": "https://app.example.com", "APP_URL": "https://tunnel.example.com"}
    assert Config.from_env(both).SHOPIFY_APP_URL == "https://app.example.com"


def test_every_route_is_a_merchant_route_or_a_known_public_one(app):
    """Security: a new route cannot skip the session token by accident."""
    from kinnekt.web.auth import require_merchant
    public = {"auth", "shopify_oauth", "webhooks", "sms_webhooks", "redirects", "storefront", "health",
              "pixel",  # the web pixel's ingest: its shop key, size and rate limits (kinnekt/web/pixel.py)
              "audience_oauth"}  # ad platforms' login round trip: signed state bound to the browser, rate-limited
    unguarded = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.rpartition(".")[0] or None
        if rule.endpoint == "static" or blueprint in public:
            continue
        if require_merchant not in app.before_request_funcs.get(blueprint, []):
            unguarded.append(rule.rule)
    assert unguarded == []


def test_oversized_upload_is_refused_before_the_view(app, client, auth):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == 16 * 1_048_576
    response = client.post("/segments/lists/", headers=auth, content_type="text/csv", data=b"x" * (limit + 1))
    assert response.status_code == 413


def test_the_demos_public_url_follows_host_and_port_unless_one_is_set():
    """Issue 20: `PORT=5101 make run` made links to http://127.0.0.1:5000, where nothing listens."""
    demo = {"KINNEKT_DEMO": "1"}
    assert Config.from_env({**demo, "PORT": "5101"}).SHOPIFY_APP_URL == "http://127.0.0.1:5101"
    assert Config.from_env({**demo, "HOST": "localhost", "PORT": "5101"}).SHOPIFY_APP_URL == "http://localhost:5101"
    assert Config.from_env({**demo, "HOST": "0.0.0.0", "PORT": "5101"}).SHOPIFY_APP_URL == "http://127.0.0.1:5101"
    set_url = {**demo, "PORT": "5101", "SHOPIFY_APP_URL": "https://demo.example.com"}
    assert Config.from_env(set_url).SHOPIFY_APP_URL == "https://demo.example.com"
    assert Config.from_env({"PORT": "5101"}).SHOPIFY_APP_URL == "http://127.0.0.1:5000"  # production: never guessed


@pytest.fixture
def own_database(database_url):
    """For a test that creates an app on a database of its own: the suite's shared Session is bound back to the
    suite's database afterwards (create_app binds it to the new app's), so later tests do not write elsewhere."""
    yield
    from kinnekt import db as kdb
    kdb.configure(database_url)


def test_demo_run_serves_links_at_its_own_host_and_port(monkeypatch, tmp_path, own_database):
    """`flask demo run --port 5101` makes the app's public URL (short links, the shareable link) that address."""
    from kinnekt import create_app
    monkeypatch.delenv("SHOPIFY_APP_URL", raising=False)
    monkeypatch.delenv("APP_URL", raising=False)
    monkeypatch.delenv("HOST", raising=False)
    cfg = Config.from_env({"KINNEKT_DEMO": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}"})
    app = create_app(cfg)
    served = {}
    monkeypatch.setattr("werkzeug.serving.run_simple", lambda host, port, wsgi, **kw: served.update(
        url=wsgi.config["SHOPIFY_APP_URL"], port=port))
    monkeypatch.setattr("kinnekt.cli._seed_demo", lambda customers, reset: False)
    monkeypatch.setattr("kinnekt.schedule.start_background", lambda app: None)
    result = app.test_cli_runner().invoke(args=["demo", "run", "--port", "5101"])
    assert result.exit_code == 0, result.output
    assert served == {"url": "http://127.0.0.1:5101", "port": 5101}
