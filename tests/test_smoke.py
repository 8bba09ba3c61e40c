"""The app starts and protects its pages."""


def test_page_requires_token(client, db):
    response = client.get("/segments/", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["X-Shopify-Retry-Invalid-Session-Request"] == "1"


def test_page_with_token(client, auth):
    response = client.get("/segments/", headers=auth)
    assert response.status_code == 200
    assert 'id="segments-page"' in response.get_data(as_text=True)
