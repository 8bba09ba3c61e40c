"""WSGI entry point: `gunicorn app:app`, `flask --app app ...`."""
from kinnekt import create_app

app = create_app()
