"""Benchmark: the CPU a campaign sender spends choosing each message's sender, robust to the machine's load.

    .venv/bin/python -m bench.senders [--messages 20000]

A shop with its own senders (a US toll-free default, a US long code, a British mobile default, a British sender
name, a Canadian number not linked) sends to `--messages` recipients, a third each in the US, the UK and France.
What is timed is what `kinnekt.campaigns.sending._route` adds per message once the batch has loaded the shop's
senders: the recipient's country (`prices.country_of`, phonenumbers) and `senders.pick`. Reported: this process's
CPU time (time.process_time) per message, against the same loop without the choice (the baseline of a shop with
no senders of its own, where `_route` returns at once). No database: the senders are built in memory.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args(argv)
    from kinnekt.models import SenderNumber
    from kinnekt.sms import prices, senders
    now = dt.datetime(2026, 12, 7)
    own = [SenderNumber(id=i, msisdn=m, country=c, kind=k, is_default=d, linked_at=now if linked else None)
           for i, (m, c, k, d, linked) in enumerate([
               ("18885550101", "US", "toll_free", True, True), ("12125550142", "US", "long_code", False, True),
               ("447700900123", "GB", "mobile", True, True), ("Northwind", "GB", "alphanumeric", False, True),
               ("15145550100", "CA", "long_code", False, False)], start=1)]
    usable = [s for s in own if s.linked_at is not None]
    phones = [("+1212555%04d", "+4474001%05d", "+336123%05d")[i % 3] % (i % 10000) for i in range(args.messages)]
    chosen: dict[str, int] = {}
    started = time.process_time()
    for phone in phones:
        sender = senders.pick(usable, prices.country_of(phone))
        address = senders.address(sender)
        chosen[address] = chosen.get(address, 0) + 1
    with_choice = time.process_time() - started
    started = time.process_time()
    for phone in phones:
        chosen.get(phone)
    baseline = time.process_time() - started
    per = (with_choice - baseline) / args.messages * 1e6
    print(f"| messages | CPU with the choice | CPU of the bare loop | per message |\n|---|---|---|---|\n"
          f"| {args.messages:,} | {with_choice * 1000:.0f} ms | {baseline * 1000:.1f} ms | {per:.1f} µs |")
    print("\nsenders used:", ", ".join(f"{k} {v:,}" for k, v in sorted(chosen.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
