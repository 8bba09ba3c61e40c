"""The app's home: the embedded app opens on Segments."""
from __future__ import annotations

from flask import redirect, request, url_for

from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("home", __name__)


@bp.get("/")
def index():
    """Send the merchant to the Segments page, keeping the embedded query (shop, host, id_token)."""
    return redirect(url_for("segments.index", **request.args.to_dict()))
