"""Where a send's time goes between the rate limiter and the provider: a traced worker and the trace's reading.

`python -m bench.send_trace <dir> [worker args]` runs `python -m workers` with two wrappers, when the bench
asks for a trace: the shared limiter's `acquire` notes when its booking began and when its slot came, and
`VonageGateway._send` notes when the request was handed to the connection and when the answer was read. Each
work horse appends one line per request to `<dir>/<pid>.trace`:

    client_ref  attempt_started  granted  send_started  answered        (monotonic seconds)

CLOCK_MONOTONIC is one clock for every process on the machine, so these times and the fake provider's arrival
times (its own process, bench/fake_process.py) can be set side by side: `read` joins them by client-ref and
`report` says, for the busiest second at the provider, whether the requests crowded already at the senders
or only on their way. The wrappers add a few microseconds per request and change nothing else.
"""
from __future__ import annotations

import bisect
import gc
import os
import statistics
import sys
import threading
import time
from pathlib import Path

_granted = threading.local()


def install(directory: str) -> None:
    """Wrap the limiter and the gateway of this process (and of the work horses it forks)."""
    from kinnekt.sms import ratelimit, vonage

    original_acquire = ratelimit.RedisRateLimiter.acquire
    original_send = vonage.VonageGateway._send

    def acquire(self, max_wait=None):
        started = time.monotonic()
        result = original_acquire(self, max_wait)
        _granted.times = (started, time.monotonic())
        return result

    files: dict[int, object] = {}

    def _send(self, client_ref, body, authorization):
        started = time.monotonic()
        result = original_send(self, client_ref, body, authorization)
        answered = time.monotonic()
        attempt, granted = getattr(_granted, "times", (0.0, 0.0))
        _granted.times = (0.0, 0.0)
        _out().write(f"{client_ref} {attempt:.6f} {granted:.6f} {started:.6f} {answered:.6f}\n")
        return result

    def _out():
        pid = os.getpid()
        out = files.get(pid)
        if out is None:
            out = files[pid] = open(Path(directory) / f"{pid}.trace", "a", buffering=1)
        return out

    collecting: list[float] = []

    def on_gc(phase, info):
        if phase == "start":
            collecting[:] = [time.monotonic()]
        elif collecting:
            ended = time.monotonic()
            if ended - collecting[0] > 0.002:  # the pauses that matter at 30/s (a slot is 35 ms)
                _out().write(f"gc{info['generation']} {collecting[0]:.6f} {ended:.6f}\n")

    ratelimit.RedisRateLimiter.acquire = acquire
    vonage.VonageGateway._send = _send
    gc.callbacks.append(on_gc)


def read(directory: str, arrivals: list[tuple[float, str]]) -> list[dict]:
    """Every traced request joined with its arrival at the provider (by client-ref), in order of arrival."""
    sent: dict[str, tuple[float, ...]] = {}
    for path in Path(directory).glob("*.trace"):
        for line in path.read_text().splitlines():
            ref, *times = line.split()
            if not ref.startswith("gc"):
                sent[ref] = tuple(float(t) for t in times)
    rows = []
    for arrived, ref in sorted(arrivals):
        times = sent.get(ref)
        if times:
            rows.append({"ref": ref, "attempt": times[0], "granted": times[1], "sent": times[2],
                         "answered": times[3], "arrived": arrived})
    return rows


def busiest(times: list[float], width: float = 1.0) -> tuple[int, float]:
    """Most times inside any window of `width` seconds, and where that window starts."""
    times = sorted(times)
    best, start = 0, 0.0
    for i, t in enumerate(times):
        n = bisect.bisect_left(times, t + width) - i
        if n > best:
            best, start = n, t
    return best, start


def pauses(directory: str) -> list[tuple[float, float]]:
    """The workers' garbage collections longer than 2 ms: (start, end), monotonic seconds."""
    found = []
    for path in Path(directory).glob("*.trace"):
        for line in path.read_text().splitlines():
            if line.startswith("gc"):
                _, start, end = line.split()
                found.append((float(start), float(end)))
    return sorted(found)


def report(rows: list[dict], gc_pauses: list[tuple[float, float]] = ()) -> dict:
    """The busiest second at each stage (grant, request handed over, arrival), the delays between stages
    (ms: median, 99th percentile, max), and the requests of the busiest second at the provider."""
    if len(rows) < 2:
        return {"traced": len(rows)}
    out: dict = {"traced": len(rows)}
    for stage in ("attempt", "granted", "sent", "arrived"):
        out[f"busiest_1s_{stage}"] = busiest([r[stage] for r in rows if r[stage]])[0]
    for name, a, b in (("grant_round_trip", "attempt", "granted"), ("grant_to_send", "attempt", "sent"),
                       ("send_to_arrival", "sent", "arrived")):
        gaps = sorted(1000 * (r[b] - r[a]) for r in rows if r[a])
        if gaps:
            out[f"{name}_ms"] = {"median": round(statistics.median(gaps), 2),
                                 "p99": round(gaps[int(0.99 * (len(gaps) - 1))], 2), "max": round(gaps[-1], 2)}
    if gc_pauses:
        longest = sorted(1000 * (end - start) for start, end in gc_pauses)
        out["worker_gc_pauses_over_2ms"] = {"count": len(longest), "max_ms": round(longest[-1], 1)}
    count, start = busiest([r["arrived"] for r in rows])
    out["worker_gc_in_busiest_arrival_second"] = [
        {"start_ms": round(1000 * (a - start), 1), "ms": round(1000 * (b - a), 1)}
        for a, b in gc_pauses if b > start - 0.1 and a < start + 1.0]
    inside = [r for r in rows if start <= r["arrived"] < start + 1.0]
    out["busiest_arrival_second"] = [
        {"ref": r["ref"], "arrived_ms": round(1000 * (r["arrived"] - start), 1),
         "attempt_ms": round(1000 * (r["attempt"] - start), 1) if r["attempt"] else None,
         "sent_ms": round(1000 * (r["sent"] - start), 1)} for r in inside] if count > 0 else []
    return out


def main(argv: list[str]) -> int:
    """Install the wrappers, then run the worker with the remaining arguments."""
    install(argv[0])
    from workers.__main__ import main as worker_main
    return worker_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
