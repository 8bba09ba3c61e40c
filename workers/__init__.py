"""RQ job entry points and worker start-up. Jobs take ids, never objects, and run inside an app context."""
from __future__ import annotations

import functools
from typing import Callable

_app = None


def set_worker_app(app) -> None:
    """Use this app for jobs run by this process (the worker entry point sets it)."""
    global _app
    _app = app


def worker_app():
    """The Flask app of this worker process, created once from the environment."""
    global _app
    if _app is None:
        from kinnekt import create_app
        _app = create_app()
    return _app


def job(func: Callable) -> Callable:
    """Make `func` an RQ-importable job that runs in an app context and releases its DB session."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from flask import has_app_context
        from kinnekt.db import Session, after_fork
        after_fork()
        if has_app_context():
            return func(*args, **kwargs)
        with worker_app().app_context():
            try:
                return func(*args, **kwargs)
            finally:
                Session.remove()

    return wrapper
