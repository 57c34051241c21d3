"""The first-run setup page behind the link the server logs: a real form that posts to POST /api/v1/setup."""

from __future__ import annotations

from fastapi.testclient import TestClient

from studiolo.services import Services


def test_setup_page_offers_the_form_until_an_admin_exists(api: TestClient, services: Services) -> None:
    token = services.admin.setup_token()
    page = api.get("/setup", params={"token": token})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert f'value="{token}"' in page.text and 'data-api="/api/v1/setup"' in page.text
    for field in ("token", "email", "display_name", "password"):
        assert f'<label for="{field}">' in page.text  # every control is labelled

    # What the page's script sends: the form's fields as JSON.
    body = {"token": token, "email": "owner@example.com", "display_name": "Owner", "password": "a long passphrase"}
    assert api.post("/api/v1/setup", json=body).status_code == 200
    done = api.get("/setup", params={"token": token})
    assert done.status_code == 200 and "Studiolo is set up" in done.text and "<form" not in done.text


def test_setup_page_escapes_what_it_is_given(api: TestClient) -> None:
    page = api.get("/setup", params={"token": '"><script>alert(1)</script>'})
    assert "<script>alert(1)</script>" not in page.text
    assert "&#34;&gt;&lt;script&gt;" in page.text
    assert api.get("/setup", params={"token": "x" * 500}).status_code == 422
