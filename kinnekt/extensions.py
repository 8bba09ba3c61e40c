"""Flask extensions, created unbound here and initialised in create_app."""
from htmx_flask import Htmx

htmx = Htmx()
