"""The fake Vonage of the tests (tests/fake_vonage.py) in a process of its own, noting when each request arrives.

In the bench's own process, the provider's arrival times also held that process's pauses (its garbage
collections over the data it built, the polling of the database): a pause there held requests back and let
them in together, which looked like a burst the senders never made. Here the server has a process to itself,
started clean (spawn), its start-up objects frozen out of the collector, and it keeps only the last requests'
details. The parent talks to it over a pipe.
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class FakeProvider:
    """Handle on the provider process: `host`, `ca_path`, and the arrivals so far. `application_id`: the Vonage
    application it accepts (the tests' one by default; signed with the tests' private key, `env()`); an id of its
    own gives a bench rate limits no other sender shares."""

    def __init__(self, directory: str, application_id: str | None = None):
        from tests.fake_vonage import APPLICATION_ID, PRIVATE_KEY
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self.application_id = application_id or APPLICATION_ID
        self._process = context.Process(target=_serve, args=(child, directory, self.application_id, PRIVATE_KEY),
                                        daemon=True)

    def env(self) -> dict:
        """The settings that send through this provider: application id, private key, host, CA bundle."""
        from tests.fake_vonage import PRIVATE_KEY
        return {"VONAGE_APPLICATION_ID": self.application_id, "VONAGE_PRIVATE_KEY": PRIVATE_KEY,
                "VONAGE_HOST_OVERRIDE": self.host, "REQUESTS_CA_BUNDLE": self.ca_path}

    def start(self) -> "FakeProvider":
        self._process.start()
        self.host, self.ca_path = self._pipe.recv()
        self.pid = self._process.pid
        return self

    def _ask(self, command: str):
        self._pipe.send(command)
        return self._pipe.recv()

    def count(self) -> int:
        """Requests received since the last clear."""
        return self._ask("count")

    def arrivals(self) -> list[tuple[float, str]]:
        """(monotonic arrival time, client-ref) of each request since the last clear."""
        return self._ask("arrivals")

    def recipients(self) -> list[str]:
        """The `to` number of each request since the last clear, in the order of `arrivals`."""
        return self._ask("recipients")

    def clear(self) -> None:
        """Forget the arrivals so far."""
        self._ask("clear")

    def stop(self) -> None:
        """Stop the server and its process."""
        try:
            self._ask("stop")
        finally:
            self._process.join(timeout=10)


def _serve(pipe, directory: str, application_id: str, private_key: str) -> None:
    import gc

    import trustme
    sys.path.insert(0, str(ROOT))
    from tests.fake_vonage import FakeVonage

    class Timed(FakeVonage):
        def __init__(self, ca):
            super().__init__(ca, application_id=application_id, private_key_pem=private_key)
            self.requests = deque(maxlen=100)  # the tests' full record would grow with every request
            self.arrivals: list[tuple[float, str]] = []
            self.recipients: list[str] = []

        def _answer(self, message, authorization):
            with self._lock:
                self.arrivals.append((time.monotonic(), message.get("client_ref", "")))
                self.recipients.append(message.get("to", ""))
            return super()._answer(message, authorization)

    ca = trustme.CA()
    ca_path = str(Path(directory) / "fake-ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    fake = Timed(ca).start()
    gc.collect()
    gc.freeze()
    pipe.send((fake.host, ca_path))
    while True:
        command = pipe.recv()
        if command == "count":
            pipe.send(len(fake.arrivals))
        elif command == "arrivals":
            with fake._lock:
                pipe.send(list(fake.arrivals))
        elif command == "recipients":
            with fake._lock:
                pipe.send(list(fake.recipients))
        elif command == "clear":
            with fake._lock:
                fake.arrivals.clear()
                fake.recipients.clear()
            pipe.send(None)
        elif command == "stop":
            fake.stop()
            pipe.send(None)
            return
