"""`/healthz` and `flask health`: the database and the queue answer; each lane's waiting work for the operator."""
from __future__ import annotations

import os
import uuid

import pytest

from kinnekt import queue as kqueue
from kinnekt.queue import RQJobQueue

REDIS_URL = os.environ.get("REDIS_URL_FOR_TESTS", "redis://127.0.0.1:6379/15")


def test_anyone_gets_ok_and_nothing_more(client, app, monkeypatch):
    monkeypatch.setitem(app.config, "HEALTH_TOKEN", "ops-secret")
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    wrong = client.get("/healthz", headers={"Authorization": "Bearer ops-secre"})
    assert wrong.json == {"status": "ok"}


def test_the_token_holder_sees_the_lanes(client, app, monkeypatch):
    monkeypatch.setitem(app.config, "HEALTH_TOKEN", "ops-secret")
    body = client.get("/healthz", headers={"Authorization": "Bearer ops-secret"}).json
    assert body["status"] == "ok" and body["queue"] == "in-process" and body["problems"] == []
    assert [lane["lane"] for lane in body["lanes"]] == ["urgent", "default", "sends", "bulk"]


def test_without_a_token_configured_no_one_sees_details(client, app, monkeypatch):
    monkeypatch.setitem(app.config, "HEALTH_TOKEN", "")
    assert client.get("/healthz", headers={"Authorization": "Bearer "}).json == {"status": "ok"}


def test_an_unreachable_queue_is_a_503_with_the_reason(client, app, monkeypatch):
    dead = RQJobQueue("redis://127.0.0.1:1/0", "nowhere")
    monkeypatch.setitem(app.extensions, "kinnekt_queue", dead)
    monkeypatch.setitem(app.config, "HEALTH_TOKEN", "ops-secret")
    response = client.get("/healthz", headers={"Authorization": "Bearer ops-secret"})
    assert response.status_code == 503
    assert response.json["status"] == "unavailable" and response.json["problems"][0].startswith("queue: ")


@pytest.mark.redis
def test_rq_lanes_and_workers_in_the_report_and_the_command(app, db, monkeypatch):
    from kinnekt.subscribers.tasks import process_inbound
    name = f"test-health-{uuid.uuid4().hex[:8]}"
    rq_queue = RQJobQueue(REDIS_URL, name)
    monkeypatch.setitem(app.extensions, "kinnekt_queue", rq_queue)
    monkeypatch.setattr(kqueue, "_queue", rq_queue)
    try:
        rq_queue.enqueue(process_inbound, 1, job_id="one")
        result = app.test_cli_runner().invoke(args=["health"])
        assert result.exit_code == 0, result.output
        assert "queue: rq; ok" in result.output
        lines = {line.split()[1]: line for line in result.output.splitlines() if line.strip().startswith("lane ")}
        assert "waiting      1" in lines["urgent"] and "waiting      0" in lines["bulk"]
    finally:
        for q in rq_queue.lanes.values():
            q.empty()


def test_the_command_fails_when_the_queue_does_not_answer(app, db, monkeypatch):
    monkeypatch.setitem(app.extensions, "kinnekt_queue", RQJobQueue("redis://127.0.0.1:1/0", "nowhere"))
    result = app.test_cli_runner().invoke(args=["health"])
    assert result.exit_code == 1 and "problem: queue: " in result.output
