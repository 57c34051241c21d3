"""JSON a parser cannot take (issue 13, item 10): nesting past the interpreter's recursion limit, an integer of more
than 4300 digits, bytes that are not UTF-8. Every JSON body of the API and the multipart ``params`` field answer
422 as each route answers any other body that is not JSON (invalid_json on the generation routes, which parse
their own bodies; invalid_input with an error typed json_invalid on the others), never a 500 with a traceback in
the log (the multipart field) or a bare 400 http_error (FastAPI's own bodies)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import png_bytes

GEN = "/api/v1/generations"
BAD_JSON = {
    "deep": b"[" * 100_000,
    "deep_object": b'{"prompt": ' + b'{"a": ' * 50_000 + b"}",
    "long_integer": b'{"prompt": "x", "n": 1' + b"0" * 5000 + b"}",
    "not_utf8": b'{"prompt": "\xff\xfe"}',
    "truncated": b'{"prompt": "x"',
    # Past TextGuard's own parse (it looks for NUL escapes), then the route's.
    "deep_with_escape": b"[" * 100_000 + b'"\\u0000"',
}


def json_routes(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route whose body is JSON, path parameters filled with a placeholder."""
    routes = []
    for path, item in client.get("/openapi.json").json()["paths"].items():
        for method, op in item.items():
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                routes.append((method.upper(), path.replace("{", "").replace("}", "")))
    return routes


# The routes that read their own bodies, and have always answered invalid_json; FastAPI's answer invalid_input.
OWN_PARSERS = {("POST", GEN), ("POST", f"{GEN}/batch")}


# The compatible faces (issue 18) answer in their clients' shapes: OpenAI's (validation is 400 there) and A1111's.
FACES = ("/v1/", "/sdapi/")


def assert_face_refused(method: str, path: str, status: int, body: dict[str, Any]) -> None:
    if path.startswith("/sdapi/"):
        assert (status, body["detail"]) == (422, "The body is not valid JSON."), (method, path, body)
        assert body["error"] in ("invalid_input", "invalid_json"), (method, path, body)
    else:
        assert (status, body["error"]["message"]) == (400, "The body is not valid JSON."), (method, path, body)
        assert body["error"]["type"] == "invalid_request_error", (method, path, body)


@pytest.mark.parametrize("kind", BAD_JSON)
def test_every_json_body_refuses_json_it_cannot_parse_with_422(
    client: TestClient, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    routes = json_routes(client)
    assert len(routes) > 15 and ("POST", GEN) in routes and ("POST", f"{GEN}/batch") in routes
    # The OpenAI face reads its own body (its schema is documented by hand, without a JSON requestBody): add it.
    assert ("POST", "/sdapi/v1/txt2img") in routes and ("POST", "/v1/images/generations") not in routes
    routes.append(("POST", "/v1/images/generations"))
    for method, path in routes:
        r = client.request(method, path, content=BAD_JSON[kind], headers={"content-type": "application/json"})
        if path.startswith(FACES):
            assert_face_refused(method, path, r.status_code, r.json())
            continue
        assert r.status_code == 422, (method, path, r.status_code, r.text)
        error = r.json()["error"]
        assert error["message"] == "The body is not valid JSON.", (method, path, r.text)
        if (method, path) in OWN_PARSERS:
            assert error["code"] == "invalid_json", (method, path, r.text)
        else:
            assert error["code"] == "invalid_input", (method, path, r.text)
            assert [e["type"] for e in error["details"]["errors"]] == ["json_invalid"], (method, path, r.text)
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "params",
    ["[" * 100_000, "1" * 5000, '{"prompt": "x", "n": 1' + "0" * 5000 + "}", '{"prompt": ' + '{"a": ' * 50_000],
    ids=["deep", "long_integer", "long_integer_field", "deep_object"],
)
def test_multipart_params_it_cannot_parse_are_422(
    client: TestClient, caplog: pytest.LogCaptureFixture, params: str
) -> None:
    r = client.post(GEN, data={"params": params}, files={"init_image": ("in.png", png_bytes(), "image/png")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_json", r.text
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


def test_deep_json_that_parses_is_a_validation_error_not_a_crash(client: TestClient) -> None:
    """Nesting the interpreter can parse (800 levels) reaches validation, which refuses it field by field."""
    deep = "[" * 800 + "]" * 800
    r = client.post(GEN, data={"params": f'{{"prompt": "x", "tags": {deep}}}'}, files={"init_image": png_bytes()})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text
    r = client.post(GEN, content=f'{{"prompt": "x", "tags": {deep}}}', headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
