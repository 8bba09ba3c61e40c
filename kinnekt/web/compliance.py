"""Merchant downloads of customer data requests (Shopify's customers/data_request), as JSON."""
from __future__ import annotations

from flask import g, jsonify, url_for
from sqlalchemy import select

from kinnekt.db import Session
from kinnekt.models import DataRequest
from kinnekt.tenancy import get_or_404
from kinnekt.web.auth import merchant_blueprint

bp = merchant_blueprint("compliance", __name__, url_prefix="/compliance")


@bp.get("/data-requests")
def data_requests():
    """The shop's data requests, newest first, each with its download link."""
    rows = Session.scalars(select(DataRequest).where(DataRequest.shop_id == g.shop.id)
                           .order_by(DataRequest.requested_at.desc(), DataRequest.id.desc())).all()
    return jsonify({"data_requests": [{
        "id": r.id, "requested_at": r.requested_at.isoformat(), "shopify_request_id": r.shopify_request_id,
        "customer_id": r.customer_shopify_id, "email": r.email,
        "download_url": url_for("compliance.data_request", request_id=r.id),
    } for r in rows]})


@bp.get("/data-requests/<int:request_id>.json")
def data_request(request_id: int):
    """One data request's report, as a JSON file to download and send to the customer."""
    record = get_or_404(DataRequest, request_id)
    response = jsonify({"data_request": {"id": record.id, "shopify_request_id": record.shopify_request_id,
                                         "requested_at": record.requested_at.isoformat(),
                                         "customer_id": record.customer_shopify_id, "email": record.email,
                                         "phone": record.phone, "orders_requested": record.orders_requested},
                        "data": record.report})
    response.headers["Content-Disposition"] = f'attachment; filename="data-request-{record.id}.json"'
    response.headers["Cache-Control"] = "no-store"
    return response
