"""Tenant scoping: a session bound to a shop never sees another shop's rows; another shop's row is a 404."""
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import NotFound

from kinnekt import create_app
from kinnekt.config import config_for_tests
from kinnekt.db import utcnow
from kinnekt.models import Campaign, Keyword, Message, Subscriber
from kinnekt.tenancy import bind_shop, get_or_404
from kinnekt.web.auth import merchant_blueprint
from tests import factories


def _subscriber(shop, phone):
    return factories.new_subscriber(shop, phone=phone, subscribed_at=utcnow())


def test_bound_session_filters_selects_updates_and_joins(db, shop, other_shop):
    db.add_all([_subscriber(shop, "+12125550100"), _subscriber(other_shop, "+12125550101"),
                Keyword(shop_id=shop.id, word="JOIN"), Keyword(shop_id=other_shop.id, word="JOIN")])
    db.commit()
    bind_shop(shop.id)
    assert db.scalar(select(func.count()).select_from(Subscriber)) == 1
    assert [s.phone for s in db.scalars(select(Subscriber))] == ["+12125550100"]
    joined = db.execute(select(Subscriber.phone, Keyword.word)
                        .join(Keyword, Keyword.shop_id == Subscriber.shop_id)).all()
    assert joined == [("+12125550100", "JOIN")]
    db.execute(update(Subscriber).values(first_name="Touched"))
    db.commit()
    bind_shop(None)
    names = dict(db.execute(select(Subscriber.phone, Subscriber.first_name)).all())
    assert names == {"+12125550100": "Touched", "+12125550101": None}


def test_a_campaign_message_belongs_to_the_campaigns_shop(db, shop, other_shop):
    """The (campaign, shop) key: the database refuses a message filed under another shop than its campaign's."""
    campaign = Campaign(shop_id=shop.id, name="Spring", body="Hi", status="in_progress")
    db.add(campaign)
    db.commit()
    db.add(Message(shop_id=other_shop.id, campaign_id=campaign.id, to_phone="+12125550104", status="pending"))
    with pytest.raises(IntegrityError):
        db.commit()
    db.rollback()
    db.add(Message(shop_id=shop.id, campaign_id=campaign.id, to_phone="+12125550104", status="pending"))
    db.add(Message(shop_id=other_shop.id, to_phone="+12125550105", kind="reply", status="sent"))  # no campaign
    db.commit()
    db.delete(campaign)  # its messages go with it; the reply stays
    db.commit()
    assert db.scalars(select(Message.to_phone)).all() == ["+12125550105"]


def test_get_or_404_refuses_other_shops_row(db, shop, other_shop):
    theirs = _subscriber(other_shop, "+12125550102")
    mine = _subscriber(shop, "+12125550103")
    db.add_all([theirs, mine])
    db.commit()
    bind_shop(shop.id)
    assert get_or_404(Subscriber, mine.id).phone == "+12125550103"
    with pytest.raises(NotFound):
        get_or_404(Subscriber, theirs.id)  # exists, but not for this shop: 404, never 403
    with pytest.raises(NotFound):
        get_or_404(Subscriber, "not-a-number")


def test_get_or_404_needs_a_bound_session(db, shop):
    with pytest.raises(RuntimeError):
        get_or_404(Subscriber, 1)


@pytest.fixture(scope="module")
def probe_client(app, database_url):
    """A second app on the same database with a merchant route that loads a subscriber by id, as views do."""
    probe_app = create_app(config_for_tests(DATABASE_URL=database_url))
    probe = merchant_blueprint("tenancy_probe", __name__, url_prefix="/_probe")

    @probe.get("/subscribers/<sid>")
    def show(sid):
        return get_or_404(Subscriber, sid).phone

    probe_app.register_blueprint(probe)
    return probe_app.test_client()


def test_other_shops_row_is_404_through_a_route(probe_client, db, shop, other_shop, token_for):
    client = probe_client
    theirs = _subscriber(other_shop, "+12125550104")
    mine = _subscriber(shop, "+12125550105")
    db.add_all([theirs, mine])
    db.commit()
    headers = {"Authorization": f"Bearer {token_for(shop.domain)}"}
    assert client.get(f"/_probe/subscribers/{mine.id}", headers=headers).get_data(as_text=True) == "+12125550105"
    assert client.get(f"/_probe/subscribers/{theirs.id}", headers=headers).status_code == 404
    other_headers = {"Authorization": f"Bearer {token_for(other_shop.domain)}"}
    assert client.get(f"/_probe/subscribers/{theirs.id}", headers=other_headers).status_code == 200
