"""Where jobs live and which way imports go: jobs beside their domain (kinnekt/<domain>/tasks.py), the old
workers.* paths still naming the same jobs on the same lanes, no kinnekt module importing workers/, no import
cycle between kinnekt's packages or modules, imports only down the layers (LAYERS), and job ids built in the tasks
modules only."""
from __future__ import annotations

import ast
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from kinnekt.jobs import JOBS, RECOVERERS, TASK_MODULES, import_task_modules
from kinnekt.queue import LANES, job_path, lane_for

ROOT = Path(__file__).resolve().parents[1]
KINNEKT = ROOT / "kinnekt"

OLD_JOB_PATHS = {
    "workers.automations.fire_all_automations": "default",
    "workers.automations.fire_automations": "default",
    "workers.campaigns.send_campaign": "sends",
    "workers.campaigns.start_campaign": "sends",
    "workers.campaigns.start_due_campaigns": "default",
    "workers.campaigns.wake_campaign": "default",
    "workers.campaigns.watch_senders": "urgent",
    "workers.jobs.prune_signup_attempts": "default",
    "workers.jobs.prune_webhook_events": "default",
    "workers.jobs.recover_due_work": "default",
    "workers.jobs.refresh_statistics": "default",
    "workers.segments.build_segment": "bulk",
    "workers.segments.recheck_pending": "default",
    "workers.segments.recheck_subscribers": "default",
    "workers.segments.sweep_segments": "default",
    "workers.settings.recompute_attribution": "bulk",
    "workers.shopify.import_bulk_result": "bulk",
    "workers.shopify.install_shop": "bulk",
    "workers.shopify.poll_bulk": "bulk",
    "workers.shopify.reconcile": "bulk",
    "workers.shopify.reconcile_all": "default",
    "workers.shopify.start_bulk_sync": "bulk",
    "workers.sms.process_inbound": "urgent",
    "workers.sms.process_receipt": "default",
    "workers.sms.prune_signature_nonces": "default",
    "workers.sms.send_message": "urgent",
    "workers.sms.write_back_sms_consent": "default",
    "workers.subscribers.import_subscribers": "bulk",
    "workers.webhooks.process_webhook_event": "default",
}
"""Every job of the release before the jobs moved to kinnekt/<domain>/tasks.py, by the dotted path RQ stored it
by, with its lane then. Queued jobs of that release name these paths: they must keep working for one release."""

LAYERS = (
    # foundation: settings, the database and its models, the queue and the job decorator, the signals
    {"kinnekt.config", "kinnekt.defaults", "kinnekt.casefold", "kinnekt.numbers", "kinnekt.crypto", "kinnekt.signals",
     "kinnekt.db", "kinnekt.db_statistics", "kinnekt.models", "kinnekt.migrate", "kinnekt.tenancy", "kinnekt.queue",
     "kinnekt.shared_cache",
     "kinnekt.jobs"},
    {"kinnekt.sms"},  # sending one text, receipts, rate limits, encoding
    {"kinnekt.subscribers"},  # people and their consent, phones, properties, keywords, inbound texts
    {"kinnekt.segments"},  # rules over subscribers, customers and orders; membership; static lists
    {"kinnekt.shopify"},  # the Admin API, install, webhooks, ingest, discounts (creates segments, re-checks them)
    {"kinnekt.campaigns"},  # audience (segments), discount codes (shopify), sending (sms), attribution
    {"kinnekt.billing"},  # plans and usage charges through Shopify; senders ask it through signals
    {"kinnekt.storefront"},  # the web pixel's events and who did them (tracked links of campaigns tie browsers)
    {"kinnekt.automations"},  # segment entries become campaign messages
    {"kinnekt.flows"},  # triggers and steps over segments, campaigns and the automations' held codes
    {"kinnekt.audiences"},  # segments kept in sync with ad platforms' audiences (Meta, Google Ads)
    # the application: features across domains, processes' entry points
    {"kinnekt.shops", "kinnekt.shop_settings", "kinnekt.dashboard", "kinnekt.health", "kinnekt.schedule",
     "kinnekt.demo", "kinnekt.cli", "kinnekt.cli_segments", "kinnekt.cli_shops"},
    {"kinnekt.web"},  # the blueprints
)
"""kinnekt's packages and top-level modules from the bottom up (docs/architecture.md, "Import layers"): a module
imports only from its own layer or the ones below, at the top of a file or inside a function alike. Within a layer
no cycle is allowed either. A lower layer that must tell a higher one something announces a kinnekt.signals signal.
The app factory (kinnekt/__init__.py) is the composition root above them all. A new package takes its place here."""


# ------------------------------------------------------------------------------------------------ old paths

@pytest.fixture
def redis_conn():
    from redis import Redis

    from tests.test_queue import REDIS_URL
    conn = Redis.from_url(REDIS_URL)
    yield conn
    conn.close()


@pytest.mark.parametrize("path, lane", sorted(OLD_JOB_PATHS.items()))
def test_an_old_job_path_is_the_moved_job_on_the_same_lane(path, lane):
    from rq.utils import import_attribute
    import_task_modules()
    old = import_attribute(path)  # what an RQ worker does with a queued job's stored path
    assert job_path(old) != path, "the job itself should live in kinnekt/, the old path be an alias"
    assert JOBS[job_path(old)] is old
    assert lane_for(old) == lane


def test_an_old_path_job_stored_in_redis_runs_the_moved_job(redis_conn):
    from rq.job import Job

    from kinnekt.campaigns.tasks import SEND_CAMPAIGN, send_campaign
    stored = Job.create("workers.campaigns.send_campaign", args=(1, 0, 0), connection=redis_conn,
                        id=f"test-old-path-{uuid.uuid4().hex}")
    stored.save()
    try:
        found = Job.fetch(stored.id, connection=redis_conn)
        assert found.func_name == "workers.campaigns.send_campaign" and found.func is send_campaign
        assert found.func_name in SEND_CAMPAIGN  # the watchdog and a lost worker's clean-up still know it
    finally:
        stored.delete()


def test_every_job_and_recoverer_is_registered_by_importing_the_task_modules():
    import_task_modules()
    assert all(lane_for(func) in LANES for func in JOBS.values())
    assert {name.rsplit(".", 1)[0] for name in JOBS} <= {*TASK_MODULES}
    names = {func.__name__ for func in RECOVERERS}
    assert {"requeue_campaigns", "requeue_unprocessed_webhooks", "requeue_inbound_sms", "requeue_due_replies",
            "resume_subscriber_imports", "requeue_shopify_work", "requeue_unbuilt_segments"} <= names
    assert len(names) == len(RECOVERERS), "a recoverer registered twice would run twice"


# ------------------------------------------------------------------------------------------------ imports

def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(KINNEKT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules=()) -> list[str]:
    """Every module `name` imports (at any level of the file: function bodies and `if TYPE_CHECKING:` blocks
    included, and `importlib.import_module("kinnekt…")` with a literal name), as dotted names; for `from a import b`
    `a.b` when that is one of `modules`, else `a` and `a.b` (b may be a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                found += [f"{module}.{alias.name}"] if f"{module}.{alias.name}" in modules else [
                    module, f"{module}.{alias.name}"]
        elif isinstance(node, ast.Call) and _called_name(node.func) in ("import_module", "__import__") \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append(node.args[0].value)
    return found


def _called_name(func: ast.expr) -> str | None:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _node(module: str) -> str:
    """A module's node in the package graph: its package under kinnekt (kinnekt.campaigns), or itself for a
    top-level module (kinnekt.queue)."""
    return ".".join(module.split(".")[:2])


def _package_edges() -> dict[tuple[str, str], list[str]]:
    """(from, to) package edges, with the modules that make each one. The app factory (kinnekt/__init__.py, which
    imports every blueprint) is the composition root above everything: its own imports are left out."""
    modules = _modules()
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, path in modules.items():
        if name == "kinnekt":
            continue
        for target in _imports(name, path, modules):
            if target.split(".")[0] != "kinnekt":
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            source, dest = _node(name), _node(target)
            if source != dest and dest != "kinnekt":
                edges[(source, dest)].append(name)
    return edges


def _cycle_edges(edges) -> set[tuple[str, str]]:
    """The edges whose ends lie in one strongly connected component (an edge on some cycle)."""
    graph = defaultdict(set)
    for source, dest in edges:
        graph[source].add(dest)

    def reach(start):
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {node: reach(node) for node in list(graph)}
    return {(s, d) for s, d in edges if s in reachable.get(d, ())}


def test_no_kinnekt_module_imports_workers():
    offenders = [name for name, path in _modules().items()
                 if any(target.split(".")[0] == "workers" for target in _imports(name, path))]
    assert offenders == [], "kinnekt/ must not import workers/ (jobs live in kinnekt/<domain>/tasks.py)"


def test_no_import_cycle_between_packages():
    edges = _package_edges()
    on_cycles = _cycle_edges(edges)
    assert on_cycles == set(), f"import cycles between packages (edge: modules making it): " \
                               f"{ {edge: edges[edge] for edge in sorted(on_cycles)} }"


def _layer_of() -> dict[str, int]:
    return {node: number for number, layer in enumerate(LAYERS) for node in layer}


def test_every_package_has_its_place_in_the_layers():
    layer_of = _layer_of()
    assert sum(len(layer) for layer in LAYERS) == len(layer_of), "a node is in two layers"
    nodes = {_node(name) for name in _modules()} - {"kinnekt"}
    assert nodes - layer_of.keys() == set(), "place each new package or top-level module in LAYERS"


def test_no_module_imports_from_a_higher_layer():
    layer_of = _layer_of()
    upward = {edge: modules for edge, modules in _package_edges().items()
              if layer_of.get(edge[0], -1) < layer_of.get(edge[1], len(LAYERS))}
    assert upward == {}, "imports from a higher layer (edge: modules making it); announce a kinnekt.signals " \
                         f"signal, or move the code to the layer that owns it: {upward}"


def test_the_layer_check_sees_imports_in_functions_and_by_name(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text(
        "import importlib\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from kinnekt.campaigns import stats\n"
        "def late():\n"
        "    from kinnekt.web.hx import is_htmx\n"
        "    import kinnekt.automations.engine\n"
        "    return importlib.import_module('kinnekt.dashboard')\n")
    found = set(_imports("kinnekt.sms.probe", source, _modules()))
    assert {"kinnekt.campaigns.stats", "kinnekt.web.hx", "kinnekt.web.hx.is_htmx", "kinnekt.automations.engine",
            "kinnekt.dashboard"} <= found
    assert "kinnekt.campaigns" not in found, "`from a import module` depends on the module, not on a's __init__"


def test_no_import_cycle_between_domain_modules():
    # A tasks module calls its domain modules and they call its enqueue helpers, by design: tasks modules are
    # left out. Between the domain modules themselves no cycle is allowed (lifecycle <-> sending, sending ->
    # membership -> engine -> sending, optin <-> outgoing are gone: see kinnekt/signals.py).
    modules = _modules()
    edges = defaultdict(list)
    for name, path in modules.items():
        if name == "kinnekt" or name.endswith(".tasks"):
            continue
        for target in _imports(name, path, modules):
            if target.split(".")[0] != "kinnekt":
                continue
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target not in (name, "kinnekt") and not target.endswith(".tasks"):
                edges[(name, target)].append(name)
    on_cycles = _cycle_edges(edges)
    assert on_cycles == set(), f"import cycles between modules: {sorted(on_cycles)}"


def test_every_signal_receiver_is_in_a_receiver_module():
    from kinnekt import signals
    connecting = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(
                    isinstance(d, ast.Attribute) and d.attr == "connect" for d in node.decorator_list):
                connecting.add(name)
    assert connecting == set(signals.RECEIVER_MODULES)
    signals.announce(signals.segment_members_changed, None, segment_ids=[])  # connects every receiver
    for signal in (signals.segment_members_changed, signals.number_unreachable, signals.subscribers_changed,
                   signals.sms_consent_changed, signals.keyword_created, signals.keyword_deleting,
                   signals.orders_written):
        assert [receiver.__module__ for receiver in signal.receivers_for(None)] != []


def test_the_cycle_check_finds_a_cycle():
    edges = {("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): []}
    assert _cycle_edges(edges) == {("a", "b"), ("b", "c"), ("c", "a")}


def test_job_ids_are_built_in_the_tasks_modules_only():
    builders = set()
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and any(k.arg == "job_id" and not isinstance(k.value, ast.Name)
                                                  for k in node.keywords):
                builders.add(name)
    allowed = {"kinnekt.jobs", "kinnekt.queue"} | {name for name in _modules() if name.endswith(".tasks")}
    assert builders and builders <= allowed, f"job ids built outside a tasks module: {builders - allowed}"


def test_every_module_imports_on_its_own():
    # Domain modules and their tasks modules import each other: each must still import first, in a fresh
    # interpreter, whichever of them is imported first (the tasks modules, the modules that import one, and
    # workers/).
    modules = _modules()
    names = sorted(name for name, path in modules.items()
                   if name.endswith(".tasks") or name in ("kinnekt.jobs", "kinnekt.schedule")
                   or any(target.endswith(".tasks") for target in _imports(name, path))) + [
        "workers", "workers.worker", "workers.cron", "workers.schedule",
        *sorted({path.rsplit(".", 1)[0] for path in OLD_JOB_PATHS})]
    script = (
        "import importlib, sys\n"
        "base = set(sys.modules)\n"
        "failed = []\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m not in base and m.split('.')[0] in ('kinnekt', 'workers')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
