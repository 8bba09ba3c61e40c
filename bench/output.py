"""What every benchmark prints at its end: the machine it ran on, and the report as JSON (to a file as well)."""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path


def machine(load_before) -> dict:
    """CPUs, Python, platform, the load average before the run and now, and the date (UTC)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def emit(report: dict, path: str | None) -> None:
    """Print the report as JSON, and write it to `path` too when one is given."""
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if path:
        Path(path).write_text(text)
